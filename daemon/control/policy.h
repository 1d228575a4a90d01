// SPDX-License-Identifier: Apache-2.0
// The board policy: deny by default; the first rule that matches a device decides.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "vfio_broker/v1/broker.pb.h"
#include "vfio_broker/v1/config.pb.h"

namespace vfio_broker::control {

namespace pb = ::vfio_broker::v1;

// A rule matches a device when every matcher it sets matches (a rule that sets none matches
// nothing; parsePolicy refuses such rules anyway):
//   pci_address    the device's PCI address, compared lower-case ("0000:01:00.0")
//   vendor_device  "vvvv:dddd" in hex, any case, against Device.vendor_id/device_id
//   sysfs_path     Device.sysfs_path, or its alias /sys/bus/<pci|platform|amba>/devices/<name>
//                  (the alias matches by bus and device name, so it also holds under a fake
//                  sysfs root)
//   dt_path        Device.platform.dt_path
//   dt_compatible  one of Device.platform.compatible, exactly (DT strings are case-sensitive)
//   simulated      Device.id ("sim:edu")
class Policy
{
public:
	Policy() = default;
	explicit Policy(pb::BoardPolicy policy) : policy_(std::move(policy)) {}

	// The rule that allows this device, nullptr when none matches.
	const pb::DeviceRule *ruleFor(const pb::Device &device) const;
	// The verdict shown in ListDevices and used by the conflict checks. on_deassign is never
	// UNSPECIFIED: a rule that leaves it unset, and a denied device, get RESTORE.
	pb::PolicyVerdict evaluate(const pb::Device &device) const;
	// Whether `vm` may have the device under its rule (false when no rule matches).
	bool vmAllowed(const pb::Device &device, const std::string &vm) const;

	const pb::BoardPolicy &proto() const { return policy_; }

private:
	pb::BoardPolicy policy_;
};

// How messages name rules[index]: its name, or "rules[N]" when it has none.
std::string ruleLabel(const pb::DeviceRule &rule, int index);

// "0000:01:00.0" in lower case, or nullopt unless `text` is exactly DDDD:BB:DD.F in hex with
// device <= 0x1f and function <= 7. No short forms: a policy names one device unambiguously.
std::optional<std::string> normalizePciAddress(std::string_view text);

// The (vendor, device) pair of "8086:10d3" (four hex digits each, any case), or nullopt.
std::optional<std::pair<uint32_t, uint32_t>> parseVendorDevice(std::string_view text);

} // namespace vfio_broker::control
