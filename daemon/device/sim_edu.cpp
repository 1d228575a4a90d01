// SPDX-License-Identifier: Apache-2.0
// The simulated edu device. It mirrors what vfio-pci exposes for the real edu, so one client
// sequence drives both: BAR0 trapped registers, config space, INTx (automasked) and MSI on
// eventfds, DMA through the client's DMA_MAP ranges (an unmapped IOVA faults like an IOMMU).
#include "device/sim_edu.h"

#include <linux/vfio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "common/sigbus_guard.h"
#include "device/sim_support.h"
#include "device/vfio_caps.h"
#include "vfio_user/protocol.h"

namespace vfio_broker::device {

using namespace edu;

using sim::accessWidth;
using sim::isEventfd;

namespace {

constexpr uint32_t kNumRegions = VFIO_PCI_NUM_REGIONS;
constexpr uint32_t kNumIrqs = VFIO_PCI_NUM_IRQS;


// The RAM BAR's last page is left out of the mmap, as real devices trap a doorbell or
// MSI-X page: this exercises the capability chain, argsz probing and sparse mapping.
std::vector<uint8_t> ramBarSparseCap()
{
	const MmapArea area{ 0, kRamBarSize - kRamBarTrappedSize };
	const Capability cap = makeSparseMmapCap({ &area, 1 });
	return buildCapChain({ &cap, 1 }, kRegionInfoSize);
}

} // namespace

Result<std::unique_ptr<SimEdu>> SimEdu::create()
{
	installSigbusGuard();
	std::unique_ptr<SimEdu> dev(new SimEdu());
	if (Status s = dev->createRamBar(); !s)
		return s.takeError();
	dev->resetRegisters();
	return dev;
}

Status SimEdu::createRamBar()
{
	// A fresh memfd per client: a previous client may still hold the old one mapped, and
	// must not see what the next client writes.
	if (ram_)
		::munmap(ram_, kRamBarSize);
	ram_ = nullptr;
	auto memfd = sim::createSealedMemfd("sim-edu-bar2", kRamBarSize, "the RAM BAR memfd");
	if (!memfd)
		return memfd.takeError();
	ramFd_ = std::move(memfd->fd);
	ram_ = memfd->map;
	return {};
}

void SimEdu::resetRegisters()
{
	config_.clear();
	config_.init16(pci::kVendorId, kVendor);
	config_.init16(pci::kDeviceId, kDevice);
	config_.init16(pci::kCommand, 0,
		       pci::kCommandMemory | pci::kCommandMaster | pci::kCommandIntxDisable);
	config_.init16(pci::kStatus, pci::kStatusCapList);
	config_.init8(pci::kRevision, 0x10);
	config_.init8(pci::kClassProg + 2, 0x00); // class 0x00ff: unclassified, as QEMU's edu
	config_.init8(pci::kClassProg + 1, 0xff);
	config_.initMemBar(0, kBar0Size);
	config_.initMemBar(kRamBar, kRamBarSize);
	config_.init16(pci::kSubsystemVendorId, 0x1af4);
	config_.init16(pci::kSubsystemId, 0x1100);
	config_.init8(pci::kCapabilityList, kMsiCapOffset);
	config_.init8(pci::kInterruptLine, 0, 0xff);
	config_.init8(pci::kInterruptPin, 1); // INTA#
	// MSI capability, 64-bit address, one vector: enable bit, address and data writable.
	config_.init8(kMsiCapOffset, pci::kCapIdMsi);
	config_.init8(kMsiCapOffset + 1, 0);
	config_.init16(kMsiCapOffset + 2, 1u << 7, 0x0001);
	config_.init32(kMsiCapOffset + 4, 0, 0xfffffffc);
	config_.init32(kMsiCapOffset + 8, 0, 0xffffffff);
	config_.init16(kMsiCapOffset + 12, 0, 0xffff);

	liveness_ = factorial_ = status_ = irqStatus_ = 0;
	dmaSrc_ = dmaDst_ = dmaCount_ = dmaCmd_ = 0;
	std::memset(dmaBuffer_, 0, sizeof(dmaBuffer_));
	intxMasked_ = false;
}

DeviceInfo SimEdu::info() const
{
	return { VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET, kNumRegions, kNumIrqs };
}

Result<RegionInfo> SimEdu::regionInfo(uint32_t index) const
{
	RegionInfo r;
	switch (index) {
	case VFIO_PCI_BAR0_REGION_INDEX:
		r.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
		r.size = kBar0Size;
		break;
	case VFIO_PCI_BAR0_REGION_INDEX + kRamBar:
		r.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
			  VFIO_REGION_INFO_FLAG_MMAP;
		r.size = kRamBarSize;
		r.mmapOffset = 0;
		r.fd = ramFd_.get();
		r.caps = ramBarSparseCap();
		break;
	case VFIO_PCI_CONFIG_REGION_INDEX:
		r.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
		r.size = PciConfigSpace::kSize;
		break;
	default:
		if (index >= kNumRegions)
			return makeError(EINVAL, "region %u does not exist (the device has %u)",
					 index, kNumRegions);
		break; // unimplemented BARs, ROM and VGA: size 0, as vfio-pci reports them
	}
	return r;
}

Result<IrqInfo> SimEdu::irqInfo(uint32_t index) const
{
	switch (index) {
	case VFIO_PCI_INTX_IRQ_INDEX:
		return IrqInfo{ VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED, 1 };
	case VFIO_PCI_MSI_IRQ_INDEX:
		return IrqInfo{ VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, 1 };
	case VFIO_PCI_MSIX_IRQ_INDEX:
	case VFIO_PCI_ERR_IRQ_INDEX:
		return IrqInfo{ VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, 0 };
	case VFIO_PCI_REQ_IRQ_INDEX:
		return IrqInfo{ VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, 1 };
	default:
		return makeError(EINVAL, "IRQ index %u does not exist (the device has %u)",
				 index, kNumIrqs);
	}
}

IommuInfo SimEdu::iommuInfo() const
{
	// What the lab's VT-d reports: 4K/2M/1G pages, below the x86 MSI window and above it.
	IommuInfo info;
	info.pgsizes = 0x40201000;
	info.iovaRanges = { { 0, 0xfedfffff }, { 0xfef00000, 0x7fffffffff } };
	return info;
}

Status SimEdu::regionRead(uint32_t index, uint64_t offset, void *data, uint32_t count)
{
	uint8_t *out = static_cast<uint8_t *>(data);
	switch (index) {
	case VFIO_PCI_BAR0_REGION_INDEX:
		if ((count == 4 || count == 8) && offset % count == 0) {
			uint64_t v = bar0Read(offset, count);
			std::memcpy(out, &v, count);
			return {};
		}
		// Other shapes are split the way vfio-pci splits a pread: aligned 4-byte accesses,
		// then 2- and 1-byte ones, which edu does not accept (they read as all ones).
		for (uint32_t i = 0; i < count;) {
			uint32_t n = accessWidth(offset + i, count - i);
			uint32_t v = n == 4 ? static_cast<uint32_t>(bar0Read(offset + i, 4)) : 0xffffffff;
			std::memcpy(out + i, &v, n);
			i += n;
		}
		return {};
	case VFIO_PCI_BAR0_REGION_INDEX + kRamBar:
		std::memcpy(out, static_cast<uint8_t *>(ram_) + offset, count);
		return {};
	case VFIO_PCI_CONFIG_REGION_INDEX:
		config_.read(offset, out, count);
		return {};
	default:
		return makeError(EINVAL, "region %u is not readable", index);
	}
}

Status SimEdu::regionWrite(uint32_t index, uint64_t offset, const void *data, uint32_t count)
{
	switch (index) {
	case VFIO_PCI_BAR0_REGION_INDEX:
		// edu takes only naturally aligned 4-byte (and, from 0x80, 8-byte) stores and
		// ignores the rest; so does the simulation.
		if ((count == 4 || count == 8) && offset % count == 0) {
			uint64_t v = 0;
			std::memcpy(&v, data, count);
			bar0Write(offset, v, count);
			return {};
		}
		for (uint32_t i = 0; i < count;) {
			uint32_t n = accessWidth(offset + i, count - i);
			if (n == 4) {
				uint32_t v;
				std::memcpy(&v, static_cast<const uint8_t *>(data) + i, 4);
				bar0Write(offset + i, v, 4);
			}
			i += n;
		}
		return {};
	case VFIO_PCI_BAR0_REGION_INDEX + kRamBar:
		std::memcpy(static_cast<uint8_t *>(ram_) + offset, data, count);
		return {};
	case VFIO_PCI_CONFIG_REGION_INDEX:
		config_.write(offset, data, count);
		updateIntx(); // INTx disable bit may have changed
		return {};
	default:
		return makeError(EINVAL, "region %u is not writable", index);
	}
}

uint64_t SimEdu::bar0Read(uint64_t addr, unsigned size) const
{
	if (addr < 0x80 && size != 4)
		return ~0ull;
	switch (addr) {
	case kRegId: return kId;
	case kRegLiveness: return liveness_;
	case kRegFactorial: return factorial_;
	case kRegStatus: return status_;
	case kRegIrqStatus: return irqStatus_;
	case kRegDmaSrc: return size == 8 ? dmaSrc_ : static_cast<uint32_t>(dmaSrc_);
	case kRegDmaDst: return size == 8 ? dmaDst_ : static_cast<uint32_t>(dmaDst_);
	case kRegDmaCount: return size == 8 ? dmaCount_ : static_cast<uint32_t>(dmaCount_);
	case kRegDmaCmd: return size == 8 ? dmaCmd_ : static_cast<uint32_t>(dmaCmd_);
	default: return size == 8 ? ~0ull : 0xffffffffull;
	}
}

void SimEdu::bar0Write(uint64_t addr, uint64_t value, unsigned size)
{
	if (addr < 0x80 && size != 4)
		return;
	switch (addr) {
	case kRegLiveness:
		liveness_ = ~static_cast<uint32_t>(value);
		break;
	case kRegFactorial:
		if (status_ & kStatusComputing)
			break;
		{
			// The device computes in the background; completing at once is one of the
			// schedules the real device may show, and keeps the simulation deterministic.
			// From 34! on there are at least 32 factors of two: the value mod 2^32 is
			// 0, and a client-chosen 0xffffffff must not spin the daemon.
			uint32_t n = static_cast<uint32_t>(value), f = n >= 34 ? 0 : 1;
			for (uint32_t i = 2; i <= n && f; i++)
				f *= i;
			factorial_ = f;
		}
		if (status_ & kStatusIrqOnFactorial)
			raiseIrq(kIrqFactorial);
		break;
	case kRegStatus:
		status_ = (status_ & ~kStatusIrqOnFactorial) | (value & kStatusIrqOnFactorial);
		break;
	case kRegIrqRaise:
		raiseIrq(static_cast<uint32_t>(value));
		break;
	case kRegIrqAck:
		lowerIrq(static_cast<uint32_t>(value));
		break;
	case kRegDmaSrc:
		if (!(dmaCmd_ & kDmaStart))
			dmaSrc_ = value;
		break;
	case kRegDmaDst:
		if (!(dmaCmd_ & kDmaStart))
			dmaDst_ = value;
		break;
	case kRegDmaCount:
		if (!(dmaCmd_ & kDmaStart))
			dmaCount_ = value;
		break;
	case kRegDmaCmd:
		if (!(value & kDmaStart) || (dmaCmd_ & kDmaStart))
			break;
		dmaCmd_ = value;
		runDma();
		break;
	default:
		break;
	}
}

void SimEdu::raiseIrq(uint32_t bits)
{
	irqStatus_ |= bits;
	if (irqMode_ == IrqMode::Msi) {
		// MSI is an edge: every raise with something pending is a message (as QEMU's edu).
		if (irqStatus_)
			sim::signalEventfd(msiFd_);
		return;
	}
	updateIntx();
}

void SimEdu::lowerIrq(uint32_t bits)
{
	irqStatus_ &= ~bits;
	updateIntx();
}

// INTx is a level. vfio-pci signals the eventfd when the line asserts and masks it until the
// client unmasks; unmasking a still-asserted line signals again at once.
void SimEdu::updateIntx()
{
	bool disabled = config_.read16(pci::kCommand) & pci::kCommandIntxDisable;
	bool asserted = irqStatus_ != 0 && irqMode_ != IrqMode::Msi && !disabled;
	uint16_t status = config_.read16(pci::kStatus);
	config_.set16(pci::kStatus, asserted ? status | pci::kStatusInterrupt
					     : status & ~pci::kStatusInterrupt);
	if (irqMode_ != IrqMode::Intx || !asserted || intxMasked_)
		return;
	intxMasked_ = true;
	sim::signalEventfd(intxFd_);
}

bool SimEdu::dmaAccess(uint64_t iova, void *buf, uint32_t len, bool toRam)
{
	if (!(config_.read16(pci::kCommand) & pci::kCommandMaster))
		return false; // bus mastering off: the device cannot issue the transaction
	uint32_t need = toRam ? vfio_user::kDmaMapFlagWrite : vfio_user::kDmaMapFlagRead;
	uint8_t *dev = static_cast<uint8_t *>(buf);
	// Translate range by range, as an IOMMU walks its page tables: a transfer may cross
	// adjacent mappings, and any untranslatable byte faults the whole transfer. Check
	// everything first so a fault leaves memory untouched.
	struct Piece {
		uint8_t *host;
		uint32_t len;
	};
	std::vector<Piece> pieces;
	for (uint64_t at = iova, left = len; left > 0;) {
		auto it = dma_.upper_bound(at);
		if (it == dma_.begin())
			return false;
		--it;
		const DmaRange &r = it->second;
		if (at - r.iova >= r.size || !r.vaddr || !(r.prot & need))
			return false;
		uint64_t n = std::min<uint64_t>(left, r.size - (at - r.iova));
		pieces.push_back({ static_cast<uint8_t *>(r.vaddr) + (at - r.iova), static_cast<uint32_t>(n) });
		at += n;
		left -= n;
	}
	for (const Piece &p : pieces) {
		if (!(toRam ? guardedCopy(p.host, dev, p.len) : guardedCopy(dev, p.host, p.len)))
			return false;
		dev += p.len;
	}
	return true;
}

void SimEdu::runDma()
{
	bool toRam = dmaCmd_ & kDmaToRam;
	uint64_t devAddr = toRam ? dmaSrc_ : dmaDst_;
	uint64_t iova = (toRam ? dmaDst_ : dmaSrc_) & kDmaMask;
	uint64_t count = dmaCount_;
	bool inBuffer = devAddr >= kDmaBufferAddr && count <= kDmaBufferSize &&
			devAddr - kDmaBufferAddr <= kDmaBufferSize - count;
	if (inBuffer && count > 0) {
		uint8_t *buf = dmaBuffer_ + (devAddr - kDmaBufferAddr);
		if (!dmaAccess(iova, buf, count, toRam))
			iommuFaults_++; // blocked, as an IOMMU fault blocks the real device
	}
	dmaCmd_ &= ~kDmaStart;
	if (dmaCmd_ & kDmaIrq)
		raiseIrq(kIrqDma);
}

Status SimEdu::setIrqs(IrqSetRequest &req)
{
	uint32_t data = req.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
	uint32_t action = req.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
	for (const auto &fd : req.eventfds)
		if (!isEventfd(fd.get()))
			return makeError(EINVAL, "SET_IRQS: fd %d is not an eventfd", fd.get());

	// Is the action applied to sub-index 0 (count is at most 1 for every sim index)?
	bool apply = req.count > 0 &&
		     (data != VFIO_IRQ_SET_DATA_BOOL || (!req.bools.empty() && req.bools[0]));

	switch (req.index) {
	case VFIO_PCI_INTX_IRQ_INDEX:
		if (action == VFIO_IRQ_SET_ACTION_TRIGGER) {
			if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
				if (req.eventfds.empty()) {
					intxFd_.reset();
					if (irqMode_ == IrqMode::Intx)
						irqMode_ = IrqMode::None;
					return {};
				}
				if (irqMode_ == IrqMode::Msi)
					return makeError(EINVAL, "INTx: MSI is enabled; disable it first");
				intxFd_ = std::move(req.eventfds[0]);
				irqMode_ = IrqMode::Intx;
				intxMasked_ = false;
				updateIntx();
				return {};
			}
			if (req.count == 0) { // DATA_NONE, count 0: disable the index
				intxFd_.reset();
				if (irqMode_ == IrqMode::Intx)
					irqMode_ = IrqMode::None;
				return {};
			}
			if (apply && irqMode_ == IrqMode::Intx)
				sim::signalEventfd(intxFd_); // loopback trigger
			return {};
		}
		if (data == VFIO_IRQ_SET_DATA_EVENTFD)
			return makeError(ENOTSUP, "INTx mask/unmask eventfds are not supported by sim:edu");
		if (irqMode_ != IrqMode::Intx)
			return makeError(EINVAL, "INTx is not enabled");
		if (apply) {
			intxMasked_ = action == VFIO_IRQ_SET_ACTION_MASK;
			if (!intxMasked_)
				updateIntx();
		}
		return {};
	case VFIO_PCI_MSI_IRQ_INDEX:
		if (action != VFIO_IRQ_SET_ACTION_TRIGGER)
			return makeError(EINVAL, "MSI is not maskable on this device");
		if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
			if (req.eventfds.empty()) {
				msiFd_.reset();
				if (irqMode_ == IrqMode::Msi)
					irqMode_ = IrqMode::None;
				return {};
			}
			if (irqMode_ == IrqMode::Intx)
				return makeError(EINVAL, "MSI: INTx is enabled; disable it first");
			msiFd_ = std::move(req.eventfds[0]);
			irqMode_ = IrqMode::Msi;
			return {};
		}
		if (req.count == 0) {
			msiFd_.reset();
			if (irqMode_ == IrqMode::Msi)
				irqMode_ = IrqMode::None;
			return {};
		}
		if (apply && irqMode_ == IrqMode::Msi)
			sim::signalEventfd(msiFd_);
		return {};
	case VFIO_PCI_REQ_IRQ_INDEX:
		if (action != VFIO_IRQ_SET_ACTION_TRIGGER)
			return makeError(EINVAL, "the request IRQ only supports TRIGGER");
		if (data == VFIO_IRQ_SET_DATA_EVENTFD)
			reqFd_ = req.eventfds.empty() ? UniqueFd() : std::move(req.eventfds[0]);
		else if (req.count == 0)
			reqFd_.reset();
		else if (apply)
			sim::signalEventfd(reqFd_);
		return {};
	default:
		return makeError(EINVAL, "IRQ index %u has no interrupts", req.index);
	}
}

Status SimEdu::dmaMap(const DmaRange &range)
{
	dma_[range.iova] = range;
	return {};
}

Status SimEdu::dmaUnmap(const DmaRange &range)
{
	if (!dma_.erase(range.iova))
		return makeError(ENOENT, "no DMA range at IOVA 0x%llx",
				 static_cast<unsigned long long>(range.iova));
	return {};
}

Status SimEdu::reset()
{
	// Function reset: registers and config space to power-on values. The interrupt
	// wiring (eventfds) belongs to the client, as with vfio-pci.
	resetRegisters();
	std::memset(ram_, 0, kRamBarSize);
	return {};
}

Status SimEdu::quiesce()
{
	intxFd_.reset();
	msiFd_.reset();
	reqFd_.reset();
	irqMode_ = IrqMode::None;
	dma_.clear();
	resetRegisters();
	return createRamBar();
}

} // namespace vfio_broker::device
