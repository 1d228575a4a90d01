// SPDX-License-Identifier: Apache-2.0
// Persistent broker state: one protobuf file written atomically, and the single-instance lock.
#pragma once

#include <string>

#include "common/result.h"
#include "common/unique_fd.h"
#include "vfio_broker/v1/state.pb.h"

namespace vfio_broker::control {

namespace pb = ::vfio_broker::v1;

class StateStore
{
public:
	explicit StateStore(std::string dir) : dir_(std::move(dir)) {}

	// Take <dir>/brokerd.lock (flock, non-blocking) and write our pid into it. EWOULDBLOCK
	// names the pid of the instance that holds it. Hold the fd for the process lifetime.
	Result<UniqueFd> lock();

	// The saved state; an empty state when there is no file yet. A corrupt file is an error
	// (never silently dropped): the operator must look at it.
	Result<pb::BrokerState> load() const;

	// Write to a temp file in the same directory, fsync, rename over state.pb, fsync the
	// directory: after a crash either the old or the new state is there, whole.
	Status save(const pb::BrokerState &state) const;

	const std::string &dir() const { return dir_; }

private:
	std::string dir_;
};

} // namespace vfio_broker::control
