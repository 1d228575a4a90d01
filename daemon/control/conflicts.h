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
	const Policy *policy = nullptr;		// nullptr: an empty policy, which denies everything
	// The options each held device was assigned with (from the state file), by device id; only
	// identity_mapping is read, for the MMIO overlap check. A held device missing here counts
	// as not identity-mapped.
	std::map<std::string, pb::AssignOptions> heldOptions;
};

// Every conflict, in a stable order: by device in request order, then reason (enum order),
// then the other device and VM. Empty means Assign may proceed. Costs O(requested + held)
// map look-ups (held devices are indexed once per call, each IOMMU group is examined once).
// The answer is bounded too: per device and reason, SHARED_INTERRUPT, SHARED_STREAM_ID and
// MMIO_OVERLAP name at most 16 other devices, then one more conflict (other_device_id empty)
// counts the rest.
//
// Checks, per requested device:
//  - UNKNOWN_DEVICE: not in `devices`; also a member of its IOMMU group missing there (with
//    other_device_id). DUPLICATE_DEVICE: the id appears again in the request (once per id).
//  - POLICY_DENIED: no rule allows it. VM_NOT_ALLOWED: its rule names other VMs.
//  - ASSIGNED_TO_OTHER_VM: held by another VM (also when quarantined or failed after it).
//    DEVICE_BUSY: held by this VM already (deassign, or release, first), or FAILED.
//  - IOMMU_GROUP_SPLIT: another member of its group is held by another VM.
//    IOMMU_GROUP_NOT_VIABLE: another member is neither requested, nor held by this VM, nor on a
//    driver that keeps the group viable (none, vfio*, pcieport, pci-stub): we only bind
//    requested devices. Simulated devices have no group and need none.
//  - NO_IOMMU: no IOMMU group, or a no-IOMMU group, unless options.force_no_iommu, the rule
//    allows no-IOMMU, and identity mapping is requested; or unless the device is a platform or
//    AMBA device whose rule says no_dma and whose node has no "iommus" (no stream IDs): a device
//    that cannot DMA has nothing to confine (Xen's non-DMA class). Interrupt-less devices need
//    nothing special.
//  - IDENTITY_NOT_ALLOWED: identity mapping requested and the rule does not allow it.
//  - SHARED_INTERRUPT: an interrupt (controller and specifier; for a GIC specifier, type and
//    number, whatever the trigger flags) of a device held by another VM. SHARED_STREAM_ID: an (IOMMU, stream ID) pair of a device held by another VM.
//  - MMIO_OVERLAP: with identity mapping, a host MMIO range overlapping another requested
//    device's, or one of a device this VM holds identity-mapped (host ranges are guest ranges
//    there). Reported on each requested device of the pair.
std::vector<pb::Conflict> checkAssignment(const ConflictInput &input);

} // namespace vfio_broker::control
