// SPDX-License-Identifier: Apache-2.0
// Launcher helper: ask vfio-brokerd for devices for a VM and hand the VMM their vfio-user sockets.
#pragma once

#include <cstdint>
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
	// Bind only, no device daemon: the VMM opens the VFIO device itself (crosvm launch mode).
	bool bindOnly = false;
	int timeoutMs = 30000;
};

// What GetLaunchConfig asks for (see proto GetLaunchConfigRequest).
struct CrosvmLaunchRequest {
	std::string controlSocket = "/run/vfio-broker/control.sock";
	std::string vm;
	std::vector<std::string> devices; // empty: every platform device the VM holds
	uint64_t guestMmioBase = 0, guestMmioSize = 0;
	uint32_t firstGuestSpi = 0;
	uint64_t dmaPoolBase = 0, dmaPoolSize = 0;
	std::string overlayPath; // as crosvm will read it; "" = "<vm>.dtbo"
	int timeoutMs = 30000;
};

// The crosvm side of launch mode: arguments, one argv element each, and the overlay to write
// where they say.
struct CrosvmLaunch {
	std::vector<std::string> args;
	std::vector<uint8_t> overlay;
	std::string overlayPath;
	std::vector<std::string> skipped; // "<id>: why it is not in the overlay"
};

Result<CrosvmLaunch> crosvmLaunchConfig(const CrosvmLaunchRequest &request);

// Write `bytes` to `path` atomically (a temporary file in the same directory, fsync, rename),
// mode 0644: crosvm runs as the VMM user and reads it.
Status writeFileAtomically(const std::string &path, const std::vector<uint8_t> &bytes);

// Assign (all or nothing). A refusal carries the broker's conflict sentences.
Result<std::vector<AssignedDevice>> assignForVm(const LaunchRequest &request);

// Deassign each device from the VM (idempotent).
Status deassignFromVm(const std::string &controlSocket, const std::string &vm,
		      const std::vector<std::string> &devices, int timeoutMs = 30000);

// A connected vfio-user socket to hand to a VMM that takes an inherited fd.
Result<UniqueFd> connectDeviceSocket(const std::string &socketPath);

} // namespace vfio_broker::client
