// SPDX-License-Identifier: Apache-2.0
// The real vfio-broker-device in attach mode against a fake crosvm control-socket peer in this process.
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cstring>

#include "fake_crosvm.h"
#include "protocol/daemon_fixture.h"

using namespace vfio_broker;
using namespace vfio_broker::test;

namespace {

const uint64_t kPageSize = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));

// The daemon in attach mode: no vfio-user socket, readiness on fd 3 once attached.
DaemonConfig attachConfig(const std::string &device, const std::string &crosvmSocket,
			  std::initializer_list<std::string> placement)
{
	DaemonConfig c;
	c.device = false;
	c.socket = false;
	c.waitReady = false; // READY=1 comes only after this test has answered crosvm's part
	c.args = { "--device", device, "--crosvm-socket", crosvmSocket, "--crosvm-timeout", "10000" };
	c.args.insert(c.args.end(), placement.begin(), placement.end());
	return c;
}

std::string registerGolden(uint64_t offset, uint64_t start, uint64_t end)
{
	return strFormat(R"({"RegisterMemory":{"fd":0,"offset":%llu,"range_start":%llu,"range_end":%llu,"cache_coherent":true}})",
			 (unsigned long long)offset, (unsigned long long)start, (unsigned long long)end);
}

} // namespace

TEST_CASE("the daemon registers sim:edu's RAM BAR, and unregisters it at SIGTERM", "[crosvm_daemon]")
{
	TempDir dir;
	std::string path = dir.file("crosvm.sock");
	FakeCrosvm crosvm = FakeCrosvm::listenAt(path);
	Daemon d(attachConfig("sim:edu", path, { "--guest-region", "2=0x100000000" }));
	crosvm.accept();

	PeerMessage m = crosvm.receive();
	CHECK(m.json == registerGolden(0, 0x100000000, 0x10000f000));
	REQUIRE(m.fds.size() == 1);
	// The fd crosvm would map is the daemon's own region memory, not a copy.
	CHECK(processMapsInode(d.pid(), m.fds[0].get()));
	struct stat st {};
	REQUIRE(::fstat(m.fds[0].get(), &st) == 0);
	CHECK(st.st_size == 0x10000);
	crosvm.send(R"({"RegisterMemory2":{"region_id":4294967296}})");

	// Attached: SIGTERM makes it ask crosvm to unregister, then exit cleanly.
	REQUIRE(::kill(d.pid(), SIGTERM) == 0);
	m = crosvm.receive();
	CHECK(m.json == R"({"UnregisterMemory":{"region_id":4294967296}})");
	CHECK(m.fds.empty());
	crosvm.send(R"("Ok")");
	ExitStatus st2 = d.waitExit();
	INFO(d.log());
	CHECK(st2.describe() == "exited 0");
	CHECK(d.readyText() == "READY=1\n");
	CHECK_THAT(d.log(), Catch::Contains("attached sim:edu to crosvm at " + path));
}

TEST_CASE("the daemon exits cleanly when crosvm hangs up, without asking it anything more", "[crosvm_daemon]")
{
	TempDir dir;
	std::string path = dir.file("crosvm.sock");
	FakeCrosvm crosvm = FakeCrosvm::listenAt(path);
	std::string region = strFormat("0=0x%llx", 0x9100000ull);
	Daemon d(attachConfig("sim:platform", path, { "--guest-region", region }));
	crosvm.accept();
	PeerMessage m = crosvm.receive();
	uint64_t size = std::max<uint64_t>(0x1000, kPageSize);
	CHECK(m.json == registerGolden(0, 0x9100000, 0x9100000 + size));
	REQUIRE(m.fds.size() == 1);
	CHECK(processMapsInode(d.pid(), m.fds[0].get()));
	crosvm.send(R"({"RegisterMemory2":{"region_id":152043520}})");
	crosvm.hangUp();
	ExitStatus st = d.waitExit();
	INFO(d.log());
	CHECK(st.describe() == "exited 0");
	CHECK_THAT(d.log(), Catch::Contains("crosvm closed its control socket; detaching"));
}

TEST_CASE("a VM fd that is not a KVM VM is a clear error, before any region is registered", "[crosvm_daemon]")
{
	TempDir dir;
	std::string path = dir.file("crosvm.sock");
	FakeCrosvm crosvm = FakeCrosvm::listenAt(path);
	Daemon d(attachConfig("sim:edu", path, { "--guest-region", "2=0x100000000", "--guest-irq", "0=5" }));
	crosvm.accept();
	PeerMessage m = crosvm.receive();
	CHECK(m.json == "\"GetVmDescriptor\"");
	CHECK(m.fds.empty());
	UniqueFd notVm(::eventfd(0, EFD_CLOEXEC));
	int fds[] = { notVm.get() };
	crosvm.send(R"({"VmDescriptor":{"hypervisor":"Kvm","vm_fd":0}})", fds);
	CHECK(crosvm.waitHangup()); // no RegisterMemory follows
	ExitStatus st = d.waitExit();
	CHECK(st.describe() == "exited 1");
	CHECK_THAT(d.log(), Catch::Contains("attaching sim:edu to crosvm at " + path +
					    ": the VM fd crosvm sent (anon_inode:[eventfd]) is not a KVM VM fd"));
}

TEST_CASE("a real KVM VM created by another process: KVM_IRQFD is refused with EIO, explained", "[crosvm_daemon]")
{
	UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
	if (!kvm) {
		WARN("skipped: needs a usable /dev/kvm (" << std::strerror(errno) << ")");
		return;
	}
	UniqueFd vm(::ioctl(kvm.get(), KVM_CREATE_VM, 0));
	if (!vm) {
		WARN("skipped: KVM_CREATE_VM: " << std::strerror(errno));
		return;
	}
#if defined(__x86_64__) || defined(__i386__)
	REQUIRE(::ioctl(vm.get(), KVM_CREATE_IRQCHIP, 0) == 0);
#endif
	// This process plays crosvm and created the VM; the daemon is another process.
	TempDir dir;
	std::string path = dir.file("crosvm.sock");
	FakeCrosvm crosvm = FakeCrosvm::listenAt(path);
	Daemon d(attachConfig("sim:platform", path, { "--guest-irq", "0=96" }));
	crosvm.accept();
	CHECK(crosvm.receive().json == "\"GetVmDescriptor\"");
	int fds[] = { vm.get() };
	crosvm.send(R"({"VmDescriptor":{"hypervisor":"Kvm","vm_fd":0}})", fds);
	ExitStatus st = d.waitExit();
	CHECK(st.describe() == "exited 1");
	CHECK_THAT(d.log(), Catch::Contains("on crosvm's VM fd (anon_inode:kvm-vm): Input/output error: Linux "
					    "refuses every VM ioctl from a process other than the one that created the VM"));
}

TEST_CASE("crosvm's refusals and garbled or missing answers end the daemon with a clear error", "[crosvm_daemon]")
{
	TempDir dir;
	std::string path = dir.file("crosvm.sock");
	FakeCrosvm crosvm = FakeCrosvm::listenAt(path);
	SECTION("refused")
	{
		Daemon d(attachConfig("sim:edu", path, { "--guest-region", "2=0x100000000" }));
		crosvm.accept();
		(void)crosvm.receive();
		crosvm.send(R"({"Err":17})");
		CHECK(d.waitExit().describe() == "exited 1");
		CHECK_THAT(d.log(), Catch::Contains("region 2 (0xf000 bytes at 0x100000000): crosvm refused "
						    "RegisterMemory: File exists (errno 17)"));
	}
	SECTION("garbled")
	{
		Daemon d(attachConfig("sim:edu", path, { "--guest-region", "2=0x100000000" }));
		crosvm.accept();
		(void)crosvm.receive();
		crosvm.send("{\"RegisterMemory2\":{\"region_id\":");
		CHECK(d.waitExit().describe() == "exited 1");
		CHECK_THAT(d.log(), Catch::Contains("crosvm's answer to RegisterMemory is not JSON"));
	}
	SECTION("silence")
	{
		DaemonConfig c = attachConfig("sim:edu", path, { "--guest-region", "2=0x100000000" });
		c.args.push_back("--crosvm-timeout");
		c.args.push_back("100");
		Daemon d(c);
		crosvm.accept();
		(void)crosvm.receive();
		CHECK(d.waitExit().describe() == "exited 1");
		CHECK_THAT(d.log(), Catch::Contains("RegisterMemory: crosvm did not answer within 100 ms"));
	}
}

TEST_CASE("a placement the device cannot take is refused before crosvm is contacted", "[crosvm_daemon]")
{
	TempDir dir;
	std::string path = dir.file("crosvm.sock");
	FakeCrosvm crosvm = FakeCrosvm::listenAt(path);
	Daemon d(attachConfig("sim:platform", path, { "--guest-region", "1=0x9101000" }));
	CHECK(d.waitExit().describe() == "exited 1");
	CHECK_THAT(d.log(), Catch::Contains("region 1 is not mmap-able"));
	CHECK_FALSE(crosvm.hasPendingConnection());
}
