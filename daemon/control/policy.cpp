// SPDX-License-Identifier: Apache-2.0
// The board policy: matches devices against rules, first match wins, and words the verdict.
#include "control/policy.h"

#include <cctype>

namespace vfio_broker::control {

namespace {

bool isHex(char c)
{
	return std::isxdigit(static_cast<unsigned char>(c)) != 0;
}

std::string lower(std::string_view s)
{
	std::string out(s);
	for (char &c : out)
		c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
	return out;
}

bool startsWith(std::string_view s, std::string_view prefix)
{
	return s.substr(0, prefix.size()) == prefix;
}

// "/a//b/" and "/a/b" name the same file: collapse repeated slashes, drop a trailing one.
std::string normalizePath(std::string_view path)
{
	std::string out;
	out.reserve(path.size());
	for (char c : path) {
		if (c == '/' && !out.empty() && out.back() == '/')
			continue;
		out.push_back(c);
	}
	if (out.size() > 1 && out.back() == '/')
		out.pop_back();
	return out;
}

std::string_view baseName(std::string_view path)
{
	auto slash = path.rfind('/');
	return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// The bus a device sits on, as sysfs names it under /sys/bus; "" for simulated devices.
std::string_view busOf(const pb::Device &device)
{
	switch (device.kind()) {
	case pb::DEVICE_KIND_PCI:
		return "pci";
	case pb::DEVICE_KIND_PLATFORM:
		return "platform";
	case pb::DEVICE_KIND_AMBA:
		return "amba";
	case pb::DEVICE_KIND_SIMULATED:
		return "";
	default:
		break;
	}
	for (std::string_view bus : { "pci", "platform", "amba" })
		if (startsWith(device.id(), std::string(bus) + ":"))
			return bus;
	return "";
}

// The device's PCI address in lower case, "" when it is not a PCI device.
std::string pciAddressOf(const pb::Device &device)
{
	if (busOf(device) != "pci")
		return "";
	if (!device.pci_address().empty())
		return lower(device.pci_address());
	return lower(std::string_view(device.id()).substr(4));
}

// The device's name under /sys/bus/<bus>/devices: the last component of its sysfs path, or
// what its id says after the bus prefix.
std::string sysfsNameOf(const pb::Device &device)
{
	if (!device.sysfs_path().empty())
		return std::string(baseName(normalizePath(device.sysfs_path())));
	auto colon = device.id().find(':');
	return colon == std::string::npos ? "" : device.id().substr(colon + 1);
}

bool sysfsPathMatches(const std::string &rulePath, const pb::Device &device)
{
	std::string want = normalizePath(rulePath);
	if (!device.sysfs_path().empty() && want == normalizePath(device.sysfs_path()))
		return true;
	// The alias /sys/bus/<bus>/devices/<name>, which sysfs makes a symlink to the real path.
	std::string_view rest(want);
	if (!startsWith(rest, "/sys/bus/"))
		return false;
	rest.remove_prefix(9);
	auto slash = rest.find('/');
	if (slash == std::string_view::npos)
		return false;
	std::string_view bus = rest.substr(0, slash);
	rest.remove_prefix(slash);
	if (!startsWith(rest, "/devices/"))
		return false;
	std::string_view name = rest.substr(9);
	if (name.empty() || name.find('/') != std::string_view::npos)
		return false;
	if (bus != "pci" && bus != "platform" && bus != "amba")
		return false;
	if (busOf(device) != bus)
		return false;
	std::string have = sysfsNameOf(device);
	if (bus == "pci")
		return lower(name) == lower(have);
	return name == have;
}

bool ruleMatches(const pb::DeviceRule &rule, const pb::Device &device)
{
	bool any = false;
	if (!rule.pci_address().empty()) {
		any = true;
		auto want = normalizePciAddress(rule.pci_address());
		if (!want || *want != pciAddressOf(device))
			return false;
	}
	if (!rule.vendor_device().empty()) {
		any = true;
		auto want = parseVendorDevice(rule.vendor_device());
		if (!want || want->first != device.vendor_id() || want->second != device.device_id())
			return false;
	}
	if (!rule.sysfs_path().empty()) {
		any = true;
		if (!sysfsPathMatches(rule.sysfs_path(), device))
			return false;
	}
	if (!rule.dt_path().empty()) {
		any = true;
		const std::string &have = device.platform().dt_path();
		if (have.empty() || normalizePath(rule.dt_path()) != normalizePath(have))
			return false;
	}
	if (!rule.dt_compatible().empty()) {
		any = true;
		bool found = false;
		for (const auto &c : device.platform().compatible())
			found = found || c == rule.dt_compatible();
		if (!found)
			return false;
	}
	if (!rule.simulated().empty()) {
		any = true;
		if (rule.simulated() != device.id())
			return false;
	}
	// A rule without matchers would allow everything: treat it as allowing nothing.
	return any;
}

int matchingRule(const pb::BoardPolicy &policy, const pb::Device &device)
{
	for (int i = 0; i < policy.rules_size(); i++)
		if (ruleMatches(policy.rules(i), device))
			return i;
	return -1;
}

} // namespace

std::string ruleLabel(const pb::DeviceRule &rule, int index)
{
	if (!rule.name().empty())
		return rule.name();
	return "rules[" + std::to_string(index) + "]";
}

std::optional<std::string> normalizePciAddress(std::string_view text)
{
	// DDDD:BB:DD.F
	if (text.size() != 12 || text[4] != ':' || text[7] != ':' || text[10] != '.')
		return std::nullopt;
	for (size_t i : { 0, 1, 2, 3, 5, 6, 8, 9, 11 })
		if (!isHex(text[i]))
			return std::nullopt;
	unsigned dev = std::stoul(std::string(text.substr(8, 2)), nullptr, 16);
	unsigned fn = std::stoul(std::string(text.substr(11, 1)), nullptr, 16);
	if (dev > 0x1f || fn > 7)
		return std::nullopt;
	return lower(text);
}

std::optional<std::pair<uint32_t, uint32_t>> parseVendorDevice(std::string_view text)
{
	if (text.size() != 9 || text[4] != ':')
		return std::nullopt;
	for (size_t i = 0; i < text.size(); i++)
		if (i != 4 && !isHex(text[i]))
			return std::nullopt;
	auto vendor = static_cast<uint32_t>(std::stoul(std::string(text.substr(0, 4)), nullptr, 16));
	auto device = static_cast<uint32_t>(std::stoul(std::string(text.substr(5, 4)), nullptr, 16));
	return std::make_pair(vendor, device);
}

const pb::DeviceRule *Policy::ruleFor(const pb::Device &device) const
{
	int i = matchingRule(policy_, device);
	return i < 0 ? nullptr : &policy_.rules(i);
}

pb::PolicyVerdict Policy::evaluate(const pb::Device &device) const
{
	pb::PolicyVerdict verdict;
	verdict.set_on_deassign(pb::DEASSIGN_ACTION_RESTORE);
	int i = matchingRule(policy_, device);
	if (i < 0) {
		verdict.set_allowed(false);
		verdict.set_reason("no rule in the board policy allows " + device.id() +
				   " (deny by default)");
		return verdict;
	}
	const pb::DeviceRule &rule = policy_.rules(i);
	std::string label = ruleLabel(rule, i);
	verdict.set_allowed(true);
	verdict.set_reason("allowed by rule \"" + label + "\"");
	verdict.set_rule(label);
	verdict.mutable_allowed_vms()->CopyFrom(rule.allowed_vms());
	verdict.set_allow_no_iommu(rule.allow_no_iommu());
	verdict.set_allow_identity_mapping(rule.allow_identity_mapping());
	verdict.set_no_dma(rule.no_dma());
	if (rule.on_deassign() != pb::DEASSIGN_ACTION_UNSPECIFIED)
		verdict.set_on_deassign(rule.on_deassign());
	return verdict;
}

bool Policy::vmAllowed(const pb::Device &device, const std::string &vm) const
{
	const pb::DeviceRule *rule = ruleFor(device);
	if (!rule)
		return false;
	if (rule->allowed_vms().empty())
		return true;
	for (const auto &v : rule->allowed_vms())
		if (v == vm)
			return true;
	return false;
}

} // namespace vfio_broker::control
