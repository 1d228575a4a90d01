// SPDX-License-Identifier: Apache-2.0
// sim:platform's host device-tree description: a small flattened tree, built with libfdt from
// device/sim_platform_layout.h, in which the device is one node like a real SoC block.
#pragma once

#include "common/result.h"
#include "platform/host_dt.h"

namespace vfio_broker::platform {

// The whole host tree for sim:platform: a GICv3 "/intc@8000000" (#interrupt-cells 3), a
// "/soc" simple-bus with ranges, and "/soc/sim-platform@9100000" (reg entries and the level SPI
// from sim_platform_layout.h, marked "vfio-broker,passthrough", no iommus: a non-IOMMU device).
Result<HostDeviceTree> simPlatformHostTree();

// Its DT path in that tree.
const char *simPlatformDtPath();

} // namespace vfio_broker::platform
