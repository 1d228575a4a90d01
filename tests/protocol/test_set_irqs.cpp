// SPDX-License-Identifier: Apache-2.0
// VFIO_USER_DEVICE_SET_IRQS against the real daemon: INTx delivery with automasking and
// unmask, MSI, de-assignment, loopback triggers, and every malformed or out-of-range request.
#include "daemon_fixture.h"

#include <sys/socket.h>

using namespace vfio_broker;
using namespace vfio_broker::test;
using vfio_user::IrqSetPayload;

namespace {

constexpr uint32_t kEventfdTrigger = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
constexpr uint32_t kNoneTrigger = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
constexpr uint32_t kBoolTrigger = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER;
constexpr uint32_t kNoneMask = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK;
constexpr uint32_t kNoneUnmask = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
constexpr uint32_t kBoolUnmask = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_UNMASK;

Reply setIrqs(Client &c, uint32_t flags, uint32_t index, uint32_t start, uint32_t count,
	      std::span<const int> fds = {}, std::span<const uint8_t> data = {})
{
	IrqSetPayload p{ static_cast<uint32_t>(sizeof(IrqSetPayload) + data.size()), flags, index, start, count };
	return exchange(c, Command::DeviceSetIrqs, bytesOf(p, data), fds);
}

void assign(Client &c, uint32_t index, int eventfd)
{
	int fds[] = { eventfd };
	REQUIRE(outcome(setIrqs(c, kEventfdTrigger, index, 0, 1, fds)) == "ok");
}

// The device raises / acknowledges interrupt status bits (edu's IRQ raise/ack registers).
void raise(Client &c, uint32_t bits)
{
	write32(c, kBar0, edu::kRegIrqRaise, bits);
}

void ack(Client &c, uint32_t bits)
{
	write32(c, kBar0, edu::kRegIrqAck, bits);
}

} // namespace

TEST_CASE("SET_IRQS: INTx is signalled on its eventfd when the device raises an interrupt", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	assign(c, kIntx, efd.get());
	CHECK(takeEventfd(efd.get()) == 0); // nothing pending yet
	raise(c, 0x1);
	CHECK(waitEventfd(efd.get()));
	CHECK(read32(c, kBar0, edu::kRegIrqStatus) == 0x1);
}

TEST_CASE("SET_IRQS: INTx stays masked after it fires until UNMASK, which fires at once while the line is asserted",
	  "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	assign(c, kIntx, efd.get());

	raise(c, 0x1);
	REQUIRE(waitEventfd(efd.get()));
	raise(c, 0x2); // automasked: no second signal
	CHECK(takeEventfd(efd.get()) == 0);

	REQUIRE(outcome(setIrqs(c, kNoneUnmask, kIntx, 0, 1)) == "ok");
	CHECK(takeEventfd(efd.get()) == 1); // the line is still asserted

	ack(c, 0x3);
	REQUIRE(outcome(setIrqs(c, kNoneUnmask, kIntx, 0, 1)) == "ok");
	CHECK(takeEventfd(efd.get()) == 0); // de-asserted: unmask alone signals nothing
	raise(c, 0x4);
	CHECK(waitEventfd(efd.get()));
}

TEST_CASE("SET_IRQS: MASK holds INTx back until UNMASK", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	assign(c, kIntx, efd.get());
	REQUIRE(outcome(setIrqs(c, kNoneMask, kIntx, 0, 1)) == "ok");
	raise(c, 0x1);
	CHECK(takeEventfd(efd.get()) == 0);
	REQUIRE(outcome(setIrqs(c, kNoneUnmask, kIntx, 0, 1)) == "ok");
	CHECK(waitEventfd(efd.get()));
}

TEST_CASE("SET_IRQS: DATA_BOOL unmask acts only where the boolean is true", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	assign(c, kIntx, efd.get());
	raise(c, 0x1);
	REQUIRE(waitEventfd(efd.get()));
	const uint8_t no[] = { 0 }, yes[] = { 1 };
	REQUIRE(outcome(setIrqs(c, kBoolUnmask, kIntx, 0, 1, {}, no)) == "ok");
	CHECK(takeEventfd(efd.get()) == 0);
	REQUIRE(outcome(setIrqs(c, kBoolUnmask, kIntx, 0, 1, {}, yes)) == "ok");
	CHECK(takeEventfd(efd.get()) == 1);
}

TEST_CASE("SET_IRQS: a client trigger (DATA_NONE or a true DATA_BOOL) signals the eventfd", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	uint32_t index = GENERATE(as<uint32_t>{}, kIntx, kMsi, VFIO_PCI_REQ_IRQ_INDEX);
	INFO("IRQ index " << index);
	assign(c, index, efd.get());
	REQUIRE(outcome(setIrqs(c, kNoneTrigger, index, 0, 1)) == "ok");
	CHECK(waitEventfd(efd.get()));
	const uint8_t no[] = { 0 }, yes[] = { 1 };
	REQUIRE(outcome(setIrqs(c, kBoolTrigger, index, 0, 1, {}, no)) == "ok");
	CHECK(takeEventfd(efd.get()) == 0);
	REQUIRE(outcome(setIrqs(c, kBoolTrigger, index, 0, 1, {}, yes)) == "ok");
	CHECK(waitEventfd(efd.get()));
}

TEST_CASE("SET_IRQS: MSI is signalled for every raise, without unmasking", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	assign(c, kMsi, efd.get());
	for (uint32_t bit : { 0x1u, 0x2u, 0x4u }) {
		INFO("raise 0x" << std::hex << bit);
		raise(c, bit); // MSI is an edge: even with earlier bits still set
		CHECK(waitEventfd(efd.get()));
	}
	ack(c, 0x7);
}

TEST_CASE("SET_IRQS: a new eventfd replaces the old one", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd first = makeEventfd(), second = makeEventfd();
	assign(c, kMsi, first.get());
	assign(c, kMsi, second.get());
	raise(c, 0x1);
	CHECK(waitEventfd(second.get()));
	CHECK(takeEventfd(first.get()) == 0);
}

TEST_CASE("SET_IRQS: DATA_EVENTFD with no fds de-assigns the interrupt and the daemon closes its eventfd",
	  "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	uint32_t index = GENERATE(as<uint32_t>{}, kIntx, kMsi);
	INFO("IRQ index " << index);
	size_t before = d.openFds();
	UniqueFd efd = makeEventfd();
	assign(c, index, efd.get());
	CHECK(d.openFds() == before + 1);
	REQUIRE(outcome(setIrqs(c, kEventfdTrigger, index, 0, 1)) == "ok");
	CHECK(d.openFds() == before);
	raise(c, 0x1);
	CHECK(takeEventfd(efd.get()) == 0);
	requireServes(c);
}

TEST_CASE("SET_IRQS: DATA_NONE|TRIGGER with count 0 disables the index", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	uint32_t index = GENERATE(as<uint32_t>{}, kIntx, kMsi);
	INFO("IRQ index " << index);
	UniqueFd efd = makeEventfd();
	assign(c, index, efd.get());
	REQUIRE(outcome(setIrqs(c, kNoneTrigger, index, 0, 0)) == "ok");
	raise(c, 0x1);
	CHECK(takeEventfd(efd.get()) == 0);
	// Enabled again, it works.
	ack(c, 0x1);
	assign(c, index, efd.get());
	raise(c, 0x2);
	CHECK(waitEventfd(efd.get()));
}

TEST_CASE("SET_IRQS: the INTx-disable bit in the PCI command register holds INTx back", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	assign(c, kIntx, efd.get());
	uint16_t cmd = read16(c, kConfig, 0x04);
	write16(c, kConfig, 0x04, cmd | kPciCommandIntxDisable);
	raise(c, 0x1);
	CHECK(takeEventfd(efd.get()) == 0);
	write16(c, kConfig, 0x04, cmd); // re-enabled while asserted: it fires now
	CHECK(waitEventfd(efd.get()));
}

TEST_CASE("SET_IRQS: MSI cannot be enabled while INTx is, nor INTx while MSI is (EINVAL)", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd a = makeEventfd(), b = makeEventfd();
	uint32_t first = GENERATE(as<uint32_t>{}, kIntx, kMsi);
	uint32_t other = first == kIntx ? kMsi : kIntx;
	INFO("enabled first: IRQ index " << first);
	assign(c, first, a.get());
	int fds[] = { b.get() };
	CHECK(outcome(setIrqs(c, kEventfdTrigger, other, 0, 1, fds)) == "EINVAL");
	// The first stays in charge.
	raise(c, 0x1);
	CHECK(waitEventfd(a.get()));
	CHECK(takeEventfd(b.get()) == 0);
	requireServes(c);
}

TEST_CASE("SET_IRQS: de-assigning the index that is not enabled leaves the enabled one delivering",
	  "[set_irqs]")
{
	// vfio-pci refuses this request (EINVAL); sim:edu accepts it. Either way MSI must go on.
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	assign(c, kMsi, efd.get());
	Reply r = setIrqs(c, kEventfdTrigger, kIntx, 0, 1); // no fds: de-assign INTx
	CHECK((outcome(r) == "ok" || outcome(r) == "EINVAL"));
	raise(c, 0x1);
	CHECK(waitEventfd(efd.get()));
}

TEST_CASE("SET_IRQS with a short payload is refused with EINVAL", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (size_t len : { 0, 8, 19 }) {
		INFO(len << "-byte payload");
		std::vector<uint8_t> payload = bytesOf(IrqSetPayload{ sizeof(IrqSetPayload), kNoneTrigger, kIntx, 0, 0 });
		payload.resize(len);
		CHECK(outcome(exchange(c, Command::DeviceSetIrqs, payload)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("SET_IRQS with argsz below 20 is refused with EINVAL", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (uint32_t argsz : { 0u, 16u, 19u }) {
		INFO("argsz " << argsz);
		CHECK(outcome(exchange(c, Command::DeviceSetIrqs,
				       bytesOf(IrqSetPayload{ argsz, kNoneTrigger, kIntx, 0, 0 }))) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("SET_IRQS without exactly one DATA_ and one ACTION_ flag is refused with EINVAL", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	const uint32_t bad[] = {
		0,
		VFIO_IRQ_SET_DATA_NONE,
		VFIO_IRQ_SET_ACTION_TRIGGER,
		VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER,
		VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
		VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK,
		VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_ACTION_MASK,
		kNoneTrigger | (1u << 6),
		kNoneTrigger | 0x80000000u,
	};
	for (uint32_t flags : bad) {
		INFO("flags 0x" << std::hex << flags);
		CHECK(outcome(setIrqs(c, flags, kIntx, 0, 1)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("SET_IRQS of an IRQ index past the last is refused with EINVAL", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (uint32_t index : { 5u, 0xffffffffu }) {
		INFO("IRQ index " << index);
		CHECK(outcome(setIrqs(c, kNoneTrigger, index, 0, 1)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("SET_IRQS with start or count outside the index is refused with EINVAL", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	struct Case {
		uint32_t index, start, count;
	};
	const Case bad[] = {
		{ kIntx, 1, 1 },
		{ kIntx, 0, 2 },
		{ kMsi, 1, 1 },
		{ VFIO_PCI_MSIX_IRQ_INDEX, 0, 1 }, // sim:edu has no MSI-X vectors
		{ VFIO_PCI_ERR_IRQ_INDEX, 0, 1 },
		{ kIntx, 0xffffffff, 1 },
		{ kIntx, 1, 0xffffffff }, // start + count wraps in 32 bits
	};
	for (const auto &b : bad) {
		INFO("index " << b.index << " start " << b.start << " count " << b.count);
		CHECK(outcome(setIrqs(c, kNoneTrigger, b.index, b.start, b.count)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("SET_IRQS with count 0 is refused with EINVAL except as DATA_NONE|TRIGGER from start 0", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	const std::pair<uint32_t, uint32_t> bad[] = {
		{ kEventfdTrigger, 0 }, { kBoolTrigger, 0 }, { kNoneMask, 0 },
		{ kNoneUnmask, 0 },     { kNoneTrigger, 1 },
	};
	for (const auto &[flags, start] : bad) {
		INFO("flags 0x" << std::hex << flags << " start " << start);
		CHECK(outcome(setIrqs(c, flags, kIntx, start, 0)) == "EINVAL");
		requireServes(c);
	}
	CHECK(outcome(setIrqs(c, kNoneTrigger, kIntx, 0, 0)) == "ok");
	CHECK(outcome(setIrqs(c, kNoneTrigger, kMsi, 0, 0)) == "ok");
	// As vfio-pci: an index without interrupts has nothing to disable.
	CHECK(outcome(setIrqs(c, kNoneTrigger, VFIO_PCI_MSIX_IRQ_INDEX, 0, 0)) == "EINVAL");
	requireServes(c);
}

TEST_CASE("SET_IRQS with a different number of eventfds than count is refused with EINVAL", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd a = makeEventfd(), b = makeEventfd();
	int fds[] = { a.get(), b.get() };
	size_t before = d.openFds();
	CHECK(outcome(setIrqs(c, kEventfdTrigger, kMsi, 0, 1, fds)) == "EINVAL");
	CHECK(d.openFds() == before);
	raise(c, 0x1);
	CHECK(takeEventfd(a.get()) == 0);
	CHECK(takeEventfd(b.get()) == 0);
	requireServes(c);
}

TEST_CASE("SET_IRQS with an fd that is not an eventfd is refused with EINVAL", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	Pipe pipe = makePipe();
	GuestMemory memory(kPage);
	int sv[2];
	REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	UniqueFd s0(sv[0]), s1(sv[1]);
	size_t before = d.openFds();
	for (int fd : { pipe.readEnd.get(), pipe.writeEnd.get(), memory.fd(), s0.get() }) {
		INFO("fd " << fd);
		int fds[] = { fd };
		CHECK(outcome(setIrqs(c, kEventfdTrigger, kMsi, 0, 1, fds)) == "EINVAL");
		requireServes(c);
	}
	CHECK(d.openFds() == before);
	// Nothing was wired: a real eventfd still gets the index.
	UniqueFd efd = makeEventfd();
	assign(c, kMsi, efd.get());
	raise(c, 0x1);
	CHECK(waitEventfd(efd.get()));
}

TEST_CASE("SET_IRQS DATA_BOOL with fewer booleans than count is refused with EINVAL", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	assign(c, kIntx, efd.get());
	CHECK(outcome(setIrqs(c, kBoolTrigger, kIntx, 0, 1)) == "EINVAL");
	CHECK(outcome(setIrqs(c, kBoolUnmask, kIntx, 0, 1)) == "EINVAL");
	CHECK(takeEventfd(efd.get()) == 0);
	requireServes(c);
}

TEST_CASE("SET_IRQS with fds but without DATA_EVENTFD is refused with EINVAL", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	int fds[] = { efd.get() };
	const uint8_t yes[] = { 1 };
	size_t before = d.openFds();
	CHECK(outcome(setIrqs(c, kNoneTrigger, kMsi, 0, 1, fds)) == "EINVAL");
	CHECK(outcome(setIrqs(c, kBoolTrigger, kMsi, 0, 1, fds, yes)) == "EINVAL");
	CHECK(d.openFds() == before);
	requireServes(c);
}

TEST_CASE("SET_IRQS UNMASK of INTx before it is enabled is refused with EINVAL", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	CHECK(outcome(setIrqs(c, kNoneUnmask, kIntx, 0, 1)) == "EINVAL");
	CHECK(outcome(setIrqs(c, kNoneMask, kIntx, 0, 1)) == "EINVAL");
	requireServes(c);
}

TEST_CASE("SET_IRQS MASK or UNMASK of MSI, which is not maskable, is refused with EINVAL", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	assign(c, kMsi, efd.get());
	CHECK(outcome(setIrqs(c, kNoneMask, kMsi, 0, 1)) == "EINVAL");
	CHECK(outcome(setIrqs(c, kNoneUnmask, kMsi, 0, 1)) == "EINVAL");
	raise(c, 0x1);
	CHECK(waitEventfd(efd.get()));
}

TEST_CASE("SET_IRQS INTx mask and unmask eventfds are refused with ENOTSUP", "[set_irqs]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd trigger = makeEventfd(), notify = makeEventfd();
	assign(c, kIntx, trigger.get());
	int fds[] = { notify.get() };
	for (uint32_t action : { VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_UNMASK }) {
		INFO("action 0x" << std::hex << action);
		CHECK(outcome(setIrqs(c, VFIO_IRQ_SET_DATA_EVENTFD | action, kIntx, 0, 1, fds)) == "ENOTSUP");
		requireServes(c);
	}
}
