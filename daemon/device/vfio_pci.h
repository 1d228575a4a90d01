// SPDX-License-Identifier: Apache-2.0
// Kernel VFIO PCI backend: a VfioDevice over a vfio-pci device fd (the VFIO ioctls live here and in vfio_group).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "common/unique_fd.h"
#include "device/device.h"
#include "device/vfio_group.h"

namespace vfio_broker::device {

class VfioPciDevice final : public VfioDevice
{
public:
	// Resolve spec (see openVfioPciDevice), check the IOMMU group, attach it and cache everything the
	// device reports (regions with their capability chains, IRQ indexes, MSI-X layout).
	static Result<std::unique_ptr<VfioPciDevice>> open(const std::string &spec, const VfioOpenOptions &opts);

private:
	VfioPciDevice(std::string bdf, std::unique_ptr<IommuBackend> iommu, UniqueFd device);
	Status loadDeviceInfo(const VfioOpenOptions &opts);
	std::string noResetReason() const override { return "no FLR, PM or bus reset"; }
};

// spec: a PCI address ("0000:01:00.0", or "01:00.0" for domain 0) or a sysfs device path
// ("/sys/bus/pci/devices/0000:01:00.0", "/sys/devices/pci0000:00/0000:00:01.0"), taken relative to
// opts.sysfsRoot. Errors name the reason in words (device not bound to vfio-pci, group not viable and why,
// group busy, no IOMMU group).
Result<std::unique_ptr<Device>> openVfioPciDevice(const std::string &spec, const VfioOpenOptions &opts);

} // namespace vfio_broker::device
