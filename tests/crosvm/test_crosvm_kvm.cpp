// SPDX-License-Identifier: Apache-2.0
// The real KvmVm: KVM_IRQFD on fds that are not KVM VMs, on a VM another process created (crosvm's case) and on our own.
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "crosvm/kvm_vm.h"
#include "fake_crosvm.h"
#include "protocol/daemon_fixture.h"

using namespace vfio_broker;
using namespace vfio_broker::crosvm;
using namespace vfio_broker::test;

namespace {

// /dev/kvm usable here? Returns the reason when not, for the skip message.
std::string kvmUnavailable()
{
	UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
	if (!kvm)
		return std::string("/dev/kvm: ") + std::strerror(errno);
	UniqueFd vm(::ioctl(kvm.get(), KVM_CREATE_VM, 0));
	if (!vm)
		return std::string("KVM_CREATE_VM: ") + std::strerror(errno);
	return "";
}

// A VM with an in-kernel interrupt controller, so KVM_IRQFD (with resample) is allowed; only
// x86 has the one-ioctl form (arm64 needs a vGIC device set up with its addresses).
UniqueFd createVmWithIrqchip()
{
	UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
	if (!kvm)
		return {};
	UniqueFd vm(::ioctl(kvm.get(), KVM_CREATE_VM, 0));
#if defined(__x86_64__) || defined(__i386__)
	if (vm && ::ioctl(vm.get(), KVM_CREATE_IRQCHIP, 0) < 0)
		return {};
#endif
	return vm;
}

} // namespace

TEST_CASE("KVM_IRQFD on an fd that is not a KVM VM names what the fd is", "[crosvm_kvm]")
{
	UniqueFd trigger(::eventfd(0, EFD_CLOEXEC));
	SECTION("an eventfd")
	{
		auto vm = makeKvmVm(UniqueFd(::eventfd(0, EFD_CLOEXEC)));
		Status s = vm->irqfd({ trigger.get(), 5, -1, false });
		REQUIRE_FALSE(s);
		CHECK(s.error().code == ENOTTY);
		CHECK_THAT(s.error().message, Catch::Contains("the VM fd crosvm sent (anon_inode:[eventfd]) is not a KVM VM fd"));
	}
	SECTION("the probe says so before any KVM_IRQFD")
	{
		UniqueFd notVm(::eventfd(0, EFD_CLOEXEC));
		Status s = checkKvmVm(notVm.get());
		REQUIRE_FALSE(s);
		CHECK(s.error().message == "the VM fd crosvm sent (anon_inode:[eventfd]) is not a KVM VM fd");
	}
	SECTION("a memfd")
	{
		auto vm = makeKvmVm(makeMemfd(4096, "not-a-vm"));
		Status s = vm->irqfd({ trigger.get(), 96, -1, true });
		REQUIRE_FALSE(s);
		CHECK_THAT(s.error().message, Catch::StartsWith("KVM_IRQFD deassign for GSI 96: the VM fd crosvm sent (/memfd:not-a-vm"));
		CHECK_THAT(s.error().message, Catch::Contains("is not a KVM VM fd"));
	}
}

TEST_CASE("KVM_IRQFD on a VM another process created fails with EIO, explained", "[crosvm_kvm]")
{
	if (std::string why = kvmUnavailable(); !why.empty()) {
		WARN("skipped: needs a usable /dev/kvm (" << why << ")");
		return;
	}
	// The child plays crosvm: it creates the VM and hands the fd over, as GetVmDescriptor does.
	int sv[2];
	REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
	UniqueFd here(sv[0]), there(sv[1]);
	pid_t pid = ::fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		here.reset();
		UniqueFd vm = createVmWithIrqchip();
		if (!vm)
			::_exit(1);
		// Raw sendmsg: no Catch2 in the forked child.
		char one = 'V';
		iovec iov{ &one, 1 };
		alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
		msghdr msg{};
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = control;
		msg.msg_controllen = sizeof(control);
		cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		int fd = vm.get();
		std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
		if (::sendmsg(there.get(), &msg, MSG_NOSIGNAL) != 1)
			::_exit(2);
		char byte;
		// Keep the VM's creator alive until the parent is done with the fd.
		(void)::read(there.get(), &byte, 1);
		::_exit(0);
	}
	ChildProcess child = ChildProcess::adopt(pid);
	there.reset();
	auto fds = receiveFds(here.get(), 1);
	REQUIRE(fds.size() == 1);
	CHECK(describeFd(fds[0].get()) == "anon_inode:kvm-vm");

	// The probe attach mode runs before it registers anything fails the same way.
	Status probe = checkKvmVm(fds[0].get());
	REQUIRE_FALSE(probe);
	CHECK(probe.error().code == EIO);
	CHECK_THAT(probe.error().message, Catch::StartsWith("KVM_CHECK_EXTENSION on crosvm's VM fd (anon_inode:kvm-vm): "));

	auto vm = makeKvmVm(std::move(fds[0]));
	UniqueFd trigger(::eventfd(0, EFD_CLOEXEC)), resample(::eventfd(0, EFD_CLOEXEC));
	Status s = vm->irqfd({ trigger.get(), 5, resample.get(), false });
	REQUIRE_FALSE(s);
	CHECK(s.error().code == EIO);
	CHECK_THAT(s.error().message, Catch::Contains("Linux refuses every VM ioctl from a process other than the one "
						    "that created the VM"));
	here.reset(); // the child's read returns: it exits
	CHECK(child.wait().clean());
}

TEST_CASE("KVM_IRQFD with a resample fd on our own VM assigns and deassigns", "[crosvm_kvm]")
{
	if (std::string why = kvmUnavailable(); !why.empty()) {
		WARN("skipped: needs a usable /dev/kvm (" << why << ")");
		return;
	}
#if !defined(__x86_64__) && !defined(__i386__)
	WARN("skipped: an in-kernel irqchip in one ioctl exists on x86 only");
	return;
#else
	UniqueFd vmFd = createVmWithIrqchip();
	REQUIRE(vmFd);
	CHECK(checkKvmVm(vmFd.get()));
	auto vm = makeKvmVm(std::move(vmFd));
	UniqueFd trigger(::eventfd(0, EFD_CLOEXEC)), resample(::eventfd(0, EFD_CLOEXEC));
	Status on = vm->irqfd({ trigger.get(), 5, resample.get(), false });
	INFO((on.ok() ? std::string() : on.error().message));
	REQUIRE(on);
	// The same eventfd twice is EBUSY from KVM: proof the first one is registered.
	Status again = vm->irqfd({ trigger.get(), 5, resample.get(), false });
	REQUIRE_FALSE(again);
	CHECK(again.error().code == EBUSY);
	CHECK(vm->irqfd({ trigger.get(), 5, -1, true }));
#endif
}
