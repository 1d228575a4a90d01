// SPDX-License-Identifier: Apache-2.0
// sim:platform against the real daemon: the shared walk-through, what a platform device shows over
// vfio-user, the level interrupt with UNMASK and an unmask eventfd, and hostile or impossible requests.
#include "daemon_fixture.h"

#include <sys/eventfd.h>
#include <sys/stat.h>

#include "client/sim_platform_sequence.h"

using namespace vfio_broker;
using namespace vfio_broker::test;
using vfio_user::IrqSetPayload;
using vfio_user::RegionInfoPayload;

namespace {

// The register map (README "sim:platform"), written down here rather than taken from the device.
constexpr uint32_t kPageRegion = 0, kCtl = 1, kIrq = 0;
constexpr uint32_t kCount = 0x00, kMatch = 0x04, kLoad = 0x08, kControl = 0x0c, kImsc = 0x10;
constexpr uint32_t kRis = 0x14, kIcr = 0x1c, kIsr = 0x20, kAdvance = 0x24;
constexpr uint32_t kEnable = 1, kIntMatch = 1, kIntSoft = 2;

constexpr uint32_t kEventfdTrigger = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
constexpr uint32_t kEventfdUnmask = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK;
constexpr uint32_t kNoneTrigger = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
constexpr uint32_t kNoneUnmask = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
constexpr uint32_t kNoneMask = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK;

DaemonConfig simPlatform(std::initializer_list<std::string> extra = {})
{
	DaemonConfig config(extra);
	config.device = false;
	config.args.insert(config.args.begin(), { "--device", "sim:platform" });
	return config;
}

Reply setIrqs(Client &c, uint32_t flags, uint32_t index, uint32_t start, uint32_t count,
	      std::span<const int> fds = {}, std::span<const uint8_t> data = {})
{
	IrqSetPayload p{ static_cast<uint32_t>(sizeof(IrqSetPayload) + data.size()), flags, index, start, count };
	return exchange(c, Command::DeviceSetIrqs, bytesOf(p, data), fds);
}

void assign(Client &c, uint32_t flags, int eventfd)
{
	int fds[] = { eventfd };
	REQUIRE(outcome(setIrqs(c, flags, kIrq, 0, 1, fds)) == "ok");
}

void raiseSoft(Client &c)
{
	write32(c, kCtl, kImsc, kIntSoft | kIntMatch);
	write32(c, kCtl, kIsr, kIntSoft);
}

ino_t inodeOf(int fd)
{
	struct stat st;
	REQUIRE(::fstat(fd, &st) == 0);
	return st.st_ino;
}

// The daemon serves this connection as sim:platform.
void requireServesPlatform(Client &c)
{
	auto info = c.deviceInfo();
	REQUIRE(outcome(info) == "ok");
	REQUIRE(info->numRegions == 2);
	REQUIRE(info->numIrqs == 1);
}

} // namespace

TEST_CASE("The sim:platform walk-through passes every step against the daemon", "[sim_platform]")
{
	Daemon d(simPlatform());
	Client c = d.connect();
	std::vector<client::StepReport> steps;
	client::SimPlatformOptions o;
	o.report = [&](const client::StepReport &s) { steps.push_back(s); };
	client::EduSummary sum = client::runSimPlatformSequence(c, o);
	for (const auto &s : steps)
		INFO((s.outcome == client::StepOutcome::Pass ? "PASS " : "NOT PASS ") << s.step << ": " << s.detail);
	std::string failed;
	for (const auto &s : steps)
		if (s.outcome != client::StepOutcome::Pass)
			failed += s.step + " (" + s.detail + ") ";
	INFO(failed);
	CHECK(sum.failed == 0);
	CHECK(sum.skipped == 0);
	CHECK(sum.passed == 16);
}

TEST_CASE("sim:platform with --no-mmap: the walk-through passes with the page trapped", "[sim_platform]")
{
	Daemon d(simPlatform({ "--no-mmap" }));
	Client c = d.connect();
	client::SimPlatformOptions o;
	client::EduSummary sum = client::runSimPlatformSequence(c, o);
	CHECK(sum.failed == 0);
	CHECK(sum.skipped == 2); // identify-mmap, counter-frame-mmap
}

TEST_CASE("sim:platform over vfio-user: a platform device, region 0 with an fd, region 1 trapped without one",
	  "[sim_platform]")
{
	Daemon d(simPlatform());
	Client c = d.connectNegotiated();
	auto info = c.deviceInfo();
	REQUIRE(outcome(info) == "ok");
	CHECK(info->flags == (VFIO_DEVICE_FLAGS_PLATFORM | VFIO_DEVICE_FLAGS_RESET));
	CHECK(info->numRegions == 2);
	CHECK(info->numIrqs == 1);

	// Full-size REGION_INFO requests, raw, so the fds in the replies are counted as sent.
	RegionInfoPayload p0{ 4096, 0, kPageRegion, 0, 0, 0 };
	Reply r0 = exchange(c, Command::DeviceGetRegionInfo, bytesOf(p0));
	REQUIRE(outcome(r0) == "ok");
	auto out0 = r0.as<RegionInfoPayload>();
	CHECK(out0.size == 0x1000);
	CHECK((out0.flags & VFIO_REGION_INFO_FLAG_MMAP));
	CHECK(r0.fds.size() == 1);

	RegionInfoPayload p1{ 4096, 0, kCtl, 0, 0, 0 };
	Reply r1 = exchange(c, Command::DeviceGetRegionInfo, bytesOf(p1));
	REQUIRE(outcome(r1) == "ok");
	auto out1 = r1.as<RegionInfoPayload>();
	CHECK(out1.size == 0x200);
	CHECK(out1.flags == (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE));
	CHECK(r1.fds.empty()); // a sub-page region is never offered for mmap

	RegionInfoPayload p2{ 4096, 0, 2, 0, 0, 0 };
	CHECK(outcome(exchange(c, Command::DeviceGetRegionInfo, bytesOf(p2))) == "EINVAL");

	auto irq = c.irqInfo(kIrq);
	REQUIRE(outcome(irq) == "ok");
	CHECK(irq->flags == (VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED));
	CHECK(irq->count == 1);
	CHECK(outcome(c.irqInfo(1)) == "EINVAL");
}

TEST_CASE("sim:platform level IRQ over vfio-user: automasked, UNMASK fires again while asserted, quiet when cleared",
	  "[sim_platform]")
{
	Daemon d(simPlatform());
	Client c = d.connectNegotiated();
	UniqueFd trigger = makeEventfd();
	assign(c, kEventfdTrigger, trigger.get());

	write32(c, kCtl, kImsc, kIntMatch);
	write32(c, kCtl, kControl, kEnable);
	write32(c, kCtl, kMatch, 10);
	write32(c, kCtl, kAdvance, 9);
	CHECK(takeEventfd(trigger.get()) == 0);
	write32(c, kCtl, kAdvance, 1);
	CHECK(takeEventfd(trigger.get()) == 1); // signalled before the write's reply
	CHECK(read32(c, kCtl, kCount) == 10);

	raiseSoft(c);
	CHECK(takeEventfd(trigger.get()) == 0); // masked

	REQUIRE(outcome(setIrqs(c, kNoneUnmask, kIrq, 0, 1)) == "ok");
	CHECK(takeEventfd(trigger.get()) == 1); // still asserted: a level fires again

	write32(c, kCtl, kIcr, kIntMatch | kIntSoft);
	REQUIRE(outcome(setIrqs(c, kNoneUnmask, kIrq, 0, 1)) == "ok");
	CHECK(takeEventfd(trigger.get()) == 0);
	raiseSoft(c);
	CHECK(takeEventfd(trigger.get()) == 1);
}

TEST_CASE("sim:platform UNMASK when not masked is accepted and signals nothing", "[sim_platform]")
{
	Daemon d(simPlatform());
	Client c = d.connectNegotiated();
	UniqueFd trigger = makeEventfd();
	assign(c, kEventfdTrigger, trigger.get());
	CHECK(outcome(setIrqs(c, kNoneUnmask, kIrq, 0, 1)) == "ok");
	const uint8_t yes[1] = { 1 };
	CHECK(outcome(setIrqs(c, VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_UNMASK, kIrq, 0, 1, {}, yes)) == "ok");
	CHECK(takeEventfd(trigger.get()) == 0);
	// And MASK then a cause: held back until UNMASK.
	CHECK(outcome(setIrqs(c, kNoneMask, kIrq, 0, 1)) == "ok");
	raiseSoft(c);
	CHECK(takeEventfd(trigger.get()) == 0);
	CHECK(outcome(setIrqs(c, kNoneUnmask, kIrq, 0, 1)) == "ok");
	CHECK(takeEventfd(trigger.get()) == 1);
}

TEST_CASE("sim:platform unmask eventfd over vfio-user: signalling it re-arms the IRQ, de-assigning stops that",
	  "[sim_platform]")
{
	Daemon d(simPlatform());
	Client c = d.connectNegotiated();
	UniqueFd trigger = makeEventfd();
	UniqueFd unmask = makeEventfd();
	assign(c, kEventfdTrigger, trigger.get());
	assign(c, kEventfdUnmask, unmask.get());

	raiseSoft(c);
	REQUIRE(takeEventfd(trigger.get()) == 1);
	REQUIRE(::eventfd_write(unmask.get(), 1) == 0);
	CHECK(waitEventfd(trigger.get())); // the line is still asserted

	write32(c, kCtl, kIcr, kIntSoft);
	REQUIRE(::eventfd_write(unmask.get(), 1) == 0);
	write32(c, kCtl, kIsr, kIntSoft); // before or after the daemon's unmask: signalled once unmasked
	CHECK(waitEventfd(trigger.get()));

	// De-assigned: the daemon stops reading it (it stays signalled), and only UNMASK re-arms.
	REQUIRE(outcome(setIrqs(c, kEventfdUnmask, kIrq, 0, 1)) == "ok");
	write32(c, kCtl, kIcr, kIntSoft);
	REQUIRE(::eventfd_write(unmask.get(), 1) == 0);
	UniqueFd unmask2 = makeEventfd();
	assign(c, kEventfdUnmask, unmask2.get());
	REQUIRE(::eventfd_write(unmask2.get(), 1) == 0);
	raiseSoft(c);
	CHECK(waitEventfd(trigger.get())); // unmask2 was acted on
	CHECK(takeEventfd(unmask.get()) == 1);
}

TEST_CASE("sim:platform software trigger over vfio-user signals once, then the IRQ is masked", "[sim_platform]")
{
	Daemon d(simPlatform());
	Client c = d.connectNegotiated();
	UniqueFd trigger = makeEventfd();
	assign(c, kEventfdTrigger, trigger.get());
	REQUIRE(outcome(setIrqs(c, kNoneTrigger, kIrq, 0, 1)) == "ok");
	CHECK(takeEventfd(trigger.get()) == 1);
	REQUIRE(outcome(setIrqs(c, kNoneTrigger, kIrq, 0, 1)) == "ok");
	CHECK(takeEventfd(trigger.get()) == 0);
	// count 0 disables the trigger: a new cause after UNMASK goes nowhere.
	REQUIRE(outcome(setIrqs(c, kNoneTrigger, kIrq, 0, 0)) == "ok");
	REQUIRE(outcome(setIrqs(c, kNoneUnmask, kIrq, 0, 1)) == "ok");
	raiseSoft(c);
	CHECK(takeEventfd(trigger.get()) == 0);
}

TEST_CASE("sim:platform refuses SET_IRQS with a bad index, start, count, fd or flags", "[sim_platform]")
{
	Daemon d(simPlatform());
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	int fds[] = { efd.get() };
	CHECK(outcome(setIrqs(c, kEventfdTrigger, 1, 0, 1, fds)) == "EINVAL");
	CHECK(outcome(setIrqs(c, kNoneUnmask, 1, 0, 1)) == "EINVAL");
	CHECK(outcome(setIrqs(c, kNoneUnmask, kIrq, 1, 1)) == "EINVAL");
	CHECK(outcome(setIrqs(c, kNoneUnmask, kIrq, 0, 2)) == "EINVAL");
	CHECK(outcome(setIrqs(c, kNoneUnmask, kIrq, 0, 0)) == "EINVAL");
	CHECK(outcome(setIrqs(c, kNoneTrigger, kIrq, 0xffffffff, 1)) == "EINVAL");
	CHECK(outcome(setIrqs(c, kNoneTrigger, kIrq, 0, 1, fds)) == "EINVAL");
	CHECK(outcome(setIrqs(c, kNoneTrigger | VFIO_IRQ_SET_ACTION_MASK, kIrq, 0, 1)) == "EINVAL");
	CHECK(outcome(setIrqs(c, VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER, kIrq, 0, 1)) == "EINVAL");
	{
		Pipe p = makePipe();
		int pipeFd[] = { p.readEnd.get() };
		CHECK(outcome(setIrqs(c, kEventfdUnmask, kIrq, 0, 1, pipeFd)) == "EINVAL");
		CHECK(outcome(setIrqs(c, kEventfdTrigger, kIrq, 0, 1, pipeFd)) == "EINVAL");
	}
	{
		UniqueFd e2 = makeEventfd();
		int two[] = { efd.get(), e2.get() };
		CHECK(outcome(setIrqs(c, kEventfdTrigger, kIrq, 0, 1, two)) == "EINVAL");
	}
	requireServesPlatform(c);
}

TEST_CASE("sim:platform trapped accesses: outside a region refused, narrow and unaligned ones split as "
	  "vfio-platform splits them", "[sim_platform]")
{
	Daemon d(simPlatform());
	Client c = d.connectNegotiated();
	write32(c, kCtl, kLoad, 0xa5a5a5a5);
	uint32_t v = 0;

	SECTION("beyond region 1")
	{
		CHECK(outcome(c.regionWrite(kCtl, 0x200, &v, 4)) == "EINVAL");
		CHECK(outcome(c.regionWrite(kCtl, 0x1fc, std::vector<uint8_t>(8).data(), 8)) == "EINVAL");
		CHECK(outcome(c.regionRead(kCtl, 0x1ff, &v, 2)) == "EINVAL");
		CHECK(outcome(c.regionRead(kCtl, 0xffffffffffffffffull, &v, 4)) == "EINVAL");
		CHECK(outcome(c.regionRead(2, 0, &v, 4)) == "EINVAL");
		CHECK(outcome(c.regionRead(kPageRegion, 0x1000, &v, 1)) == "EINVAL");
	}
	SECTION("narrow and unaligned")
	{
		uint16_t half = 0;
		CHECK(outcome(c.regionRead(kCtl, kLoad + 2, &half, 2)) == "ok");
		CHECK(half == 0xffff);
		uint8_t byte = 0;
		CHECK(outcome(c.regionWrite(kCtl, kLoad, &byte, 1)) == "ok");
		CHECK(outcome(c.regionRead(kCtl, kLoad + 1, &v, 4)) == "ok");
		CHECK(v == 0xffffffff);
		CHECK(read32(c, kCtl, kLoad) == 0xa5a5a5a5);
	}
	SECTION("the whole block at once, and more than max_data_xfer_size")
	{
		std::vector<uint32_t> all(0x80);
		CHECK(outcome(c.regionRead(kCtl, 0, all.data(), 0x200)) == "ok");
		CHECK(all[kCount / 4] == 0xa5a5a5a5);
		std::vector<uint8_t> big((1u << 20) + 4);
		CHECK(outcome(c.regionRead(kCtl, 0, big.data(), (1u << 20) + 1)) == "E2BIG");
	}
	SECTION("trapped writes to the read-only page are ignored")
	{
		uint32_t zero = 0;
		CHECK(outcome(c.regionWrite(kPageRegion, 0xfe0, &zero, 4)) == "ok");
		CHECK(read32(c, kPageRegion, 0xfe0) == 0x51);
	}
	requireServesPlatform(c);
}

TEST_CASE("sim:platform refuses DMA_MAP with ENOTSUP and keeps no mapping of the offered memory", "[sim_platform]")
{
	Daemon d(simPlatform());
	Client c = d.connectNegotiated();
	GuestMemory mem(2 * kPage, "sim-platform-dma");
	CHECK(outcome(c.dmaMap(mem.fd(), 0, 0x100000, 2 * kPage, kDmaRw)) == "ENOTSUP");
	CHECK(outcome(c.dmaMap(-1, 0, 0x100000, 2 * kPage, kDmaRw)) == "ENOTSUP");
	CHECK_FALSE(d.mapsFile(mem.mapsName()));
	CHECK(outcome(c.dmaUnmap(0x100000, 2 * kPage)) == "ENOENT");
	requireServesPlatform(c);
}

TEST_CASE("sim:platform client that disconnects with the interrupt asserted and masked leaves the next "
	  "one a clean device", "[sim_platform]")
{
	Daemon d(simPlatform());
	size_t steady;
	{
		Client c = d.connectNegotiated();
		requireServesPlatform(c);
		steady = d.openFds();
	}
	UniqueFd oldTrigger = makeEventfd();
	UniqueFd oldUnmask = makeEventfd();
	ino_t oldPage = 0;
	{
		Client c = d.connectNegotiated();
		auto page = c.regionInfo(kPageRegion);
		REQUIRE(outcome(page) == "ok");
		REQUIRE(page->fd);
		oldPage = inodeOf(page->fd.get());
		assign(c, kEventfdTrigger, oldTrigger.get());
		assign(c, kEventfdUnmask, oldUnmask.get());
		write32(c, kCtl, kControl, kEnable);
		write32(c, kCtl, kLoad, 1234);
		raiseSoft(c);
		REQUIRE(takeEventfd(oldTrigger.get()) == 1);
		// Gone without a word: asserted, masked, eventfds assigned.
	}

	Client c = d.connectNegotiated();
	CHECK(d.openFds() == steady); // the old eventfds are closed, nothing else was left
	CHECK(read32(c, kCtl, kCount) == 0);
	CHECK(read32(c, kCtl, kRis) == 0);
	CHECK(read32(c, kCtl, kControl) == 0);
	auto page = c.regionInfo(kPageRegion);
	REQUIRE(outcome(page) == "ok");
	REQUIRE(page->fd);
	CHECK(inodeOf(page->fd.get()) != oldPage);

	// Unmasked and unwired: a new trigger stays quiet until a new cause, which fires at once.
	UniqueFd trigger = makeEventfd();
	assign(c, kEventfdTrigger, trigger.get());
	CHECK(takeEventfd(trigger.get()) == 0);
	raiseSoft(c);
	CHECK(takeEventfd(trigger.get()) == 1);
	CHECK(takeEventfd(oldTrigger.get()) == 0);
	// The old unmask eventfd is no longer watched: its signal stays unread.
	REQUIRE(::eventfd_write(oldUnmask.get(), 1) == 0);
	UniqueFd unmask = makeEventfd();
	assign(c, kEventfdUnmask, unmask.get());
	write32(c, kCtl, kIcr, kIntSoft);
	REQUIRE(::eventfd_write(unmask.get(), 1) == 0);
	raiseSoft(c);
	CHECK(waitEventfd(trigger.get()));
	CHECK(takeEventfd(oldUnmask.get()) == 1);
}

TEST_CASE("sim:platform reset over vfio-user: registers to power-on values, the IDs and the eventfd kept",
	  "[sim_platform]")
{
	Daemon d(simPlatform());
	Client c = d.connectNegotiated();
	UniqueFd trigger = makeEventfd();
	assign(c, kEventfdTrigger, trigger.get());
	write32(c, kCtl, kControl, kEnable);
	write32(c, kCtl, kLoad, 99);
	REQUIRE(outcome(c.reset()) == "ok");
	CHECK(read32(c, kCtl, kCount) == 0);
	CHECK(read32(c, kCtl, kControl) == 0);
	CHECK(read32(c, kPageRegion, 0xffc) == 0xb1);
	raiseSoft(c);
	CHECK(takeEventfd(trigger.get()) == 1);
}
