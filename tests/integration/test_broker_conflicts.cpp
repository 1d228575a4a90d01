// SPDX-License-Identifier: Apache-2.0
// Every conflict the lab can produce, refused by Assign with FAILED_PRECONDITION and the same
// machine-readable conflicts CheckAssignment reports; and the dry run agreeing with Assign.
#include "broker_fixture.h"

#include <google/protobuf/util/message_differencer.h>

#include <random>

using namespace vfio_broker;
using namespace vfio_broker::itest;
using Catch::Matchers::Contains;
using google::protobuf::util::MessageDifferencer;

namespace {

std::string describeConflicts(const google::protobuf::RepeatedPtrField<pb::Conflict> &conflicts)
{
	std::string s;
	for (const auto &c : conflicts)
		s += "  " + pb::ConflictReason_Name(c.reason()) + " " + c.device_id() + " other=" + c.other_device_id() +
		     " other_vm=" + c.other_vm() + ": " + c.message() + "\n";
	return s.empty() ? "  (none)\n" : s;
}

bool sameConflicts(const pb::CheckAssignmentResponse &a, const pb::CheckAssignmentResponse &b)
{
	if (a.conflicts_size() != b.conflicts_size())
		return false;
	for (int i = 0; i < a.conflicts_size(); i++)
		if (!MessageDifferencer::Equals(a.conflicts(i), b.conflicts(i)))
			return false;
	return true;
}

const pb::Conflict *findConflict(const pb::CheckAssignmentResponse &r, pb::ConflictReason reason,
				 const std::string &device)
{
	for (const auto &c : r.conflicts())
		if (c.reason() == reason && c.device_id() == device)
			return &c;
	return nullptr;
}

std::string snapshot(BrokerFixture &fx)
{
	std::string s;
	for (const auto &a : fx.assignments())
		s += a.ShortDebugString() + "\n";
	return s;
}

// CheckAssignment reports `reason` for `device`; Assign is refused with FAILED_PRECONDITION,
// carrying exactly CheckAssignment's conflicts in its trailer and their sentences in its
// message; nothing changes. Returns the conflict.
pb::Conflict requireRefused(BrokerFixture &fx, const std::string &vm, const std::vector<std::string> &ids,
			    pb::ConflictReason reason, const std::string &device, const pb::AssignOptions &options = {})
{
	INFO("expecting " << pb::ConflictReason_Name(reason) << " for " << device << " (vm " << vm << ")");
	std::string before = snapshot(fx);
	auto check = fx.check(vm, ids, options);
	INFO("CheckAssignment: " << describe(check.status) << "\n" << describeConflicts(check.value.conflicts()));
	REQUIRE(check.ok());
	CHECK_FALSE(check.value.ok());
	const pb::Conflict *expected = findConflict(check.value, reason, device);
	REQUIRE(expected);

	auto assign = fx.assign(vm, ids, options);
	INFO("Assign: " << describe(assign.status));
	CHECK(assign.code() == grpc::StatusCode::FAILED_PRECONDITION);
	REQUIRE(assign.conflicts);
	INFO("Assign's trailer:\n" << describeConflicts(assign.conflicts->conflicts()));
	CHECK(sameConflicts(*assign.conflicts, check.value));
	// A sentence for a person, in the status message too.
	CHECK(expected->message().size() > 20);
	CHECK_THAT(assign.status.error_message(), Contains(expected->message()));
	CHECK(snapshot(fx) == before);
	return *expected;
}

// CheckAssignment says yes and Assign succeeds.
void requireAllowed(BrokerFixture &fx, const std::string &vm, const std::vector<std::string> &ids,
		    const pb::AssignOptions &options = {})
{
	auto check = fx.check(vm, ids, options);
	INFO("CheckAssignment: " << describe(check.status) << "\n" << describeConflicts(check.value.conflicts()));
	REQUIRE(check.ok());
	CHECK(check.value.ok());
	CHECK(check.value.conflicts().empty());
	fx.assignOk(vm, ids, options);
}

pb::AssignOptions identity()
{
	pb::AssignOptions o;
	o.set_identity_mapping(true);
	return o;
}

} // namespace

TEST_CASE("conflict_unknownDevice_isRefusedAsUnknownDevice", "[broker_conflicts]")
{
	BrokerFixture fx;
	auto c = requireRefused(fx, "vm1", { "pci:0000:99:00.0" }, pb::CONFLICT_REASON_UNKNOWN_DEVICE,
				"pci:0000:99:00.0");
	CHECK_THAT(c.message(), Contains("0000:99:00.0"));
	// A known device next to it is not assigned either.
	requireRefused(fx, "vm1", { lab::kNicA, "sim:nothing" }, pb::CONFLICT_REASON_UNKNOWN_DEVICE, "sim:nothing");
}

TEST_CASE("conflict_deviceNoRuleAllows_isRefusedAsPolicyDenied", "[broker_conflicts]")
{
	BrokerFixture fx;
	requireRefused(fx, "vm1", { lab::kDenied }, pb::CONFLICT_REASON_POLICY_DENIED, lab::kDenied);
	CHECK_FALSE(fx.device(lab::kDenied).policy().allowed());
}

TEST_CASE("conflict_deviceRuledForOtherVms_isRefusedAsVmNotAllowed", "[broker_conflicts]")
{
	BrokerFixture fx;
	auto c = requireRefused(fx, "vm1", { lab::kWebOnly }, pb::CONFLICT_REASON_VM_NOT_ALLOWED, lab::kWebOnly);
	CHECK_THAT(c.message(), Contains("web"));
	requireAllowed(fx, "web", { lab::kWebOnly });
}

TEST_CASE("conflict_deviceOfAnotherVm_isRefusedAsAssignedToOtherVm", "[broker_conflicts]")
{
	BrokerFixture fx;
	fx.assignOk("vm1", { lab::kNicA });
	auto c = requireRefused(fx, "vm2", { lab::kNicA }, pb::CONFLICT_REASON_ASSIGNED_TO_OTHER_VM, lab::kNicA);
	CHECK(c.other_vm() == "vm1");
}

TEST_CASE("conflict_sameDeviceTwiceToOneVm_isRefusedAsDeviceBusy", "[broker_conflicts]")
{
	BrokerFixture fx;
	fx.assignOk("vm1", { lab::kNicA });
	requireRefused(fx, "vm1", { lab::kNicA }, pb::CONFLICT_REASON_DEVICE_BUSY, lab::kNicA);
}

TEST_CASE("conflict_groupMemberOfAnotherVm_isRefusedAsGroupSplit_andAllowedForTheSameVm", "[broker_conflicts]")
{
	BrokerFixture fx;
	fx.assignOk("vm1", { lab::kPair0 });
	auto c = requireRefused(fx, "vm2", { lab::kPair1 }, pb::CONFLICT_REASON_IOMMU_GROUP_SPLIT, lab::kPair1);
	CHECK(c.other_device_id() == lab::kPair0);
	CHECK(c.other_vm() == "vm1");
	requireAllowed(fx, "vm1", { lab::kPair1 });
}

TEST_CASE("conflict_groupMemberOnAHostDriver_isRefusedAsNotViable", "[broker_conflicts]")
{
	BrokerFixture fx;
	// The GPU's audio function stays on snd_hda_intel, and no rule lets the broker move it.
	auto c = requireRefused(fx, "vm1", { lab::kGpu }, pb::CONFLICT_REASON_IOMMU_GROUP_NOT_VIABLE, lab::kGpu);
	CHECK(c.other_device_id() == lab::kGpuAudio);
	CHECK_THAT(c.message(), Contains("snd_hda_intel"));
	CHECK_FALSE(fx.device(lab::kGpu).iommu_group().viable());

	// Half a group on host drivers is not viable either; the whole group is.
	auto half = requireRefused(fx, "vm1", { lab::kHostPair0 }, pb::CONFLICT_REASON_IOMMU_GROUP_NOT_VIABLE,
				   lab::kHostPair0);
	CHECK(half.other_device_id() == lab::kHostPair1);
	requireAllowed(fx, "vm1", { lab::kHostPair0, lab::kHostPair1 });
}

TEST_CASE("conflict_deviceWithoutIommu_isRefusedUnlessRequestAndPolicyBothAllowIt", "[broker_conflicts]")
{
	BrokerFixture fx;
	pb::AssignOptions none, forceOnly, identityOnly, both;
	forceOnly.set_force_no_iommu(true);
	identityOnly.set_identity_mapping(true);
	both.set_force_no_iommu(true);
	both.set_identity_mapping(true);

	CHECK(fx.device(lab::kNoIommu).iommu_group().no_iommu());
	auto c = requireRefused(fx, "vm1", { lab::kNoIommu }, pb::CONFLICT_REASON_NO_IOMMU, lab::kNoIommu, none);
	CHECK_THAT(c.message(), Contains("force_no_iommu"));
	requireRefused(fx, "vm1", { lab::kNoIommu }, pb::CONFLICT_REASON_NO_IOMMU, lab::kNoIommu, forceOnly);
	requireRefused(fx, "vm1", { lab::kNoIommu }, pb::CONFLICT_REASON_NO_IOMMU, lab::kNoIommu, identityOnly);

	// A vfio-noiommu group is no protection either; its rule allows identity mapping but not
	// no-IOMMU, so even a request with both is refused.
	auto g = requireRefused(fx, "vm1", { lab::kNoIommuGroup }, pb::CONFLICT_REASON_NO_IOMMU, lab::kNoIommuGroup,
				both);
	CHECK_THAT(g.message(), Contains("allow_no_iommu"));

	// Request (force + identity) and policy (allow_no_iommu) together: assigned.
	requireAllowed(fx, "vm1", { lab::kNoIommu }, both);
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kNoIommu)) == "vfio-pci");
}

TEST_CASE("conflict_sharedInterruptWithAnotherVm_isRefused_andAllowedForTheSameVm", "[broker_conflicts]")
{
	BrokerFixture fx;
	fx.assignOk("vm1", { lab::kIrqA });
	auto c = requireRefused(fx, "vm2", { lab::kIrqB }, pb::CONFLICT_REASON_SHARED_INTERRUPT, lab::kIrqB);
	CHECK(c.other_device_id() == lab::kIrqA);
	CHECK(c.other_vm() == "vm1");
	CHECK_THAT(c.message(), Contains("19"));
	requireAllowed(fx, "vm1", { lab::kIrqB });
}

TEST_CASE("conflict_sameDeviceTwiceInARequest_isRefusedAsDuplicate", "[broker_conflicts]")
{
	BrokerFixture fx;
	// Spelled differently, it is still the same device.
	requireRefused(fx, "vm1", { lab::kNicA, bdfOf(lab::kNicA) }, pb::CONFLICT_REASON_DUPLICATE_DEVICE, lab::kNicA);
}

TEST_CASE("conflict_identityMappingTheRuleDoesNotAllow_isRefused", "[broker_conflicts]")
{
	BrokerFixture fx;
	requireRefused(fx, "vm1", { lab::kNicA }, pb::CONFLICT_REASON_IDENTITY_NOT_ALLOWED, lab::kNicA, identity());
	requireAllowed(fx, "vm1", { lab::kMmioA }, identity());
}

TEST_CASE("conflict_overlappingMmioUnderIdentityMapping_isRefusedAsMmioOverlap", "[broker_conflicts]")
{
	BrokerFixture fx;
	// Both in one request: reported on each.
	auto c = requireRefused(fx, "vm1", { lab::kMmioA, lab::kMmioB }, pb::CONFLICT_REASON_MMIO_OVERLAP, lab::kMmioA,
				identity());
	CHECK(c.other_device_id() == lab::kMmioB);
	auto check = fx.check("vm1", { lab::kMmioA, lab::kMmioB }, identity());
	CHECK(findConflict(check.value, pb::CONFLICT_REASON_MMIO_OVERLAP, lab::kMmioB));
	// Without identity mapping guest addresses are the VMM's choice: no overlap.
	requireAllowed(fx, "vm2", { lab::kMmioA, lab::kMmioB });
}

TEST_CASE("conflict_mmioOverlappingADeviceTheVmHoldsIdentityMapped_isRefused", "[broker_conflicts]")
{
	BrokerFixture fx;
	fx.assignOk("vm1", { lab::kMmioA }, identity());
	auto c = requireRefused(fx, "vm1", { lab::kMmioB }, pb::CONFLICT_REASON_MMIO_OVERLAP, lab::kMmioB, identity());
	CHECK(c.other_device_id() == lab::kMmioA);
	CHECK(c.other_vm() == "vm1");
}

TEST_CASE("conflict_everyReasonIsReported_notOnlyTheFirst", "[broker_conflicts]")
{
	BrokerFixture fx;
	auto check = fx.check("vm1", { lab::kDenied, lab::kWebOnly, "pci:0000:99:00.0", lab::kSim });
	INFO(describeConflicts(check.value.conflicts()));
	REQUIRE(check.ok());
	REQUIRE(check.value.conflicts_size() == 3);
	CHECK(findConflict(check.value, pb::CONFLICT_REASON_POLICY_DENIED, lab::kDenied));
	CHECK(findConflict(check.value, pb::CONFLICT_REASON_VM_NOT_ALLOWED, lab::kWebOnly));
	CHECK(findConflict(check.value, pb::CONFLICT_REASON_UNKNOWN_DEVICE, "pci:0000:99:00.0"));
	// sim:edu itself is fine, and all or nothing keeps it unassigned.
	auto a = fx.assign("vm1", { lab::kDenied, lab::kWebOnly, "pci:0000:99:00.0", lab::kSim });
	CHECK(a.code() == grpc::StatusCode::FAILED_PRECONDITION);
	CHECK(fx.assignments().empty());
}

TEST_CASE("checkAssignment_changesNothing", "[broker_conflicts]")
{
	BrokerFixture fx;
	auto check = fx.check("vm1", { lab::kNicA, lab::kSim });
	REQUIRE(check.ok());
	CHECK(check.value.ok());
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kNicA)) == "e1000e");
	CHECK(fx.kernel().log().empty());
	CHECK(fx.assignments().empty());
	CHECK(fx.deviceDaemons().empty());
}

TEST_CASE("dryRun_agreesWithAssign_overARandomisedSequence", "[broker_conflicts]")
{
	BrokerFixture fx;
	const std::vector<std::string> devices{ lab::kNicA,  lab::kNicB,  lab::kPair0,   lab::kPair1,
						lab::kIrqA,  lab::kIrqB,  lab::kHostPair0, lab::kHostPair1,
						lab::kWebOnly, lab::kDenied, lab::kSim };
	const std::vector<std::string> vms{ "vm1", "vm2", "web" };
	// mt19937's output is fixed by the standard; `% n` (not a distribution, whose algorithm
	// is the library's choice) keeps the sequence the same everywhere.
	std::mt19937 rng(20241121);
	size_t assigned = 0, refused = 0, deassigned = 0;
	for (int step = 0; step < 70; step++) {
		if (rng() % 10 < 7) {
			std::vector<std::string> ids;
			size_t n = 1 + rng() % 2;
			for (size_t i = 0; i < n; i++)
				ids.push_back(devices[rng() % devices.size()]);
			const std::string &vm = vms[rng() % vms.size()];
			auto check = fx.check(vm, ids);
			auto assign = fx.assign(vm, ids);
			std::string what = "step " + std::to_string(step) + ": " + vm + " <-";
			for (const auto &id : ids)
				what += " " + id;
			INFO(what << "\nCheckAssignment: " << describe(check.status) << "\n"
				  << describeConflicts(check.value.conflicts()) << "Assign: " << describe(assign.status));
			REQUIRE(check.ok());
			REQUIRE(check.value.ok() == assign.ok());
			if (assign.ok()) {
				assigned++;
				continue;
			}
			refused++;
			REQUIRE(assign.code() == grpc::StatusCode::FAILED_PRECONDITION);
			REQUIRE(assign.conflicts);
			REQUIRE(sameConflicts(*assign.conflicts, check.value));
		} else {
			const std::string &id = devices[rng() % devices.size()];
			auto r = fx.deassign(id);
			INFO("step " << step << ": deassign " << id << ": " << describe(r.status));
			REQUIRE(r.ok());
			deassigned += r.value.was_assigned();
		}
	}
	// The sequence really explored both outcomes.
	INFO(assigned << " assigned, " << refused << " refused, " << deassigned << " deassigned");
	CHECK(assigned >= 8);
	CHECK(refused >= 8);
	CHECK(deassigned >= 4);
}
