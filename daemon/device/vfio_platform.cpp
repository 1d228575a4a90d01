// SPDX-License-Identifier: Apache-2.0
// Kernel VFIO platform backend: resolves platform/AMBA devices in sysfs, checks their VFIO binding, caches regions and IRQs.
#include "device/vfio_platform.h"

#include <limits.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "common/path_util.h"
#include "device/vfio_caps.h"

// Facts from Linux 6.1 drivers/vfio/platform: vfio_platform_common.c reports one region per MMIO resource,
// flags READ (+WRITE unless read-only) and MMAP only when the resource's address and size are both page
// aligned, no capabilities, region offset index << 40; vfio_platform_irq.c reports each interrupt as its own
// index of count 1, level ones EVENTFD|MASKABLE|AUTOMASKED, and takes SET_IRQS only with start 0, count 1 (or
// the count-0 DATA_NONE disable). VFIO_DEVICE_FLAGS_RESET is set when a reset handler was found.
namespace vfio_broker::device {

namespace {

// A platform device has a handful of MMIO resources and interrupts; far more means something is wrong.
constexpr uint32_t kMaxRegions = 64;
constexpr uint32_t kMaxIrqIndexes = 64;

using path::baseName;
using path::canonicalPath;
using path::isWithin;
using path::stripTrailingSlashes;

// The basename of a symlink's target; nullopt when there is no such link.
Result<std::optional<std::string>> linkTargetName(const std::string &link)
{
	auto target = path::readLink(link);
	if (!target)
		return target.takeError();
	if (!*target)
		return std::optional<std::string>();
	return std::optional<std::string>(baseName(**target));
}

// Device names are single path components the kernel made ("9010000.pl031", "a000000.virtio_mmio").
bool isDeviceName(const std::string &name)
{
	return !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
	       name.find('/') == std::string::npos;
}

// Where a spec points before canonicalisation: a path under root, or an error.
Result<std::string> candidatePath(const std::string &root, const std::string &spec)
{
	for (const char *bus : { "platform", "amba" }) {
		std::string prefix = std::string(bus) + ":";
		if (spec.rfind(prefix, 0) == 0) {
			std::string name = spec.substr(prefix.size());
			if (!isDeviceName(name))
				return makeError(EINVAL, "'%s' does not name a %s device", spec.c_str(), bus);
			return root + "/bus/" + bus + "/devices/" + name;
		}
	}
	if (!spec.empty() && spec[0] == '/') {
		// Specs name the conventional /sys mount point; map it onto the root we were given.
		if (isWithin(spec, root))
			return spec;
		if (isWithin(spec, "/sys"))
			return root + spec.substr(4);
		return makeError(EINVAL, "%s is not under the sysfs root %s", spec.c_str(), root.c_str());
	}
	return makeError(EINVAL, "'%s' is neither platform:NAME, amba:NAME nor a sysfs device path", spec.c_str());
}

} // namespace

const char *vfioDriverForBus(const std::string &bus)
{
	return bus == "amba" ? "vfio-amba" : "vfio-platform";
}

Result<PlatformDeviceLocation> resolvePlatformDevice(const std::string &sysfsRoot, const std::string &spec)
{
	const std::string root = stripTrailingSlashes(sysfsRoot);
	auto canonicalRoot = canonicalPath(root);
	if (!canonicalRoot)
		return withContext(canonicalRoot.takeError(), "sysfs root");
	auto candidate = candidatePath(root, spec);
	if (!candidate)
		return candidate.takeError();

	auto path = canonicalPath(*candidate);
	if (!path) {
		if (path.error().code == ENOENT)
			return makeError(ENODEV, "no platform or AMBA device %s (%s does not exist)", spec.c_str(),
					 candidate->c_str());
		return path.takeError();
	}
	if (!isWithin(*path, *canonicalRoot + "/devices") || *path == *canonicalRoot + "/devices")
		return makeError(EINVAL, "%s resolves to %s, which is not a device directory", spec.c_str(),
				 path->c_str());

	auto subsystem = linkTargetName(*path + "/subsystem");
	if (!subsystem)
		return subsystem.takeError();
	if (!*subsystem)
		return makeError(EINVAL, "%s (%s) has no subsystem link: not a device", spec.c_str(), path->c_str());
	const std::string &bus = **subsystem;
	const std::string name = baseName(*path);
	if (bus != "platform" && bus != "amba")
		return makeError(EINVAL, "%s is a device on the %s bus; only platform and AMBA devices are passed through "
				 "with vfio-platform/vfio-amba%s", name.c_str(), bus.c_str(),
				 bus == "pci" ? " (give a PCI address for vfio-pci)" : "");
	// The bus's own listing must lead to the same directory, so a look-alike path cannot pose as a device.
	auto viaBus = canonicalPath(root + "/bus/" + bus + "/devices/" + name);
	if (!viaBus || *viaBus != *path)
		return makeError(ENODEV, "%s (%s) is not listed in %s/bus/%s/devices", spec.c_str(), path->c_str(),
				 root.c_str(), bus.c_str());
	return PlatformDeviceLocation{ name, bus, *path };
}

bool namesPlatformDevice(const std::string &sysfsRoot, const std::string &spec)
{
	if (spec.rfind("platform:", 0) == 0 || spec.rfind("amba:", 0) == 0)
		return true;
	if (spec.empty() || spec[0] != '/')
		return false;
	for (const char *prefix : { "/sys/bus/platform/", "/sys/bus/amba/" })
		if (spec.rfind(prefix, 0) == 0)
			return true;
	// Any other path: by the bus it is on. What cannot be resolved goes to the PCI backend, whose errors
	// already explain a bad path.
	const std::string root = stripTrailingSlashes(sysfsRoot);
	auto candidate = candidatePath(root, spec);
	if (!candidate)
		return false;
	auto path = canonicalPath(*candidate);
	if (!path)
		return false;
	auto subsystem = linkTargetName(*path + "/subsystem");
	return subsystem && *subsystem && **subsystem != "pci";
}

VfioPlatformDevice::VfioPlatformDevice(PlatformDeviceLocation location, std::unique_ptr<IommuBackend> iommu,
				       UniqueFd device)
	: VfioDevice(location.name, std::move(iommu), std::move(device)), location_(std::move(location))
{
	quiesceUnmasks_ = true;
}

Result<std::unique_ptr<VfioPlatformDevice>> VfioPlatformDevice::open(const std::string &spec,
								     const VfioOpenOptions &opts)
{
	auto location = resolvePlatformDevice(opts.sysfsRoot, spec);
	if (!location)
		return location.takeError();
	const std::string &name = location->name;
	const char *wanted = vfioDriverForBus(location->bus);

	// Checked before touching /dev/vfio: without the VFIO driver there is no group node, and this says why.
	auto driver = linkTargetName(location->path + "/driver");
	if (!driver)
		return driver.takeError();
	if (!*driver)
		return makeError(ENODEV, "%s is not bound to any driver; bind it to %s (driver_override, then "
				 "drivers_probe on the %s bus)", name.c_str(), wanted, location->bus.c_str());
	if (**driver != wanted)
		return makeError(EBUSY, "%s is bound to %s, not %s; unbind it and bind it to %s", name.c_str(),
				 (*driver)->c_str(), wanted, wanted);

	auto groupLink = linkTargetName(location->path + "/iommu_group");
	if (!groupLink)
		return groupLink.takeError();
	if (!*groupLink)
		return makeError(ENODEV, "%s has no IOMMU group: no IOMMU translates for it, and vfio was not loaded "
				 "with enable_unsafe_noiommu_mode=1 (no-IOMMU: no DMA isolation)", name.c_str());
	const std::string &group = **groupLink;
	if (group.empty() || group.size() > 10 ||
	    !std::all_of(group.begin(), group.end(), [](unsigned char c) { return std::isdigit(c); }))
		return makeError(EINVAL, "%s: iommu_group link points to '%s', not a group number", name.c_str(),
				 group.c_str());

	auto container = openVfioContainer(opts, group, name, wanted);
	if (!container)
		return container.takeError();
	auto deviceFd = (*container)->openDevice(name);
	if (!deviceFd)
		return deviceFd.takeError();

	std::unique_ptr<VfioPlatformDevice> device(
		new VfioPlatformDevice(std::move(*location), std::move(*container), std::move(*deviceFd)));
	if (auto st = device->loadDeviceInfo(opts); !st)
		return withContext(st.takeError(), name);
	return device;
}

Status VfioPlatformDevice::loadDeviceInfo(const VfioOpenOptions &opts)
{
	const int fd = device_.get();
	const bool amba = location_.bus == "amba";
	// The bus sysfs shows must be the one VFIO reports.
	auto queried = queryDeviceInfo(fd, amba ? VFIO_DEVICE_FLAGS_AMBA : VFIO_DEVICE_FLAGS_PLATFORM,
				       amba ? "AMBA" : "platform", kMaxRegions, kMaxIrqIndexes);
	if (!queried)
		return queried.takeError();
	const vfio_device_info &deviceInfo = *queried;
	info_ = DeviceInfo{ deviceInfo.flags, deviceInfo.num_regions, deviceInfo.num_irqs };

	const uint64_t pageSize = hostPageSize();
	regions_.resize(deviceInfo.num_regions);
	for (uint32_t index = 0; index < deviceInfo.num_regions; index++) {
		auto kernelRegion = queryRegionInfo(fd, index);
		if (!kernelRegion)
			return kernelRegion.takeError();
		const vfio_region_info &ri = kernelRegion->info;
		uint32_t kernelFlags = ri.flags;
		// The kernel already refuses to map a region that is not whole pages (a client's mapping would
		// reach the registers of whatever shares the page); never offer what mmap() would refuse.
		if (ri.size < pageSize || ri.size % pageSize != 0 || ri.offset % pageSize != 0)
			kernelFlags &= ~VFIO_REGION_INFO_FLAG_MMAP;
		if (Status s = setRegion(index, std::move(*kernelRegion), kernelFlags, std::nullopt, opts.allowMmap, pageSize);
		    !s)
			return s;
	}
	return loadIrqInfo(deviceInfo.num_irqs);
}

std::string VfioPlatformDevice::noResetReason() const
{
	// vfio-platform looks a reset handler up by the device's compatible string (or ACPI _RST); vfio-amba has
	// none to find and binds with reset_required off.
	return strFormat("%s found no reset handler for it%s", vfioDriverForBus(location_.bus),
			 location_.bus == "amba" ? "" : "; it was bound with reset_required=0");
}

Result<std::unique_ptr<Device>> openVfioPlatformDevice(const std::string &spec, const VfioOpenOptions &opts)
{
	auto device = VfioPlatformDevice::open(spec, opts);
	if (!device)
		return device.takeError();
	return std::unique_ptr<Device>(std::move(*device));
}

} // namespace vfio_broker::device
