// SPDX-License-Identifier: Apache-2.0
// Reads PCI device, driver and IOMMU group facts from sysfs (or a fake tree standing in for it).
#include "device/vfio_sysfs.h"

#include <dirent.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>

#include "common/path_util.h"

namespace vfio_broker::device {

namespace {

using path::baseName;
using path::canonicalPath;
using path::isWithin;
using path::readLink;
using path::stripTrailingSlashes;

Result<std::string> readDriverAt(const std::string &devicePath)
{
	auto link = readLink(devicePath + "/driver");
	if (!link)
		return link.takeError();
	return *link ? baseName(**link) : std::string();
}

bool isGroupName(const std::string &group)
{
	return !group.empty() && group.size() <= 10 &&
	       std::all_of(group.begin(), group.end(), [](unsigned char c) { return std::isdigit(c); });
}

bool parseHex(std::string_view text, size_t minDigits, size_t maxDigits, unsigned long *out)
{
	if (text.size() < minDigits || text.size() > maxDigits)
		return false;
	unsigned long v = 0;
	for (char c : text) {
		if (!std::isxdigit(static_cast<unsigned char>(c)))
			return false;
		v = v * 16 + (std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : std::tolower(c) - 'a' + 10);
	}
	*out = v;
	return true;
}

} // namespace

std::optional<std::string> normalizeBdf(std::string_view text)
{
	// [domain:]bus:device.function; domains past 0xffff (VMD) print with more than 4 digits.
	unsigned long domain = 0, bus, device, function;
	size_t dot = text.rfind('.');
	size_t colon2 = text.rfind(':');
	if (dot == std::string_view::npos || colon2 == std::string_view::npos || colon2 > dot)
		return std::nullopt;
	size_t colon1 = text.rfind(':', colon2 == 0 ? 0 : colon2 - 1);
	std::string_view busText;
	if (colon1 == std::string_view::npos || colon1 == colon2) {
		busText = text.substr(0, colon2);
	} else {
		if (!parseHex(text.substr(0, colon1), 4, 8, &domain))
			return std::nullopt;
		busText = text.substr(colon1 + 1, colon2 - colon1 - 1);
	}
	if (!parseHex(busText, 2, 2, &bus) || !parseHex(text.substr(colon2 + 1, dot - colon2 - 1), 2, 2, &device) ||
	    !parseHex(text.substr(dot + 1), 1, 1, &function) || device > 0x1f || function > 7)
		return std::nullopt;
	return strFormat("%04lx:%02lx:%02lx.%lx", domain, bus, device, function);
}

Result<PciDeviceLocation> resolvePciDevice(const std::string &sysfsRoot, const std::string &spec)
{
	const std::string root = stripTrailingSlashes(sysfsRoot);
	auto canonicalRoot = canonicalPath(root);
	if (!canonicalRoot)
		return withContext(canonicalRoot.takeError(), "sysfs root");

	std::string candidate;
	if (auto bdf = normalizeBdf(spec)) {
		candidate = root + "/bus/pci/devices/" + *bdf;
	} else if (!spec.empty() && spec[0] == '/') {
		// Specs name the conventional /sys mount point; map it onto the root we were given.
		if (isWithin(spec, root))
			candidate = spec;
		else if (isWithin(spec, "/sys"))
			candidate = root + spec.substr(4);
		else
			return makeError(EINVAL, "%s is not under the sysfs root %s", spec.c_str(), root.c_str());
	} else {
		return makeError(EINVAL, "'%s' is neither a PCI address (0000:01:00.0) nor a sysfs device path",
				 spec.c_str());
	}

	auto path = canonicalPath(candidate);
	if (!path) {
		if (path.error().code == ENOENT)
			return makeError(ENODEV, "no PCI device %s (%s does not exist)", spec.c_str(), candidate.c_str());
		return path.takeError();
	}
	// Device directories all live under <root>/devices; anything else is not a device at all.
	if (!isWithin(*path, *canonicalRoot + "/devices"))
		return makeError(EINVAL, "%s resolves to %s, which is not a device directory", spec.c_str(), path->c_str());
	std::string name = baseName(*path);
	auto bdf = normalizeBdf(name);
	auto viaBus = canonicalPath(root + "/bus/pci/devices/" + name);
	if (!bdf || *bdf != name || !viaBus || *viaBus != *path)
		return makeError(ENODEV, "%s (%s) is not a PCI device", spec.c_str(), path->c_str());
	return PciDeviceLocation{ name, *path };
}

Result<std::string> readDriver(const std::string &sysfsRoot, const std::string &bdf)
{
	if (normalizeBdf(bdf) != bdf)
		return makeError(EINVAL, "'%s' is not a canonical PCI address", bdf.c_str());
	return readDriverAt(stripTrailingSlashes(sysfsRoot) + "/bus/pci/devices/" + bdf);
}

Result<std::string> iommuGroupOf(const std::string &sysfsRoot, const std::string &bdf)
{
	if (normalizeBdf(bdf) != bdf)
		return makeError(EINVAL, "'%s' is not a canonical PCI address", bdf.c_str());
	auto link = readLink(stripTrailingSlashes(sysfsRoot) + "/bus/pci/devices/" + bdf + "/iommu_group");
	if (!link)
		return link.takeError();
	if (!*link)
		return makeError(ENODEV,
				 "%s has no IOMMU group: the IOMMU is off or absent (boot with intel_iommu=on or "
				 "amd_iommu=on, or use VFIO no-IOMMU mode)",
				 bdf.c_str());
	std::string group = baseName(**link);
	if (!isGroupName(group))
		return makeError(EINVAL, "%s: iommu_group link points to '%s', not a group number", bdf.c_str(),
				 link->value().c_str());
	return group;
}

Result<std::vector<std::string>> listGroupMembers(const std::string &sysfsRoot, const std::string &group)
{
	if (!isGroupName(group))
		return makeError(EINVAL, "'%s' is not an IOMMU group number", group.c_str());
	std::string dir = stripTrailingSlashes(sysfsRoot) + "/kernel/iommu_groups/" + group + "/devices";
	DIR *d = ::opendir(dir.c_str());
	if (!d)
		return errnoError(errno, "cannot list IOMMU group " + group + " (" + dir + ")");
	std::vector<std::string> members;
	while (struct dirent *entry = ::readdir(d)) {
		std::string name = entry->d_name;
		if (name != "." && name != "..")
			members.push_back(std::move(name));
	}
	::closedir(d);
	std::sort(members.begin(), members.end());
	return members;
}

bool isNoIommuGroup(const std::string &sysfsRoot, const std::string &group)
{
	if (!isGroupName(group))
		return false;
	std::ifstream in(stripTrailingSlashes(sysfsRoot) + "/kernel/iommu_groups/" + group + "/name");
	std::string name;
	return in && std::getline(in, name) && name == "vfio-noiommu";
}

bool isVfioDriver(std::string_view driver)
{
	return driver.find("vfio") != std::string_view::npos;
}

bool driverKeepsGroupViable(std::string_view driver)
{
	// The kernel checks driver_managed_dma; of the drivers that set it, these are the ones that bind to
	// plain PCI devices and bridges.
	return driver.empty() || isVfioDriver(driver) || driver == "pci-stub" || driver == "pcieport";
}

Result<std::vector<GroupBlocker>> findViabilityBlockers(const std::string &sysfsRoot, const std::string &group)
{
	auto members = listGroupMembers(sysfsRoot, group);
	if (!members)
		return members.takeError();
	std::vector<GroupBlocker> blockers;
	for (const std::string &member : *members) {
		auto driver = readDriverAt(stripTrailingSlashes(sysfsRoot) + "/kernel/iommu_groups/" + group +
					   "/devices/" + member);
		if (!driver)
			return driver.takeError();
		if (!driverKeepsGroupViable(*driver))
			blockers.push_back(GroupBlocker{ member, *driver });
	}
	return blockers;
}

std::string describeNonViableGroup(const std::string &group, const std::vector<GroupBlocker> &blockers)
{
	std::string msg = "IOMMU group " + group + " is not viable: ";
	if (blockers.empty()) {
		// The kernel saw a DMA-capable driver that sysfs no longer shows, e.g. one binding right now.
		msg += "sysfs shows no member bound to a host driver that does DMA (a driver may be binding now)";
	} else {
		for (size_t i = 0; i < blockers.size(); i++) {
			if (i)
				msg += ", ";
			msg += blockers[i].device + " is bound to " + blockers[i].driver;
		}
	}
	return msg + "; bind every member to vfio-pci or unbind it";
}

} // namespace vfio_broker::device
