// SPDX-License-Identifier: Apache-2.0
// Kernel VFIO PCI backend: resolves and checks a vfio-pci device, then caches its regions (caps, MSI-X) and IRQs.
#include "device/vfio_pci.h"

#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/log.h"
#include "device/vfio_caps.h"
#include "device/vfio_sysfs.h"

namespace vfio_broker::device {

namespace {

// vfio-pci reports 9 fixed regions plus a few device-specific ones and 5 IRQ indexes; far more means
// something is wrong, and these bound what we allocate.
constexpr uint32_t kMaxRegions = 256;
constexpr uint32_t kMaxIrqIndexes = 64;
// MSI-X sits in standard config space, which is all we need to read.
constexpr uint64_t kStandardConfigSize = 256;

} // namespace

VfioPciDevice::VfioPciDevice(std::string bdf, std::unique_ptr<IommuBackend> iommu, UniqueFd device)
	: VfioDevice(std::move(bdf), std::move(iommu), std::move(device))
{
}

Result<std::unique_ptr<VfioPciDevice>> VfioPciDevice::open(const std::string &spec, const VfioOpenOptions &opts)
{
	auto location = resolvePciDevice(opts.sysfsRoot, spec);
	if (!location)
		return location.takeError();
	const std::string bdf = location->bdf;

	// Checked before touching /dev/vfio: without vfio-pci there is no group node, and this says why.
	auto driver = readDriver(opts.sysfsRoot, bdf);
	if (!driver)
		return driver.takeError();
	if (driver->empty())
		return makeError(ENODEV, "%s is not bound to any driver; bind it to vfio-pci", bdf.c_str());
	if (!isVfioDriver(*driver))
		return makeError(EBUSY, "%s is bound to %s, not vfio-pci; unbind it and bind it to vfio-pci", bdf.c_str(),
				 driver->c_str());

	auto group = iommuGroupOf(opts.sysfsRoot, bdf);
	if (!group)
		return group.takeError();

	struct stat iommufdNode;
	if (::stat((opts.devRoot + "/iommu").c_str(), &iommufdNode) == 0)
		LOG_DEBUG("%s: %s/iommu exists, but the iommufd backend is not implemented yet; using the legacy "
			  "VFIO container", bdf.c_str(), opts.devRoot.c_str());
	auto container = openVfioContainer(opts, *group, bdf, "vfio-pci");
	if (!container)
		return container.takeError();
	auto deviceFd = (*container)->openDevice(bdf);
	if (!deviceFd)
		return deviceFd.takeError();

	std::unique_ptr<VfioPciDevice> device(new VfioPciDevice(bdf, std::move(*container), std::move(*deviceFd)));
	if (auto st = device->loadDeviceInfo(opts); !st)
		return withContext(st.takeError(), bdf);
	return device;
}

Status VfioPciDevice::loadDeviceInfo(const VfioOpenOptions &opts)
{
	const int fd = device_.get();
	auto queried = queryDeviceInfo(fd, VFIO_DEVICE_FLAGS_PCI, "PCI", kMaxRegions, kMaxIrqIndexes);
	if (!queried)
		return queried.takeError();
	const vfio_device_info &deviceInfo = *queried;
	if (deviceInfo.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX)
		return makeError(EIO, "VFIO_DEVICE_GET_INFO reports %u regions: no config space", deviceInfo.num_regions);
	info_ = DeviceInfo{ deviceInfo.flags, deviceInfo.num_regions, deviceInfo.num_irqs };

	std::vector<KernelRegion> kernel(deviceInfo.num_regions);
	for (uint32_t index = 0; index < deviceInfo.num_regions; index++) {
		auto region = queryRegionInfo(fd, index);
		if (!region) {
			// vfio-pci answers EINVAL for regions the device lacks (VGA on a non-VGA device).
			if (region.error().code == EINVAL) {
				kernel[index].info.index = index;
				continue;
			}
			return region.takeError();
		}
		kernel[index] = std::move(*region);
	}

	// The MSI-X table location comes from config space as vfio-pci presents it.
	std::optional<MsixCapability> msix;
	const vfio_region_info &config = kernel[VFIO_PCI_CONFIG_REGION_INDEX].info;
	if (config.size > 0) {
		std::vector<uint8_t> bytes(std::min<uint64_t>(config.size, kStandardConfigSize));
		ssize_t n = ::pread(fd, bytes.data(), bytes.size(), static_cast<off_t>(config.offset));
		if (n < 0)
			return errnoError(errno, "reading config space");
		bytes.resize(static_cast<size_t>(n));
		auto parsed = parseMsixCapability(bytes);
		if (!parsed)
			return withContext(parsed.takeError(), "config space");
		msix = *parsed;
	}

	const uint64_t pageSize = hostPageSize();
	regions_.resize(deviceInfo.num_regions);
	for (uint32_t index = 0; index < deviceInfo.num_regions; index++) {
		const uint32_t flags = kernel[index].info.flags;
		if (Status s = setRegion(index, std::move(kernel[index]), flags, msix, opts.allowMmap, pageSize); !s)
			return s;
	}

	return loadIrqInfo(deviceInfo.num_irqs);
}

Result<std::unique_ptr<Device>> openVfioPciDevice(const std::string &spec, const VfioOpenOptions &opts)
{
	auto device = VfioPciDevice::open(spec, opts);
	if (!device)
		return device.takeError();
	return std::unique_ptr<Device>(std::move(*device));
}

} // namespace vfio_broker::device
