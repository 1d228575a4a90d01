// SPDX-License-Identifier: Apache-2.0
// Builds Device descriptions from sysfs (PCI, platform, AMBA), the host device tree and the
// configured simulated devices.
#include "control/inventory.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string_view>

#include "common/path_util.h"
#include "common/unique_fd.h"
#include "device/sim_platform_layout.h"
#include "device/vfio_sysfs.h"
#include "platform/host_dt.h"
#include "platform/sim_platform_dt.h"

namespace vfio_broker::control {

namespace {

namespace sysfs = ::vfio_broker::device;

constexpr std::string_view kPciPrefix = "pci:";
constexpr std::string_view kSimPrefix = "sim:";
constexpr std::string_view kPlatformPrefix = "platform:";
constexpr std::string_view kAmbaPrefix = "amba:";
constexpr std::string_view kSimEdu = "sim:edu";
// Reset modules of Linux 6.1's drivers/vfio/platform/reset/ (module_vfio_reset_handler in
// vfio_platform_calxedaxgmac.c, vfio_platform_amdxgbe.c, vfio_platform_bcmflexrm.c), with the
// module each compatible loads (request_module("vfio-reset:<compatible>")).
struct ResetHandler {
	const char *compatible;
	const char *module;
};
constexpr ResetHandler kResetHandlers[] = {
	{ "calxeda,hb-xgmac", "vfio-platform-calxedaxgmac" },
	{ "amd,xgbe-seattle-v1a", "vfio-platform-amdxgbe" },
	{ "brcm,iproc-flexrm-mbox", "vfio_platform_bcmflexrm" },
};
constexpr uint64_t kIoresourceMem = 0x200;
constexpr size_t kMaxAttributeBytes = 4096; // one page: no sysfs attribute is longer
// Lines 0-5 of "resource" are the BARs and 6 the expansion ROM; later lines are SR-IOV VF BARs
// (each VF reports its own share) and bridge windows (which span the devices behind them).
constexpr size_t kDeviceResourceLines = 7;

bool startsWith(std::string_view s, std::string_view prefix)
{
	return s.substr(0, prefix.size()) == prefix;
}

using path::stripTrailingSlashes;

std::string_view trim(std::string_view s)
{
	while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
		s.remove_prefix(1);
	while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
		s.remove_suffix(1);
	return s;
}

// Up to `limit` bytes of a small file; nullopt when it cannot be read (absent, a directory...).
std::optional<std::string> readAttribute(const std::string &path, size_t limit = kMaxAttributeBytes)
{
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
	if (!fd)
		return std::nullopt;
	std::string out(limit, '\0');
	size_t got = 0;
	while (got < limit) {
		ssize_t n = ::read(fd.get(), out.data() + got, limit - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return std::nullopt;
		if (n == 0)
			break;
		got += static_cast<size_t>(n);
	}
	out.resize(got);
	return out;
}

// Strict unsigned parse of a whole token; base 16 accepts an optional 0x prefix.
std::optional<uint64_t> parseUnsigned(std::string_view text, int base)
{
	if (base == 16 && (startsWith(text, "0x") || startsWith(text, "0X")))
		text.remove_prefix(2);
	if (text.empty() || text.size() > 16 + (base == 10 ? 4 : 0))
		return std::nullopt;
	uint64_t v = 0;
	for (char c : text) {
		unsigned char uc = static_cast<unsigned char>(c);
		unsigned digit;
		if (std::isdigit(uc))
			digit = uc - '0';
		else if (base == 16 && std::isxdigit(uc))
			digit = std::tolower(uc) - 'a' + 10;
		else
			return std::nullopt;
		if (v > (UINT64_MAX - digit) / static_cast<unsigned>(base))
			return std::nullopt;
		v = v * base + digit;
	}
	return v;
}

// A 16-bit id file ("0x8086\n"); 0 when missing or garbled.
uint32_t readId(const std::string &path)
{
	auto text = readAttribute(path, 64);
	if (!text)
		return 0;
	auto v = parseUnsigned(trim(*text), 16);
	return v && *v <= 0xffff ? static_cast<uint32_t>(*v) : 0;
}

// "start end flags" per line, hex; empty resources are all zero.
void readMmio(const std::string &devDir, pb::Device &dev)
{
	auto text = readAttribute(devDir + "/resource");
	if (!text)
		return;
	std::string_view rest = *text;
	for (size_t line = 0; !rest.empty() && line < kDeviceResourceLines; line++) {
		size_t nl = rest.find('\n');
		std::string_view current = rest.substr(0, nl);
		rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);

		std::optional<uint64_t> fields[3];
		size_t count = 0;
		current = trim(current);
		while (!current.empty() && count < 3) {
			size_t sp = current.find_first_of(" \t");
			fields[count++] = parseUnsigned(current.substr(0, sp), 16);
			current =
				sp == std::string_view::npos ? std::string_view() : trim(current.substr(sp));
		}
		if (count != 3 || !current.empty() || !fields[0] || !fields[1] || !fields[2])
			continue; // garbled line: skip it, keep the others
		uint64_t start = *fields[0], end = *fields[1], flags = *fields[2];
		if (!(flags & kIoresourceMem) || end < start || (start == 0 && end == 0) ||
		    end - start == UINT64_MAX)
			continue;
		pb::MmioRange *range = dev.add_mmio();
		range->set_address(start);
		range->set_size(end - start + 1);
	}
}

void readInterrupt(const std::string &devDir, pb::Device &dev)
{
	auto text = readAttribute(devDir + "/irq", 64);
	if (!text)
		return;
	auto irq = parseUnsigned(trim(*text), 10);
	if (!irq || *irq == 0 || *irq > UINT32_MAX)
		return;
	// Unprivileged readers get the first 64 bytes of config space, which hold the pin (0x3d).
	constexpr size_t kPinOffset = 0x3d;
	auto config = readAttribute(devDir + "/config", 64);
	if (config && config->size() > kPinOffset && (*config)[kPinOffset] == 0)
		return;
	pb::Interrupt *intr = dev.add_interrupts();
	intr->set_controller("pci-intx");
	intr->add_specifier(static_cast<uint32_t>(*irq));
}

void readReset(const std::string &devDir, pb::Device &dev)
{
	dev.set_reset_supported(::access((devDir + "/reset").c_str(), F_OK) == 0);
	auto method = readAttribute(devDir + "/reset_method", 256);
	if (!method)
		return;
	std::string_view m = trim(*method);
	bool printable = std::all_of(m.begin(), m.end(), [](char c) {
		return std::isprint(static_cast<unsigned char>(c));
	});
	if (printable)
		dev.set_reset_method(std::string(m));
}

struct GroupInfo {
	std::vector<std::string> members; // ids
	std::vector<std::string> blockers;
	bool noIommu = false;
};

// The id of an IOMMU group member by the bus it sits on (PCI unless a platform or AMBA bus
// lists it: PCI names are addresses, which platform names never are).
std::string memberIdOf(const std::string &root, const std::string &name)
{
	if (sysfs::normalizeBdf(name) != name) {
		if (::access((root + "/bus/amba/devices/" + name).c_str(), F_OK) == 0)
			return std::string(kAmbaPrefix) + name;
		return std::string(kPlatformPrefix) + name;
	}
	return std::string(kPciPrefix) + name;
}

Result<GroupInfo> readGroup(const std::string &root, const std::string &group)
{
	auto members = sysfs::listGroupMembers(root, group);
	if (!members)
		return members.takeError();
	auto blockers = sysfs::findViabilityBlockers(root, group);
	if (!blockers)
		return blockers.takeError();
	GroupInfo info;
	for (const std::string &m : *members)
		info.members.push_back(memberIdOf(root, m));
	for (const sysfs::GroupBlocker &b : *blockers)
		info.blockers.push_back(b.device + " (" + b.driver + ")");
	info.noIommu = sysfs::isNoIommuGroup(root, group);
	return info;
}

// The device directory relative to the root ("devices/pci0000:00/0000:00:01.0/0000:01:00.0"),
// from one readlink of its bus link. realpath (as resolvePciDevice uses) costs a readlink per
// path component, which dominates a scan of thousands of devices; sysfs bus links are relative
// and lead to the device directory through real directories only, so joining them lexically is
// exact. nullopt for anything else (absolute or odd links): the caller then takes the slow way.
std::optional<std::string> deviceDirFromBusLink(const std::string &root, const std::string &bdf,
						 std::string_view bus = "pci")
{
	char buf[PATH_MAX];
	std::string link = root + "/bus/" + std::string(bus) + "/devices/" + bdf;
	ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf));
	if (n <= 0 || static_cast<size_t>(n) == sizeof(buf) || buf[0] == '/')
		return std::nullopt;
	std::vector<std::string_view> parts = { "bus", bus, "devices" };
	std::string_view target(buf, static_cast<size_t>(n));
	while (!target.empty()) {
		size_t slash = target.find('/');
		std::string_view part = target.substr(0, slash);
		target = slash == std::string_view::npos ? std::string_view() : target.substr(slash + 1);
		if (part.empty() || part == ".")
			continue;
		if (part == "..") {
			if (parts.empty())
				return std::nullopt;
			parts.pop_back();
		} else {
			parts.push_back(part);
		}
	}
	if (parts.size() < 2 || parts.front() != "devices" || parts.back() != bdf)
		return std::nullopt;
	std::string rel;
	for (std::string_view part : parts) {
		if (!rel.empty())
			rel += '/';
		rel += part;
	}
	return rel;
}

// State shared by the devices of one scan: the canonical root, the groups read so far and the
// host device tree (read on first use, once).
struct ScanContext {
	std::string root;          // as configured, trailing slashes removed
	std::string canonicalRoot; // realpath of root
	std::map<std::string, GroupInfo> groups;
	std::optional<Result<platform::HostDeviceTree>> tree;

	const Result<platform::HostDeviceTree> &hostTree()
	{
		if (!tree)
			tree.emplace(platform::HostDeviceTree::load(root + "/firmware/fdt"));
		return *tree;
	}
};

Result<ScanContext> makeContext(const InventoryOptions &opts)
{
	ScanContext ctx;
	ctx.root = stripTrailingSlashes(opts.sysfsRoot);
	char *resolved = ::realpath(ctx.root.c_str(), nullptr);
	if (!resolved)
		return errnoError(errno, "sysfs root " + ctx.root);
	ctx.canonicalRoot = resolved;
	std::free(resolved);
	return ctx;
}

bool isPlatformKind(const pb::Device &dev)
{
	return dev.kind() == pb::DEVICE_KIND_PLATFORM || dev.kind() == pb::DEVICE_KIND_AMBA;
}

// MMIO, interrupts, stream IDs and PlatformInfo from a decoded DT node.
void fillFromNode(const platform::DtNode &node, pb::Device &dev)
{
	pb::PlatformInfo *info = dev.mutable_platform();
	info->set_dt_path(node.path);
	for (const std::string &c : node.compatible)
		info->add_compatible(c);
	info->set_status(node.status);
	info->set_passthrough(node.passthrough);
	info->set_dma_coherent(node.dmaCoherent);
	for (const auto &r : node.clocks)
		info->add_clocks(r.toString());
	for (const auto &r : node.resets)
		info->add_resets(r.toString());
	for (const auto &r : node.powerDomains)
		info->add_power_domains(r.toString());
	for (const platform::DtRegion &r : node.reg) {
		if (r.size == 0)
			continue;
		pb::MmioRange *range = dev.add_mmio();
		range->set_address(r.address);
		range->set_size(r.size);
	}
	for (const platform::DtInterrupt &irq : node.interrupts) {
		pb::Interrupt *out = dev.add_interrupts();
		out->set_controller(irq.controller);
		for (uint32_t cell : irq.specifier)
			out->add_specifier(cell);
	}
	for (const platform::DtIommu &iommu : node.iommus) {
		pb::StreamId *sid = dev.add_stream_ids();
		sid->set_iommu(iommu.iommu);
		// An SMMU's first cell is the stream ID; an IOMMU with #iommu-cells = 0 has one
		// master only, which 0 stands for.
		sid->set_stream_id(iommu.specifier.empty() ? 0 : iommu.specifier[0]);
	}
}

// A module parameter file's first line ("Y", "N", "1"), nullopt when the module is not loaded.
std::optional<std::string> moduleParameter(const std::string &root, const std::string &module,
					   const std::string &param)
{
	auto text = readAttribute(root + "/module/" + module + "/parameters/" + param, 64);
	if (!text)
		return std::nullopt;
	return std::string(trim(*text));
}

bool isYes(const std::string &v)
{
	return v == "Y" || v == "y" || v == "1";
}

// major.minor of a release string ("6.1.0-56-arm64" -> 6, 1).
std::optional<std::pair<unsigned, unsigned>> kernelVersionOf(const std::string &release)
{
	unsigned major = 0, minor = 0;
	if (std::sscanf(release.c_str(), "%u.%u", &major, &minor) != 2)
		return std::nullopt;
	return std::make_pair(major, minor);
}

std::string kernelRelease(const InventoryOptions &opts)
{
	if (!opts.kernelRelease.empty())
		return opts.kernelRelease;
	struct utsname u;
	if (::uname(&u) != 0)
		return "";
	return u.release;
}

// The device directory of a platform/AMBA device, relative to the root ("devices/platform/
// 9010000.pl031"), when its bus link leads under devices/platform; nullopt otherwise.
std::optional<std::string> platformDeviceDir(const ScanContext &ctx, std::string_view bus,
					     const std::string &name)
{
	auto rel = deviceDirFromBusLink(ctx.root, name, bus);
	if (!rel) {
		// Odd (absolute) links: resolve the slow way and check the same thing.
		std::string link = ctx.root + "/bus/" + std::string(bus) + "/devices/" + name;
		char *resolved = ::realpath(link.c_str(), nullptr);
		if (!resolved)
			return std::nullopt;
		std::string path = resolved;
		std::free(resolved);
		if (path.compare(0, ctx.canonicalRoot.size() + 1, ctx.canonicalRoot + "/") != 0)
			return std::nullopt;
		rel = path.substr(ctx.canonicalRoot.size() + 1);
	}
	if (!startsWith(*rel, "devices/platform/"))
		return std::nullopt;
	return rel;
}

bool isSafeName(const std::string &name)
{
	return !name.empty() && name != "." && name != ".." && name.size() <= NAME_MAX &&
	       name.find('/') == std::string::npos &&
	       std::all_of(name.begin(), name.end(),
			   [](char c) { return std::isgraph(static_cast<unsigned char>(c)); });
}

Result<pb::Device> scanPlatform(ScanContext &ctx, const InventoryOptions &opts, const std::string &id)
{
	const bool amba = startsWith(id, kAmbaPrefix);
	const std::string_view bus = amba ? "amba" : "platform";
	const std::string name = id.substr(amba ? kAmbaPrefix.size() : kPlatformPrefix.size());
	if (!isSafeName(name))
		return makeError(EINVAL, "%s: not a %s device name", id.c_str(), std::string(bus).c_str());
	std::string busLink = ctx.root + "/bus/" + std::string(bus) + "/devices/" + name;
	if (::access(busLink.c_str(), F_OK) != 0)
		return makeError(ENOENT, "no device %s (%s: %s)", id.c_str(), busLink.c_str(), std::strerror(errno));
	auto rel = platformDeviceDir(ctx, bus, name);
	if (!rel)
		return makeError(EINVAL,
				 "%s is not under %s/devices/platform: only devices there are assigned as "
				 "platform devices",
				 id.c_str(), ctx.root.c_str());
	const std::string devDir = ctx.root + "/" + *rel;

	pb::Device dev;
	dev.set_id(id);
	dev.set_kind(amba ? pb::DEVICE_KIND_AMBA : pb::DEVICE_KIND_PLATFORM);
	dev.set_sysfs_path("/sys/" + *rel);

	char buf[PATH_MAX];
	ssize_t n = ::readlink((devDir + "/of_node").c_str(), buf, sizeof(buf));
	if (n <= 0 || static_cast<size_t>(n) == sizeof(buf))
		return makeError(ENOENT, "%s has no device-tree node (no of_node link): only DT-described "
				 "devices are offered", id.c_str());
	auto dtPath = platform::dtPathFromOfNodeLink(std::string(buf, static_cast<size_t>(n)));
	if (!dtPath)
		return withContext(dtPath.takeError(), id);
	dev.mutable_platform()->set_dt_path(*dtPath);

	// The driver link, as the binder reads it.
	n = ::readlink((devDir + "/driver").c_str(), buf, sizeof(buf));
	if (n > 0 && static_cast<size_t>(n) < sizeof(buf)) {
		std::string target(buf, static_cast<size_t>(n));
		dev.set_driver(target.substr(target.rfind('/') + 1));
	} else if (n < 0 && errno != ENOENT) {
		return errnoError(errno, id + ": reading its driver link");
	}

	const auto &tree = ctx.hostTree();
	if (!tree) {
		dev.add_warnings("the host device tree (" + ctx.root + "/firmware/fdt) cannot be read (" +
				 tree.error().message + "): MMIO, interrupts and IOMMU connections are unknown");
	} else if (auto node = tree->node(*dtPath); !node) {
		dev.add_warnings("its device-tree node " + *dtPath + " cannot be decoded (" +
				 node.error().message + "): MMIO, interrupts and IOMMU connections are unknown");
	} else {
		fillFromNode(*node, dev);
	}

	pb::IommuGroup *group = dev.mutable_iommu_group();
	n = ::readlink((devDir + "/iommu_group").c_str(), buf, sizeof(buf));
	if (n < 0 && errno != ENOENT)
		return errnoError(errno, id + ": reading its iommu_group link");
	if (n <= 0 || static_cast<size_t>(n) == sizeof(buf)) {
		group->set_number(-1);
		group->add_members(id);
		group->set_no_iommu(true);
		bool viable = sysfs::driverKeepsGroupViable(dev.driver());
		group->set_viable(viable);
		if (!viable)
			group->add_blockers(name + " (" + dev.driver() + ")");
	} else {
		std::string target(buf, static_cast<size_t>(n));
		std::string groupName = target.substr(target.rfind('/') + 1);
		auto cached = ctx.groups.find(groupName);
		if (cached == ctx.groups.end()) {
			auto info = readGroup(ctx.root, groupName);
			if (!info)
				return withContext(info.takeError(), id);
			cached = ctx.groups.emplace(groupName, std::move(*info)).first;
		}
		const GroupInfo &info = cached->second;
		group->set_number(static_cast<int32_t>(std::strtol(groupName.c_str(), nullptr, 10)));
		for (const std::string &m : info.members)
			group->add_members(m);
		if (std::find(info.members.begin(), info.members.end(), id) == info.members.end())
			group->add_members(id);
		for (const std::string &b : info.blockers)
			group->add_blockers(b);
		group->set_viable(info.blockers.empty());
		group->set_no_iommu(info.noIommu);
	}

	PlatformOutlook outlook = platformOutlook(opts, dev);
	dev.set_reset_supported(outlook.resetHandler);
	dev.set_reset_method(outlook.resetMethod);
	for (const std::string &w : outlook.warnings)
		dev.add_warnings(w);
	if (::access(devDir.c_str(), F_OK) != 0)
		return makeError(ENOENT, "%s vanished while it was read", id.c_str());
	return dev;
}

// The platform or AMBA device whose of_node is `dtPath`, as an id.
Result<std::string> platformIdForDtPath(ScanContext &ctx, const std::string &dtPath)
{
	for (std::string_view bus : { "platform", "amba" }) {
		std::string dir = ctx.root + "/bus/" + std::string(bus) + "/devices";
		DIR *d = ::opendir(dir.c_str());
		if (!d)
			continue;
		std::optional<std::string> found;
		while (struct dirent *entry = ::readdir(d)) {
			std::string name = entry->d_name;
			if (!isSafeName(name))
				continue;
			char buf[PATH_MAX];
			ssize_t n = ::readlink((dir + "/" + name + "/of_node").c_str(), buf, sizeof(buf));
			if (n <= 0 || static_cast<size_t>(n) == sizeof(buf))
				continue;
			auto path = platform::dtPathFromOfNodeLink(std::string(buf, static_cast<size_t>(n)));
			if (path && *path == dtPath) {
				found = std::string(bus) + ":" + name;
				break;
			}
		}
		::closedir(d);
		if (found)
			return *found;
	}
	return makeError(ENOENT, "no platform or AMBA device has the device-tree node %s", dtPath.c_str());
}

bool isConfiguredSim(const InventoryOptions &opts, const std::string &id)
{
	return std::find(opts.simulated.begin(), opts.simulated.end(), id) != opts.simulated.end();
}

Result<pb::Device> simulatedDevice(const InventoryOptions &opts, const std::string &id)
{
	if (!isConfiguredSim(opts, id))
		return makeError(ENOENT, "no device %s (simulated devices are only offered when configured)",
				 id.c_str());
	if (id != kSimEdu && id != device::sim_platform::kId)
		return makeError(EINVAL,
				 "%s: unknown simulated device (vfio-broker-device offers sim:edu and sim:platform)",
				 id.c_str());
	pb::Device dev;
	dev.set_id(id);
	dev.set_kind(pb::DEVICE_KIND_SIMULATED);
	dev.set_reset_supported(true);
	pb::IommuGroup *group = dev.mutable_iommu_group();
	group->set_number(-1);
	group->add_members(id);
	group->set_viable(true);
	group->set_no_iommu(false);
	if (id == kSimEdu) {
		dev.set_vendor_id(0x1234);
		dev.set_device_id(0x11e8);
		return dev;
	}
	auto tree = platform::simPlatformHostTree();
	if (!tree)
		return withContext(tree.takeError(), id + ": its device tree");
	auto node = tree->node(platform::simPlatformDtPath());
	if (!node)
		return withContext(node.takeError(), id + ": its device-tree node");
	fillFromNode(*node, dev);
	return dev;
}

Result<pb::Device> scanPci(ScanContext &ctx, const std::string &id)
{
	std::string bdf = id.substr(kPciPrefix.size());
	if (sysfs::normalizeBdf(bdf) != bdf)
		return makeError(EINVAL, "%s: not a canonical PCI device id (pci:0000:01:00.0)", id.c_str());

	std::string devDir, sysfsPath;
	if (auto rel = deviceDirFromBusLink(ctx.root, bdf)) {
		devDir = ctx.root + "/" + *rel;
		sysfsPath = "/sys/" + *rel;
	} else {
		auto loc = sysfs::resolvePciDevice(ctx.root, bdf);
		if (!loc) {
			Error err = loc.takeError();
			if (err.code == ENODEV)
				err.code = ENOENT;
			return err;
		}
		// resolvePciDevice checked the path lies under <canonical root>/devices.
		devDir = loc->path;
		sysfsPath = "/sys" + loc->path.substr(ctx.canonicalRoot.size());
	}
	if (::access(devDir.c_str(), F_OK) != 0)
		return makeError(ENOENT, "no device %s (%s: %s)", id.c_str(), devDir.c_str(),
				 std::strerror(errno));

	pb::Device dev;
	dev.set_id(id);
	dev.set_kind(pb::DEVICE_KIND_PCI);
	dev.set_pci_address(bdf);
	dev.set_sysfs_path(sysfsPath);
	dev.set_vendor_id(readId(devDir + "/vendor"));
	dev.set_device_id(readId(devDir + "/device"));

	auto driver = sysfs::readDriver(ctx.root, bdf);
	if (!driver)
		return withContext(driver.takeError(), id);
	dev.set_driver(*driver);

	pb::IommuGroup *group = dev.mutable_iommu_group();
	auto groupName = sysfs::iommuGroupOf(ctx.root, bdf);
	if (!groupName && groupName.error().code != ENODEV)
		return withContext(groupName.takeError(), id);
	if (!groupName) {
		group->set_number(-1);
		group->add_members(id);
		group->set_no_iommu(true);
		bool viable = sysfs::driverKeepsGroupViable(*driver);
		group->set_viable(viable);
		if (!viable)
			group->add_blockers(bdf + " (" + *driver + ")");
	} else {
		auto cached = ctx.groups.find(*groupName);
		if (cached == ctx.groups.end()) {
			auto info = readGroup(ctx.root, *groupName);
			if (!info)
				return withContext(info.takeError(), id);
			cached = ctx.groups.emplace(*groupName, std::move(*info)).first;
		}
		const GroupInfo &info = cached->second;
		group->set_number(static_cast<int32_t>(std::strtol(groupName->c_str(), nullptr, 10)));
		for (const std::string &m : info.members)
			group->add_members(m);
		if (std::find(info.members.begin(), info.members.end(), id) == info.members.end())
			group->add_members(id); // sysfs raced us; "this one included" still holds
		for (const std::string &b : info.blockers)
			group->add_blockers(b);
		group->set_viable(info.blockers.empty());
		group->set_no_iommu(info.noIommu);
	}

	readReset(devDir, dev);
	readMmio(devDir, dev);
	readInterrupt(devDir, dev);
	// Unplugged while we read it: what we read may be half a device.
	if (::access(devDir.c_str(), F_OK) != 0)
		return makeError(ENOENT, "%s vanished while it was read", id.c_str());
	return dev;
}

Result<pb::Device> scanOne(ScanContext &ctx, const InventoryOptions &opts, const std::string &id)
{
	if (startsWith(id, kSimPrefix))
		return simulatedDevice(opts, id);
	if (startsWith(id, kPlatformPrefix) || startsWith(id, kAmbaPrefix)) {
		auto dev = scanPlatform(ctx, opts, id);
		if (dev || dev.error().code == EINVAL)
			return dev;
		std::string name = id.substr(id.find(':') + 1);
		std::string bus = startsWith(id, kAmbaPrefix) ? "amba" : "platform";
		bool gone = ::access((ctx.root + "/bus/" + bus + "/devices/" + name).c_str(), F_OK) != 0;
		if (gone && dev.error().code != ENOENT)
			return makeError(ENOENT, "%s vanished while it was read", id.c_str());
		return dev;
	}
	if (!startsWith(id, kPciPrefix))
		return makeError(ENOENT,
				 "no device %s (ids look like pci:0000:01:00.0, platform:9010000.pl031, "
				 "amba:9010000.pl031 or sim:edu)",
				 id.c_str());
	auto dev = scanPci(ctx, id);
	if (dev || dev.error().code == EINVAL)
		return dev;
	// A device removed while we read it shows up as whatever step failed (a group directory
	// gone, a link vanished): if the device itself is gone, say so; if it is still there, its
	// error must not pass for "no such device", or a listing would silently drop it.
	bool gone =
		::access((ctx.root + "/bus/pci/devices/" + id.substr(kPciPrefix.size())).c_str(), F_OK) != 0;
	if (gone && dev.error().code != ENOENT)
		return makeError(ENOENT, "%s vanished while it was read", id.c_str());
	if (!gone && dev.error().code == ENOENT) {
		Error err = dev.takeError();
		err.code = EIO;
		return err;
	}
	return dev;
}

} // namespace

namespace {

// "platform:NAME" / "amba:NAME" for a sysfs path that is not a PCI device: it must resolve under
// <root>/devices/platform and be listed by the platform or AMBA bus under the same name.
Result<std::string> resolvePlatformPath(ScanContext &ctx, const std::string &input)
{
	std::string candidate;
	if (input == ctx.root || startsWith(input, ctx.root + "/"))
		candidate = input;
	else if (input == "/sys" || startsWith(input, "/sys/"))
		candidate = ctx.root + input.substr(4);
	else
		return makeError(EINVAL, "%s is not under the sysfs root %s", input.c_str(), ctx.root.c_str());
	char *resolved = ::realpath(candidate.c_str(), nullptr);
	if (!resolved)
		return makeError(ENOENT, "no device %s (%s: %s)", input.c_str(), candidate.c_str(),
				 std::strerror(errno));
	std::string path = resolved;
	std::free(resolved);
	const std::string platformDir = ctx.canonicalRoot + "/devices/platform/";
	if (!startsWith(path, platformDir))
		return makeError(EINVAL,
				 "%s is neither a PCI device nor under /sys/devices/platform: only devices "
				 "there are assigned as platform or AMBA devices",
				 input.c_str());
	std::string name = path.substr(path.rfind('/') + 1);
	for (std::string_view bus : { "platform", "amba" }) {
		if (!isSafeName(name))
			break;
		auto rel = platformDeviceDir(ctx, bus, name);
		if (rel && ctx.canonicalRoot + "/" + *rel == path)
			return std::string(bus) + ":" + name;
	}
	return makeError(EINVAL, "%s (%s) is not a device of the platform or AMBA bus", input.c_str(),
			 path.c_str());
}

} // namespace

Result<std::string> resolveDeviceId(const InventoryOptions &opts, const std::string &input)
{
	if (startsWith(input, kSimPrefix)) {
		if (!isConfiguredSim(opts, input))
			return makeError(ENOENT,
					 "no device %s (simulated devices are only offered when configured)",
					 input.c_str());
		return input;
	}
	if (startsWith(input, kPlatformPrefix) || startsWith(input, kAmbaPrefix)) {
		auto ctx = makeContext(opts);
		if (!ctx)
			return ctx.takeError();
		const bool amba = startsWith(input, kAmbaPrefix);
		std::string name = input.substr(amba ? kAmbaPrefix.size() : kPlatformPrefix.size());
		std::string_view bus = amba ? "amba" : "platform";
		if (!isSafeName(name))
			return makeError(EINVAL, "'%s' is not a %s device id", input.c_str(), std::string(bus).c_str());
		if (::access((ctx->root + "/bus/" + std::string(bus) + "/devices/" + name).c_str(), F_OK) != 0)
			return makeError(ENOENT, "no device %s on the %s bus", input.c_str(), std::string(bus).c_str());
		if (!platformDeviceDir(*ctx, bus, name))
			return makeError(EINVAL,
					 "%s is not under /sys/devices/platform: only devices there are "
					 "assigned as platform or AMBA devices",
					 input.c_str());
		return input;
	}
	std::string spec = startsWith(input, kPciPrefix) ? input.substr(kPciPrefix.size()) : input;
	auto loc = sysfs::resolvePciDevice(opts.sysfsRoot, spec);
	if (loc)
		return std::string(kPciPrefix) + loc->bdf;
	Error err = loc.takeError();
	if (!startsWith(input, kPciPrefix) && !input.empty() && input[0] == '/') {
		auto ctx = makeContext(opts);
		if (!ctx)
			return ctx.takeError();
		std::string root = ctx->root;
		bool sysfsPath = input == "/sys" || startsWith(input, "/sys/") || input == root ||
				 startsWith(input, root + "/");
		// A sysfs path that is no PCI device may be a platform one; any other path is a
		// device-tree node.
		if (sysfsPath)
			return resolvePlatformPath(*ctx, input);
		return platformIdForDtPath(*ctx, input);
	}
	if (err.code == ENODEV || err.code == ENOENT)
		return makeError(ENOENT, "no device %s: %s", input.c_str(), err.message.c_str());
	return withContext(std::move(err), "cannot resolve device '" + input + "'");
}

std::string deviceDaemonArgument(const std::string &id)
{
	if (startsWith(id, kPciPrefix))
		return id.substr(kPciPrefix.size());
	if (startsWith(id, kPlatformPrefix))
		return "/sys/bus/platform/devices/" + id.substr(kPlatformPrefix.size());
	if (startsWith(id, kAmbaPrefix))
		return "/sys/bus/amba/devices/" + id.substr(kAmbaPrefix.size());
	return id;
}

PlatformOutlook platformOutlook(const InventoryOptions &opts, const pb::Device &device)
{
	PlatformOutlook out;
	const bool amba = device.kind() == pb::DEVICE_KIND_AMBA;
	if (!isPlatformKind(device))
		return out;
	const std::string root = stripTrailingSlashes(opts.sysfsRoot);
	const std::string driver = amba ? "vfio-amba" : "vfio-platform";
	const auto &compatible = device.platform().compatible();
	std::string first = compatible.empty() ? std::string() : compatible[0];
	for (const ResetHandler &h : kResetHandlers) {
		if (first == h.compatible) {
			out.resetHandler = true;
			out.resetMethod = std::string("vfio-platform reset module for \"") + h.compatible +
					  "\" (" + h.module + ")";
		}
	}
	std::string quoted = first.empty() ? std::string("a node without compatible") : "\"" + first + "\"";
	if (!out.resetHandler) {
		// Which failure comes first: Linux 6.1 fails every such probe; otherwise vfio-platform
		// refuses it unless reset_required=0.
		auto version = kernelVersionOf(kernelRelease(opts));
		bool linux61 = version && version->first == 6 && version->second == 1;
		auto required = moduleParameter(root, "vfio_platform", "reset_required");
		if (linux61) {
			out.bindFailure =
				"Linux " + kernelRelease(opts) + " fails the " + driver +
				" probe with ENOENT for a device without a reset handler (none handles " + quoted +
				"), even with reset_required=0" + (amba ? " and always for vfio-amba" : "") +
				": vfio_platform_init_common() returns the missing reset as an error; fixed by "
				"168a9c91fe0a (\"vfio: platform: ignore missing reset if disabled at module "
				"init\", Linux 6.2), which Debian's 6.1 kernels lack (modules rebuilt with it, "
				"as the arm64 lab's, do bind)";
		} else if (!amba && (!required || isYes(*required))) {
			out.bindFailure =
				std::string("vfio-platform refuses devices without a reset handler (none handles ") +
				quoted + (required ? ", and reset_required=Y" : ", and vfio_platform is not loaded: reset_required defaults to Y") +
				"); load vfio-platform with reset_required=0 (modprobe vfio-platform reset_required=0)";
		}
		if (!out.bindFailure.empty())
			out.warnings.push_back(out.bindFailure);
		out.warnings.push_back("no reset handler for " + quoted + ": " + driver +
				       " cannot reset the device, so state one VM leaves in it is "
				       "what the next one finds");
	}
	const pb::IommuGroup &group = device.iommu_group();
	if (group.number() < 0) {
		auto noiommu = moduleParameter(root, "vfio", "enable_unsafe_noiommu_mode");
		if (!noiommu || !isYes(*noiommu)) {
			std::string why = "it has no IOMMU group, and " + driver +
					  " binds such a device only in VFIO no-IOMMU mode, which is off "
					  "(vfio enable_unsafe_noiommu_mode=1 turns it on, and taints the kernel)";
			out.warnings.push_back(why);
			if (out.bindFailure.empty())
				out.bindFailure = why;
		}
	}
	return out;
}

Result<pb::Device> scanDevice(const InventoryOptions &opts, const std::string &id)
{
	if (startsWith(id, kSimPrefix))
		return simulatedDevice(opts, id);
	auto ctx = makeContext(opts);
	if (!ctx)
		return ctx.takeError();
	return scanOne(*ctx, opts, id);
}

Result<std::vector<pb::Device>> scanAll(const InventoryOptions &opts)
{
	auto ctx = makeContext(opts);
	if (!ctx)
		return ctx.takeError();

	std::vector<std::string> ids;
	std::string busDir = ctx->root + "/bus/pci/devices";
	if (DIR *d = ::opendir(busDir.c_str())) {
		while (struct dirent *entry = ::readdir(d)) {
			std::string name = entry->d_name;
			if (sysfs::normalizeBdf(name) == name)
				ids.push_back(std::string(kPciPrefix) + name);
		}
		::closedir(d);
	} else if (errno != ENOENT) {
		// No PCI bus at all is fine (some arm64 boards); an unreadable one is not.
		return errnoError(errno, "cannot list PCI devices (" + busDir + ")");
	}
	// Platform and AMBA devices with a device-tree node, under devices/platform.
	for (std::string_view bus : { "platform", "amba" }) {
		std::string dir = ctx->root + "/bus/" + std::string(bus) + "/devices";
		DIR *d = ::opendir(dir.c_str());
		if (!d) {
			if (errno == ENOENT)
				continue;
			return errnoError(errno, "cannot list " + std::string(bus) + " devices (" + dir + ")");
		}
		while (struct dirent *entry = ::readdir(d)) {
			std::string name = entry->d_name;
			if (!isSafeName(name))
				continue;
			if (::access((dir + "/" + name + "/of_node").c_str(), F_OK) != 0)
				continue;
			if (!platformDeviceDir(*ctx, bus, name))
				continue;
			ids.push_back(std::string(bus) + ":" + name);
		}
		::closedir(d);
	}
	for (const std::string &sim : opts.simulated)
		if (std::find(ids.begin(), ids.end(), sim) == ids.end())
			ids.push_back(sim);
	std::sort(ids.begin(), ids.end());

	std::vector<pb::Device> devices;
	devices.reserve(ids.size());
	for (const std::string &id : ids) {
		auto dev = scanOne(*ctx, opts, id);
		if (!dev) {
			if (dev.error().code == ENOENT)
				continue; // vanished since readdir (or lost its of_node)
			// A platform device sysfs describes oddly (an of_node outside the tree) is not
			// one we could assign; it must not hide every other device.
			if (dev.error().code == EINVAL && !startsWith(id, kPciPrefix) && !startsWith(id, kSimPrefix))
				continue;
			return dev.takeError();
		}
		devices.push_back(std::move(*dev));
	}
	return devices;
}

} // namespace vfio_broker::control
