// SPDX-License-Identifier: Apache-2.0
// Step-by-step reporting shared by the device walk-throughs (edu, sim:platform, PL031/virtio-mmio).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace vfio_broker::client {

enum class StepOutcome { Pass, Fail, Skip };

struct StepReport {
	StepOutcome outcome;
	std::string step;   // short name, e.g. "dma-roundtrip"
	std::string detail; // a sentence a person can follow
};

struct StepSummary {
	unsigned passed = 0, failed = 0, skipped = 0;
};

// Counts outcomes and forwards each to `report` (may be empty). With `abortAfter` set, the
// process _exit()s right after that step, leaving its state behind as a crashed VMM would.
class StepReporter
{
public:
	// Both are copied: a reporter must not dangle when given temporaries.
	explicit StepReporter(std::function<void(const StepReport &)> report, std::string abortAfter = {})
		: report_(std::move(report)), abortAfter_(std::move(abortAfter))
	{
	}

	void pass(const std::string &step, const std::string &detail) { emit(StepOutcome::Pass, step, detail); }
	void fail(const std::string &step, const std::string &detail) { emit(StepOutcome::Fail, step, detail); }
	void skip(const std::string &step, const std::string &detail) { emit(StepOutcome::Skip, step, detail); }

	StepSummary summary;

private:
	void emit(StepOutcome outcome, const std::string &step, const std::string &detail);

	std::function<void(const StepReport &)> report_;
	std::string abortAfter_;
};

// "0x1f"
std::string hex(uint64_t value);

// Wait (at most timeoutMs) for an eventfd and read it: its counter, 0 when nothing came.
uint64_t waitEventfd(int fd, int timeoutMs);

} // namespace vfio_broker::client
