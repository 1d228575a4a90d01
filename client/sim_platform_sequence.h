// SPDX-License-Identifier: Apache-2.0
// The sim:platform walk-through that the demo and the protocol tests share: a platform device's
// regions, IDs through mmap, trapped registers, and its level interrupt with automask and unmask.
#pragma once

#include <functional>
#include <string>

#include "client/edu_sequence.h"
#include "client/vfio_user_client.h"

namespace vfio_broker::client {

struct SimPlatformOptions {
	std::function<void(const StepReport &)> report;
	// Safety net only: interrupts are caused by our own register writes, and the daemon
	// signals before it answers them.
	int irqTimeoutMs = 3000;
};

// Runs every step on a freshly connected client (it negotiates VERSION itself).
EduSummary runSimPlatformSequence(Client &client, const SimPlatformOptions &options);

} // namespace vfio_broker::client
