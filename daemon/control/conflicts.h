// SPDX-License-Identifier: Apache-2.0
// The assignment conflict checks, pure: the same function answers CheckAssignment and guards Assign.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "control/policy.h"
#include "vfio_broker/v1/broker.pb.h"

namespace vfio_broker::control {

// What the checks read. `devices` holds at least every requested device and every member of
// their IOMMU groups (a device missing here is UNKNOWN_DEVICE); `assignments` is every device
// currently held by a VM (ASSIGNED, or QUARANTINED/FAILED after it), by device id, with its
// Device description (interrupts, stream IDs, MMIO) in `held`.
struct ConflictInput {
	std::string vm;
	std::vector<std::string> deviceIds; // as requested, already resolved to canonical ids
	pb::AssignOptions options;
	std::map<std::string, pb::Device> devices;
	std::map<std::string, pb::Device> held; // device id -> device, with state and vm set
	const Policy *policy = nullptr;
};

// Every conflict, in a stable order (by device, then reason). Empty means Assign may proceed.
// Checks: unknown and duplicate ids; policy allows the device and the VM; not held by another
// VM (a device held by the same VM is DEVICE_BUSY: deassign first); FAILED state; every member
// of the IOMMU group not held by another VM, and the group viable once the requested members
// are bound (members on drivers that keep a group viable, or requested, are fine); no IOMMU
// group → NO_IOMMU unless options.force_no_iommu, the rule allows it and identity mapping is
// requested; identity mapping only where allowed; interrupts and (IOMMU, stream ID) pairs
// shared with a device held by another VM; MMIO ranges overlapping within the VM (identity
// mapping: host ranges are guest ranges).
std::vector<pb::Conflict> checkAssignment(const ConflictInput &input);

} // namespace vfio_broker::control
