// SPDX-License-Identifier: Apache-2.0
// Launch mode: the VMM arguments and guest device-tree overlay for a VM's assigned platform devices.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "control/inventory.h"
#include "vfio_broker/v1/broker.pb.h"

namespace vfio_broker::control {

namespace pb = ::vfio_broker::v1;

// One device the VM holds, with how it was assigned.
struct LaunchDevice {
	pb::Device device;         // as scanned at Assign (kind, sysfs path, platform.dt_path)
	pb::AssignOptions options; // identity_mapping places it at its host address
	bool noDma = false;        // its policy rule says it does no DMA
};

// Limits on what a caller makes us build.
constexpr uint32_t kMaxGuestSpi = 987; // GIC SPIs are INTIDs 32..1019
constexpr size_t kMaxOverlayPathLength = 1024;

// The crosvm arguments and overlay for `devices` (sorted by id by the caller), per `request`:
// platform and AMBA devices, and simulated ones with a device-tree node (sim:platform), go in;
// every other device is listed in `skipped` with the reason. Each device's node comes from the
// host tree (<sysfsRoot>/firmware/fdt, read once) or, for sim:platform, simPlatformHostTree().
// crosvm's --vfio names the device by sysfs path: /sys/bus/<platform|amba>/devices/<name>; a
// simulated device has none, so it gets the name Linux would give its node
// (<unit address>.<node name>, as of_device_make_bus_id does), which lets the README show a
// complete command line. EINVAL for a request out of bounds (SPI range, overlay path, a relocated
// device without a guest window) and for nodes the overlay builder refuses; ENOENT when no
// device is left to place.
Result<pb::GetLaunchConfigResponse> buildLaunchConfig(const InventoryOptions &opts,
						      const pb::GetLaunchConfigRequest &request,
						      const std::vector<LaunchDevice> &devices);

} // namespace vfio_broker::control
