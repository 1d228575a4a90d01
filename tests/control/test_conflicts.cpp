// SPDX-License-Identifier: Apache-2.0
// Unit tests for the assignment conflict checks: every conflict kind with its words, the cases that must
// pass, order and scale.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "control/conflicts.h"

using namespace vfio_broker;
using namespace vfio_broker::control;

namespace {

// One host, one policy, one request: build it up, then check.
struct Scenario {
	pb::BoardPolicy rules;
	Policy policy;
	ConflictInput in;

	Scenario() { in.vm = "vm-a"; }

	// A PCI device alone in IOMMU group `group` (-1: none), on `driver`.
	pb::Device &pci(const std::string &address, int group, const std::string &driver = "e1000e")
	{
		pb::Device d;
		d.set_id("pci:" + address);
		d.set_kind(pb::DEVICE_KIND_PCI);
		d.set_pci_address(address);
		d.set_sysfs_path("/sys/devices/pci0000:00/" + address);
		d.set_vendor_id(0x8086);
		d.set_device_id(0x10d3);
		d.set_driver(driver);
		d.set_state(pb::DEVICE_STATE_AVAILABLE);
		d.mutable_iommu_group()->set_number(group);
		if (group >= 0)
			d.mutable_iommu_group()->add_members(d.id());
		return in.devices[d.id()] = d;
	}

	// A platform device with no IOMMU group.
	pb::Device &platform(const std::string &name, uint64_t mmio, uint64_t size)
	{
		pb::Device d;
		d.set_id("platform:" + name);
		d.set_kind(pb::DEVICE_KIND_PLATFORM);
		d.set_sysfs_path("/sys/devices/platform/" + name);
		d.mutable_iommu_group()->set_number(-1);
		auto *r = d.add_mmio();
		r->set_address(mmio);
		r->set_size(size);
		d.mutable_platform()->set_dt_path("/" + name);
		return in.devices[d.id()] = d;
	}

	pb::Device &sim(const std::string &id)
	{
		pb::Device d;
		d.set_id(id);
		d.set_kind(pb::DEVICE_KIND_SIMULATED);
		return in.devices[d.id()] = d;
	}

	// Put these devices in one IOMMU group.
	void group(int number, const std::vector<std::string> &ids)
	{
		for (const auto &id : ids) {
			auto *g = in.devices.at(id).mutable_iommu_group();
			g->set_number(number);
			g->clear_members();
			for (const auto &m : ids)
				g->add_members(m);
		}
	}

	// `vm` holds the device, in `state`, assigned with `identity` mapping.
	void hold(const std::string &id, const std::string &vm,
		  pb::DeviceState state = pb::DEVICE_STATE_ASSIGNED, bool identity = false)
	{
		pb::Device &d = in.devices.at(id);
		d.set_state(state);
		d.set_vm(vm);
		d.set_driver("vfio-pci");
		in.held[id] = d;
		in.heldOptions[id].set_identity_mapping(identity);
	}

	// A rule allowing exactly this device, for tweaking.
	pb::DeviceRule &allow(const std::string &id)
	{
		pb::DeviceRule &r = *rules.add_rules();
		r.set_name("r-" + std::to_string(rules.rules_size() - 1));
		const pb::Device &d = in.devices.at(id);
		if (d.kind() == pb::DEVICE_KIND_PCI)
			r.set_pci_address(d.pci_address());
		else if (d.kind() == pb::DEVICE_KIND_SIMULATED)
			r.set_simulated(d.id());
		else
			r.set_dt_path(d.platform().dt_path());
		return r;
	}

	std::vector<pb::Conflict> check(const std::vector<std::string> &ids)
	{
		policy = Policy(rules);
		in.policy = &policy;
		in.deviceIds = ids;
		return checkAssignment(in);
	}
};

// "device REASON other @vm" per conflict: readable when a CHECK fails.
std::vector<std::string> summary(const std::vector<pb::Conflict> &conflicts)
{
	std::vector<std::string> out;
	for (const auto &c : conflicts) {
		std::string s = c.device_id() + " " + pb::ConflictReason_Name(c.reason());
		if (!c.other_device_id().empty())
			s += " " + c.other_device_id();
		if (!c.other_vm().empty())
			s += " @" + c.other_vm();
		out.push_back(s);
	}
	return out;
}

using Lines = std::vector<std::string>;

} // namespace

// ---- What passes ----

TEST_CASE("a device the policy allows, alone in its IOMMU group, has no conflicts", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7);
	s.allow("pci:0000:01:00.0");
	CHECK(s.check({ "pci:0000:01:00.0" }).empty());
}

TEST_CASE("a simulated device needs no IOMMU group", "[conflicts]")
{
	Scenario s;
	s.sim("sim:edu");
	s.allow("sim:edu");
	CHECK(s.check({ "sim:edu" }).empty());
}

TEST_CASE("a whole IOMMU group requested in one Assign has no conflicts", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7, "amdgpu");
	s.pci("0000:01:00.1", 7, "snd_hda_intel");
	s.group(7, { "pci:0000:01:00.0", "pci:0000:01:00.1" });
	s.allow("pci:0000:01:00.0");
	s.allow("pci:0000:01:00.1");
	CHECK(s.check({ "pci:0000:01:00.1", "pci:0000:01:00.0" }).empty());
}

TEST_CASE("a group member this VM already holds keeps the group whole", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7);
	s.pci("0000:01:00.1", 7, "snd_hda_intel");
	s.group(7, { "pci:0000:01:00.0", "pci:0000:01:00.1" });
	s.hold("pci:0000:01:00.0", "vm-a");
	s.allow("pci:0000:01:00.1");
	CHECK(s.check({ "pci:0000:01:00.1" }).empty());
}

TEST_CASE("group members on drivers that keep a group viable do not block it", "[conflicts]")
{
	Scenario s;
	s.pci("0000:00:1c.0", 3, "pcieport");
	s.pci("0000:02:00.0", 3, "e1000e");
	s.pci("0000:02:00.1", 3, "pci-stub");
	s.pci("0000:02:00.2", 3, "vfio-pci");
	s.pci("0000:02:00.3", 3, "");
	s.group(3, { "pci:0000:00:1c.0", "pci:0000:02:00.0", "pci:0000:02:00.1", "pci:0000:02:00.2",
		     "pci:0000:02:00.3" });
	s.allow("pci:0000:02:00.0");
	CHECK(s.check({ "pci:0000:02:00.0" }).empty());
}

TEST_CASE("sharing an interrupt within the same VM is fine", "[conflicts]")
{
	Scenario s;
	for (const char *name : { "a.uart", "b.uart", "c.uart" }) {
		pb::Device &d = s.platform(name, 0, 0);
		d.mutable_iommu_group()->set_number(9);
		auto *irq = d.add_interrupts();
		irq->set_controller("/intc@8000000");
		irq->add_specifier(0);
		irq->add_specifier(33);
		irq->add_specifier(4);
		s.allow(d.id());
	}
	s.hold("platform:c.uart", "vm-a");
	CHECK(s.check({ "platform:a.uart", "platform:b.uart" }).empty());
}

TEST_CASE("a device without IOMMU passes with force_no_iommu, a rule allowing it and identity mapping",
	  "[conflicts]")
{
	Scenario s;
	s.platform("9010000.pl031", 0x9010000, 0x1000);
	pb::DeviceRule &r = s.allow("platform:9010000.pl031");
	r.set_allow_no_iommu(true);
	r.set_allow_identity_mapping(true);
	s.in.options.set_force_no_iommu(true);
	s.in.options.set_identity_mapping(true);
	CHECK(s.check({ "platform:9010000.pl031" }).empty());
}

// ---- Each conflict ----

TEST_CASE("an unknown device is UNKNOWN_DEVICE and nothing else is said about it", "[conflicts]")
{
	Scenario s;
	auto c = s.check({ "pci:0000:09:00.0" });
	REQUIRE(summary(c) == Lines{ "pci:0000:09:00.0 CONFLICT_REASON_UNKNOWN_DEVICE" });
	CHECK(c[0].message() == "no device pci:0000:09:00.0 on this host");
}

TEST_CASE("a device requested more than once is DUPLICATE_DEVICE, once", "[conflicts]")
{
	Scenario s;
	s.sim("sim:edu");
	s.allow("sim:edu");
	auto c = s.check({ "sim:edu", "sim:edu", "sim:edu" });
	REQUIRE(summary(c) == Lines{ "sim:edu CONFLICT_REASON_DUPLICATE_DEVICE" });
	CHECK(c[0].message() == "sim:edu appears more than once in the request");
}

TEST_CASE("a device no rule allows is POLICY_DENIED, in the policy's words", "[conflicts]")
{
	Scenario s;
	s.pci("0000:00:02.0", 1, "i915");
	auto c = s.check({ "pci:0000:00:02.0" });
	REQUIRE(summary(c) == Lines{ "pci:0000:00:02.0 CONFLICT_REASON_POLICY_DENIED" });
	CHECK(c[0].message() == "no rule in the board policy allows pci:0000:00:02.0 (deny by default)");
}

TEST_CASE("without a policy every device is denied", "[conflicts]")
{
	Scenario s;
	s.sim("sim:edu");
	s.in.deviceIds = { "sim:edu" };
	s.in.policy = nullptr;
	CHECK(summary(checkAssignment(s.in)) == Lines{ "sim:edu CONFLICT_REASON_POLICY_DENIED" });
}

TEST_CASE("a device whose rule names other VMs is VM_NOT_ALLOWED, naming rule and VMs", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7);
	pb::DeviceRule &r = s.allow("pci:0000:01:00.0");
	r.set_name("nic");
	r.add_allowed_vms("web");
	r.add_allowed_vms("db");
	auto c = s.check({ "pci:0000:01:00.0" });
	REQUIRE(summary(c) == Lines{ "pci:0000:01:00.0 CONFLICT_REASON_VM_NOT_ALLOWED" });
	CHECK(c[0].message() ==
	      "rule \"nic\" allows pci:0000:01:00.0 only for \"web\", \"db\", not for \"vm-a\"");

	s.in.vm = "db";
	CHECK(s.check({ "pci:0000:01:00.0" }).empty());
}

TEST_CASE("a device assigned to another VM is ASSIGNED_TO_OTHER_VM, naming that VM", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7);
	s.allow("pci:0000:01:00.0");
	s.hold("pci:0000:01:00.0", "vm-b");
	auto c = s.check({ "pci:0000:01:00.0" });
	REQUIRE(summary(c) == Lines{ "pci:0000:01:00.0 CONFLICT_REASON_ASSIGNED_TO_OTHER_VM @vm-b" });
	CHECK(c[0].message() == "pci:0000:01:00.0 is assigned to vm-b; deassign it there first");
}

TEST_CASE("a device quarantined after another VM must be released first", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7);
	s.allow("pci:0000:01:00.0");
	s.hold("pci:0000:01:00.0", "vm-b", pb::DEVICE_STATE_QUARANTINED);
	auto c = s.check({ "pci:0000:01:00.0" });
	REQUIRE(summary(c) == Lines{ "pci:0000:01:00.0 CONFLICT_REASON_ASSIGNED_TO_OTHER_VM @vm-b" });
	CHECK(c[0].message() == "pci:0000:01:00.0 is quarantined after vm-b; release it first");
}

TEST_CASE("a device this VM holds already is DEVICE_BUSY, with the way out for its state", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7);
	s.allow("pci:0000:01:00.0");
	SECTION("assigned")
	{
		s.hold("pci:0000:01:00.0", "vm-a");
		auto c = s.check({ "pci:0000:01:00.0" });
		REQUIRE(summary(c) == Lines{ "pci:0000:01:00.0 CONFLICT_REASON_DEVICE_BUSY" });
		CHECK(c[0].message() == "pci:0000:01:00.0 is already assigned to vm-a; deassign it first");
	}
	SECTION("quarantined")
	{
		s.hold("pci:0000:01:00.0", "vm-a", pb::DEVICE_STATE_QUARANTINED);
		auto c = s.check({ "pci:0000:01:00.0" });
		REQUIRE(summary(c) == Lines{ "pci:0000:01:00.0 CONFLICT_REASON_DEVICE_BUSY" });
		CHECK(c[0].message() == "pci:0000:01:00.0 is quarantined after vm-a; release it first");
	}
	SECTION("failed")
	{
		s.hold("pci:0000:01:00.0", "vm-a", pb::DEVICE_STATE_FAILED);
		auto c = s.check({ "pci:0000:01:00.0" });
		REQUIRE(summary(c) == Lines{ "pci:0000:01:00.0 CONFLICT_REASON_DEVICE_BUSY" });
		CHECK(c[0].message() == "pci:0000:01:00.0 failed while assigned to vm-a; deassign it first");
	}
}

TEST_CASE("a failed device nobody holds is DEVICE_BUSY", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7).set_state(pb::DEVICE_STATE_FAILED);
	s.allow("pci:0000:01:00.0");
	auto c = s.check({ "pci:0000:01:00.0" });
	REQUIRE(summary(c) == Lines{ "pci:0000:01:00.0 CONFLICT_REASON_DEVICE_BUSY" });
	CHECK(c[0].message() == "pci:0000:01:00.0 is in the failed state; deassign it first");
}

TEST_CASE("a group member assigned to another VM is IOMMU_GROUP_SPLIT: a group goes to one VM", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7);
	s.pci("0000:01:00.1", 7);
	s.group(7, { "pci:0000:01:00.0", "pci:0000:01:00.1" });
	s.allow("pci:0000:01:00.1");
	s.hold("pci:0000:01:00.0", "vm-b");
	auto c = s.check({ "pci:0000:01:00.1" });
	REQUIRE(summary(c) ==
		Lines{ "pci:0000:01:00.1 CONFLICT_REASON_IOMMU_GROUP_SPLIT pci:0000:01:00.0 @vm-b" });
	CHECK(c[0].message() ==
	      "pci:0000:01:00.1 is in IOMMU group 7 with pci:0000:01:00.0, which is assigned to "
	      "vm-b: a group goes to one VM");
}

TEST_CASE("a group member held by another VM splits the group even when it is requested too", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7);
	s.pci("0000:01:00.1", 7);
	s.group(7, { "pci:0000:01:00.0", "pci:0000:01:00.1" });
	s.allow("pci:0000:01:00.0");
	s.allow("pci:0000:01:00.1");
	s.hold("pci:0000:01:00.0", "vm-b");
	CHECK(summary(s.check({ "pci:0000:01:00.0", "pci:0000:01:00.1" })) ==
	      Lines{ "pci:0000:01:00.0 CONFLICT_REASON_ASSIGNED_TO_OTHER_VM @vm-b",
		     "pci:0000:01:00.1 CONFLICT_REASON_IOMMU_GROUP_SPLIT pci:0000:01:00.0 @vm-b" });
}

TEST_CASE("a group member on another host driver, not requested, makes the group NOT_VIABLE", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7, "amdgpu");
	s.pci("0000:01:00.1", 7, "snd_hda_intel");
	s.group(7, { "pci:0000:01:00.0", "pci:0000:01:00.1" });
	s.allow("pci:0000:01:00.0");
	auto c = s.check({ "pci:0000:01:00.0" });
	REQUIRE(summary(c) ==
		Lines{ "pci:0000:01:00.0 CONFLICT_REASON_IOMMU_GROUP_NOT_VIABLE pci:0000:01:00.1" });
	CHECK(c[0].message() ==
	      "pci:0000:01:00.0 is in IOMMU group 7 with pci:0000:01:00.1, which is bound to the "
	      "host driver snd_hda_intel: request it too (the broker binds only requested devices) "
	      "or unbind it");
}

TEST_CASE("a group member missing from the device list is UNKNOWN_DEVICE for the requested device",
	  "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7).mutable_iommu_group()->add_members("pci:0000:01:00.5");
	s.allow("pci:0000:01:00.0");
	auto c = s.check({ "pci:0000:01:00.0" });
	REQUIRE(summary(c) == Lines{ "pci:0000:01:00.0 CONFLICT_REASON_UNKNOWN_DEVICE pci:0000:01:00.5" });
	CHECK(c[0].message() ==
	      "pci:0000:01:00.0 is in IOMMU group 7 with pci:0000:01:00.5, which the broker "
	      "cannot find, so the group cannot be checked");
}

TEST_CASE("group members listed as bare PCI addresses are understood", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7);
	s.pci("0000:01:00.1", 7, "snd_hda_intel");
	auto *g = s.in.devices.at("pci:0000:01:00.0").mutable_iommu_group();
	g->clear_members();
	g->add_members("0000:01:00.0");
	g->add_members("0000:01:00.1");
	s.allow("pci:0000:01:00.0");
	CHECK(summary(s.check({ "pci:0000:01:00.0" })) ==
	      Lines{ "pci:0000:01:00.0 CONFLICT_REASON_IOMMU_GROUP_NOT_VIABLE pci:0000:01:00.1" });
}

TEST_CASE("a device without an IOMMU group is NO_IOMMU, naming what is missing", "[conflicts]")
{
	Scenario s;
	s.platform("9010000.pl031", 0x9010000, 0x1000);
	pb::DeviceRule &r = s.allow("platform:9010000.pl031");
	r.set_name("rtc");
	r.set_allow_identity_mapping(true);
	const std::string id = "platform:9010000.pl031";

	SECTION("nothing asked for")
	{
		auto c = s.check({ id });
		REQUIRE(summary(c) == Lines{ id + " CONFLICT_REASON_NO_IOMMU" });
		CHECK(c[0].message() ==
		      id + " has no IOMMU group: nothing confines its DMA; it needs force_no_iommu, "
			   "identity mapping and a rule allowing no-IOMMU, and lacks the request's "
			   "force_no_iommu, the request's identity_mapping, allow_no_iommu in rule "
			   "\"rtc\"");
	}
	SECTION("forced and identity-mapped, but the rule does not allow no-IOMMU")
	{
		s.in.options.set_force_no_iommu(true);
		s.in.options.set_identity_mapping(true);
		auto c = s.check({ id });
		REQUIRE(summary(c) == Lines{ id + " CONFLICT_REASON_NO_IOMMU" });
		CHECK_THAT(c[0].message(), Catch::EndsWith("and lacks allow_no_iommu in rule \"rtc\""));
	}
	SECTION("allowed and forced, but not identity-mapped")
	{
		r.set_allow_no_iommu(true);
		s.in.options.set_force_no_iommu(true);
		auto c = s.check({ id });
		REQUIRE(summary(c) == Lines{ id + " CONFLICT_REASON_NO_IOMMU" });
		CHECK_THAT(c[0].message(), Catch::EndsWith("and lacks the request's identity_mapping"));
	}
	SECTION("allowed and identity-mapped, but not forced")
	{
		r.set_allow_no_iommu(true);
		s.in.options.set_identity_mapping(true);
		auto c = s.check({ id });
		REQUIRE(summary(c) == Lines{ id + " CONFLICT_REASON_NO_IOMMU" });
		CHECK_THAT(c[0].message(), Catch::EndsWith("and lacks the request's force_no_iommu"));
	}
}

TEST_CASE("a device in a no-IOMMU VFIO group is NO_IOMMU too", "[conflicts]")
{
	Scenario s;
	pb::Device &d = s.pci("0000:01:00.0", 4);
	d.mutable_iommu_group()->set_no_iommu(true);
	s.allow(d.id());
	auto c = s.check({ d.id() });
	REQUIRE(summary(c) == Lines{ "pci:0000:01:00.0 CONFLICT_REASON_NO_IOMMU" });
	CHECK_THAT(c[0].message(),
		   Catch::StartsWith("pci:0000:01:00.0 is in no-IOMMU group 4: nothing confines its DMA"));
}

TEST_CASE("a denied device without IOMMU says the policy lacks a no-IOMMU rule", "[conflicts]")
{
	Scenario s;
	s.platform("9010000.pl031", 0x9010000, 0x1000);
	s.in.options.set_force_no_iommu(true);
	s.in.options.set_identity_mapping(true);
	auto c = s.check({ "platform:9010000.pl031" });
	REQUIRE(summary(c) == Lines{ "platform:9010000.pl031 CONFLICT_REASON_POLICY_DENIED",
				     "platform:9010000.pl031 CONFLICT_REASON_NO_IOMMU" });
	CHECK_THAT(c[1].message(), Catch::EndsWith("and lacks a policy rule with allow_no_iommu"));
}

TEST_CASE("identity mapping of a device whose rule does not allow it is IDENTITY_NOT_ALLOWED", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7);
	s.allow("pci:0000:01:00.0").set_name("nic");
	s.in.options.set_identity_mapping(true);
	auto c = s.check({ "pci:0000:01:00.0" });
	REQUIRE(summary(c) == Lines{ "pci:0000:01:00.0 CONFLICT_REASON_IDENTITY_NOT_ALLOWED" });
	CHECK(c[0].message() == "rule \"nic\" does not allow identity mapping for pci:0000:01:00.0 "
				"(allow_identity_mapping)");
}

TEST_CASE("an interrupt shared with a device of another VM is SHARED_INTERRUPT", "[conflicts]")
{
	Scenario s;
	for (const char *name : { "a.uart", "b.uart" }) {
		pb::Device &d = s.platform(name, 0, 0);
		d.mutable_iommu_group()->set_number(name[0] == 'a' ? 1 : 2);
		auto *irq = d.add_interrupts();
		irq->set_controller("/intc@8000000");
		irq->add_specifier(0);
		irq->add_specifier(33);
		irq->add_specifier(4);
		s.allow(d.id());
	}
	s.hold("platform:b.uart", "vm-b");
	auto c = s.check({ "platform:a.uart" });
	REQUIRE(summary(c) ==
		Lines{ "platform:a.uart CONFLICT_REASON_SHARED_INTERRUPT platform:b.uart @vm-b" });
	CHECK(c[0].message() ==
	      "platform:a.uart shares interrupt /intc@8000000 <0 33 4> with platform:b.uart, which "
	      "is assigned to vm-b: an interrupt line goes to one VM");
}

TEST_CASE("interrupts differ by controller, line number or specifier format", "[conflicts]")
{
	Scenario s;
	auto addIrq = [](pb::Device &d, const std::string &controller, std::vector<uint32_t> cells) {
		auto *irq = d.add_interrupts();
		irq->set_controller(controller);
		for (uint32_t c : cells)
			irq->add_specifier(c);
	};
	pb::Device &mine = s.platform("mine", 0, 0);
	mine.mutable_iommu_group()->set_number(1);
	addIrq(mine, "/intc", { 0, 33, 4 });
	s.allow(mine.id());
	pb::Device &other = s.platform("other", 0, 0);
	other.mutable_iommu_group()->set_number(2);
	addIrq(other, "/intc", { 0, 34, 4 });	// another line
	addIrq(other, "/gpio@1", { 0, 33, 4 }); // another controller
	addIrq(other, "/intc", { 0, 33 });	// fewer cells
	s.hold("platform:other", "vm-b");
	CHECK(s.check({ "platform:mine" }).empty());
}

TEST_CASE("a stream ID shared with a device of another VM is SHARED_STREAM_ID", "[conflicts]")
{
	Scenario s;
	pb::Device &a = s.pci("0000:01:00.0", 1);
	auto *sa = a.add_stream_ids();
	sa->set_iommu("/smmu@2b400000");
	sa->set_stream_id(0x100);
	s.allow(a.id());
	pb::Device &b = s.pci("0000:02:00.0", 2);
	*b.add_stream_ids() = *sa;
	s.hold(b.id(), "vm-b");
	auto c = s.check({ a.id() });
	REQUIRE(summary(c) ==
		Lines{ "pci:0000:01:00.0 CONFLICT_REASON_SHARED_STREAM_ID pci:0000:02:00.0 @vm-b" });
	CHECK(c[0].message() ==
	      "pci:0000:01:00.0 shares stream ID 0x100 of IOMMU /smmu@2b400000 with "
	      "pci:0000:02:00.0, which is assigned to vm-b: the IOMMU cannot tell their DMA apart");
}

TEST_CASE("a stream ID is only shared on the same IOMMU, and only matters across VMs", "[conflicts]")
{
	Scenario s;
	pb::Device &a = s.pci("0000:01:00.0", 1);
	auto *sa = a.add_stream_ids();
	sa->set_iommu("/smmu@2b400000");
	sa->set_stream_id(0x100);
	s.allow(a.id());
	pb::Device &b = s.pci("0000:02:00.0", 2);
	auto *sb = b.add_stream_ids();
	sb->set_iommu("/smmu@2b500000");
	sb->set_stream_id(0x100);
	pb::Device &same = s.pci("0000:03:00.0", 3);
	*same.add_stream_ids() = *sa;
	s.hold(b.id(), "vm-b");
	s.hold(same.id(), "vm-a");
	CHECK(s.check({ a.id() }).empty());
}

TEST_CASE("identity-mapped devices of one request with overlapping MMIO are MMIO_OVERLAP on both",
	  "[conflicts]")
{
	Scenario s;
	s.in.options.set_identity_mapping(true);
	for (auto [name, base] : { std::pair{ "a", 0x9000000ull }, std::pair{ "b", 0x9000800ull } }) {
		pb::Device &d = s.platform(name, base, 0x1000);
		d.mutable_iommu_group()->set_number(name[0] == 'a' ? 1 : 2);
		s.allow(d.id()).set_allow_identity_mapping(true);
	}
	auto c = s.check({ "platform:a", "platform:b" });
	REQUIRE(summary(c) == Lines{ "platform:a CONFLICT_REASON_MMIO_OVERLAP platform:b",
				     "platform:b CONFLICT_REASON_MMIO_OVERLAP platform:a" });
	CHECK(c[0].message() ==
	      "platform:a MMIO 0x9000000-0x9000fff overlaps platform:b 0x9000800-0x90017ff "
	      "(requested too): with identity mapping host addresses are guest addresses in vm-a");
}

TEST_CASE("MMIO overlapping a device the VM holds identity-mapped is MMIO_OVERLAP", "[conflicts]")
{
	Scenario s;
	s.in.options.set_identity_mapping(true);
	pb::Device &a = s.platform("a", 0x9000000, 0x1000);
	a.mutable_iommu_group()->set_number(1);
	s.allow(a.id()).set_allow_identity_mapping(true);
	pb::Device &b = s.platform("b", 0x8fff000, 0x2000);
	b.mutable_iommu_group()->set_number(2);
	s.hold(b.id(), "vm-a", pb::DEVICE_STATE_ASSIGNED, true);
	auto c = s.check({ "platform:a" });
	REQUIRE(summary(c) == Lines{ "platform:a CONFLICT_REASON_MMIO_OVERLAP platform:b @vm-a" });
	CHECK(c[0].message() ==
	      "platform:a MMIO 0x9000000-0x9000fff overlaps platform:b 0x8fff000-0x9000fff "
	      "(which vm-a holds identity-mapped): with identity mapping host addresses are guest "
	      "addresses in vm-a");
}

TEST_CASE("MMIO of devices held without identity mapping, or by other VMs, is not compared", "[conflicts]")
{
	Scenario s;
	s.in.options.set_identity_mapping(true);
	pb::Device &a = s.platform("a", 0x9000000, 0x1000);
	a.mutable_iommu_group()->set_number(1);
	s.allow(a.id()).set_allow_identity_mapping(true);
	s.platform("b", 0x9000000, 0x1000).mutable_iommu_group()->set_number(2);
	s.platform("c", 0x9000000, 0x1000).mutable_iommu_group()->set_number(3);
	s.hold("platform:b", "vm-a", pb::DEVICE_STATE_ASSIGNED, false);
	s.hold("platform:c", "vm-b", pb::DEVICE_STATE_ASSIGNED, true);
	CHECK(s.check({ "platform:a" }).empty());
}

TEST_CASE("without identity mapping MMIO ranges are not compared", "[conflicts]")
{
	Scenario s;
	for (const char *name : { "a", "b" }) {
		pb::Device &d = s.platform(name, 0x9000000, 0x1000);
		d.mutable_iommu_group()->set_number(name[0] == 'a' ? 1 : 2);
		s.allow(d.id());
	}
	CHECK(s.check({ "platform:a", "platform:b" }).empty());
}

TEST_CASE("adjacent MMIO ranges do not overlap, and a range at the top of the address space is handled",
	  "[conflicts]")
{
	Scenario s;
	s.in.options.set_identity_mapping(true);
	pb::Device &a = s.platform("a", 0x9000000, 0x1000);
	pb::Device &b = s.platform("b", 0x9001000, 0x1000);
	pb::Device &top = s.platform("top", 0xfffffffffffff000ull, 0x2000); // wraps: saturates
	int group = 1;
	for (pb::Device *d : { &a, &b, &top }) {
		d->mutable_iommu_group()->set_number(group++);
		s.allow(d->id()).set_allow_identity_mapping(true);
	}
	CHECK(s.check({ "platform:a", "platform:b", "platform:top" }).empty());
}

TEST_CASE("past 16 devices sharing an interrupt, the rest are counted in one conflict", "[conflicts]")
{
	// Legacy interrupt lines are shared widely; the answer stays bounded.
	Scenario s;
	auto irq = [](pb::Device &d) {
		auto *i = d.add_interrupts();
		i->set_controller("pci");
		i->add_specifier(16);
	};
	// The requested device sorts last and is itself held by another VM: it is in the index
	// among the devices counted, and must not count itself.
	pb::Device &mine = s.pci("0000:ff:00.0", 999);
	irq(mine);
	s.allow(mine.id());
	s.hold(mine.id(), "vm-z");
	char addr[64];
	for (int i = 0; i < 20; i++) {
		std::snprintf(addr, sizeof(addr), "0000:%02x:00.0", i + 1);
		pb::Device &d = s.pci(addr, i + 1);
		irq(d);
		s.hold(d.id(), "vm-b");
	}
	auto c = s.check({ mine.id() });
	REQUIRE(c.size() == 1 + 16 + 1);
	CHECK(c[0].reason() == pb::CONFLICT_REASON_ASSIGNED_TO_OTHER_VM);
	for (size_t i = 1; i <= 16; i++) {
		CHECK(c[i].reason() == pb::CONFLICT_REASON_SHARED_INTERRUPT);
		CHECK_FALSE(c[i].other_device_id().empty());
	}
	CHECK(c[1].other_device_id() == "pci:0000:01:00.0");
	CHECK(c[17].reason() == pb::CONFLICT_REASON_SHARED_INTERRUPT);
	CHECK(c[17].other_device_id().empty());
	CHECK(c[17].message() ==
	      "pci:0000:ff:00.0 has 4 more shared-interrupt conflicts (only the first 16 are listed)");
}

TEST_CASE("past 16 overlapping MMIO ranges, the rest are counted in one conflict", "[conflicts]")
{
	Scenario s;
	s.in.options.set_identity_mapping(true);
	pb::Device &big = s.platform("big", 0x10000000, 0x1000000);
	big.mutable_iommu_group()->set_number(1000);
	s.allow(big.id()).set_allow_identity_mapping(true);
	char name[64];
	for (int i = 0; i < 17; i++) {
		std::snprintf(name, sizeof(name), "held%02d", i);
		pb::Device &d = s.platform(name, 0x10000000 + 0x10000ull * i, 0x1000);
		d.mutable_iommu_group()->set_number(i);
		s.hold(d.id(), "vm-a", pb::DEVICE_STATE_ASSIGNED, true);
	}
	auto c = s.check({ big.id() });
	REQUIRE(c.size() == 17);
	CHECK(c[15].other_device_id() == "platform:held15");
	CHECK(c[16].message() ==
	      "platform:big has 1 more MMIO-overlap conflict (only the first 16 are listed)");
}

// ---- Order ----

TEST_CASE("conflicts come by device in request order, then by reason", "[conflicts]")
{
	Scenario s;
	s.pci("0000:01:00.0", 7);
	s.pci("0000:02:00.0", 8);
	s.pci("0000:02:00.1", 8, "snd_hda_intel");
	s.group(8, { "pci:0000:02:00.0", "pci:0000:02:00.1" });
	s.allow("pci:0000:02:00.0").add_allowed_vms("web");
	s.hold("pci:0000:01:00.0", "vm-b");
	auto c = s.check({ "pci:0000:02:00.0", "pci:0000:09:00.0", "pci:0000:01:00.0", "pci:0000:02:00.0" });
	CHECK(summary(c) ==
	      Lines{
		      "pci:0000:02:00.0 CONFLICT_REASON_VM_NOT_ALLOWED",
		      "pci:0000:02:00.0 CONFLICT_REASON_IOMMU_GROUP_NOT_VIABLE pci:0000:02:00.1",
		      "pci:0000:02:00.0 CONFLICT_REASON_DUPLICATE_DEVICE",
		      "pci:0000:09:00.0 CONFLICT_REASON_UNKNOWN_DEVICE",
		      "pci:0000:01:00.0 CONFLICT_REASON_POLICY_DENIED",
		      "pci:0000:01:00.0 CONFLICT_REASON_ASSIGNED_TO_OTHER_VM @vm-b",
	      });
	// The same question gives the same answer.
	CHECK(summary(s.check(s.in.deviceIds)) == summary(c));
}

TEST_CASE("conflicts of one device and one reason are ordered by the other device", "[conflicts]")
{
	Scenario s;
	auto irq = [](pb::Device &d) {
		auto *i = d.add_interrupts();
		i->set_controller("pci");
		i->add_specifier(11);
	};
	pb::Device &mine = s.pci("0000:05:00.0", 5);
	irq(mine);
	s.allow(mine.id());
	for (const char *addr : { "0000:09:00.0", "0000:03:00.0", "0000:07:00.0" }) {
		pb::Device &d = s.pci(addr, 10 + addr[6] - '0');
		irq(d);
		s.hold(d.id(), std::string("vm-") + addr[6]);
	}
	CHECK(summary(s.check({ mine.id() })) ==
	      Lines{ "pci:0000:05:00.0 CONFLICT_REASON_SHARED_INTERRUPT pci:0000:03:00.0 @vm-3",
		     "pci:0000:05:00.0 CONFLICT_REASON_SHARED_INTERRUPT pci:0000:07:00.0 @vm-7",
		     "pci:0000:05:00.0 CONFLICT_REASON_SHARED_INTERRUPT pci:0000:09:00.0 @vm-9" });
}

// ---- Scale ----

TEST_CASE("10,000 held devices and 1,000 requested: each conflict found once", "[conflicts]")
{
	// Held: 10,000 devices of vm-b, each alone on an interrupt and in a group with one requested
	// device for the first 1,000. Requested: 1,000 devices, each sharing both with its partner.
	Scenario s;
	pb::DeviceRule &rule = *s.rules.add_rules();
	rule.set_name("all-nics");
	rule.set_vendor_device("8086:10d3");
	char addr[64];
	std::vector<std::string> request;
	for (int i = 0; i < 10000; i++) {
		std::snprintf(addr, sizeof(addr), "%04x:%02x:%02x.0", 2 + i / 8192, i / 32 % 256, i % 32);
		pb::Device &h = s.pci(addr, i);
		auto *irq = h.add_interrupts();
		irq->set_controller("/intc");
		irq->add_specifier(static_cast<uint32_t>(i));
		if (i < 1000) {
			std::snprintf(addr, sizeof(addr), "0001:%02x:%02x.1", i / 32 % 256, i % 32);
			pb::Device &r = s.pci(addr, i);
			*r.add_interrupts() = *irq;
			s.group(i, { h.id(), r.id() });
			request.push_back(r.id());
		}
		s.hold(h.id(), "vm-b");
	}
	auto c = s.check(request);
	REQUIRE(c.size() == 2000);
	for (size_t i = 0; i < request.size(); i++) {
		CHECK(c[2 * i].device_id() == request[i]);
		CHECK(c[2 * i].reason() == pb::CONFLICT_REASON_IOMMU_GROUP_SPLIT);
		CHECK(c[2 * i + 1].reason() == pb::CONFLICT_REASON_SHARED_INTERRUPT);
		CHECK(c[2 * i + 1].other_device_id() == c[2 * i].other_device_id());
	}
}

TEST_CASE("a large IOMMU group requested whole has no conflicts", "[conflicts]")
{
	Scenario s;
	pb::DeviceRule &rule = *s.rules.add_rules();
	rule.set_vendor_device("8086:10d3");
	std::vector<std::string> ids;
	char addr[64];
	for (int i = 0; i < 256; i++) {
		std::snprintf(addr, sizeof(addr), "0000:%02x:%02x.%x", i / 256, i / 8 % 32, i % 8);
		ids.push_back(s.pci(addr, 1).id());
	}
	s.group(1, ids);
	CHECK(s.check(ids).empty());
}

// ---- Platform devices (Xen's device classes)

namespace {

void addGicSpi(pb::Device &d, uint32_t spi, uint32_t flags)
{
	auto *irq = d.add_interrupts();
	irq->set_controller("/intc@8000000");
	irq->add_specifier(0);
	irq->add_specifier(spi);
	irq->add_specifier(flags);
}

void addStream(pb::Device &d, const std::string &iommu, uint32_t sid)
{
	auto *s = d.add_stream_ids();
	s->set_iommu(iommu);
	s->set_stream_id(sid);
}

} // namespace

TEST_CASE("a GIC SPI shared with another VM's device conflicts whatever the trigger flags say", "[conflicts]")
{
	Scenario s;
	pb::Device &mine = s.platform("9000000.uart", 0x9000000, 0x1000);
	mine.mutable_iommu_group()->set_number(1);
	addGicSpi(mine, 33, 4); // level high
	s.allow(mine.id());
	pb::Device &other = s.platform("9100000.uart", 0x9100000, 0x1000);
	other.mutable_iommu_group()->set_number(2);
	addGicSpi(other, 33, 1); // edge rising: the same line, described differently
	s.hold(other.id(), "vm-b");
	CHECK(summary(s.check({ mine.id() })) ==
	      Lines{ "platform:9000000.uart CONFLICT_REASON_SHARED_INTERRUPT platform:9100000.uart @vm-b" });
}

TEST_CASE("platform devices sharing an interrupt and a stream ID may go to the same VM", "[conflicts]")
{
	Scenario s;
	pb::Device &a = s.platform("a.dma", 0x9000000, 0x1000);
	pb::Device &b = s.platform("b.dma", 0x9001000, 0x1000);
	for (pb::Device *d : { &a, &b }) {
		addGicSpi(*d, 40, 4);
		addStream(*d, "/iommu@9050000", 0x200);
		s.allow(d->id());
	}
	s.group(7, { a.id(), b.id() });
	SECTION("in one request")
	{
		CHECK(s.check({ a.id(), b.id() }).empty());
	}
	SECTION("one held by the VM already")
	{
		s.hold(b.id(), "vm-a");
		CHECK(s.check({ a.id() }).empty());
	}
	SECTION("but not to another VM")
	{
		s.hold(b.id(), "vm-b");
		CHECK(summary(s.check({ a.id() })) ==
		      Lines{ "platform:a.dma CONFLICT_REASON_IOMMU_GROUP_SPLIT platform:b.dma @vm-b",
			     "platform:a.dma CONFLICT_REASON_SHARED_INTERRUPT platform:b.dma @vm-b",
			     "platform:a.dma CONFLICT_REASON_SHARED_STREAM_ID platform:b.dma @vm-b" });
	}
}

TEST_CASE("a stream ID shared across VMs is refused even when the IOMMU groups differ", "[conflicts]")
{
	Scenario s;
	pb::Device &a = s.platform("a.eth", 0x9000000, 0x1000);
	a.mutable_iommu_group()->set_number(3);
	addStream(a, "/iommu@9050000", 0x100);
	s.allow(a.id());
	pb::Device &b = s.platform("b.eth", 0x9100000, 0x1000);
	b.mutable_iommu_group()->set_number(4);
	addStream(b, "/iommu@9050000", 0x100);
	s.hold(b.id(), "vm-b");
	auto c = s.check({ a.id() });
	REQUIRE(summary(c) == Lines{ "platform:a.eth CONFLICT_REASON_SHARED_STREAM_ID platform:b.eth @vm-b" });
	CHECK_THAT(c[0].message(), Catch::Contains("stream ID 0x100 of IOMMU /iommu@9050000"));
}

TEST_CASE("an interrupt-less platform device with an IOMMU group has no conflicts", "[conflicts]")
{
	Scenario s;
	pb::Device &d = s.platform("a.sram", 0x9000000, 0x1000);
	d.mutable_iommu_group()->set_number(5);
	d.mutable_iommu_group()->add_members(d.id());
	s.allow(d.id());
	CHECK(s.check({ d.id() }).empty());
}

TEST_CASE("a non-DMA platform device needs no IOMMU, no force_no_iommu and no identity mapping",
	  "[conflicts]")
{
	Scenario s;
	pb::Device &rtc = s.platform("9010000.pl031", 0x9010000, 0x1000);
	addGicSpi(rtc, 2, 4);
	s.allow(rtc.id()).set_no_dma(true);
	CHECK(s.check({ rtc.id() }).empty());
}

TEST_CASE("a device whose node has iommus is never non-DMA: NO_IOMMU says why", "[conflicts]")
{
	Scenario s;
	pb::Device &eth = s.platform("a.eth", 0x9000000, 0x1000);
	addStream(eth, "/iommu@9050000", 0x100);
	s.allow(eth.id()).set_no_dma(true);
	auto c = s.check({ eth.id() });
	REQUIRE(summary(c) == Lines{ "platform:a.eth CONFLICT_REASON_NO_IOMMU" });
	CHECK_THAT(c[0].message(), Catch::EndsWith("(rule \"r-0\" says no_dma, but its device-tree node has "
						   "iommus: it does DMA)"));
}

TEST_CASE("no_dma does not excuse a PCI device without IOMMU", "[conflicts]")
{
	Scenario s;
	pb::Device &nic = s.pci("0000:01:00.0", -1);
	s.allow(nic.id()).set_no_dma(true);
	auto c = s.check({ nic.id() });
	REQUIRE(summary(c) == Lines{ "pci:0000:01:00.0 CONFLICT_REASON_NO_IOMMU" });
	CHECK_THAT(c[0].message(), Catch::Contains("which only a device-tree device may claim"));
}

TEST_CASE("a platform device without IOMMU and without no_dma needs Xen's force-assign conditions",
	  "[conflicts]")
{
	Scenario s;
	pb::Device &dma = s.platform("a.dma", 0x9000000, 0x1000);
	pb::DeviceRule &rule = s.allow(dma.id());
	CHECK(summary(s.check({ dma.id() })) == Lines{ "platform:a.dma CONFLICT_REASON_NO_IOMMU" });
	rule.set_allow_no_iommu(true);
	rule.set_allow_identity_mapping(true);
	s.in.options.set_force_no_iommu(true);
	s.in.options.set_identity_mapping(true);
	CHECK(s.check({ dma.id() }).empty());
}

TEST_CASE("identity-mapped platform devices whose MMIO overlaps another held identity-mapped are refused",
	  "[conflicts]")
{
	Scenario s;
	pb::Device &a = s.platform("a.regs", 0x9000000, 0x2000);
	pb::Device &b = s.platform("b.regs", 0x9001000, 0x1000);
	for (pb::Device *d : { &a, &b }) {
		pb::DeviceRule &r = s.allow(d->id());
		r.set_no_dma(true);
		r.set_allow_identity_mapping(true);
	}
	s.hold(b.id(), "vm-a", pb::DEVICE_STATE_ASSIGNED, true);
	s.in.options.set_identity_mapping(true);
	CHECK(summary(s.check({ a.id() })) ==
	      Lines{ "platform:a.regs CONFLICT_REASON_MMIO_OVERLAP platform:b.regs @vm-a" });
}
