// SPDX-License-Identifier: Apache-2.0
// Launcher helper: ask vfio-brokerd for devices for a VM and hand the VMM their vfio-user sockets.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace vfio_broker::client {

struct AssignedDevice {
	std::string deviceId;
	std::string socketPath; // the device daemon's vfio-user socket
	int daemonPid = 0;
};

struct LaunchRequest {
	std::string controlSocket = "/run/vfio-broker/control.sock";
	std::string vm;
	std::vector<std::string> devices;
	std::optional<uint32_t> socketUid, socketGid; // the VMM's user, so it may connect
	bool identityMapping = false;
	int timeoutMs = 30000;
};

// Assign (all or nothing). A refusal carries the broker's conflict sentences.
Result<std::vector<AssignedDevice>> assignForVm(const LaunchRequest &request);

// Deassign each device from the VM (idempotent).
Status deassignFromVm(const std::string &controlSocket, const std::string &vm,
		      const std::vector<std::string> &devices, int timeoutMs = 30000);

// A connected vfio-user socket to hand to a VMM that takes an inherited fd.
Result<UniqueFd> connectDeviceSocket(const std::string &socketPath);

} // namespace vfio_broker::client
