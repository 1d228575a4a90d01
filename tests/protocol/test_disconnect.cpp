// SPDX-License-Identifier: Apache-2.0
// Clients that vanish: after a client closes without cleaning up, or is killed mid-session,
// the next client gets a clean device; and a second client waits until the first is gone.
#include "daemon_fixture.h"

#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>

using namespace vfio_broker;
using namespace vfio_broker::test;

namespace {

constexpr uint64_t kIova = 0x100000;
constexpr uint64_t kPatternOffset = 0x80;
constexpr uint32_t kOldPattern = 0x01d001d0;
constexpr uint32_t kNewPattern = 0x0e770e77;

// What the vanishing client left behind, as this process can still see it.
struct Leftovers {
	UniqueFd irqEventfd; // wired to INTx or MSI
	UniqueFd reqEventfd; // wired to the request interrupt
	UniqueFd ramBar;     // the RAM BAR fd it was given
};

// Everything a session can set up, done with the client library only (it also runs in a
// forked child, where Catch2 must not be used). Returns the RAM BAR fd, or an empty one.
UniqueFd dirtyTheDevice(Client &c, uint32_t irqIndex, int irqEventfd, int reqEventfd, int memFd)
{
	if (!c.negotiate())
		return {};
	uint16_t cmd = 0x0406; // memory, bus master, INTx disable off below
	(void)c.regionWrite(kConfig, 0x04, &cmd, 2);
	(void)c.write32(kBar0, edu::kRegLiveness, 0);
	(void)c.write32(kBar0, edu::kRegStatus, edu::kStatusIrqOnFactorial);
	(void)c.write64(kBar0, edu::kRegDmaSrc, kIova);
	if (!c.dmaMap(memFd, 0, kIova, 2 * kPage, kDmaRw))
		return {};
	int irq[] = { irqEventfd }, req[] = { reqEventfd };
	if (!c.setIrqEventfds(irqIndex, irq) || !c.setIrqEventfds(VFIO_PCI_REQ_IRQ_INDEX, req))
		return {};
	auto ram = c.regionInfo(edu::kRamBar);
	if (!ram || !ram->fd)
		return {};
	uint32_t v = kOldPattern;
	if (!c.regionWrite(edu::kRamBar, kPatternOffset, &v, 4))
		return {};
	return std::move(ram->fd);
}

void writeMapped(int fd, uint64_t offset, uint32_t value)
{
	void *p = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	REQUIRE(p != MAP_FAILED);
	std::memcpy(static_cast<uint8_t *>(p) + offset, &value, 4);
	::munmap(p, kPage);
}

uint32_t readMapped(int fd, uint64_t offset)
{
	void *p = ::mmap(nullptr, kPage, PROT_READ, MAP_SHARED, fd, 0);
	REQUIRE(p != MAP_FAILED);
	uint32_t v;
	std::memcpy(&v, static_cast<uint8_t *>(p) + offset, 4);
	::munmap(p, kPage);
	return v;
}

// The next client finds nothing of the one that vanished.
void requireCleanDevice(Daemon &d, uint32_t irqIndex, Leftovers &old, const GuestMemory &oldMem, size_t steadyFds)
{
	Client c = d.connectNegotiated();
	CHECK(d.openFds() == steadyFds);

	// No DMA mapping survived, and the daemon let go of the old client's memory.
	CHECK(outcome(c.dmaUnmap(kIova, 2 * kPage)) == "ENOENT");
	CHECK(!d.mapsFile(oldMem.mapsName()));
	GuestMemory mem(2 * kPage);
	CHECK(outcome(c.dmaMap(mem.fd(), 0, kIova, 2 * kPage, kDmaRw)) == "ok");

	// Registers and config space are back to power-on values.
	CHECK(read32(c, kBar0, edu::kRegLiveness) == 0);
	CHECK(read32(c, kBar0, edu::kRegStatus) == 0);
	CHECK(read64(c, kBar0, edu::kRegDmaSrc) == 0);
	CHECK(read16(c, kConfig, 0x04) == 0);

	// The old eventfds are unwired: the device's interrupts and triggers reach only ours.
	UniqueFd mine = makeEventfd(), myReq = makeEventfd();
	write32(c, kBar0, edu::kRegIrqRaise, 0x1);
	CHECK(takeEventfd(old.irqEventfd.get()) == 0);
	int fds[] = { mine.get() }, req[] = { myReq.get() };
	REQUIRE(outcome(c.setIrqEventfds(irqIndex, fds)) == "ok");
	REQUIRE(outcome(c.setIrqEventfds(VFIO_PCI_REQ_IRQ_INDEX, req)) == "ok");
	write32(c, kBar0, edu::kRegIrqAck, 0x1);
	write32(c, kBar0, edu::kRegIrqRaise, 0x2);
	CHECK(waitEventfd(mine.get()));
	REQUIRE(outcome(c.setIrqs(VFIO_PCI_REQ_IRQ_INDEX, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1)) ==
		"ok");
	CHECK(waitEventfd(myReq.get()));
	CHECK(takeEventfd(old.irqEventfd.get()) == 0);
	CHECK(takeEventfd(old.reqEventfd.get()) == 0);

	// The RAM BAR is new memory: the old client can neither see nor be seen.
	auto ram = c.regionInfo(edu::kRamBar);
	REQUIRE(outcome(ram) == "ok");
	REQUIRE(ram->fd);
	struct stat oldSt, newSt;
	REQUIRE(::fstat(old.ramBar.get(), &oldSt) == 0);
	REQUIRE(::fstat(ram->fd.get(), &newSt) == 0);
	CHECK(oldSt.st_ino != newSt.st_ino);
	CHECK(read32(c, edu::kRamBar, kPatternOffset) == 0);
	write32(c, edu::kRamBar, kPatternOffset, kNewPattern);
	CHECK(readMapped(ram->fd.get(), kPatternOffset) == kNewPattern);
	CHECK(readMapped(old.ramBar.get(), kPatternOffset) == kOldPattern);
	writeMapped(old.ramBar.get(), kPatternOffset, 0xbadbad00);
	CHECK(read32(c, edu::kRamBar, kPatternOffset) == kNewPattern);
}

size_t steadyFds(Daemon &d)
{
	Client c = d.connectNegotiated();
	requireServes(c);
	return d.openFds();
}

} // namespace

TEST_CASE("A client that closes its socket without cleaning up leaves the next client a clean device", "[disconnect]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	uint32_t irqIndex = GENERATE(as<uint32_t>{}, kIntx, kMsi);
	INFO("the old client had IRQ index " << irqIndex << " wired");
	Leftovers old{ makeEventfd(), makeEventfd(), {} };
	GuestMemory oldMem(2 * kPage);
	{
		Client c = d.connect();
		old.ramBar = dirtyTheDevice(c, irqIndex, old.irqEventfd.get(), old.reqEventfd.get(), oldMem.fd());
		REQUIRE(old.ramBar);
		REQUIRE(d.mapsFile(oldMem.mapsName()));
	} // the socket closes here: no DMA_UNMAP, no SET_IRQS disable
	requireCleanDevice(d, irqIndex, old, oldMem, fds);
}

TEST_CASE("A client process killed with SIGKILL mid-session leaves the next client a clean device", "[disconnect]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	uint32_t irqIndex = GENERATE(as<uint32_t>{}, kIntx, kMsi);
	INFO("the old client had IRQ index " << irqIndex << " wired");
	Leftovers old{ makeEventfd(), makeEventfd(), {} };
	GuestMemory oldMem(2 * kPage);
	int sv[2];
	REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	UniqueFd ours(sv[0]), theirs(sv[1]);

	pid_t pid = ::fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		// The child: set everything up, hand the RAM BAR fd over, then wait to be killed.
		ours.reset();
		auto c = Client::connect(d.socketPath());
		if (!c)
			::_exit(2);
		UniqueFd ram = dirtyTheDevice(*c, irqIndex, old.irqEventfd.get(), old.reqEventfd.get(), oldMem.fd());
		if (!ram)
			::_exit(3);
		char byte = 'R';
		iovec iov{ &byte, 1 };
		alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
		msghdr msg{};
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = control;
		msg.msg_controllen = sizeof(control);
		cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		int raw = ram.get();
		std::memcpy(CMSG_DATA(cm), &raw, sizeof(int));
		if (::sendmsg(theirs.get(), &msg, MSG_NOSIGNAL) != 1)
			::_exit(4);
		for (;;)
			::pause();
	}
	ChildProcess child = ChildProcess::adopt(pid);
	theirs.reset();
	auto received = receiveFds(ours.get(), 1);
	if (received.size() != 1)
		FAIL("the client child did not get set up: " << child.wait().describe());
	old.ramBar = std::move(received[0]);
	REQUIRE(d.mapsFile(oldMem.mapsName()));
	child.kill(SIGKILL);
	REQUIRE(child.wait().describe() == "killed by SIGKILL");
	requireCleanDevice(d, irqIndex, old, oldMem, fds);
}

TEST_CASE("A second client waits in the backlog while the first is connected and is served once it leaves",
	  "[disconnect]")
{
	Daemon d;
	std::optional<Client> first(d.connectNegotiated());
	GuestMemory mem(kPage);
	REQUIRE(outcome(first->dmaMap(mem.fd(), 0, kIova, kPage, kDmaRw)) == "ok");

	Client second = d.connect();
	vfio_user::VersionPayload v{ 0, 2 };
	REQUIRE(outcome(second.sendRaw(frame(0x222, Command::Version, bytesOf(v)))) == "ok");
	// The daemon answers the first client while the second one's VERSION waits unread.
	requireServes(*first);
	pollfd p{ second.fd(), POLLIN, 0 };
	CHECK(::poll(&p, 1, 0) == 0);

	first.reset(); // the first client leaves
	Reply r = receiveReply(second);
	CHECK(r.header.msgId == 0x222);
	CHECK(outcome(r) == "ok");
	CHECK(outcome(second.dmaUnmap(kIova, kPage)) == "ENOENT"); // nothing of the first
	requireServes(second);
}
