// SPDX-License-Identifier: Apache-2.0
// FakeDevice: a recording Device with per-call failpoints, so server code can be tested on its error paths.
#pragma once

#include <linux/vfio.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "device/device.h"

namespace vfio_broker::testing {

// Every Device entry point, for recording and fault injection.
enum class Call {
	Name,
	Info,
	RegionInfo,
	IrqInfo,
	IommuInfo,
	RegionRead,
	RegionWrite,
	SetIrqs,
	DmaMap,
	DmaUnmap,
	Reset,
	Quiesce,
};

// One call as the device saw it. Fields a call does not have stay zero.
struct CallRecord {
	Call call = Call::Name;
	uint32_t index = 0;          // region or IRQ index
	uint64_t offset = 0;         // region offset
	uint32_t count = 0;          // access bytes, or SET_IRQS count
	uint32_t flags = 0;          // SET_IRQS flags
	uint32_t start = 0;          // SET_IRQS start
	size_t eventfds = 0;         // SET_IRQS eventfds received
	std::vector<uint8_t> data;   // REGION_WRITE bytes; SET_IRQS bools
	device::DmaRange range;      // DMA_MAP / DMA_UNMAP
	std::vector<uint8_t> mapped; // DMA_MAP: the first bytes visible at range.vaddr, when readable
};

// A simple PCI-like device: region 0 is 4 KiB read/write, region 1 is 4 KiB read-only, region 2
// is 4 KiB write-only; two IRQ indexes with one interrupt each. Tests may change all of it
// before handing the device out. Thread-safe, so a Session on another thread can drive it
// while the test inspects the record.
class FakeDevice : public device::Device
{
public:
	using Predicate = std::function<bool(const CallRecord &)>;
	static constexpr int kAlways = -1;

	FakeDevice()
	{
		info_ = { VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET, 3, 2 };
		regions_ = {
			{ VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE, 4096, 0, {}, -1 },
			{ VFIO_REGION_INFO_FLAG_READ, 4096, 0, {}, -1 },
			{ VFIO_REGION_INFO_FLAG_WRITE, 4096, 0, {}, -1 },
		};
		irqs_ = { { VFIO_IRQ_INFO_EVENTFD, 1 }, { VFIO_IRQ_INFO_EVENTFD, 1 } };
		iommu_.pgsizes = 4096;
		iommu_.iovaRanges.clear();
		for (const auto &r : regions_)
			memory_.emplace_back(r.size, 0);
	}

	// ---- configuration (before the device is handed to the code under test)
	void setIommu(const device::IommuInfo &iommu) { iommu_ = iommu; }
	void setRegion(uint32_t index, const device::RegionInfo &info)
	{
		regions_.at(index) = info;
		memory_.at(index).assign(info.size, 0);
	}

	// ---- failpoints: make `call` fail with `err`, `times` times (kAlways: until cleared), and
	// only for calls `when` accepts (all calls when empty). Failing calls are still recorded.
	void failOn(Call call, int err, int times = kAlways, Predicate when = {})
	{
		std::lock_guard lock(mutex_);
		failures_[call] = Failure{ err, times, std::move(when) };
	}
	void clearFailure(Call call)
	{
		std::lock_guard lock(mutex_);
		failures_.erase(call);
	}

	// ---- the record
	std::vector<CallRecord> calls() const
	{
		std::lock_guard lock(mutex_);
		return calls_;
	}
	std::vector<CallRecord> calls(Call which) const
	{
		std::lock_guard lock(mutex_);
		std::vector<CallRecord> out;
		for (const auto &c : calls_)
			if (c.call == which)
				out.push_back(c);
		return out;
	}
	size_t count(Call which) const { return calls(which).size(); }
	void clearRecord()
	{
		std::lock_guard lock(mutex_);
		calls_.clear();
	}
	// Bytes behind a trapped region, as the device holds them.
	std::vector<uint8_t> memory(uint32_t index) const
	{
		std::lock_guard lock(mutex_);
		return memory_.at(index);
	}

	// ---- Device
	std::string name() const override { return "fake"; }

	device::DeviceInfo info() const override
	{
		record(make(Call::Info));
		return info_;
	}

	Result<device::RegionInfo> regionInfo(uint32_t index) const override
	{
		CallRecord c = make(Call::RegionInfo);
		c.index = index;
		if (auto err = record(c))
			return *err;
		if (index >= regions_.size())
			return makeError(EINVAL, "fake: no region %u", index);
		return regions_[index];
	}

	Result<device::IrqInfo> irqInfo(uint32_t index) const override
	{
		CallRecord c = make(Call::IrqInfo);
		c.index = index;
		if (auto err = record(c))
			return *err;
		if (index >= irqs_.size())
			return makeError(EINVAL, "fake: no IRQ index %u", index);
		return irqs_[index];
	}

	device::IommuInfo iommuInfo() const override
	{
		record(make(Call::IommuInfo));
		return iommu_;
	}

	Status regionRead(uint32_t index, uint64_t offset, void *data, uint32_t count) override
	{
		CallRecord c = make(Call::RegionRead);
		c.index = index;
		c.offset = offset;
		c.count = count;
		if (auto err = record(c))
			return *err;
		std::lock_guard lock(mutex_);
		const auto &mem = memory_.at(index);
		// The server promised bounds-checked accesses; a violation is a test failure, not a crash.
		if (offset > mem.size() || count > mem.size() - offset)
			return makeError(EFAULT, "fake: read 0x%llx+%u outside region %u",
					 (unsigned long long)offset, count, index);
		std::memcpy(data, mem.data() + offset, count);
		return {};
	}

	Status regionWrite(uint32_t index, uint64_t offset, const void *data, uint32_t count) override
	{
		const auto *bytes = static_cast<const uint8_t *>(data);
		CallRecord c = make(Call::RegionWrite);
		c.index = index;
		c.offset = offset;
		c.count = count;
		c.data.assign(bytes, bytes + count);
		if (auto err = record(c))
			return *err;
		std::lock_guard lock(mutex_);
		auto &mem = memory_.at(index);
		if (offset > mem.size() || count > mem.size() - offset)
			return makeError(EFAULT, "fake: write 0x%llx+%u outside region %u",
					 (unsigned long long)offset, count, index);
		std::memcpy(mem.data() + offset, data, count);
		return {};
	}

	Status setIrqs(device::IrqSetRequest &request) override
	{
		CallRecord c = make(Call::SetIrqs);
		c.index = request.index;
		c.count = request.count;
		c.flags = request.flags;
		c.start = request.start;
		c.eventfds = request.eventfds.size();
		c.data.assign(request.bools.begin(), request.bools.end());
		if (auto err = record(c))
			return *err;
		std::lock_guard lock(mutex_);
		for (auto &fd : request.eventfds)
			eventfds_.push_back(std::move(fd));
		return {};
	}

	Status dmaMap(const device::DmaRange &range) override
	{
		CallRecord c = make(Call::DmaMap);
		c.range = range;
		if (range.vaddr && (range.prot & 1u)) {
			const auto *p = static_cast<const uint8_t *>(range.vaddr);
			c.mapped.assign(p, p + std::min<uint64_t>(range.size, 16));
		}
		return status(record(c));
	}

	Status dmaUnmap(const device::DmaRange &range) override
	{
		CallRecord c = make(Call::DmaUnmap);
		c.range = range;
		return status(record(c));
	}

	Status reset() override { return status(record(make(Call::Reset))); }

	Status quiesce() override
	{
		Status s = status(record(make(Call::Quiesce)));
		std::lock_guard lock(mutex_);
		eventfds_.clear();
		return s;
	}

private:
	struct Failure {
		int err;
		int times;
		Predicate when;
	};

	static CallRecord make(Call call)
	{
		CallRecord c;
		c.call = call;
		return c;
	}
	static Status status(std::optional<Error> err) { return err ? Status(std::move(*err)) : Status(); }

	// Record the call; return the injected error when a failpoint fires.
	std::optional<Error> record(CallRecord c) const
	{
		std::lock_guard lock(mutex_);
		calls_.push_back(c);
		auto it = failures_.find(c.call);
		if (it == failures_.end() || it->second.times == 0)
			return std::nullopt;
		if (it->second.when && !it->second.when(c))
			return std::nullopt;
		if (it->second.times > 0)
			it->second.times--;
		return makeError(it->second.err, "fake: injected failure");
	}

	device::DeviceInfo info_;
	std::vector<device::RegionInfo> regions_;
	std::vector<device::IrqInfo> irqs_;
	device::IommuInfo iommu_;

	mutable std::mutex mutex_;
	mutable std::vector<CallRecord> calls_;
	mutable std::map<Call, Failure> failures_;
	std::vector<std::vector<uint8_t>> memory_;
	std::vector<UniqueFd> eventfds_;
};

} // namespace vfio_broker::testing
