// SPDX-License-Identifier: Apache-2.0
// The edu device walk-through that the demo, the protocol tests and the real-kernel lab share.
#pragma once

#include <functional>
#include <string>

#include "client/step_reporter.h"
#include "client/vfio_user_client.h"

namespace vfio_broker::client {

struct EduOptions {
	bool requireMmap = false;    // BAR0 must be mmap-able (the real edu through vfio-pci)
	std::string abortAfter;      // _exit() right after this step, leaving state behind
	std::function<void(const StepReport &)> report;
	int irqTimeoutMs = 3000;
	int pollTimeoutMs = 5000;
};

using EduSummary = StepSummary;

// Runs every step on a freshly connected client (it negotiates VERSION itself).
EduSummary runEduSequence(Client &client, const EduOptions &options);

// MSI-X on QEMU's e1000e (8086:10d3): three vectors, interrupts routed by IVAR.
EduSummary runE1000eMsix(Client &client, const EduOptions &options);

} // namespace vfio_broker::client
