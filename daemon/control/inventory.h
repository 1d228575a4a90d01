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
// "pci:..." or a sysfs path; "sim:edu" as is (only when configured). ENOENT when nothing
// matches; EINVAL when the input is neither an id, a PCI address nor a sysfs path.
Result<std::string> resolveDeviceId(const InventoryOptions &opts, const std::string &input);

// What --device of vfio-broker-device takes for this id ("0000:01:00.0", "sim:edu").
std::string deviceDaemonArgument(const std::string &id);

// One device, read fresh from sysfs: kind, sysfs path, ids, driver, IOMMU group (members,
// viability and blockers, no-IOMMU), reset support and method, MMIO ranges ("resource"),
// the legacy interrupt line. Policy, state and vm are left for the caller. ENOENT when the
// device does not exist (or vanished while it was read).
//
// How the fields are filled:
// - sysfs_path is the canonical device directory as if sysfs were mounted at /sys
//   ("/sys/devices/pci0000:00/0000:00:01.0"), whatever sysfsRoot is.
// - iommu_group.members are device ids ("pci:0000:01:00.1") and always include the device
//   itself; blockers are "0000:01:00.1 (snd_hda_intel)". A PCI device without an IOMMU group
//   gets number -1 and no_iommu = true (only VFIO no-IOMMU mode could drive it), and is viable
//   when its own driver keeps a group viable. A device in a "vfio-noiommu" group keeps its
//   group number and has no_iommu = true.
// - Simulated devices (sim:edu: kind SIMULATED, vendor 0x1234, device 0x11e8) live entirely in
//   the device daemon and do no host DMA, so no IOMMU group is needed: number -1, members
//   [itself], viable = true, no_iommu = false. Conflict checks must therefore not read
//   "number -1" alone as "unprotected": no_iommu says that. Reset is supported (the daemon
//   resets the model), reset_method is empty, and there is no MMIO, interrupt or driver.
// - mmio: the non-empty IORESOURCE_MEM (0x200) resources among the BARs and the expansion ROM
//   (the first 7 lines of "resource"), in that order. SR-IOV VF BARs and bridge windows that
//   follow are left out: they are other devices' MMIO (each VF, each device behind the bridge).
// - interrupts: the legacy INTx line, Interrupt{controller: "pci-intx", specifier: [irq]},
//   when "irq" is non-zero and the interrupt pin (config space 0x3d) is set. The pin check
//   matters because a device without INTx may show an MSI vector in "irq"; when "config"
//   cannot be read (or is too short) a non-zero "irq" alone decides.
// - Unreadable or garbled attribute files (vendor, device, resource, irq, reset_method) leave
//   their fields at the defaults rather than failing the device; broken links do fail it.
Result<pb::Device> scanDevice(const InventoryOptions &opts, const std::string &id);

// Every candidate device, sorted by id. Devices that vanish during the scan are skipped.
Result<std::vector<pb::Device>> scanAll(const InventoryOptions &opts);

} // namespace vfio_broker::control
