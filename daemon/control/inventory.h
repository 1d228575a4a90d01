// SPDX-License-Identifier: Apache-2.0
// Device discovery: PCI devices from sysfs, simulated devices, (later) platform devices from the DT.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "vfio_broker/v1/broker.pb.h"

namespace vfio_broker::control {

namespace pb = ::vfio_broker::v1;

struct InventoryOptions {
	std::string sysfsRoot = "/sys";
	std::vector<std::string> simulated; // "sim:edu"
};

// Canonical id for what a caller typed: "pci:0000:01:00.0" from "0000:01:00.0", "01:00.0",
// "pci:..." or a sysfs path; "sim:edu" as is. ENOENT when nothing matches.
Result<std::string> resolveDeviceId(const InventoryOptions &opts, const std::string &input);

// What --device of vfio-broker-device takes for this id ("0000:01:00.0", "sim:edu").
std::string deviceDaemonArgument(const std::string &id);

// One device, read fresh from sysfs: kind, sysfs path, ids, driver, IOMMU group (members,
// viability and blockers, no-IOMMU), reset support and method, MMIO ranges ("resource"),
// the legacy interrupt line. Policy, state and vm are left for the caller.
Result<pb::Device> scanDevice(const InventoryOptions &opts, const std::string &id);

// Every candidate device, sorted by id. Devices that vanish during the scan are skipped.
Result<std::vector<pb::Device>> scanAll(const InventoryOptions &opts);

} // namespace vfio_broker::control
