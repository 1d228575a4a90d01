// SPDX-License-Identifier: Apache-2.0
// Open the Device a --device argument names: a simulated device or a kernel VFIO device.
#pragma once

#include <memory>
#include <string>

#include "device/device.h"

namespace vfio_broker::device {

struct OpenOptions {
	std::string sysfsRoot = "/sys";
	std::string devRoot = "/dev";
	bool allowMmap = true;
};

// "sim:edu", "sim:platform", a PCI address (0000:01:00.0), "platform:NAME", "amba:NAME", or a
// sysfs device path (PCI, platform or AMBA bus).
Result<std::unique_ptr<Device>> openDevice(const std::string &spec, const OpenOptions &opts);

} // namespace vfio_broker::device
