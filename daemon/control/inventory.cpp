// SPDX-License-Identifier: Apache-2.0
// Builds Device descriptions from sysfs (PCI) and from the configured simulated devices.
#include "control/inventory.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string_view>

#include "common/unique_fd.h"
#include "device/vfio_sysfs.h"

namespace vfio_broker::control {

namespace {

namespace sysfs = ::vfio_broker::device;

constexpr std::string_view kPciPrefix = "pci:";
constexpr std::string_view kSimPrefix = "sim:";
constexpr uint64_t kIoresourceMem = 0x200;
constexpr size_t kMaxAttributeBytes = 4096; // one page: no sysfs attribute is longer
// Lines 0-5 of "resource" are the BARs and 6 the expansion ROM; later lines are SR-IOV VF BARs
// (each VF reports its own share) and bridge windows (which span the devices behind them).
constexpr size_t kDeviceResourceLines = 7;

bool startsWith(std::string_view s, std::string_view prefix)
{
	return s.substr(0, prefix.size()) == prefix;
}

std::string stripTrailingSlashes(std::string path)
{
	while (path.size() > 1 && path.back() == '/')
		path.pop_back();
	return path;
}

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
		info.members.push_back(std::string(kPciPrefix) + m);
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
std::optional<std::string> deviceDirFromBusLink(const std::string &root, const std::string &bdf)
{
	char buf[PATH_MAX];
	std::string link = root + "/bus/pci/devices/" + bdf;
	ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf));
	if (n <= 0 || static_cast<size_t>(n) == sizeof(buf) || buf[0] == '/')
		return std::nullopt;
	std::vector<std::string_view> parts = { "bus", "pci", "devices" };
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

// State shared by the devices of one scan: the canonical root and the groups read so far.
struct ScanContext {
	std::string root;          // as configured, trailing slashes removed
	std::string canonicalRoot; // realpath of root
	std::map<std::string, GroupInfo> groups;
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

bool isConfiguredSim(const InventoryOptions &opts, const std::string &id)
{
	return std::find(opts.simulated.begin(), opts.simulated.end(), id) != opts.simulated.end();
}

Result<pb::Device> simulatedDevice(const InventoryOptions &opts, const std::string &id)
{
	if (!isConfiguredSim(opts, id))
		return makeError(ENOENT, "no device %s (simulated devices are only offered when configured)",
				 id.c_str());
	if (id != "sim:edu")
		return makeError(EINVAL, "%s: unknown simulated device (vfio-broker-device offers sim:edu)",
				 id.c_str());
	pb::Device dev;
	dev.set_id(id);
	dev.set_kind(pb::DEVICE_KIND_SIMULATED);
	dev.set_vendor_id(0x1234);
	dev.set_device_id(0x11e8);
	dev.set_reset_supported(true);
	pb::IommuGroup *group = dev.mutable_iommu_group();
	group->set_number(-1);
	group->add_members(id);
	group->set_viable(true);
	group->set_no_iommu(false);
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
	if (!startsWith(id, kPciPrefix))
		return makeError(ENOENT, "no device %s (ids look like pci:0000:01:00.0 or sim:edu)",
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

Result<std::string> resolveDeviceId(const InventoryOptions &opts, const std::string &input)
{
	if (startsWith(input, kSimPrefix)) {
		if (!isConfiguredSim(opts, input))
			return makeError(ENOENT,
					 "no device %s (simulated devices are only offered when configured)",
					 input.c_str());
		return input;
	}
	std::string spec = startsWith(input, kPciPrefix) ? input.substr(kPciPrefix.size()) : input;
	auto loc = sysfs::resolvePciDevice(opts.sysfsRoot, spec);
	if (!loc) {
		Error err = loc.takeError();
		if (err.code == ENODEV || err.code == ENOENT)
			return makeError(ENOENT, "no device %s: %s", input.c_str(), err.message.c_str());
		return withContext(std::move(err), "cannot resolve device '" + input + "'");
	}
	return std::string(kPciPrefix) + loc->bdf;
}

std::string deviceDaemonArgument(const std::string &id)
{
	if (startsWith(id, kPciPrefix))
		return id.substr(kPciPrefix.size());
	return id;
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
				continue; // vanished since readdir
			return dev.takeError();
		}
		devices.push_back(std::move(*dev));
	}
	return devices;
}

} // namespace vfio_broker::control
