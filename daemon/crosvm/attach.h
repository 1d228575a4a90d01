// SPDX-License-Identifier: Apache-2.0
// Attach mode: put a Device's mmap-able regions, interrupts and a DMA pool into a running crosvm through its control socket.
#pragma once

// The sequence (docs/crosvm-attach.md has the why):
//   1. check the whole plan against the device (addresses, sizes, flags, overlaps) before
//      anything is sent;
//   2. when interrupts are wired: GetVmDescriptor, for the KVM VM fd;
//   3. the DMA pool: mmap the file crosvm maps with --file-backed-mapping, DMA-map it at
//      IOVA = its guest address;
//   4. RegisterMemory for every mmap-able area of every placed region;
//   5. per interrupt: a trigger eventfd (and a resample eventfd for a level, i.e. automasked,
//      interrupt), KVM_IRQFD, then SET_IRQS TRIGGER and UNMASK with those eventfds, so neither
//      the interrupt nor the guest's EOI passes through this process.
// A failure at any step undoes the steps before it. Afterwards, run() waits for crosvm to hang
// up or for the stop fd (SIGTERM), and detach() undoes everything.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "crosvm/control_socket.h"
#include "crosvm/kvm_vm.h"
#include "device/device.h"

namespace vfio_broker::crosvm {

struct GuestRegion {
	uint32_t index = 0;   // VFIO region index
	uint64_t address = 0; // guest physical address of the region's offset 0
};

struct GuestIrq {
	uint32_t index = 0; // VFIO IRQ index (sub-index 0 is wired)
	uint32_t gsi = 0;   // KVM GSI; on arm64 the SPI number
};

// A file on tmpfs or hugetlbfs that crosvm maps into the guest with
// --file-backed-mapping addr=ADDRESS,size=SIZE,path=PATH,rw,ram and that the device may DMA to.
struct DmaPool {
	std::string path;
	uint64_t address = 0; // guest physical = IOVA
	uint64_t size = 0;
};

struct AttachConfig {
	std::vector<GuestRegion> regions;
	std::vector<GuestIrq> irqs;
	std::optional<DmaPool> dmaPool;
};

// One RegisterMemory: an mmap-able area of a region (the whole region, or one sparse-mmap area).
struct MemoryMapping {
	uint32_t index = 0;
	uint64_t regionOffset = 0; // of the area in the region
	uint64_t size = 0;         // page-rounded
	uint64_t guestAddress = 0;
	int fd = -1;               // borrowed from the device
	uint64_t fileOffset = 0;   // mmap offset in fd
};

// Check the placement against the device and split it into RegisterMemory requests. Refuses
// regions that are unknown, not mmap-able, not read-write (crosvm maps read-write), guest
// addresses or areas not aligned to pageSize, and overlaps among the areas and the DMA pool.
Result<std::vector<MemoryMapping>> planMemory(const device::Device &dev, const AttachConfig &config,
					      uint64_t pageSize);
// Check the interrupts: indexes that exist with at least one eventfd-capable interrupt, each
// index and each GSI used once (a GSI shared between interrupts is refused).
Status checkIrqs(const device::Device &dev, const AttachConfig &config);

// Turns crosvm's VmDescriptor into the KvmVm interrupts are wired with. The default checks the
// hypervisor is KVM and issues real KVM_IRQFDs; tests pass a recording fake.
using KvmVmFactory = std::function<Result<std::unique_ptr<KvmVm>>(VmDescriptor)>;
Result<std::unique_ptr<KvmVm>> openKvmVm(VmDescriptor descriptor);

class Attachment
{
public:
	static Result<std::unique_ptr<Attachment>> attach(device::Device &dev, ControlSocket &socket,
							  const AttachConfig &config,
							  const KvmVmFactory &kvm = openKvmVm);
	~Attachment(); // detach() if nobody did, without asking crosvm
	Attachment(const Attachment &) = delete;
	Attachment &operator=(const Attachment &) = delete;

	enum class Event {
		Idle,       // timeout, or only resample relays were served
		PeerHangup, // crosvm closed the control socket
		Stop,       // stopFd became readable
	};
	// Wait up to timeoutMs (-1: no limit) for crosvm's hang-up, stopFd (-1: none) or a guest
	// EOI to relay, and handle what came. A message crosvm sends unasked is an error.
	Result<Event> step(int stopFd, int timeoutMs);
	// step() until PeerHangup or Stop.
	Result<Event> run(int stopFd);

	// Undo everything, all steps attempted, the first failure returned: SET_IRQS off, KVM_IRQFD
	// deassign, UnregisterMemory (when askCrosvm: crosvm is still there to answer), DMA unmap,
	// device quiesce. Idempotent.
	Status detach(bool askCrosvm);

	struct Irq {
		uint32_t index = 0;
		uint32_t gsi = 0;
		UniqueFd trigger;  // KVM's irqfd; the device signals a dup of it
		UniqueFd resample; // level interrupts: KVM signals it at the guest's EOI
		bool relay = false; // the device took no unmask eventfd: we unmask on resample ourselves
	};
	const std::vector<Irq> &irqs() const { return irqs_; }
	struct Registered {
		MemoryMapping mapping;
		uint64_t regionId = 0;
	};
	const std::vector<Registered> &registered() const { return registered_; }
	std::string summary() const; // one line for the log

private:
	Attachment(device::Device &dev, ControlSocket &socket) : dev_(dev), socket_(socket) {}
	Status mapDmaPool(const DmaPool &pool);
	Status wireIrq(const GuestIrq &irq);
	Status relay(Irq &irq);

	device::Device &dev_;
	ControlSocket &socket_;
	std::unique_ptr<KvmVm> kvm_;
	std::vector<Registered> registered_;
	std::vector<Irq> irqs_;
	struct Pool {
		UniqueFd fd;
		void *map = nullptr;
		device::DmaRange range;
		bool dmaMapped = false;
	} pool_;
	bool detached_ = false;
};

} // namespace vfio_broker::crosvm
