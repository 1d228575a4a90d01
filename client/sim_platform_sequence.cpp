// SPDX-License-Identifier: Apache-2.0
// sim:platform as a VMM drives a platform device: device/region/IRQ info, the PrimeCell-style IDs
// through the mmap'd page, trapped control registers, the level interrupt (automasked, re-armed by
// UNMASK, and by an unmask eventfd as KVM's resample fd would), a refused DMA_MAP, and reset.
#include "client/sim_platform_sequence.h"

#include <linux/vfio.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

namespace vfio_broker::client {

namespace {

// The register map (README "sim:platform"), written down here, not taken from the device.
constexpr uint32_t kPage = 0, kControl = 1, kIrq = 0;
constexpr uint64_t kPageSize = 0x1000, kControlSize = 0x200;
constexpr uint32_t kPageCount = 0x000, kPageRis = 0x004;
constexpr uint32_t kPeriphId0 = 0xfe0, kCellId0 = 0xff0;
constexpr uint32_t kPeriphId = 0x00156f51, kCellId = 0xb105f00d;
constexpr uint32_t kRegCount = 0x000, kRegMatch = 0x004, kRegLoad = 0x008, kRegControl = 0x00c;
constexpr uint32_t kRegImsc = 0x010, kRegRis = 0x014, kRegMis = 0x018, kRegIcr = 0x01c;
constexpr uint32_t kRegIsr = 0x020, kRegAdvance = 0x024;
constexpr uint32_t kEnable = 1, kIntMatch = 1, kIntSoft = 2;

// Non-blocking look: the counter, 0 when not signalled. The daemon signals before it answers
// the request that caused the interrupt, so after that answer this is definitive.
uint64_t takeEventfd(int fd)
{
	uint64_t v = 0;
	return ::read(fd, &v, sizeof(v)) == sizeof(v) ? v : 0;
}

// Control registers through trapped accesses; failures read as all ones and are remembered.
class Regs
{
public:
	explicit Regs(Client &c) : c_(c) {}
	uint32_t read(uint32_t off)
	{
		auto v = c_.read32(kControl, off);
		if (!v) {
			noteError(v.error().message);
			return 0xffffffff;
		}
		return *v;
	}
	void write(uint32_t off, uint32_t v)
	{
		if (Status s = c_.write32(kControl, off, v); !s)
			noteError(s.error().message);
	}
	// The first error since the last call, or "" when every access worked.
	std::string takeError() { return std::exchange(error_, std::string()); }

private:
	void noteError(const std::string &e)
	{
		if (error_.empty())
			error_ = e;
	}
	Client &c_;
	std::string error_;
};

uint32_t pageWord(const MappedRegion &m, uint32_t off)
{
	return *reinterpret_cast<volatile const uint32_t *>(m.at(off, 4));
}

// PrimeCell ID words carry one byte each (bits 7:0); assemble the four into one value.
template<typename Read>
uint32_t assembleId(Read read, uint32_t base)
{
	uint32_t id = 0;
	for (uint32_t i = 0; i < 4; i++)
		id |= (read(base + 4 * i) & 0xff) << (8 * i);
	return id;
}

} // namespace

EduSummary runSimPlatformSequence(Client &c, const SimPlatformOptions &o)
{
	StepReporter r(o.report);

	auto ver = c.negotiate();
	if (!ver) {
		r.fail("version", ver.error().message);
		return r.summary;
	}
	r.pass("version", strFormat("negotiated vfio-user %u.%u", ver->major, ver->minor));

	auto info = c.deviceInfo();
	if (!info || !(info->flags & VFIO_DEVICE_FLAGS_PLATFORM) || info->numRegions != 2 || info->numIrqs != 1) {
		r.fail("device-info", info ? strFormat("flags %s, %u regions, %u IRQ indexes: not sim:platform's "
						       "platform device with 2 regions and 1 IRQ",
						       hex(info->flags).c_str(), info->numRegions, info->numIrqs)
					   : info.error().message);
		return r.summary;
	}
	r.pass("device-info", strFormat("platform device (flags %s), 2 regions, 1 IRQ index, reset %s",
					hex(info->flags).c_str(),
					info->flags & VFIO_DEVICE_FLAGS_RESET ? "offered" : "not offered"));

	auto page = c.regionInfo(kPage);
	auto ctl = c.regionInfo(kControl);
	if (!page || !ctl) {
		r.fail("region-info", (!page ? page.error() : ctl.error()).message);
		return r.summary;
	}
	const uint32_t rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
	if (page->size != kPageSize || (page->flags & rw) != rw || ctl->size != kControlSize ||
	    (ctl->flags & rw) != rw || (ctl->flags & VFIO_REGION_INFO_FLAG_MMAP) || ctl->fd) {
		r.fail("region-info", strFormat("region 0: %s bytes flags %s; region 1: %s bytes flags %s",
						hex(page->size).c_str(), hex(page->flags).c_str(),
						hex(ctl->size).c_str(), hex(ctl->flags).c_str()));
		return r.summary;
	}
	bool pageMappable = (page->flags & VFIO_REGION_INFO_FLAG_MMAP) && page->fd;
	r.pass("region-info", strFormat("region 0: 4 KiB register page, %s; region 1: 0x200 bytes of control "
					"registers, trapped (sub-page, no mmap offered)",
					pageMappable ? "mmap (fd received)" : "trapped (the server kept the fd)"));

	auto irq = c.irqInfo(kIrq);
	const uint32_t levelFlags = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
	if (!irq || irq->count != 1 || (irq->flags & levelFlags) != levelFlags) {
		r.fail("irq-info", irq ? strFormat("count %u flags %s", irq->count, hex(irq->flags).c_str())
				       : irq.error().message);
		return r.summary;
	}
	r.pass("irq-info", "IRQ index 0: one interrupt, eventfd, maskable, automasked (a level interrupt)");

	MappedRegion map;
	if (pageMappable) {
		auto m = c.mapRegion(*page);
		if (!m || !m->at(0, kPageSize)) {
			r.fail("identify-mmap", m ? "the page is not mapped whole" : m.error().message);
		} else {
			map = std::move(*m);
			uint32_t periph = assembleId([&](uint32_t off) { return pageWord(map, off); }, kPeriphId0);
			uint32_t cell = assembleId([&](uint32_t off) { return pageWord(map, off); }, kCellId0);
			if (periph == kPeriphId && cell == kCellId)
				r.pass("identify-mmap", strFormat("through the mmap'd page: peripheral ID %s (part 0xf51, "
								  "designer 0x56, rev 1), cell ID %s",
								  hex(periph).c_str(), hex(cell).c_str()));
			else
				r.fail("identify-mmap", "peripheral ID " + hex(periph) + ", cell ID " + hex(cell));
		}
	} else {
		r.skip("identify-mmap", "the server did not hand over the page's fd (--no-mmap?)");
	}

	{
		auto trappedWord = [&](uint32_t off) {
			auto v = c.read32(kPage, off);
			return v ? *v : 0u;
		};
		uint32_t periph = assembleId(trappedWord, kPeriphId0);
		uint32_t cell = assembleId(trappedWord, kCellId0);
		if (periph == kPeriphId && cell == kCellId)
			r.pass("identify-trapped", "the same IDs with REGION_READ of region 0");
		else
			r.fail("identify-trapped", "peripheral ID " + hex(periph) + ", cell ID " + hex(cell));
	}

	Regs regs(c);
	regs.write(kRegLoad, 1000);
	regs.write(kRegControl, kEnable);
	regs.write(kRegAdvance, 25);
	uint32_t count = regs.read(kRegCount);
	std::string err = regs.takeError();
	if (err.empty() && count == 1025)
		r.pass("registers-trapped", "LOAD 1000, ENABLE, ADVANCE 25: COUNT reads 1025 through REGION_READ");
	else
		r.fail("registers-trapped", err.empty() ? "COUNT reads " + hex(count) : err);

	if (map.mapped()) {
		uint32_t mirrored = pageWord(map, kPageCount);
		if (mirrored == count)
			r.pass("counter-frame-mmap", "the device updates COUNT in the mmap'd page: " + std::to_string(mirrored));
		else
			r.fail("counter-frame-mmap", "the page says " + hex(mirrored) + ", the register " + hex(count));
	} else {
		r.skip("counter-frame-mmap", "the page is not mapped");
	}

	UniqueFd trigger(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	int triggerFds[1] = { trigger.get() };
	if (Status s = c.setIrqEventfds(kIrq, triggerFds); !s) {
		r.fail("irq-level", s.error().message);
		return r.summary;
	}

	// The match interrupt: MATCH three ticks ahead, then the clock advances over it.
	regs.write(kRegImsc, kIntMatch | kIntSoft);
	regs.write(kRegMatch, count + 3);
	bool early = takeEventfd(trigger.get()) != 0;
	regs.write(kRegAdvance, 3);
	uint64_t got = waitEventfd(trigger.get(), o.irqTimeoutMs);
	uint32_t ris = regs.read(kRegRis), mis = regs.read(kRegMis);
	err = regs.takeError();
	if (!early && got && ris == kIntMatch && mis == kIntMatch && err.empty())
		r.pass("irq-level", "COUNT reached MATCH: the interrupt arrived on our eventfd (RIS/MIS 0x1)");
	else
		r.fail("irq-level", err.empty() ? strFormat("eventfd %llu (%s before the match), RIS %s, MIS %s",
							    (unsigned long long)got, early ? "signalled" : "quiet",
							    hex(ris).c_str(), hex(mis).c_str())
						: err);

	// Automasked: a second cause while masked signals nothing.
	regs.write(kRegIsr, kIntSoft);
	uint64_t whileMasked = takeEventfd(trigger.get());
	uint32_t mirroredRis = map.mapped() ? pageWord(map, kPageRis) : regs.read(kRegRis);
	err = regs.takeError();
	if (!whileMasked && mirroredRis == (kIntMatch | kIntSoft) && err.empty())
		r.pass("irq-automasked", "a second cause while masked: no second signal (RIS 0x3)");
	else
		r.fail("irq-automasked", err.empty() ? strFormat("eventfd %llu, RIS %s", (unsigned long long)whileMasked,
								 hex(mirroredRis).c_str())
						     : err);

	// Level: unmasking while the line is still asserted fires again at once.
	Status u = c.unmaskIrq(kIrq);
	uint64_t again = u ? takeEventfd(trigger.get()) : 0;
	if (u && again)
		r.pass("irq-unmask-level", "UNMASK with the cause still asserted: signalled again at once (a level)");
	else
		r.fail("irq-unmask-level", u ? "no signal at UNMASK although the line is asserted" : u.error().message);

	// Clear the cause (write-1-to-clear), unmask: quiet; raise again: signalled.
	regs.write(kRegIcr, kIntMatch | kIntSoft);
	u = c.unmaskIrq(kIrq);
	uint64_t quiet = takeEventfd(trigger.get());
	regs.write(kRegIsr, kIntSoft);
	uint64_t second = waitEventfd(trigger.get(), o.irqTimeoutMs);
	err = regs.takeError();
	if (u && err.empty() && !quiet && second)
		r.pass("irq-clear-unmask", "ICR cleared the cause, UNMASK stayed quiet, the next cause was signalled");
	else
		r.fail("irq-clear-unmask", !u ? u.error().message
					      : !err.empty() ? err
							     : strFormat("after unmask %llu, after the new cause %llu",
									 (unsigned long long)quiet,
									 (unsigned long long)second));

	// The unmask eventfd (VFIO's virqfd), as KVM's resample fd drives it: the device unmasks
	// whenever it is signalled. The IRQ is masked now, with the soft cause asserted.
	{
		UniqueFd unmask(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
		int unmaskFds[1] = { unmask.get() };
		Status s = c.setIrqs(kIrq, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK, 0, 1, unmaskFds);
		uint64_t level = 0, fresh = 0;
		bool quietAfterClear = false;
		if (s) {
			(void)::eventfd_write(unmask.get(), 1); // asserted: fires again
			level = waitEventfd(trigger.get(), o.irqTimeoutMs);
			regs.write(kRegIcr, kIntSoft);
			quietAfterClear = takeEventfd(trigger.get()) == 0;
			(void)::eventfd_write(unmask.get(), 1); // de-asserted: unmasked, quiet
			regs.write(kRegIsr, kIntSoft); // whichever comes first, this is signalled
			fresh = waitEventfd(trigger.get(), o.irqTimeoutMs);
			regs.write(kRegIcr, kIntSoft);
			s = c.setIrqs(kIrq, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK, 0, 1);
		}
		err = regs.takeError();
		if (s && err.empty() && level && quietAfterClear && fresh)
			r.pass("irq-unmask-eventfd", "a signal on the unmask eventfd re-armed the IRQ: once with the "
						     "line asserted (fired again), once after clearing (next cause fired)");
		else
			r.fail("irq-unmask-eventfd", !s ? s.error().message
							: !err.empty() ? err
								       : strFormat("level %llu, fresh %llu",
										   (unsigned long long)level,
										   (unsigned long long)fresh));
	}

	// A loopback trigger runs the same handler: signalled, then masked until UNMASK.
	{
		Status un = c.unmaskIrq(kIrq);
		Status s = un ? c.setIrqs(kIrq, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1) : un;
		uint64_t first = s ? takeEventfd(trigger.get()) : 0;
		Status s2 = s ? c.setIrqs(kIrq, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1) : s;
		uint64_t masked = s2 ? takeEventfd(trigger.get()) : 0;
		if (s2 && first && !masked)
			r.pass("irq-software-trigger", "SET_IRQS DATA_NONE|TRIGGER signalled once, then the IRQ was masked");
		else
			r.fail("irq-software-trigger", !s2 ? s2.error().message
							   : strFormat("first %llu, second %llu", (unsigned long long)first,
								       (unsigned long long)masked));
		(void)c.unmaskIrq(kIrq);
	}

	// Not a DMA master: DMA_MAP is refused, whatever is offered.
	{
		UniqueFd mem(::memfd_create("sim-platform-guest-ram", MFD_CLOEXEC));
		Status m = mem && ::ftruncate(mem.get(), 4096) == 0
				   ? c.dmaMap(mem.get(), 0, 0x100000, 4096,
					      vfio_user::kDmaMapFlagRead | vfio_user::kDmaMapFlagWrite)
				   : errnoError("guest memory");
		if (!m && m.error().code == ENOTSUP)
			r.pass("dma-refused", "DMA_MAP refused (ENOTSUP): sim:platform is not a DMA master");
		else
			r.fail("dma-refused", m ? "DMA_MAP was accepted" : m.error().message);
	}

	if (Status s = c.reset(); !s) {
		r.fail("reset", s.error().message);
	} else {
		uint32_t afterCount = regs.read(kRegCount), afterRis = regs.read(kRegRis);
		uint32_t periph = assembleId([&](uint32_t off) {
			auto v = c.read32(kPage, off);
			return v ? *v : 0u;
		}, kPeriphId0);
		err = regs.takeError();
		if (err.empty() && afterCount == 0 && afterRis == 0 && periph == kPeriphId)
			r.pass("reset", "DEVICE_RESET: COUNT and RIS back to 0, the IDs in place");
		else
			r.fail("reset", err.empty() ? strFormat("COUNT %s RIS %s peripheral ID %s", hex(afterCount).c_str(),
								hex(afterRis).c_str(), hex(periph).c_str())
						    : err);
	}

	(void)c.disableIrqs(kIrq);
	return r.summary;
}

} // namespace vfio_broker::client
