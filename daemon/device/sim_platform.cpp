// SPDX-License-Identifier: Apache-2.0
// The simulated platform device. It mirrors what vfio-platform exposes for a small SoC timer:
// an mmap-able register page, a sub-page trapped register block, and a level interrupt that is
// automasked when it fires and re-armed by UNMASK (a call, or a signal on an unmask eventfd).
#include "device/sim_platform.h"

#include <linux/vfio.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <system_error>

#include "device/sim_support.h"

namespace vfio_broker::device {

using namespace sim_platform;

using sim::accessWidth;
using sim::isEventfd;

namespace {

constexpr uint32_t kNumRegions = 2;
constexpr uint32_t kNumIrqs = 1;

// Consume an eventfd's counter. The fd is the client's: its O_NONBLOCK is the client's to set
// (the file description is shared), so ask for a non-blocking read per call (RWF_NOWAIT;
// eventfds support it since Linux 5.10's read_iter conversion) and fall back to a plain read
// on older kernels, where the caller's poke (see replaceWatchedLocked) ends a stuck read.
bool consume(int fd)
{
	uint64_t v = 0;
	iovec iov{ &v, sizeof(v) };
	ssize_t n;
	do {
		n = ::preadv2(fd, &iov, 1, -1, RWF_NOWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EOPNOTSUPP) {
		do {
			n = ::read(fd, &v, sizeof(v));
		} while (n < 0 && errno == EINTR);
	}
	return n == sizeof(v) && v != 0;
}


} // namespace

Result<std::unique_ptr<SimPlatform>> SimPlatform::create()
{
	std::unique_ptr<SimPlatform> dev(new SimPlatform());
	dev->wakeFd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (!dev->wakeFd_)
		return errnoError("eventfd for the sim:platform IRQ watcher");
	if (Status s = dev->createPage(); !s)
		return s.takeError();
	{
		std::lock_guard lock(dev->mutex_);
		dev->resetRegistersLocked();
	}
	SimPlatform *self = dev.get();
	try {
		dev->watcher_ = std::thread([self] { self->watch(); });
	} catch (const std::system_error &e) {
		return makeError(e.code().value(), "starting the sim:platform IRQ watcher thread: %s", e.what());
	}
	return dev;
}

SimPlatform::~SimPlatform()
{
	if (watcher_.joinable()) {
		{
			std::lock_guard lock(mutex_);
			stopping_ = true;
			(void)::eventfd_write(wakeFd_.get(), 1);
			if (reading_ >= 0)
				(void)::eventfd_write(reading_, 1); // end a blocking read (old kernels)
		}
		watcher_.join();
	}
	if (page_)
		::munmap(page_, kRegion0Size);
}

Status SimPlatform::createPage()
{
	// A fresh memfd per client: the previous client may still hold the old one mapped, and
	// must not see the next client's device.
	void *old = page_;
	auto memfd = sim::createSealedMemfd("sim-platform-regs", kRegion0Size, "the sim:platform register page");
	if (!memfd)
		return memfd.takeError();
	std::lock_guard lock(mutex_);
	pageFd_ = std::move(memfd->fd);
	page_ = memfd->map;
	if (old)
		::munmap(old, kRegion0Size);
	initPageLocked();
	return {};
}

void SimPlatform::initPageLocked()
{
	std::memset(page_, 0, kRegion0Size);
	auto *words = static_cast<uint32_t *>(page_);
	for (uint32_t i = 0; i < 4; i++) {
		words[(kPagePeriphId0 + 4 * i) / 4] = (kPeriphId >> (8 * i)) & 0xff;
		words[(kPageCellId0 + 4 * i) / 4] = (kCellId >> (8 * i)) & 0xff;
	}
}

void SimPlatform::resetRegistersLocked()
{
	count_ = match_ = load_ = control_ = imsc_ = ris_ = 0;
	updateLocked();
}

DeviceInfo SimPlatform::info() const
{
	return { VFIO_DEVICE_FLAGS_PLATFORM | VFIO_DEVICE_FLAGS_RESET, kNumRegions, kNumIrqs };
}

Result<RegionInfo> SimPlatform::regionInfo(uint32_t index) const
{
	RegionInfo r;
	switch (index) {
	case kRegionPage: {
		// Page-sized and page-aligned: vfio-platform offers such a region for mmap.
		std::lock_guard lock(mutex_);
		r.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP;
		r.size = kRegion0Size;
		r.mmapOffset = 0;
		r.fd = pageFd_.get();
		return r;
	}
	case kRegionControl:
		// Smaller than a page: vfio-platform does not offer it for mmap, every access traps.
		r.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
		r.size = kRegion1Size;
		return r;
	default:
		return makeError(EINVAL, "region %u does not exist (sim:platform has %u)", index, kNumRegions);
	}
}

Result<IrqInfo> SimPlatform::irqInfo(uint32_t index) const
{
	if (index != kIrqIndex)
		return makeError(EINVAL, "IRQ index %u does not exist (sim:platform has %u)", index, kNumIrqs);
	// A level interrupt, as vfio_platform_irq_init reports one: maskable and automasked.
	return IrqInfo{ VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED, 1 };
}

IommuInfo SimPlatform::iommuInfo() const
{
	// Not a bus master (Xen's "non-DMA device"): there is nothing to translate for.
	IommuInfo info;
	info.pgsizes = 4096;
	info.translates = false;
	return info;
}

Status SimPlatform::regionRead(uint32_t index, uint64_t offset, void *data, uint32_t count)
{
	std::lock_guard lock(mutex_);
	uint8_t *out = static_cast<uint8_t *>(data);
	switch (index) {
	case kRegionPage:
		if (offset > kRegion0Size || count > kRegion0Size - offset)
			return makeError(EINVAL, "read 0x%llx+%u is outside region 0",
					 static_cast<unsigned long long>(offset), count);
		std::memcpy(out, static_cast<const uint8_t *>(page_) + offset, count);
		return {};
	case kRegionControl:
		if (offset > kRegion1Size || count > kRegion1Size - offset)
			return makeError(EINVAL, "read 0x%llx+%u is outside region 1",
					 static_cast<unsigned long long>(offset), count);
		for (uint32_t i = 0; i < count;) {
			uint32_t n = accessWidth(offset + i, count - i);
			uint32_t v = n == 4 ? readRegister(static_cast<uint32_t>(offset + i)) : 0xffffffff;
			std::memcpy(out + i, &v, n);
			i += n;
		}
		return {};
	default:
		return makeError(EINVAL, "region %u does not exist (sim:platform has %u)", index, kNumRegions);
	}
}

Status SimPlatform::regionWrite(uint32_t index, uint64_t offset, const void *data, uint32_t count)
{
	std::lock_guard lock(mutex_);
	const uint8_t *in = static_cast<const uint8_t *>(data);
	switch (index) {
	case kRegionPage:
		// A read-only frame: writes are ignored, as the hardware ignores them.
		if (offset > kRegion0Size || count > kRegion0Size - offset)
			return makeError(EINVAL, "write 0x%llx+%u is outside region 0",
					 static_cast<unsigned long long>(offset), count);
		return {};
	case kRegionControl:
		if (offset > kRegion1Size || count > kRegion1Size - offset)
			return makeError(EINVAL, "write 0x%llx+%u is outside region 1",
					 static_cast<unsigned long long>(offset), count);
		for (uint32_t i = 0; i < count;) {
			uint32_t n = accessWidth(offset + i, count - i);
			if (n == 4) {
				uint32_t v;
				std::memcpy(&v, in + i, 4);
				writeRegister(static_cast<uint32_t>(offset + i), v);
			}
			i += n;
		}
		updateLocked();
		return {};
	default:
		return makeError(EINVAL, "region %u does not exist (sim:platform has %u)", index, kNumRegions);
	}
}

uint32_t SimPlatform::readRegister(uint32_t offset) const
{
	switch (offset) {
	case kRegCount: return count_;
	case kRegMatch: return match_;
	case kRegLoad: return load_;
	case kRegControl: return control_;
	case kRegImsc: return imsc_;
	case kRegRis: return ris_;
	case kRegMis: return ris_ & imsc_;
	default: return 0; // write-only and reserved registers read as zero
	}
}

void SimPlatform::writeRegister(uint32_t offset, uint32_t value)
{
	bool enabled = control_ & kControlEnable;
	switch (offset) {
	case kRegMatch:
		match_ = value;
		if (enabled && count_ == match_)
			setRisLocked(kIntMatch);
		break;
	case kRegLoad:
		load_ = count_ = value;
		if (enabled && count_ == match_)
			setRisLocked(kIntMatch);
		break;
	case kRegControl:
		control_ = value & kControlEnable;
		break;
	case kRegImsc:
		imsc_ = value & kIntAll;
		break;
	case kRegIcr:
		ris_ &= ~value;
		break;
	case kRegIsr:
		setRisLocked(value & kIntAll);
		break;
	case kRegAdvance:
		if (!enabled || value == 0)
			break;
		// MATCH fires when one of the steps count+1 .. count+value (mod 2^32) lands on it.
		if (uint32_t distance = match_ - count_; distance != 0 && distance <= value)
			setRisLocked(kIntMatch);
		count_ += value;
		break;
	default:
		break; // read-only and reserved registers ignore writes
	}
}

void SimPlatform::setRisLocked(uint32_t bits)
{
	ris_ |= bits;
}

// The line is MIS != 0. vfio-platform's automasked handler runs when the unmasked line is
// asserted: it masks the IRQ and signals the trigger eventfd. Without a trigger the IRQ is not
// requested, so nothing happens until one is assigned.
void SimPlatform::updateLocked()
{
	auto *words = static_cast<uint32_t *>(page_);
	__atomic_store_n(&words[kPageCount / 4], count_, __ATOMIC_RELEASE);
	__atomic_store_n(&words[kPageRis / 4], ris_, __ATOMIC_RELEASE);
	__atomic_store_n(&words[kPageMis / 4], ris_ & imsc_, __ATOMIC_RELEASE);
	if (triggerFd_ && !masked_ && (ris_ & imsc_)) {
		masked_ = true;
		triggers_++;
		sim::signalEventfd(triggerFd_);
	}
}

// A loopback trigger (DATA_NONE, or DATA_BOOL true) runs the same handler as the hardware:
// signalled and automasked, or nothing while masked.
void SimPlatform::softwareTriggerLocked()
{
	if (!triggerFd_ || masked_)
		return;
	masked_ = true;
	triggers_++;
	sim::signalEventfd(triggerFd_);
}

Status SimPlatform::setIrqs(IrqSetRequest &req)
{
	uint32_t data = req.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
	uint32_t action = req.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
	if (req.index != kIrqIndex)
		return makeError(EINVAL, "IRQ index %u does not exist (sim:platform has %u)", req.index, kNumIrqs);
	for (const auto &fd : req.eventfds)
		if (!isEventfd(fd.get()))
			return makeError(EINVAL, "SET_IRQS: fd %d is not an eventfd", fd.get());
	if (data != VFIO_IRQ_SET_DATA_EVENTFD && !req.eventfds.empty())
		return makeError(EINVAL, "SET_IRQS: eventfds without DATA_EVENTFD");

	std::unique_lock lock(mutex_);
	if (req.count == 0) {
		// vfio_platform_set_irq_trigger: count 0 with DATA_NONE disables the trigger.
		if (action != VFIO_IRQ_SET_ACTION_TRIGGER || data != VFIO_IRQ_SET_DATA_NONE || req.start)
			return makeError(EINVAL, "SET_IRQS count 0 is only the DATA_NONE|TRIGGER form");
		triggerFd_.reset();
		return {};
	}
	if (req.start != 0 || req.count != 1)
		return makeError(EINVAL, "IRQ index 0 has one interrupt; start %u count %u is out of range",
				 req.start, req.count);
	if (data == VFIO_IRQ_SET_DATA_EVENTFD && req.eventfds.size() > 1)
		return makeError(EINVAL, "SET_IRQS: %zu eventfds for one interrupt", req.eventfds.size());
	if (data == VFIO_IRQ_SET_DATA_BOOL && req.bools.empty())
		return makeError(EINVAL, "SET_IRQS DATA_BOOL without its byte");
	bool apply = data != VFIO_IRQ_SET_DATA_BOOL || req.bools[0];
	UniqueFd fd = req.eventfds.empty() ? UniqueFd() : std::move(req.eventfds[0]);

	switch (action) {
	case VFIO_IRQ_SET_ACTION_TRIGGER:
		if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
			// As vfio_set_trigger: the masked state survives a change of trigger, and an
			// asserted, unmasked line fires on the new eventfd at once.
			triggerFd_ = std::move(fd);
			updateLocked();
		} else if (apply) {
			softwareTriggerLocked();
		}
		return {};
	case VFIO_IRQ_SET_ACTION_MASK:
		if (data == VFIO_IRQ_SET_DATA_EVENTFD)
			replaceWatchedLocked(lock, maskFd_, std::move(fd));
		else if (apply)
			masked_ = true;
		return {};
	case VFIO_IRQ_SET_ACTION_UNMASK:
		if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
			replaceWatchedLocked(lock, unmaskFd_, std::move(fd));
		} else if (apply) {
			masked_ = false;
			updateLocked(); // a level still asserted fires again now
		}
		return {};
	default:
		return makeError(EINVAL, "SET_IRQS action 0x%x is unknown", action);
	}
}

// Swap a watched eventfd. The old one stays open until the watcher has acknowledged the new
// set, so it never polls or reads an fd number that was closed (and maybe reused).
void SimPlatform::replaceWatchedLocked(std::unique_lock<std::mutex> &lock, UniqueFd &slot, UniqueFd next)
{
	UniqueFd old = std::move(slot);
	slot = std::move(next);
	uint64_t generation = ++generation_;
	(void)::eventfd_write(wakeFd_.get(), 1);
	// On kernels without RWF_NOWAIT for eventfds the watcher may be blocked reading the old fd
	// (the client drained it after poll said readable); one signal of ours ends that read.
	if (old && reading_ == old.get())
		(void)::eventfd_write(old.get(), 1);
	changed_.wait(lock, [&] { return acknowledged_ >= generation || watcherDone_; });
}

void SimPlatform::watch()
{
	std::unique_lock lock(mutex_);
	while (!stopping_) {
		enum Kind { Wake, Unmask, Mask };
		pollfd fds[3] = {};
		Kind kinds[3] = {};
		nfds_t n = 0;
		fds[n] = { wakeFd_.get(), POLLIN, 0 };
		kinds[n++] = Wake;
		if (unmaskFd_) {
			fds[n] = { unmaskFd_.get(), POLLIN, 0 };
			kinds[n++] = Unmask;
		}
		if (maskFd_) {
			fds[n] = { maskFd_.get(), POLLIN, 0 };
			kinds[n++] = Mask;
		}
		uint64_t generation = generation_;
		acknowledged_ = generation;
		changed_.notify_all();

		lock.unlock();
		int ready = ::poll(fds, n, -1);
		if (ready > 0 && (fds[0].revents & POLLIN)) {
			eventfd_t v;
			(void)::eventfd_read(wakeFd_.get(), &v);
		}
		lock.lock();
		if (ready <= 0)
			continue; // EINTR; nothing else can fail with valid fds and no timeout
		for (nfds_t i = 1; i < n && !stopping_ && generation == generation_; i++) {
			if (!(fds[i].revents & POLLIN))
				continue;
			reading_ = fds[i].fd;
			lock.unlock();
			bool signalled = consume(fds[i].fd);
			lock.lock();
			reading_ = -1;
			// A signal that raced with a change of the watched set belongs to the old set.
			if (!signalled || stopping_ || generation != generation_)
				continue;
			eventfdActions_++;
			if (kinds[i] == Unmask) {
				masked_ = false;
				updateLocked();
			} else {
				masked_ = true;
			}
			changed_.notify_all();
		}
	}
	watcherDone_ = true;
	changed_.notify_all();
}

Status SimPlatform::dmaMap(const DmaRange &range)
{
	return makeError(ENOTSUP, "sim:platform is not a DMA master (a non-DMA device): DMA_MAP of "
			 "iova 0x%llx size 0x%llx is refused",
			 static_cast<unsigned long long>(range.iova), static_cast<unsigned long long>(range.size));
}

Status SimPlatform::dmaUnmap(const DmaRange &range)
{
	return makeError(ENOENT, "sim:platform has no DMA mappings (iova 0x%llx)",
			 static_cast<unsigned long long>(range.iova));
}

Status SimPlatform::reset()
{
	// The device's reset handler: registers and the page to power-on values. The interrupt
	// wiring (eventfds, the VFIO mask state) belongs to the client and stays, as with
	// vfio-platform, whose VFIO_DEVICE_RESET only calls the device's reset function.
	std::lock_guard lock(mutex_);
	initPageLocked();
	resetRegistersLocked();
	return {};
}

Status SimPlatform::quiesce()
{
	{
		std::unique_lock lock(mutex_);
		triggerFd_.reset();
		replaceWatchedLocked(lock, unmaskFd_, UniqueFd());
		replaceWatchedLocked(lock, maskFd_, UniqueFd());
		masked_ = false;
		resetRegistersLocked();
	}
	return createPage();
}

bool SimPlatform::irqMasked() const
{
	std::lock_guard lock(mutex_);
	return masked_;
}

bool SimPlatform::lineAsserted() const
{
	std::lock_guard lock(mutex_);
	return (ris_ & imsc_) != 0;
}

uint64_t SimPlatform::triggersSignalled() const
{
	std::lock_guard lock(mutex_);
	return triggers_;
}

bool SimPlatform::waitEventfdActions(uint64_t count, std::chrono::milliseconds timeout) const
{
	std::unique_lock lock(mutex_);
	return changed_.wait_for(lock, timeout, [&] { return eventfdActions_ >= count; });
}

} // namespace vfio_broker::device
