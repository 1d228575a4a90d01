// SPDX-License-Identifier: Apache-2.0
// Kernel VFIO platform backend: a VfioDevice over a vfio-platform or vfio-amba device fd (SoC devices from the device tree).
#pragma once

#include <memory>
#include <string>

#include "common/result.h"
#include "device/device.h"
#include "device/vfio_group.h"

namespace vfio_broker::device {

struct PlatformDeviceLocation {
	std::string name; // the kernel's device name, "9010000.pl031"; also the name GROUP_GET_DEVICE_FD takes
	std::string bus;  // "platform" or "amba"
	std::string path; // canonical device directory, under the canonical sysfs root
};

// The VFIO driver that serves a bus: "vfio-platform" or "vfio-amba".
const char *vfioDriverForBus(const std::string &bus);

// Resolve a platform device spec: "platform:NAME", "amba:NAME", or a sysfs path ("/sys/bus/platform/devices/NAME",
// "/sys/bus/amba/devices/NAME", "/sys/devices/platform/..."), a path starting with /sys taken relative to
// sysfsRoot. Only devices on the platform and AMBA buses are accepted (Android's VFIO handler, in
// packages/modules/Virtualization virtualizationservice/vfio_handler, takes platform-bus sysfs paths only, for
// the same reason): anything else is refused with EINVAL naming the bus it is on.
Result<PlatformDeviceLocation> resolvePlatformDevice(const std::string &sysfsRoot, const std::string &spec);

// Whether --device names a platform or AMBA device, so open_device sends it here rather than to the PCI backend:
// the "platform:"/"amba:" ids, /sys/bus/{platform,amba}/ paths, and any other sysfs path whose device is not on
// the PCI bus (a PCI device behind a platform PCIe host also lives under /sys/devices/platform).
bool namesPlatformDevice(const std::string &sysfsRoot, const std::string &spec);

class VfioPlatformDevice final : public VfioDevice
{
public:
	// Resolve spec, check that the device is bound to the VFIO driver of its bus and has an IOMMU group (a
	// "vfio-noiommu" group opens in no-IOMMU mode: no DMA mapping), attach the group and cache the device's
	// regions and IRQs. Regions are mmap-able only when the kernel says so; sub-page ones never are.
	static Result<std::unique_ptr<VfioPlatformDevice>> open(const std::string &spec, const VfioOpenOptions &opts);

private:
	VfioPlatformDevice(PlatformDeviceLocation location, std::unique_ptr<IommuBackend> iommu, UniqueFd device);
	Status loadDeviceInfo(const VfioOpenOptions &opts);
	std::string noResetReason() const override;

	PlatformDeviceLocation location_;
};

Result<std::unique_ptr<Device>> openVfioPlatformDevice(const std::string &spec, const VfioOpenOptions &opts);

} // namespace vfio_broker::device
