// SPDX-License-Identifier: Apache-2.0
// The board policy: deny by default; the first rule that matches a device decides.
#pragma once

#include "vfio_broker/v1/broker.pb.h"
#include "vfio_broker/v1/config.pb.h"

namespace vfio_broker::control {

namespace pb = ::vfio_broker::v1;

class Policy
{
public:
	Policy() = default;
	explicit Policy(pb::BoardPolicy policy) : policy_(std::move(policy)) {}

	// The rule that allows this device, nullptr when none matches.
	const pb::DeviceRule *ruleFor(const pb::Device &device) const;
	// The verdict shown in ListDevices and used by the conflict checks.
	pb::PolicyVerdict evaluate(const pb::Device &device) const;
	// Whether `vm` may have the device under its rule (false when no rule matches).
	bool vmAllowed(const pb::Device &device, const std::string &vm) const;

	const pb::BoardPolicy &proto() const { return policy_; }

private:
	pb::BoardPolicy policy_;
};

} // namespace vfio_broker::control
