// SPDX-License-Identifier: Apache-2.0
// KvmVm: the one place attach mode touches KVM (KVM_IRQFD on the VM fd crosvm hands over), behind an interface tests can fake.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "common/unique_fd.h"

namespace vfio_broker::crosvm {

// KVM_IRQFD (Documentation/virt/kvm/api.rst): signalling `eventfd` injects `gsi`. On arm64 with
// the in-kernel vGIC the default routing sends GSI n to SPI n, INTID n + 32 (virt/kvm/arm/vgic/
// vgic-irqfd.c), so the GSI is the middle cell of a DT `interrupts = <0 n flags>`. With a resample
// fd the GSI is a level: KVM keeps it asserted until the guest's EOI, then de-asserts it and
// signals `resamplefd`.
struct IrqfdArgs {
	int eventfd = -1;
	uint32_t gsi = 0;
	int resamplefd = -1; // -1: edge (no KVM_IRQFD_FLAG_RESAMPLE)
	bool deassign = false;
};

class KvmVm
{
public:
	virtual ~KvmVm() = default;
	virtual Status irqfd(const IrqfdArgs &args) = 0;
};

// The real one: issues KVM_IRQFD on vmFd. Errors say what the fd is and why KVM refused; in
// particular EIO, which Linux returns for every VM ioctl from a process other than the VM's
// creator (virt/kvm/kvm_main.c, kvm_vm_ioctl: kvm->mm != current->mm).
std::unique_ptr<KvmVm> makeKvmVm(UniqueFd vmFd);

// Is vmFd a KVM VM this process may drive? Checks what the fd is (anon_inode:kvm-vm) and asks
// KVM_CHECK_EXTENSION(KVM_CAP_IRQFD) on it, a harmless VM ioctl that fails with the same EIO as
// KVM_IRQFD would when another process created the VM: attach mode learns it before it has
// registered anything with crosvm.
Status checkKvmVm(int vmFd);

// What /proc/self/fd/N links to ("anon_inode:kvm-vm", "anon_inode:[eventfd]", "/memfd:x (deleted)").
std::string describeFd(int fd);

} // namespace vfio_broker::crosvm
