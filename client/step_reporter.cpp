// SPDX-License-Identifier: Apache-2.0
// Step-by-step reporting shared by the device walk-throughs.
#include "client/step_reporter.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include "common/result.h"

namespace vfio_broker::client {

void StepReporter::emit(StepOutcome outcome, const std::string &step, const std::string &detail)
{
	if (outcome == StepOutcome::Pass)
		summary.passed++;
	else if (outcome == StepOutcome::Fail)
		summary.failed++;
	else
		summary.skipped++;
	if (report_)
		report_({ outcome, step, detail });
	if (!abortAfter_.empty() && step == abortAfter_)
		::_exit(0); // vanish without cleaning up, as a crashed VMM would
}

std::string hex(uint64_t value)
{
	return strFormat("0x%llx", static_cast<unsigned long long>(value));
}

uint64_t waitEventfd(int fd, int timeoutMs)
{
	pollfd p{ fd, POLLIN, 0 };
	int n;
	do {
		n = ::poll(&p, 1, timeoutMs);
	} while (n < 0 && errno == EINTR);
	uint64_t v = 0;
	return n == 1 && ::read(fd, &v, sizeof(v)) == sizeof(v) ? v : 0;
}

} // namespace vfio_broker::client
