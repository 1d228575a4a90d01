// SPDX-License-Identifier: Apache-2.0
// sim:platform — a simulated SoC timer block as vfio-platform would present it: an mmap-able
// counter/ID page, trapped control registers and one automasked level interrupt.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "device/device.h"
#include "device/sim_platform_layout.h"

namespace vfio_broker::device {

namespace sim_platform {

inline constexpr uint32_t kRegionPage = 0;    // kRegion0Size bytes, mmap-able (a memfd)
inline constexpr uint32_t kRegionControl = 1; // kRegion1Size bytes, trapped
inline constexpr uint32_t kIrqIndex = 0;

// Region 0, the read frame: the device keeps live copies of COUNT, RIS and MIS here so a
// client reads them through its mapping without a trap (like the Arm generic timer's
// CNTReadBase frame), and PrimeCell-style identification words at the top. Read-only: trapped
// writes are ignored, and what a client stores through its mapping only changes its own view
// until the device next updates the word (or reset restores the page).
inline constexpr uint32_t kPageCount = 0x000;
inline constexpr uint32_t kPageRis = 0x004;
inline constexpr uint32_t kPageMis = 0x008;
inline constexpr uint32_t kPagePeriphId0 = 0xfe0; // PeriphID0..3 at 0xfe0, 0xfe4, 0xfe8, 0xfec
inline constexpr uint32_t kPageCellId0 = 0xff0;   // CellID0..3 at 0xff0, 0xff4, 0xff8, 0xffc
// Peripheral ID 0x00156f51: part 0xf51, designer 0x56 ('V', a non-JEP106 code; ARM's is
// 0x41), revision 1, configuration 0. Cell ID 0xb105f00d is the PrimeCell component ID.
// Linux's amba bus decodes the same fields (include/linux/amba/bus.h, amba_part/manf/rev).
inline constexpr uint32_t kPeriphId = 0x00156f51;
inline constexpr uint32_t kCellId = 0xb105f00d;

// Region 1, control registers: 32-bit, naturally aligned. Narrower accesses are split the way
// vfio-platform splits a pread/pwrite (drivers/vfio/platform/vfio_platform_common.c,
// vfio_platform_read_mmio: 4, then 2, then 1 bytes); only 4-byte accesses reach a register,
// narrower reads return all ones and narrower writes are ignored. Unlisted offsets read as
// zero and ignore writes.
inline constexpr uint32_t kRegCount = 0x000;   // RO: counter
inline constexpr uint32_t kRegMatch = 0x004;   // RW: match value
inline constexpr uint32_t kRegLoad = 0x008;    // RW: writing sets COUNT; reads the last value written
inline constexpr uint32_t kRegControl = 0x00c; // RW: bit 0 ENABLE (the counter runs and compares)
inline constexpr uint32_t kRegImsc = 0x010;    // RW: interrupt mask set/clear (1 = enabled)
inline constexpr uint32_t kRegRis = 0x014;     // RO: raw interrupt status
inline constexpr uint32_t kRegMis = 0x018;     // RO: RIS & IMSC, the level of the interrupt line
inline constexpr uint32_t kRegIcr = 0x01c;     // WO: write 1 to clear RIS bits
inline constexpr uint32_t kRegIsr = 0x020;     // WO: write 1 to set RIS bits (software interrupt)
inline constexpr uint32_t kRegAdvance = 0x024; // WO: advance COUNT by the value written
inline constexpr uint32_t kControlEnable = 1u << 0;
inline constexpr uint32_t kIntMatch = 1u << 0; // COUNT reached MATCH (while ENABLE)
inline constexpr uint32_t kIntSoft = 1u << 1;  // set through ISR
inline constexpr uint32_t kIntAll = kIntMatch | kIntSoft;

} // namespace sim_platform

// The counter has no clock of its own: it moves only when the client writes ADVANCE (or
// LOAD), so every interrupt is caused by an access and tests never wait on wall-clock time.
// MATCH fires when, with ENABLE set, COUNT becomes equal to MATCH: MATCH written equal to
// COUNT, LOAD written equal to MATCH, or ADVANCE stepping COUNT over MATCH.
//
// The interrupt behaves like a level line behind vfio-platform
// (drivers/vfio/platform/vfio_platform_irq.c): while MIS is non-zero and the IRQ is unmasked,
// the trigger eventfd is signalled once and the IRQ automasked; UNMASK re-arms it, and fires
// again at once if the line is still asserted. MASK/UNMASK also take an eventfd (VFIO's
// virqfd): a watcher thread unmasks (masks) whenever that eventfd is signalled, which is how
// a KVM irqfd resample fd is wired to a level interrupt.
class SimPlatform : public Device
{
public:
	static Result<std::unique_ptr<SimPlatform>> create();
	~SimPlatform() override;
	SimPlatform(const SimPlatform &) = delete;
	SimPlatform &operator=(const SimPlatform &) = delete;

	std::string name() const override { return sim_platform::kId; }
	DeviceInfo info() const override;
	Result<RegionInfo> regionInfo(uint32_t index) const override;
	Result<IrqInfo> irqInfo(uint32_t index) const override;
	IommuInfo iommuInfo() const override;

	Status regionRead(uint32_t index, uint64_t offset, void *data, uint32_t count) override;
	Status regionWrite(uint32_t index, uint64_t offset, const void *data, uint32_t count) override;
	Status setIrqs(IrqSetRequest &request) override;
	Status dmaMap(const DmaRange &range) override;
	Status dmaUnmap(const DmaRange &range) override;
	Status reset() override;
	Status quiesce() override;

	// Observability for tests and logs.
	bool irqMasked() const;
	bool lineAsserted() const;
	uint64_t triggersSignalled() const;
	// Wait (bounded) until the watcher has handled `count` mask/unmask eventfd signals in all.
	bool waitEventfdActions(uint64_t count, std::chrono::milliseconds timeout) const;

private:
	SimPlatform() = default;
	Status createPage();
	void initPageLocked();
	void resetRegistersLocked();

	uint32_t readRegister(uint32_t offset) const;
	void writeRegister(uint32_t offset, uint32_t value);
	void setRisLocked(uint32_t bits);
	void updateLocked();
	void softwareTriggerLocked();

	// The watcher thread and the fds it watches.
	void watch();
	void replaceWatchedLocked(std::unique_lock<std::mutex> &lock, UniqueFd &slot, UniqueFd next);

	mutable std::mutex mutex_;
	mutable std::condition_variable changed_;

	// Region 0: our mapping of the memfd the client maps.
	UniqueFd pageFd_;
	void *page_ = nullptr;

	// Registers.
	uint32_t count_ = 0, match_ = 0, load_ = 0, control_ = 0, imsc_ = 0, ris_ = 0;

	// The interrupt as vfio-platform presents it.
	UniqueFd triggerFd_;
	UniqueFd unmaskFd_, maskFd_; // watched by watcher_
	bool masked_ = false;
	uint64_t triggers_ = 0;
	uint64_t eventfdActions_ = 0;

	std::thread watcher_;
	UniqueFd wakeFd_;       // ours: tells the watcher that the watched set changed or it must stop
	uint64_t generation_ = 0;  // bumped whenever unmaskFd_/maskFd_ change
	uint64_t acknowledged_ = 0; // the generation the watcher polls
	int reading_ = -1;         // the watched fd the watcher is reading, outside the lock
	bool stopping_ = false;
	bool watcherDone_ = false;
};

} // namespace vfio_broker::device
