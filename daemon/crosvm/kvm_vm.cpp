// SPDX-License-Identifier: Apache-2.0
// The real KvmVm: KVM_IRQFD on crosvm's VM fd, with errors that explain themselves.
#include "crosvm/kvm_vm.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace vfio_broker::crosvm {

namespace {

constexpr const char *kForeignVm =
	"Linux refuses every VM ioctl from a process other than the one that created the VM "
	"(virt/kvm/kvm_main.c, kvm_vm_ioctl), so interrupts cannot be wired from this daemon; "
	"see docs/crosvm-attach.md";

class RealKvmVm : public KvmVm
{
public:
	explicit RealKvmVm(UniqueFd fd) : fd_(std::move(fd)) {}

	Status irqfd(const IrqfdArgs &a) override
	{
		kvm_irqfd req{};
		req.fd = static_cast<uint32_t>(a.eventfd);
		req.gsi = a.gsi;
		if (a.deassign) {
			// kvm_irqfd_deassign matches on (eventfd, gsi); the resample flag plays no part.
			req.flags = KVM_IRQFD_FLAG_DEASSIGN;
		} else if (a.resamplefd >= 0) {
			req.flags = KVM_IRQFD_FLAG_RESAMPLE;
			req.resamplefd = static_cast<uint32_t>(a.resamplefd);
		}
		if (::ioctl(fd_.get(), KVM_IRQFD, &req) == 0)
			return {};
		int err = errno;
		std::string what = describeFd(fd_.get());
		const char *op = a.deassign ? "KVM_IRQFD deassign" : "KVM_IRQFD";
		if (err == ENOTTY || (err == EINVAL && what.rfind("anon_inode:kvm-vm", 0) != 0))
			return makeError(err, "%s for GSI %u: the VM fd crosvm sent (%s) is not a KVM VM fd: %s",
					 op, a.gsi, what.c_str(), std::strerror(err));
		if (err == EIO)
			return makeError(err, "%s for GSI %u on crosvm's VM fd (%s): %s: %s", op, a.gsi,
					 what.c_str(), std::strerror(err), kForeignVm);
		return makeError(err, "%s for GSI %u on crosvm's VM fd (%s): %s", op, a.gsi, what.c_str(),
				 std::strerror(err));
	}

private:
	UniqueFd fd_;
};

} // namespace

std::unique_ptr<KvmVm> makeKvmVm(UniqueFd vmFd)
{
	return std::make_unique<RealKvmVm>(std::move(vmFd));
}

Status checkKvmVm(int vmFd)
{
	std::string what = describeFd(vmFd);
	if (what != "anon_inode:kvm-vm")
		return makeError(EINVAL, "the VM fd crosvm sent (%s) is not a KVM VM fd", what.c_str());
	int r = ::ioctl(vmFd, KVM_CHECK_EXTENSION, KVM_CAP_IRQFD);
	if (r < 0 && errno == EIO)
		return makeError(EIO, "KVM_CHECK_EXTENSION on crosvm's VM fd (%s): %s: %s", what.c_str(),
				 std::strerror(EIO), kForeignVm);
	if (r < 0)
		return errnoError(errno, "KVM_CHECK_EXTENSION(KVM_CAP_IRQFD) on crosvm's VM fd");
	if (r == 0)
		return makeError(ENOTSUP, "this KVM has no irqfd support (KVM_CAP_IRQFD)");
	return {};
}

std::string describeFd(int fd)
{
	char path[64];
	char link[256];
	std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = ::readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return "fd " + std::to_string(fd) + ", unknown";
	link[n] = '\0';
	return link;
}

} // namespace vfio_broker::crosvm
