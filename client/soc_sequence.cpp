// SPDX-License-Identifier: Apache-2.0
// PL031 (vfio-amba) and virtio-mmio (vfio-platform) walk-throughs run by the arm64 lab against the device daemon.
#include "client/soc_sequence.h"

#include <linux/vfio.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

// Register facts, from the ARM PrimeCell RTC (PL031) Technical Reference Manual (DDI 0224) and QEMU 7.2
// hw/rtc/pl031.c: DR 0x00 (seconds counter), MR 0x04 (match), IMSC 0x10 (bit 0 enables the interrupt),
// RIS 0x14, MIS 0x18, ICR 0x1c (write 1 to clear); the interrupt is a level, RIS & IMSC, raised when DR
// reaches MR. PrimeCell identification registers sit at 0xfe0..0xffc, one byte each in the low 8 bits:
// QEMU reports 31 10 14 00 / 0d f0 05 b1, and Linux's rtc-pl031 matches the peripheral ID 0x00041031 under
// the mask 0x000fffff (drivers/rtc/rtc-pl031.c), which leaves out the revision nibble (QEMU says 1).
// virtio-mmio, from the virtio 1.2 specification section 4.2.2 and QEMU hw/virtio/virtio-mmio.c: MagicValue
// 0x000 ("virt", 0x74726976), Version 0x004 (1 legacy, 2 modern), DeviceID 0x008 (0: no device behind the
// transport), VendorID 0x00c (QEMU: 0x554d4551, "QEMU"); the register window is 0x200 bytes.
namespace vfio_broker::client {

namespace {

constexpr uint32_t kPl031Dr = 0x00, kPl031Mr = 0x04, kPl031Imsc = 0x10, kPl031Ris = 0x14, kPl031Mis = 0x18,
		   kPl031Icr = 0x1c;
constexpr uint32_t kPrimeCellIdBase = 0xfe0;
constexpr uint32_t kPl031PeriphId = 0x00041031, kPeriphIdMask = 0x000fffff;
constexpr uint32_t kPrimeCellCellId = 0xb105f00d;

constexpr uint32_t kVirtioMagic = 0x74726976, kVirtioVendorQemu = 0x554d4551;
constexpr uint32_t kVirtioMagicReg = 0x000, kVirtioVersionReg = 0x004, kVirtioDeviceIdReg = 0x008,
		   kVirtioVendorReg = 0x00c;

constexpr uint32_t kPlatformIrqIndex = 0;
constexpr uint32_t kMmioRegion = 0;

std::string describeIrq(const IrqInfo &q)
{
	return strFormat("count %u, flags 0x%x (%s%s%s)", q.count, q.flags,
			 q.flags & VFIO_IRQ_INFO_EVENTFD ? "eventfd" : "no eventfd",
			 q.flags & VFIO_IRQ_INFO_MASKABLE ? ", maskable" : "",
			 q.flags & VFIO_IRQ_INFO_AUTOMASKED ? ", automasked: level" : ", not automasked: edge");
}

// VERSION, then DEVICE_GET_INFO with the bus flag this device must carry.
bool negotiateAndIdentify(Client &c, StepReporter &r, uint32_t busFlag, const char *busName, DeviceInfo *out)
{
	auto ver = c.negotiate();
	if (!ver) {
		r.fail("version", ver.error().message);
		return false;
	}
	r.pass("version", strFormat("negotiated vfio-user %u.%u, page sizes %s", ver->major, ver->minor,
				    hex(ver->pgsizes).c_str()));
	auto info = c.deviceInfo();
	if (!info || !(info->flags & busFlag) || info->numRegions < 1 || info->numIrqs < 1) {
		r.fail("device-info", info ? strFormat("flags 0x%x, %u regions, %u IRQ indexes: not a %s device with a "
						       "region and an interrupt", info->flags, info->numRegions,
						       info->numIrqs, busName)
					   : info.error().message);
		return false;
	}
	r.pass("device-info", strFormat("%s device (flags 0x%x), %u region(s), %u IRQ index(es), reset %s", busName,
					info->flags, info->numRegions, info->numIrqs,
					info->flags & VFIO_DEVICE_FLAGS_RESET ? "offered" : "not offered"));
	*out = *info;
	return true;
}

// No-IOMMU passthrough must refuse DMA_MAP: the device would see physical addresses. With a real IOMMU the
// map is allowed, which this step cannot judge.
void checkDmaRefused(Client &c, StepReporter &r)
{
	const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
	UniqueFd mem(::memfd_create("soc-guest-ram", MFD_CLOEXEC));
	if (!mem || ::ftruncate(mem.get(), static_cast<off_t>(page)) != 0) {
		r.fail("dma-refused", errnoError("memfd for the DMA probe").message);
		return;
	}
	Status s = c.dmaMap(mem.get(), 0, 0x100000, page, vfio_user::kDmaMapFlagRead | vfio_user::kDmaMapFlagWrite);
	if (s) {
		(void)c.dmaUnmap(0x100000, page);
		r.skip("dma-refused", "DMA_MAP was accepted: this device sits behind a translating IOMMU");
	} else if (s.error().code == ENOTSUP) {
		r.pass("dma-refused", "DMA_MAP refused with ENOTSUP: " + s.error().message);
	} else {
		r.fail("dma-refused", "DMA_MAP failed, but not as a no-IOMMU refusal: " + s.error().message);
	}
}

void checkReset(Client &c, StepReporter &r, const DeviceInfo &info)
{
	Status s = c.reset();
	if (info.flags & VFIO_DEVICE_FLAGS_RESET) {
		if (s)
			r.pass("reset", "DEVICE_RESET succeeded");
		else
			r.fail("reset", s.error().message);
	} else if (!s && s.error().code == ENOTSUP) {
		r.skip("reset", "the device offers no reset; the server says so (ENOTSUP): " + s.error().message);
	} else {
		r.fail("reset", "the server should refuse DEVICE_RESET on a device without reset");
	}
}

// The PL031 registers through the client's mapping of the region fd.
class Pl031Regs
{
public:
	explicit Pl031Regs(MappedRegion map) : map_(std::move(map)) {}
	uint32_t read(uint32_t off) const { return *reinterpret_cast<volatile uint32_t *>(map_.at(off, 4)); }
	void write(uint32_t off, uint32_t v) const { *reinterpret_cast<volatile uint32_t *>(map_.at(off, 4)) = v; }

private:
	MappedRegion map_;
};

// PrimeCell IDs: the low byte of each of the eight registers, peripheral ID first.
void primeCellIds(const std::function<uint32_t(uint32_t)> &read, uint32_t *periph, uint32_t *cell)
{
	*periph = *cell = 0;
	for (uint32_t i = 0; i < 4; i++) {
		*periph |= (read(kPrimeCellIdBase + 4 * i) & 0xff) << (8 * i);
		*cell |= (read(kPrimeCellIdBase + 16 + 4 * i) & 0xff) << (8 * i);
	}
}

// Arm the match for the next tick of the one-second counter: MR = DR + 1 fires within a second. (MR = DR
// would fire at once unless DR ticks between our read and write, which would put the match 2^32 s away.)
void armMatch(const Pl031Regs &regs)
{
	regs.write(kPl031Mr, regs.read(kPl031Dr) + 1);
}

} // namespace

EduSummary runPl031Sequence(Client &c, const SocOptions &o)
{
	StepReporter r(o.report, o.abortAfter);
	DeviceInfo info;
	if (!negotiateAndIdentify(c, r, VFIO_DEVICE_FLAGS_AMBA, "AMBA", &info))
		return r.summary;

	auto region = c.regionInfo(kMmioRegion);
	if (!region || region->size < 0x1000 ||
	    (region->flags & (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE)) !=
		    (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE)) {
		r.fail("region-info", region ? strFormat("region 0: size %s flags 0x%x; want a readable, writable "
							 "4 KiB register page", hex(region->size).c_str(),
							 region->flags)
					     : region.error().message);
		return r.summary;
	}
	const bool mmapOffered = (region->flags & VFIO_REGION_INFO_FLAG_MMAP) && region->fd;
	r.pass("region-info", strFormat("region 0: %s bytes, read write %s", hex(region->size).c_str(),
					mmapOffered ? "mmap (fd received)" : "trapped"));

	uint32_t periph = 0, cell = 0;
	primeCellIds(
		[&](uint32_t off) {
			auto v = c.read32(kMmioRegion, off);
			return v ? *v : 0u;
		},
		&periph, &cell);
	if ((periph & kPeriphIdMask) == kPl031PeriphId && cell == kPrimeCellCellId)
		r.pass("primecell-id-trapped", strFormat("REGION_READ of 0xfe0..0xffc: peripheral ID %s (PL031, revision "
							 "%u), cell ID %s", hex(periph).c_str(), (periph >> 20) & 0xf,
							 hex(cell).c_str()));
	else
		r.fail("primecell-id-trapped", strFormat("peripheral ID %s, cell ID %s: not a PL031",
							 hex(periph).c_str(), hex(cell).c_str()));

	if (!mmapOffered) {
		if (o.requireMmap)
			r.fail("primecell-id-mmap", "the server did not offer the PL031 register page for mmap");
		else
			r.skip("primecell-id-mmap", "the register page is trapped (daemon run with --no-mmap?)");
		return r.summary;
	}
	auto mapped = c.mapRegion(*region);
	if (!mapped || !mapped->at(0, 0x1000)) {
		r.fail("primecell-id-mmap", mapped ? "the mapping does not cover the 4 KiB page" : mapped.error().message);
		return r.summary;
	}
	Pl031Regs regs(std::move(*mapped));
	uint32_t mPeriph = 0, mCell = 0;
	primeCellIds([&](uint32_t off) { return regs.read(off); }, &mPeriph, &mCell);
	if (mPeriph == periph && mCell == cell && cell == kPrimeCellCellId)
		r.pass("primecell-id-mmap", strFormat("loads from the mmap'd region fd: peripheral ID %s, cell ID %s",
						      hex(mPeriph).c_str(), hex(mCell).c_str()));
	else
		r.fail("primecell-id-mmap", strFormat("through the mapping: peripheral ID %s, cell ID %s",
						      hex(mPeriph).c_str(), hex(mCell).c_str()));

	uint32_t dr = regs.read(kPl031Dr);
	auto trappedDr = c.read32(kMmioRegion, kPl031Dr);
	if (dr != 0 && trappedDr && *trappedDr - dr <= 1)
		r.pass("rtc-data", strFormat("RTCDR = %u (seconds since the epoch) through the mapping, %u trapped", dr,
					     *trappedDr));
	else
		r.fail("rtc-data", strFormat("RTCDR = %u through the mapping, %s trapped", dr,
					     trappedDr ? std::to_string(*trappedDr).c_str() : "unreadable"));

	auto irq = c.irqInfo(kPlatformIrqIndex);
	const uint32_t levelFlags = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
	if (!irq || irq->count != 1 || (irq->flags & levelFlags) != levelFlags) {
		r.fail("irq-info", irq ? describeIrq(*irq) + "; want one automasked level interrupt"
				       : irq.error().message);
		return r.summary;
	}
	r.pass("irq-info", "index 0: " + describeIrq(*irq));

	// The PL031 has no reset, so a previous client may have left its match asserted: lower the level before
	// taking the trigger. The line's VFIO mask is the daemon's to clear (it unmasks when a client goes), so
	// no unmask here: a line left masked shows up as a missing interrupt below.
	regs.write(kPl031Imsc, 0);
	regs.write(kPl031Icr, 1);
	UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	int fds[1] = { efd.get() };
	if (Status s = c.setIrqEventfds(kPlatformIrqIndex, fds); !s) {
		r.fail("irq-eventfd", s.error().message);
		return r.summary;
	}
	regs.write(kPl031Imsc, 1);

	// 1: the match raises the level; the kernel signals our eventfd and masks the line.
	armMatch(regs);
	uint64_t first = waitEventfd(efd.get(), o.irqTimeoutMs);
	uint32_t mis = regs.read(kPl031Mis);
	if (first && (mis & 1))
		r.pass("irq-eventfd", strFormat("RTC match interrupt arrived on our eventfd (RTCMIS %s: still asserted)",
						hex(mis).c_str()));
	else
		r.fail("irq-eventfd", strFormat("eventfd %llu after %d ms, RTCMIS %s",
						static_cast<unsigned long long>(first), o.irqTimeoutMs, hex(mis).c_str()));

	// 2: unmask while the level is still up: it must fire again at once. Only a masked line can do that,
	// so this shows the kernel automasked it, and that UNMASK reaches the kernel.
	Status unmask = c.unmaskIrq(kPlatformIrqIndex);
	uint64_t again = unmask ? waitEventfd(efd.get(), o.irqTimeoutMs) : 0;
	if (unmask && again)
		r.pass("irq-unmask-reasserted", "SET_IRQS ACTION_UNMASK with the level still asserted fired it again "
						"(it had been automasked)");
	else
		r.fail("irq-unmask-reasserted", unmask ? "no interrupt after the unmask" : unmask.error().message);

	// 3: clear the cause, unmask, arm the next match: a fresh interrupt.
	regs.write(kPl031Icr, 1);
	uint32_t risAfterClear = regs.read(kPl031Ris);
	Status unmask2 = c.unmaskIrq(kPlatformIrqIndex);
	armMatch(regs);
	uint64_t second = unmask2 ? waitEventfd(efd.get(), o.irqTimeoutMs) : 0;
	mis = regs.read(kPl031Mis);
	if (unmask2 && second && (risAfterClear & 1) == 0 && (mis & 1))
		r.pass("irq-rearmed", "cleared with RTCICR, unmasked, next match interrupt arrived on our eventfd");
	else
		r.fail("irq-rearmed", unmask2 ? strFormat("RTCRIS after clear %s, eventfd %llu, RTCMIS %s",
							  hex(risAfterClear).c_str(),
							  static_cast<unsigned long long>(second), hex(mis).c_str())
					      : unmask2.error().message);

	regs.write(kPl031Imsc, 0);
	regs.write(kPl031Icr, 1);
	(void)c.unmaskIrq(kPlatformIrqIndex);
	if (Status s = c.disableIrqs(kPlatformIrqIndex); !s)
		r.fail("irq-disable", s.error().message);

	checkDmaRefused(c, r);
	checkReset(c, r, info);
	return r.summary;
}

EduSummary runVirtioMmioSequence(Client &c, const SocOptions &o)
{
	StepReporter r(o.report, o.abortAfter);
	DeviceInfo info;
	if (!negotiateAndIdentify(c, r, VFIO_DEVICE_FLAGS_PLATFORM, "platform", &info))
		return r.summary;

	auto region = c.regionInfo(kMmioRegion);
	if (!region || region->size < 0x100 || !(region->flags & VFIO_REGION_INFO_FLAG_READ)) {
		r.fail("region-info", region ? strFormat("region 0: size %s flags 0x%x", hex(region->size).c_str(),
							 region->flags)
					     : region.error().message);
		return r.summary;
	}
	r.pass("region-info", strFormat("region 0: %s bytes, flags 0x%x", hex(region->size).c_str(), region->flags));

	const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
	if (region->size < page && !(region->flags & VFIO_REGION_INFO_FLAG_MMAP) && !region->fd)
		r.pass("region-trapped", strFormat("the %s-byte region is smaller than a page: no MMAP flag and no fd, "
						   "every access goes through the daemon", hex(region->size).c_str()));
	else if (region->size >= page)
		r.skip("region-trapped", "the region is at least a page; this transport is not sub-page");
	else
		r.fail("region-trapped", "a sub-page region was offered for mmap");

	auto magic = c.read32(kMmioRegion, kVirtioMagicReg);
	auto version = c.read32(kMmioRegion, kVirtioVersionReg);
	auto deviceId = c.read32(kMmioRegion, kVirtioDeviceIdReg);
	auto vendor = c.read32(kMmioRegion, kVirtioVendorReg);
	if (magic && *magic == kVirtioMagic)
		r.pass("magic", "REGION_READ of 0x000 = 0x74726976 (\"virt\")");
	else
		r.fail("magic", magic ? "MagicValue " + hex(*magic) : magic.error().message);
	if (version && deviceId && vendor && (*version == 1 || *version == 2))
		r.pass("version-ids", strFormat("Version %u (%s), DeviceID %u%s, VendorID %s%s", *version,
						*version == 1 ? "legacy" : "virtio 1.x", *deviceId,
						*deviceId == 0 ? " (no device behind the transport)" : "",
						hex(*vendor).c_str(), *vendor == kVirtioVendorQemu ? " (\"QEMU\")" : ""));
	else
		r.fail("version-ids", version && deviceId && vendor ? "Version " + std::to_string(*version)
								    : "REGION_READ failed");

	// The interrupt path without any device activity: a DATA_BOOL trigger runs the kernel's handler for the
	// index, which signals the eventfd we registered.
	auto irq = c.irqInfo(kPlatformIrqIndex);
	if (!irq || irq->count != 1 || !(irq->flags & VFIO_IRQ_INFO_EVENTFD)) {
		r.fail("irq-info", irq ? describeIrq(*irq) : irq.error().message);
	} else {
		r.pass("irq-info", "index 0: " + describeIrq(*irq));
		UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
		int fds[1] = { efd.get() };
		const uint8_t fire[1] = { 1 };
		Status set = c.setIrqEventfds(kPlatformIrqIndex, fds);
		Status trigger = set ? c.setIrqs(kPlatformIrqIndex, VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER, 0,
						 1, {}, fire)
				     : set;
		uint64_t got = trigger ? waitEventfd(efd.get(), o.irqTimeoutMs) : 0;
		if (got)
			r.pass("irq-loopback", "SET_IRQS DATA_BOOL|ACTION_TRIGGER signalled our eventfd through the kernel");
		else
			r.fail("irq-loopback", trigger ? "the eventfd was not signalled" : trigger.error().message);
		// An automasked index is masked by that handler run; leave it unmasked.
		if (irq->flags & VFIO_IRQ_INFO_AUTOMASKED)
			(void)c.unmaskIrq(kPlatformIrqIndex);
		if (set)
			(void)c.disableIrqs(kPlatformIrqIndex);
	}

	checkDmaRefused(c, r);
	checkReset(c, r, info);
	return r.summary;
}

} // namespace vfio_broker::client
