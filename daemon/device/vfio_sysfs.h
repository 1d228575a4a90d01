// SPDX-License-Identifier: Apache-2.0
// Sysfs lookups for VFIO PCI devices (address resolution, drivers, IOMMU groups, viability), all under a sysfs root.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

// Every path is built from the sysfsRoot argument ("/sys" in production) so tests can run on a fake tree.
namespace vfio_broker::device {

struct PciDeviceLocation {
	std::string bdf;  // "0000:01:00.0", lower case
	std::string path; // canonical device directory (symlinks resolved), under the canonical sysfs root
};

// "0000:01:00.0" or the short "01:00.0" (domain 0000), any case, to the canonical lower-case form;
// nullopt when text is not a PCI address.
std::optional<std::string> normalizeBdf(std::string_view text);

// Resolve a device spec: a PCI address, or a sysfs device path ("/sys/bus/pci/devices/0000:01:00.0",
// "/sys/devices/pci0000:00/0000:00:01.0"). A path starting with /sys is taken relative to sysfsRoot.
// Fails when the device does not exist or is not a PCI device.
Result<PciDeviceLocation> resolvePciDevice(const std::string &sysfsRoot, const std::string &spec);

// The driver bound to a PCI device: the basename of its driver symlink, "" when unbound.
Result<std::string> readDriver(const std::string &sysfsRoot, const std::string &bdf);

// The IOMMU group number of a PCI device ("7"); ENODEV when it has none (IOMMU off).
Result<std::string> iommuGroupOf(const std::string &sysfsRoot, const std::string &bdf);

// Devices in an IOMMU group, sorted by name.
Result<std::vector<std::string>> listGroupMembers(const std::string &sysfsRoot, const std::string &group);

// Whether a group is a VFIO no-IOMMU group (its name is "vfio-noiommu").
bool isNoIommuGroup(const std::string &sysfsRoot, const std::string &group);

// vfio-pci and its variant drivers (mlx5_vfio_pci, ...): all carry "vfio" in their name.
bool isVfioDriver(std::string_view driver);

// A member keeps its group viable when it is unbound, bound to a vfio driver, or bound to a driver that
// never does DMA on its own (pci-stub, pcieport).
bool driverKeepsGroupViable(std::string_view driver);

struct GroupBlocker {
	std::string device;
	std::string driver;
};

// Members whose driver makes the group non-viable for VFIO.
Result<std::vector<GroupBlocker>> findViabilityBlockers(const std::string &sysfsRoot, const std::string &group);

// "IOMMU group 7 is not viable: 0000:01:00.1 is bound to snd_hda_intel; bind every member to vfio-pci or
// unbind it"
std::string describeNonViableGroup(const std::string &group, const std::vector<GroupBlocker> &blockers);

} // namespace vfio_broker::device
