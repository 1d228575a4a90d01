// SPDX-License-Identifier: Apache-2.0
// Unit tests for sim:platform through the Device interface: vfio-platform's view, timer registers, the level IRQ.
#include <catch2/catch.hpp>

#include <linux/vfio.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "device/sim_platform.h"
#include "vfio_user/protocol.h"

using namespace vfio_broker;
using namespace vfio_broker::device;

namespace {

// The register map, written down from the documentation rather than taken from the device
// header, so a wrong constant there cannot agree with itself.
constexpr uint32_t kPage = 0, kCtl = 1;
constexpr uint32_t kCount = 0x00, kMatch = 0x04, kLoad = 0x08, kControl = 0x0c, kImsc = 0x10;
constexpr uint32_t kRis = 0x14, kMis = 0x18, kIcr = 0x1c, kIsr = 0x20, kAdvance = 0x24;
constexpr uint32_t kEnable = 1, kIntMatch = 1, kIntSoft = 2;

// Bound for the waits on the watcher thread; the waits end as soon as the condition holds.
constexpr auto kWait = std::chrono::milliseconds(5000);

constexpr uint32_t kTrigger = VFIO_IRQ_SET_ACTION_TRIGGER;
constexpr uint32_t kMask = VFIO_IRQ_SET_ACTION_MASK;
constexpr uint32_t kUnmask = VFIO_IRQ_SET_ACTION_UNMASK;

UniqueFd makeEventfd()
{
	UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
	REQUIRE(fd);
	return fd;
}

// The eventfd's counter, consumed; 0 when it was not signalled. The device signals inside the
// call that raised the interrupt, so this needs no waiting.
uint64_t signals(const UniqueFd &fd)
{
	eventfd_t v = 0;
	if (::eventfd_read(fd.get(), &v) < 0)
		return 0;
	return v;
}

// The counter without consuming it.
bool pending(const UniqueFd &fd)
{
	pollfd p{ fd.get(), POLLIN, 0 };
	return ::poll(&p, 1, 0) == 1;
}

// Wait (bounded) for a signal from the watcher thread.
bool waitSignal(const UniqueFd &fd)
{
	pollfd p{ fd.get(), POLLIN, 0 };
	return ::poll(&p, 1, static_cast<int>(kWait.count())) == 1 && signals(fd) != 0;
}

ino_t inodeOf(int fd)
{
	struct stat st;
	REQUIRE(::fstat(fd, &st) == 0);
	return st.st_ino;
}

size_t entries(const char *dir)
{
	size_t n = 0;
	DIR *d = ::opendir(dir);
	REQUIRE(d);
	while (const dirent *e = ::readdir(d))
		n += e->d_name[0] != '.';
	::closedir(d);
	return n;
}

size_t openFds()
{
	return entries("/proc/self/fd");
}

size_t threads()
{
	return entries("/proc/self/task");
}

UniqueFd dupFd(const UniqueFd &fd)
{
	UniqueFd d(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
	REQUIRE(d);
	return d;
}

struct Sim {
	std::unique_ptr<SimPlatform> dev;

	Sim()
	{
		auto r = SimPlatform::create();
		REQUIRE(r.ok());
		dev = std::move(r).value();
	}

	uint32_t read(uint32_t off)
	{
		uint32_t v = 0;
		REQUIRE(dev->regionRead(kCtl, off, &v, 4).ok());
		return v;
	}
	void write(uint32_t off, uint32_t v) { REQUIRE(dev->regionWrite(kCtl, off, &v, 4).ok()); }
	uint32_t pageRead(uint32_t off)
	{
		uint32_t v = 0;
		REQUIRE(dev->regionRead(kPage, off, &v, 4).ok());
		return v;
	}

	Status set(uint32_t flags, uint32_t start = 0, uint32_t count = 1, std::vector<UniqueFd> fds = {},
		   std::vector<uint8_t> bools = {}, uint32_t index = 0)
	{
		IrqSetRequest req;
		req.flags = flags;
		req.index = index;
		req.start = start;
		req.count = count;
		req.bools = bools;
		req.eventfds = std::move(fds);
		return dev->setIrqs(req);
	}
	// A dup of `fd` as the eventfd for `action`; the test keeps its own to watch or signal.
	Status assign(uint32_t action, const UniqueFd &fd)
	{
		std::vector<UniqueFd> fds;
		fds.push_back(dupFd(fd));
		return set(VFIO_IRQ_SET_DATA_EVENTFD | action, 0, 1, std::move(fds));
	}
	Status deassign(uint32_t action) { return set(VFIO_IRQ_SET_DATA_EVENTFD | action); }
	Status none(uint32_t action) { return set(VFIO_IRQ_SET_DATA_NONE | action); }
	Status boolean(uint32_t action, uint8_t v) { return set(VFIO_IRQ_SET_DATA_BOOL | action, 0, 1, {}, { v }); }

	// Enable the soft interrupt in IMSC and raise it through ISR.
	void raiseSoft()
	{
		write(kImsc, read(kImsc) | kIntSoft);
		write(kIsr, kIntSoft);
	}
};

// A mapping of region 0 through the fd the device hands out, as a client would map it.
struct PageMap {
	uint32_t *words = nullptr;
	explicit PageMap(int fd)
	{
		void *p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		REQUIRE(p != MAP_FAILED);
		words = static_cast<uint32_t *>(p);
	}
	~PageMap() { ::munmap(words, 4096); }
	uint32_t at(uint32_t off) const { return __atomic_load_n(&words[off / 4], __ATOMIC_ACQUIRE); }
};

} // namespace

// ---- What vfio-platform would show

TEST_CASE("sim:platform is a resettable platform device with 2 regions and 1 IRQ index", "[sim_platform]")
{
	Sim s;
	DeviceInfo info = s.dev->info();
	CHECK(info.flags == (VFIO_DEVICE_FLAGS_PLATFORM | VFIO_DEVICE_FLAGS_RESET));
	CHECK(info.numRegions == 2);
	CHECK(info.numIrqs == 1);
	CHECK(s.dev->name() == "sim:platform");
}

TEST_CASE("sim:platform region 0 is a 4 KiB mmap-able page with an fd, region 1 a trapped 0x200-byte block",
	  "[sim_platform]")
{
	Sim s;
	auto r0 = s.dev->regionInfo(kPage);
	REQUIRE(r0.ok());
	CHECK(r0->flags == (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP));
	CHECK(r0->size == 0x1000);
	CHECK(r0->mmapOffset == 0);
	CHECK(r0->fd >= 0);
	CHECK(r0->caps.empty());

	auto r1 = s.dev->regionInfo(kCtl);
	REQUIRE(r1.ok());
	CHECK(r1->flags == (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE));
	CHECK(r1->size == 0x200);
	CHECK(r1->fd == -1);

	auto r2 = s.dev->regionInfo(2);
	REQUIRE_FALSE(r2.ok());
	CHECK(r2.error().code == EINVAL);
}

TEST_CASE("sim:platform IRQ index 0 is one level interrupt: eventfd, maskable, automasked", "[sim_platform]")
{
	Sim s;
	auto q = s.dev->irqInfo(0);
	REQUIRE(q.ok());
	CHECK(q->flags == (VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED));
	CHECK(q->count == 1);
	auto q1 = s.dev->irqInfo(1);
	REQUIRE_FALSE(q1.ok());
	CHECK(q1.error().code == EINVAL);
}

TEST_CASE("sim:platform is not a DMA master: no translation, and dmaMap is refused with ENOTSUP", "[sim_platform]")
{
	Sim s;
	CHECK_FALSE(s.dev->iommuInfo().translates);
	uint8_t buf[4096];
	Status m = s.dev->dmaMap(DmaRange{ 0x100000, 4096, buf, vfio_user::kDmaMapFlagRead });
	REQUIRE_FALSE(m.ok());
	CHECK(m.error().code == ENOTSUP);
	CHECK_THAT(m.error().message, Catch::Contains("not a DMA master"));
	Status u = s.dev->dmaUnmap(DmaRange{ 0x100000, 4096, buf, vfio_user::kDmaMapFlagRead });
	CHECK_FALSE(u.ok());
}

// ---- Region 0: the page the client maps

TEST_CASE("sim:platform page carries PrimeCell-style IDs 0x00156f51 / 0xb105f00d, one byte per word",
	  "[sim_platform]")
{
	Sim s;
	const uint8_t periph[4] = { 0x51, 0x6f, 0x15, 0x00 };
	const uint8_t cell[4] = { 0x0d, 0xf0, 0x05, 0xb1 };
	auto r0 = s.dev->regionInfo(kPage);
	REQUIRE(r0.ok());
	PageMap map(r0->fd);
	for (uint32_t i = 0; i < 4; i++) {
		CHECK(s.pageRead(0xfe0 + 4 * i) == periph[i]);
		CHECK(s.pageRead(0xff0 + 4 * i) == cell[i]);
		CHECK(map.at(0xfe0 + 4 * i) == periph[i]);
		CHECK(map.at(0xff0 + 4 * i) == cell[i]);
	}
}

TEST_CASE("sim:platform page is read-only to trapped writes and its memfd cannot be resized", "[sim_platform]")
{
	Sim s;
	uint32_t v = 0xdeadbeef;
	REQUIRE(s.dev->regionWrite(kPage, 0xfe0, &v, 4).ok());
	CHECK(s.pageRead(0xfe0) == 0x51);
	auto r0 = s.dev->regionInfo(kPage);
	REQUIRE(r0.ok());
	CHECK(::ftruncate(r0->fd, 0) < 0);
	CHECK(::ftruncate(r0->fd, 8192) < 0);
}

TEST_CASE("sim:platform page mirrors COUNT, RIS and MIS where the client's mapping sees them", "[sim_platform]")
{
	Sim s;
	auto r0 = s.dev->regionInfo(kPage);
	REQUIRE(r0.ok());
	PageMap map(r0->fd);
	s.write(kLoad, 41);
	CHECK(map.at(0x000) == 41);
	s.write(kImsc, kIntSoft);
	s.write(kIsr, kIntSoft | kIntMatch);
	CHECK(map.at(0x004) == (kIntSoft | kIntMatch));
	CHECK(map.at(0x008) == kIntSoft);
	CHECK(s.pageRead(0x000) == 41);
}

TEST_CASE("sim:platform trapped accesses outside a region are refused", "[sim_platform]")
{
	Sim s;
	uint32_t v = 0;
	CHECK(s.dev->regionRead(kCtl, 0x200, &v, 4).error().code == EINVAL);
	CHECK(s.dev->regionRead(kCtl, 0x1fe, &v, 4).error().code == EINVAL);
	CHECK(s.dev->regionWrite(kCtl, 0x200, &v, 4).error().code == EINVAL);
	CHECK(s.dev->regionRead(kPage, 0x1000, &v, 1).error().code == EINVAL);
	CHECK(s.dev->regionRead(2, 0, &v, 4).error().code == EINVAL);
}

// ---- Region 1: the timer registers

TEST_CASE("sim:platform registers power on at zero and keep what is written", "[sim_platform]")
{
	Sim s;
	for (uint32_t off : { kCount, kMatch, kLoad, kControl, kImsc, kRis, kMis })
		CHECK(s.read(off) == 0);
	s.write(kMatch, 0x12345678);
	s.write(kLoad, 7);
	s.write(kControl, 0xffffffff);
	s.write(kImsc, 0xffffffff);
	CHECK(s.read(kMatch) == 0x12345678);
	CHECK(s.read(kLoad) == 7);
	CHECK(s.read(kCount) == 7);
	CHECK(s.read(kControl) == kEnable); // undefined bits read as zero
	CHECK(s.read(kImsc) == (kIntMatch | kIntSoft));
}

TEST_CASE("sim:platform write-only and reserved registers read as zero and ignore writes", "[sim_platform]")
{
	Sim s;
	s.write(kIcr, 0xffffffff);
	s.write(kAdvance, 5);
	s.write(0x100, 0xffffffff);
	CHECK(s.read(kIcr) == 0);
	CHECK(s.read(kIsr) == 0);
	CHECK(s.read(kAdvance) == 0);
	CHECK(s.read(0x100) == 0);
	CHECK(s.read(0x1fc) == 0);
	CHECK(s.read(kCount) == 0); // ADVANCE does nothing while the counter is disabled
}

TEST_CASE("sim:platform splits narrow and unaligned accesses like vfio-platform: only 32-bit ones reach registers",
	  "[sim_platform]")
{
	Sim s;
	s.write(kLoad, 0x11223344);
	uint16_t half = 0;
	REQUIRE(s.dev->regionRead(kCtl, kLoad, &half, 2).ok());
	CHECK(half == 0xffff);
	uint8_t byte = 0x55;
	REQUIRE(s.dev->regionWrite(kCtl, kLoad, &byte, 1).ok());
	CHECK(s.read(kLoad) == 0x11223344);
	// 8 bytes at LOAD: two 32-bit reads, LOAD then CONTROL.
	uint32_t two[2] = {};
	REQUIRE(s.dev->regionRead(kCtl, kLoad, two, 8).ok());
	CHECK(two[0] == 0x11223344);
	CHECK(two[1] == 0);
	// Unaligned 4 bytes at 0x9: 1 + 2 + 1 bytes, none a register access.
	uint32_t odd = 0;
	REQUIRE(s.dev->regionRead(kCtl, 0x9, &odd, 4).ok());
	CHECK(odd == 0xffffffff);
	// The whole block in one read: every register at its offset.
	std::vector<uint32_t> all(0x80);
	REQUIRE(s.dev->regionRead(kCtl, 0, all.data(), 0x200).ok());
	CHECK(all[kLoad / 4] == 0x11223344);
	CHECK(all[kCount / 4] == 0x11223344);
}

TEST_CASE("sim:platform ADVANCE moves COUNT only while ENABLE is set", "[sim_platform]")
{
	Sim s;
	s.write(kLoad, 100);
	s.write(kAdvance, 10);
	CHECK(s.read(kCount) == 100);
	s.write(kControl, kEnable);
	s.write(kAdvance, 10);
	CHECK(s.read(kCount) == 110);
	s.write(kAdvance, 0xffffffff); // wraps modulo 2^32
	CHECK(s.read(kCount) == 109);
}

TEST_CASE("sim:platform MATCH fires when COUNT becomes equal to it, however that happens", "[sim_platform]")
{
	Sim s;
	s.write(kControl, kEnable);

	SECTION("MATCH written equal to COUNT")
	{
		s.write(kLoad, 50);
		s.write(kMatch, 50);
		CHECK(s.read(kRis) == kIntMatch);
	}
	SECTION("LOAD written equal to MATCH")
	{
		s.write(kMatch, 9);
		CHECK(s.read(kRis) == 0);
		s.write(kLoad, 9);
		CHECK(s.read(kRis) == kIntMatch);
	}
	SECTION("ADVANCE landing exactly on MATCH")
	{
		s.write(kMatch, 3);
		s.write(kAdvance, 2);
		CHECK(s.read(kRis) == 0);
		s.write(kAdvance, 1);
		CHECK(s.read(kRis) == kIntMatch);
	}
	SECTION("ADVANCE stepping over MATCH, across the wrap")
	{
		s.write(kLoad, 0xfffffff0);
		s.write(kMatch, 0x10);
		s.write(kAdvance, 0x1f);
		CHECK(s.read(kRis) == 0);
		s.write(kAdvance, 0x10);
		CHECK(s.read(kRis) == kIntMatch);
		CHECK(s.read(kCount) == 0x1f);
	}
	SECTION("not while the counter is disabled")
	{
		s.write(kControl, 0);
		s.write(kLoad, 5);
		s.write(kMatch, 5);
		CHECK(s.read(kRis) == 0);
	}
}

TEST_CASE("sim:platform MIS is RIS masked by IMSC; ICR clears and ISR sets RIS bits", "[sim_platform]")
{
	Sim s;
	s.write(kIsr, 0xffffffff);
	CHECK(s.read(kRis) == (kIntMatch | kIntSoft)); // only defined causes
	CHECK(s.read(kMis) == 0);
	s.write(kImsc, kIntSoft);
	CHECK(s.read(kMis) == kIntSoft);
	CHECK(s.dev->lineAsserted());
	s.write(kIcr, kIntSoft);
	CHECK(s.read(kRis) == kIntMatch);
	CHECK(s.read(kMis) == 0);
	CHECK_FALSE(s.dev->lineAsserted());
}

// ---- The level interrupt

TEST_CASE("sim:platform signals nothing until a trigger eventfd is assigned", "[sim_platform]")
{
	Sim s;
	s.raiseSoft();
	CHECK(s.dev->lineAsserted());
	CHECK_FALSE(s.dev->irqMasked());
	CHECK(s.dev->triggersSignalled() == 0);
}

TEST_CASE("sim:platform assigning a trigger while the line is asserted fires at once and automasks",
	  "[sim_platform]")
{
	Sim s;
	s.raiseSoft();
	UniqueFd trigger = makeEventfd();
	REQUIRE(s.assign(kTrigger, trigger).ok());
	CHECK(signals(trigger) == 1);
	CHECK(s.dev->irqMasked());
}

TEST_CASE("sim:platform level IRQ: one signal, automasked while asserted, again at UNMASK while still asserted",
	  "[sim_platform]")
{
	Sim s;
	UniqueFd trigger = makeEventfd();
	REQUIRE(s.assign(kTrigger, trigger).ok());
	CHECK(signals(trigger) == 0);

	s.raiseSoft();
	CHECK(signals(trigger) == 1);
	CHECK(s.dev->irqMasked());

	// A second cause while masked: the line was already asserted, nothing new.
	s.write(kImsc, kIntSoft | kIntMatch);
	s.write(kIsr, kIntMatch);
	CHECK(signals(trigger) == 0);

	// Unmask with the cause still there: a level fires again at once, and masks again.
	REQUIRE(s.none(kUnmask).ok());
	CHECK(signals(trigger) == 1);
	CHECK(s.dev->irqMasked());

	// Clear the cause, unmask: quiet, unmasked; the next cause fires.
	s.write(kIcr, kIntSoft | kIntMatch);
	REQUIRE(s.none(kUnmask).ok());
	CHECK(signals(trigger) == 0);
	CHECK_FALSE(s.dev->irqMasked());
	s.write(kIsr, kIntSoft);
	CHECK(signals(trigger) == 1);
	CHECK(s.dev->triggersSignalled() == 3);
}

TEST_CASE("sim:platform UNMASK of an unmasked IRQ is accepted and signals nothing", "[sim_platform]")
{
	Sim s;
	UniqueFd trigger = makeEventfd();
	REQUIRE(s.assign(kTrigger, trigger).ok());
	REQUIRE(s.none(kUnmask).ok());
	CHECK(signals(trigger) == 0);
	CHECK_FALSE(s.dev->irqMasked());
}

TEST_CASE("sim:platform MASK holds a cause back until UNMASK; DATA_BOOL false does nothing", "[sim_platform]")
{
	Sim s;
	UniqueFd trigger = makeEventfd();
	REQUIRE(s.assign(kTrigger, trigger).ok());
	REQUIRE(s.boolean(kMask, 0).ok());
	CHECK_FALSE(s.dev->irqMasked());
	REQUIRE(s.boolean(kMask, 1).ok());
	CHECK(s.dev->irqMasked());
	s.raiseSoft();
	CHECK(signals(trigger) == 0);
	REQUIRE(s.boolean(kUnmask, 0).ok());
	CHECK(signals(trigger) == 0);
	REQUIRE(s.boolean(kUnmask, 1).ok());
	CHECK(signals(trigger) == 1);
}

TEST_CASE("sim:platform software trigger runs the automasked handler: once, then nothing while masked",
	  "[sim_platform]")
{
	Sim s;
	SECTION("without a trigger eventfd it does nothing")
	{
		REQUIRE(s.none(kTrigger).ok());
		CHECK_FALSE(s.dev->irqMasked());
	}
	SECTION("DATA_NONE")
	{
		UniqueFd trigger = makeEventfd();
		REQUIRE(s.assign(kTrigger, trigger).ok());
		REQUIRE(s.none(kTrigger).ok());
		CHECK(signals(trigger) == 1);
		CHECK(s.dev->irqMasked());
		REQUIRE(s.none(kTrigger).ok());
		CHECK(signals(trigger) == 0);
		// Nothing on the line: unmask is quiet.
		REQUIRE(s.none(kUnmask).ok());
		CHECK(signals(trigger) == 0);
	}
	SECTION("DATA_BOOL")
	{
		UniqueFd trigger = makeEventfd();
		REQUIRE(s.assign(kTrigger, trigger).ok());
		REQUIRE(s.boolean(kTrigger, 0).ok());
		CHECK(signals(trigger) == 0);
		REQUIRE(s.boolean(kTrigger, 1).ok());
		CHECK(signals(trigger) == 1);
	}
}

TEST_CASE("sim:platform de-assigning the trigger stops signals; the mask state survives a new trigger",
	  "[sim_platform]")
{
	Sim s;
	UniqueFd first = makeEventfd();
	REQUIRE(s.assign(kTrigger, first).ok());

	SECTION("DATA_EVENTFD without fds")
	{
		REQUIRE(s.deassign(kTrigger).ok());
	}
	SECTION("DATA_NONE with count 0")
	{
		REQUIRE(s.set(VFIO_IRQ_SET_DATA_NONE | kTrigger, 0, 0).ok());
	}
	s.raiseSoft();
	CHECK(signals(first) == 0);
	CHECK_FALSE(s.dev->irqMasked());

	// Masked before the new trigger: still masked after it, so the asserted line waits.
	REQUIRE(s.none(kMask).ok());
	UniqueFd second = makeEventfd();
	REQUIRE(s.assign(kTrigger, second).ok());
	CHECK(signals(second) == 0);
	REQUIRE(s.none(kUnmask).ok());
	CHECK(signals(second) == 1);
	CHECK(signals(first) == 0);
}

TEST_CASE("sim:platform refuses SET_IRQS it cannot carry out", "[sim_platform]")
{
	Sim s;
	UniqueFd efd = makeEventfd();
	CHECK(s.set(VFIO_IRQ_SET_DATA_NONE | kTrigger, 0, 1, {}, {}, 1).error().code == EINVAL); // index
	CHECK(s.set(VFIO_IRQ_SET_DATA_NONE | kUnmask, 1, 1).error().code == EINVAL);             // start
	CHECK(s.set(VFIO_IRQ_SET_DATA_NONE | kUnmask, 0, 2).error().code == EINVAL);             // count
	CHECK(s.set(VFIO_IRQ_SET_DATA_NONE | kUnmask, 0, 0).error().code == EINVAL);             // count 0 form
	CHECK(s.set(VFIO_IRQ_SET_DATA_BOOL | kUnmask, 0, 1).error().code == EINVAL);             // no bool
	{
		std::vector<UniqueFd> fds;
		fds.push_back(dupFd(efd));
		CHECK(s.set(VFIO_IRQ_SET_DATA_NONE | kTrigger, 0, 1, std::move(fds)).error().code == EINVAL);
	}
	{
		int p[2];
		REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
		UniqueFd r(p[0]), w(p[1]);
		std::vector<UniqueFd> fds;
		fds.push_back(std::move(r));
		CHECK(s.set(VFIO_IRQ_SET_DATA_EVENTFD | kUnmask, 0, 1, std::move(fds)).error().code == EINVAL);
	}
}

// ---- Unmask and mask eventfds (VFIO's virqfd)

TEST_CASE("sim:platform unmask eventfd: a signal re-arms the IRQ, which fires again while the line is asserted",
	  "[sim_platform]")
{
	Sim s;
	UniqueFd trigger = makeEventfd();
	UniqueFd unmask = makeEventfd();
	REQUIRE(s.assign(kTrigger, trigger).ok());
	REQUIRE(s.assign(kUnmask, unmask).ok());

	s.raiseSoft();
	REQUIRE(signals(trigger) == 1);
	REQUIRE(s.dev->irqMasked());

	// Still asserted: the watcher unmasks, the level fires again and masks.
	REQUIRE(::eventfd_write(unmask.get(), 1) == 0);
	CHECK(waitSignal(trigger));
	CHECK(s.dev->waitEventfdActions(1, kWait));
	CHECK(s.dev->irqMasked());

	// Cleared: the watcher unmasks and nothing fires.
	s.write(kIcr, kIntSoft);
	REQUIRE(::eventfd_write(unmask.get(), 1) == 0);
	REQUIRE(s.dev->waitEventfdActions(2, kWait));
	CHECK_FALSE(s.dev->irqMasked());
	CHECK(signals(trigger) == 0);
	CHECK_FALSE(pending(unmask)); // the device consumed both signals

	s.write(kIsr, kIntSoft);
	CHECK(signals(trigger) == 1);
}

TEST_CASE("sim:platform unmask eventfd already signalled when assigned acts at once", "[sim_platform]")
{
	Sim s;
	UniqueFd trigger = makeEventfd();
	REQUIRE(s.assign(kTrigger, trigger).ok());
	REQUIRE(s.none(kMask).ok());
	s.raiseSoft();
	CHECK(signals(trigger) == 0);

	UniqueFd unmask = makeEventfd();
	REQUIRE(::eventfd_write(unmask.get(), 1) == 0);
	REQUIRE(s.assign(kUnmask, unmask).ok());
	CHECK(waitSignal(trigger));
}

TEST_CASE("sim:platform de-assigned unmask eventfd is no longer watched", "[sim_platform]")
{
	Sim s;
	UniqueFd old = makeEventfd();
	REQUIRE(s.assign(kUnmask, old).ok());

	SECTION("de-assigned with DATA_EVENTFD and no fd")
	{
		REQUIRE(s.deassign(kUnmask).ok());
	}
	SECTION("replaced by another eventfd")
	{
		UniqueFd other = makeEventfd();
		REQUIRE(s.assign(kUnmask, other).ok());
	}
	SECTION("dropped by quiesce")
	{
		REQUIRE(s.dev->quiesce().ok());
	}
	REQUIRE(::eventfd_write(old.get(), 1) == 0);
	// A fresh unmask eventfd that the watcher does act on: once its signal is handled, the old
	// one's signal would have been seen too (both were readable in the same poll).
	UniqueFd fresh = makeEventfd();
	REQUIRE(s.assign(kUnmask, fresh).ok());
	REQUIRE(::eventfd_write(fresh.get(), 1) == 0);
	REQUIRE(s.dev->waitEventfdActions(1, kWait));
	CHECK(signals(old) == 1); // still there: nobody read it
	CHECK_FALSE(pending(fresh));
}

TEST_CASE("sim:platform mask eventfd: a signal masks the IRQ", "[sim_platform]")
{
	Sim s;
	UniqueFd trigger = makeEventfd();
	UniqueFd mask = makeEventfd();
	REQUIRE(s.assign(kTrigger, trigger).ok());
	REQUIRE(s.assign(kMask, mask).ok());
	REQUIRE(::eventfd_write(mask.get(), 1) == 0);
	REQUIRE(s.dev->waitEventfdActions(1, kWait));
	CHECK(s.dev->irqMasked());
	s.raiseSoft();
	CHECK(signals(trigger) == 0);
	REQUIRE(s.none(kUnmask).ok());
	CHECK(signals(trigger) == 1);
}

TEST_CASE("sim:platform swapping unmask eventfds while another thread signals them neither hangs nor leaks",
	  "[sim_platform]")
{
	size_t before = openFds();
	{
		Sim s;
		UniqueFd trigger = makeEventfd();
		REQUIRE(s.assign(kTrigger, trigger).ok());
		std::vector<UniqueFd> fds;
		for (int i = 0; i < 4; i++)
			fds.push_back(makeEventfd());
		std::atomic<bool> done{ false };
		std::thread signaller([&] {
			while (!done.load())
				for (const auto &fd : fds)
					(void)::eventfd_write(fd.get(), 1);
		});
		for (int round = 0; round < 200; round++) {
			REQUIRE(s.assign(kUnmask, fds[round % fds.size()]).ok());
			s.raiseSoft();
			s.write(kIcr, kIntSoft);
		}
		done = true;
		signaller.join();
		REQUIRE(s.deassign(kUnmask).ok());
	}
	CHECK(openFds() == before);
}

// ---- Reset and quiesce

TEST_CASE("sim:platform reset restores registers and the page but keeps the interrupt wiring", "[sim_platform]")
{
	Sim s;
	UniqueFd trigger = makeEventfd();
	REQUIRE(s.assign(kTrigger, trigger).ok());
	auto r0 = s.dev->regionInfo(kPage);
	REQUIRE(r0.ok());
	PageMap map(r0->fd);
	map.words[0xfe0 / 4] = 0; // a client scribbles on its view of the IDs
	s.write(kControl, kEnable);
	s.write(kLoad, 77);
	s.raiseSoft();
	REQUIRE(signals(trigger) == 1);

	REQUIRE(s.dev->reset().ok());
	for (uint32_t off : { kCount, kMatch, kLoad, kControl, kImsc, kRis, kMis })
		CHECK(s.read(off) == 0);
	CHECK(map.at(0xfe0) == 0x51);
	CHECK(map.at(0x000) == 0);
	CHECK(s.dev->irqMasked()); // VFIO's mask state is not the device's to reset

	REQUIRE(s.none(kUnmask).ok());
	s.raiseSoft();
	CHECK(signals(trigger) == 1); // the same eventfd still delivers
}

TEST_CASE("sim:platform quiesce drops the eventfds, unmasks, resets and hands out a fresh page", "[sim_platform]")
{
	Sim s;
	UniqueFd trigger = makeEventfd();
	REQUIRE(s.assign(kTrigger, trigger).ok());
	s.raiseSoft();
	REQUIRE(signals(trigger) == 1);
	auto before = s.dev->regionInfo(kPage);
	REQUIRE(before.ok());
	ino_t oldPage = inodeOf(before->fd);

	REQUIRE(s.dev->quiesce().ok());
	CHECK_FALSE(s.dev->irqMasked());
	CHECK(s.read(kRis) == 0);
	auto after = s.dev->regionInfo(kPage);
	REQUIRE(after.ok());
	CHECK(inodeOf(after->fd) != oldPage);
	CHECK(s.pageRead(0xff0) == 0x0d);

	s.raiseSoft();
	CHECK(signals(trigger) == 0);
	CHECK(s.dev->triggersSignalled() == 1);
}

TEST_CASE("sim:platform create and destroy leave no fd and no thread behind", "[sim_platform]")
{
	size_t before = openFds();
	size_t threadsBefore = threads();
	for (int i = 0; i < 8; i++) {
		Sim s;
		UniqueFd trigger = makeEventfd();
		UniqueFd unmask = makeEventfd();
		UniqueFd mask = makeEventfd();
		REQUIRE(s.assign(kTrigger, trigger).ok());
		REQUIRE(s.assign(kUnmask, unmask).ok());
		REQUIRE(s.assign(kMask, mask).ok());
		CHECK(threads() == threadsBefore + 1); // the watcher
	}
	CHECK(openFds() == before);
	CHECK(threads() == threadsBefore);
}
