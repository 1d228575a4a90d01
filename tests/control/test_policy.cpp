// SPDX-License-Identifier: Apache-2.0
// Unit tests for the board policy: deny by default, first match wins, each matcher, and the verdict's words.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>

#include "control/config.h"
#include "control/policy.h"

using namespace vfio_broker;
using namespace vfio_broker::control;

namespace {

pb::Device pciDevice(const std::string &address, uint32_t vendor = 0x8086, uint32_t device = 0x10d3)
{
	pb::Device d;
	d.set_id("pci:" + address);
	d.set_kind(pb::DEVICE_KIND_PCI);
	d.set_pci_address(address);
	d.set_sysfs_path("/sys/devices/pci0000:00/0000:00:1c.0/" + address);
	d.set_vendor_id(vendor);
	d.set_device_id(device);
	return d;
}

pb::Device platformDevice(const std::string &name, const std::string &dtPath, const std::string &compatible,
			  pb::DeviceKind kind = pb::DEVICE_KIND_PLATFORM)
{
	pb::Device d;
	d.set_id(std::string(kind == pb::DEVICE_KIND_AMBA ? "amba:" : "platform:") + name);
	d.set_kind(kind);
	d.set_sysfs_path("/sys/devices/platform/" + name);
	d.mutable_platform()->set_dt_path(dtPath);
	d.mutable_platform()->add_compatible(compatible);
	d.mutable_platform()->add_compatible("arm,primecell");
	return d;
}

pb::Device simDevice(const std::string &id)
{
	pb::Device d;
	d.set_id(id);
	d.set_kind(pb::DEVICE_KIND_SIMULATED);
	return d;
}

Policy policyOf(const std::string &text)
{
	auto r = parsePolicy(text, "policy.conf");
	INFO((r.ok() ? "" : r.error().message));
	REQUIRE(r.ok());
	return Policy(*r);
}

// A policy with one rule, built directly so the matchers are tested without the parser.
Policy oneRule(pb::DeviceRule rule)
{
	pb::BoardPolicy p;
	*p.add_rules() = std::move(rule);
	return Policy(p);
}

} // namespace

TEST_CASE("an empty policy denies every device and says it denies by default", "[policy]")
{
	Policy policy;
	pb::PolicyVerdict v = policy.evaluate(pciDevice("0000:00:02.0"));
	CHECK_FALSE(v.allowed());
	CHECK(v.reason() == "no rule in the board policy allows pci:0000:00:02.0 (deny by default)");
	CHECK(v.rule().empty());
	CHECK(v.allowed_vms().empty());
	CHECK_FALSE(v.allow_no_iommu());
	CHECK_FALSE(v.allow_identity_mapping());
	CHECK(policy.ruleFor(pciDevice("0000:00:02.0")) == nullptr);
	CHECK_FALSE(policy.vmAllowed(simDevice("sim:edu"), "web"));
}

TEST_CASE("a device no rule matches is denied even when other rules exist", "[policy]")
{
	Policy policy = policyOf("rules { name: \"edu\" simulated: \"sim:edu\" }");
	pb::PolicyVerdict v = policy.evaluate(pciDevice("0000:01:00.0"));
	CHECK_FALSE(v.allowed());
	CHECK(v.reason() == "no rule in the board policy allows pci:0000:01:00.0 (deny by default)");
}

TEST_CASE("the first rule that matches decides, even when a later one would allow more", "[policy]")
{
	Policy policy = policyOf(R"(
rules { name: "nic-web" pci_address: "0000:01:00.0" allowed_vms: "web" }
rules { name: "any-intel-nic" vendor_device: "8086:10d3" allow_identity_mapping: true }
)");
	pb::PolicyVerdict first = policy.evaluate(pciDevice("0000:01:00.0"));
	CHECK(first.allowed());
	CHECK(first.rule() == "nic-web");
	CHECK(first.reason() == "allowed by rule \"nic-web\"");
	CHECK_FALSE(first.allow_identity_mapping());
	CHECK(policy.ruleFor(pciDevice("0000:01:00.0")) == &policy.proto().rules(0));

	pb::PolicyVerdict second = policy.evaluate(pciDevice("0000:02:00.0"));
	CHECK(second.rule() == "any-intel-nic");
	CHECK(second.allow_identity_mapping());
}

TEST_CASE("a rule matches only when every matcher it sets matches", "[policy]")
{
	Policy policy =
		policyOf("rules { name: \"r\" pci_address: \"0000:01:00.0\" vendor_device: \"8086:10d3\" }");
	CHECK(policy.evaluate(pciDevice("0000:01:00.0")).allowed());
	CHECK_FALSE(policy.evaluate(pciDevice("0000:01:00.0", 0x8086, 0x1533)).allowed());
	CHECK_FALSE(policy.evaluate(pciDevice("0000:01:00.1")).allowed());
}

TEST_CASE("a rule that sets no matcher matches nothing", "[policy]")
{
	pb::DeviceRule rule;
	rule.set_name("empty");
	Policy policy = oneRule(rule);
	CHECK_FALSE(policy.evaluate(pciDevice("0000:01:00.0")).allowed());
	CHECK_FALSE(policy.evaluate(simDevice("sim:edu")).allowed());
}

TEST_CASE("pci_address compares hex digits in any case", "[policy]")
{
	Policy policy = policyOf("rules { pci_address: \"0000:0A:1F.7\" }");
	CHECK(policy.evaluate(pciDevice("0000:0a:1f.7")).allowed());
	pb::Device upper = pciDevice("0000:0A:1f.7");
	CHECK(policy.evaluate(upper).allowed());
}

TEST_CASE("pci_address falls back to the device id when the address field is empty", "[policy]")
{
	Policy policy = policyOf("rules { pci_address: \"0000:01:00.0\" }");
	pb::Device d = pciDevice("0000:01:00.0");
	d.clear_pci_address();
	CHECK(policy.evaluate(d).allowed());
}

TEST_CASE("pci_address never matches a device of another bus", "[policy]")
{
	Policy policy = policyOf("rules { pci_address: \"0000:01:00.0\" }");
	pb::Device d = platformDevice("0000:01:00.0", "/x", "y");
	d.set_pci_address("0000:01:00.0"); // a confused inventory must not widen the policy
	CHECK_FALSE(policy.evaluate(d).allowed());
}

TEST_CASE("vendor_device compares the hex ids in any case", "[policy]")
{
	Policy policy = policyOf("rules { vendor_device: \"1AF4:10d3\" }");
	CHECK(policy.evaluate(pciDevice("0000:03:00.0", 0x1af4, 0x10d3)).allowed());
	CHECK_FALSE(policy.evaluate(pciDevice("0000:03:00.0", 0x1af4, 0x10d4)).allowed());
	CHECK_FALSE(policy.evaluate(pciDevice("0000:03:00.0", 0x1af5, 0x10d3)).allowed());
}

TEST_CASE("sysfs_path matches the device's sysfs path, slashes normalised", "[policy]")
{
	pb::DeviceRule rule;
	rule.set_sysfs_path("/sys/devices/platform//9010000.pl031/");
	Policy policy = oneRule(rule);
	CHECK(policy.evaluate(platformDevice("9010000.pl031", "/pl031@9010000", "arm,pl031")).allowed());
	CHECK_FALSE(
		policy.evaluate(platformDevice("9020000.pl061", "/pl061@9020000", "arm,pl061")).allowed());
}

TEST_CASE("sysfs_path also matches the /sys/bus/<bus>/devices/<name> alias of the device", "[policy]")
{
	Policy pci = policyOf("rules { sysfs_path: \"/sys/bus/pci/devices/0000:01:00.0\" }");
	CHECK(pci.evaluate(pciDevice("0000:01:00.0")).allowed());
	CHECK_FALSE(pci.evaluate(pciDevice("0000:01:00.1")).allowed());

	Policy platform = policyOf("rules { sysfs_path: \"/sys/bus/platform/devices/9010000.pl031\" }");
	CHECK(platform.evaluate(platformDevice("9010000.pl031", "/pl031@9010000", "arm,pl031")).allowed());

	Policy amba = policyOf("rules { sysfs_path: \"/sys/bus/amba/devices/9010000.pl031\" }");
	CHECK(amba.evaluate(platformDevice("9010000.pl031", "/pl031@9010000", "arm,pl031",
					   pb::DEVICE_KIND_AMBA))
		      .allowed());
}

TEST_CASE("the sysfs alias of one bus does not match a device on another", "[policy]")
{
	Policy policy = policyOf("rules { sysfs_path: \"/sys/bus/amba/devices/9010000.pl031\" }");
	CHECK_FALSE(
		policy.evaluate(platformDevice("9010000.pl031", "/pl031@9010000", "arm,pl031")).allowed());
	Policy usb = policyOf("rules { sysfs_path: \"/sys/bus/usb/devices/0000:01:00.0\" }");
	CHECK_FALSE(usb.evaluate(pciDevice("0000:01:00.0")).allowed());
}

TEST_CASE("the sysfs alias matches a device scanned under a fake sysfs root", "[policy]")
{
	Policy policy = policyOf("rules { sysfs_path: \"/sys/bus/pci/devices/0000:01:00.0\" }");
	pb::Device d = pciDevice("0000:01:00.0");
	d.set_sysfs_path("/tmp/vb-fake/sys/devices/pci0000:00/0000:01:00.0");
	CHECK(policy.evaluate(d).allowed());
}

TEST_CASE("dt_path matches the device-tree node of a platform device", "[policy]")
{
	Policy policy = policyOf("rules { dt_path: \"/pl031@9010000\" }");
	CHECK(policy.evaluate(platformDevice("9010000.pl031", "/pl031@9010000", "arm,pl031")).allowed());
	CHECK_FALSE(
		policy.evaluate(platformDevice("9020000.pl031", "/pl031@9020000", "arm,pl031")).allowed());
	CHECK_FALSE(policy.evaluate(pciDevice("0000:01:00.0")).allowed());
}

TEST_CASE("dt_compatible matches any of the node's compatible strings, exactly", "[policy]")
{
	Policy policy = policyOf("rules { dt_compatible: \"arm,primecell\" }");
	CHECK(policy.evaluate(platformDevice("9010000.pl031", "/pl031@9010000", "arm,pl031")).allowed());
	Policy upper = policyOf("rules { dt_compatible: \"ARM,pl031\" }");
	CHECK_FALSE(upper.evaluate(platformDevice("9010000.pl031", "/pl031@9010000", "arm,pl031")).allowed());
}

TEST_CASE("simulated matches the simulated device's id", "[policy]")
{
	Policy policy = policyOf("rules { name: \"edu\" simulated: \"sim:edu\" }");
	CHECK(policy.evaluate(simDevice("sim:edu")).allowed());
	CHECK_FALSE(policy.evaluate(simDevice("sim:edu2")).allowed());
}

TEST_CASE("the verdict carries the rule's VMs, no-IOMMU, identity mapping and deassign action", "[policy]")
{
	Policy policy = policyOf(R"(
rules {
  name: "rtc"
  dt_compatible: "arm,pl031"
  allowed_vms: "control"
  allowed_vms: "backup"
  allow_identity_mapping: true
  allow_no_iommu: true
  on_deassign: DEASSIGN_ACTION_QUARANTINE
}
)");
	pb::PolicyVerdict v = policy.evaluate(platformDevice("9010000.pl031", "/pl031@9010000", "arm,pl031"));
	CHECK(v.allowed());
	CHECK(v.reason() == "allowed by rule \"rtc\"");
	CHECK(v.rule() == "rtc");
	REQUIRE(v.allowed_vms_size() == 2);
	CHECK(v.allowed_vms(0) == "control");
	CHECK(v.allowed_vms(1) == "backup");
	CHECK(v.allow_no_iommu());
	CHECK(v.allow_identity_mapping());
	CHECK(v.on_deassign() == pb::DEASSIGN_ACTION_QUARANTINE);
}

TEST_CASE("the verdict says no_dma when the rule does, and not otherwise", "[policy]")
{
	Policy policy = policyOf(R"(
rules { name: "rtc" dt_compatible: "arm,pl031" no_dma: true }
rules { name: "uart" dt_compatible: "arm,pl011" }
)");
	CHECK(policy.evaluate(platformDevice("9010000.pl031", "/pl031@9010000", "arm,pl031")).no_dma());
	CHECK_FALSE(policy.evaluate(platformDevice("9000000.pl011", "/pl011@9000000", "arm,pl011")).no_dma());
}

TEST_CASE("on_deassign defaults to RESTORE, for allowed and denied devices", "[policy]")
{
	Policy policy = policyOf("rules { simulated: \"sim:edu\" }");
	CHECK(policy.evaluate(simDevice("sim:edu")).on_deassign() == pb::DEASSIGN_ACTION_RESTORE);
	CHECK(policy.evaluate(simDevice("sim:other")).on_deassign() == pb::DEASSIGN_ACTION_RESTORE);
}

TEST_CASE("an unnamed rule is named by its index", "[policy]")
{
	Policy policy = policyOf("rules { simulated: \"sim:a\" }\nrules { simulated: \"sim:edu\" }");
	pb::PolicyVerdict v = policy.evaluate(simDevice("sim:edu"));
	CHECK(v.rule() == "rules[1]");
	CHECK(v.reason() == "allowed by rule \"rules[1]\"");
}

TEST_CASE("vmAllowed: any VM without a list, only listed VMs with one, none without a rule", "[policy]")
{
	Policy policy = policyOf(R"(
rules { simulated: "sim:edu" }
rules { pci_address: "0000:00:04.0" allowed_vms: "ci-runner-1" allowed_vms: "ci-runner-2" }
)");
	CHECK(policy.vmAllowed(simDevice("sim:edu"), "anything"));
	CHECK(policy.vmAllowed(pciDevice("0000:00:04.0"), "ci-runner-2"));
	CHECK_FALSE(policy.vmAllowed(pciDevice("0000:00:04.0"), "web"));
	CHECK_FALSE(policy.vmAllowed(pciDevice("0000:00:05.0"), "ci-runner-1"));
}

TEST_CASE("normalizePciAddress accepts only the full form and lower-cases it", "[policy]")
{
	CHECK(normalizePciAddress("0000:0A:1F.7") == std::optional<std::string>("0000:0a:1f.7"));
	CHECK(normalizePciAddress("ffff:ff:1f.7") == std::optional<std::string>("ffff:ff:1f.7"));
	CHECK_FALSE(normalizePciAddress("01:00.0"));
	CHECK_FALSE(normalizePciAddress("0000:01:20.0"));
	CHECK_FALSE(normalizePciAddress("0000:01:00.8"));
	CHECK_FALSE(normalizePciAddress("0000-01:00.0"));
	CHECK_FALSE(normalizePciAddress(""));
}

TEST_CASE("parseVendorDevice reads four hex digits on each side", "[policy]")
{
	auto vd = parseVendorDevice("8086:10D3");
	REQUIRE(vd);
	CHECK(vd->first == 0x8086);
	CHECK(vd->second == 0x10d3);
	CHECK_FALSE(parseVendorDevice("8086:10d"));
	CHECK_FALSE(parseVendorDevice("+086:10d3"));
	CHECK_FALSE(parseVendorDevice("8086 10d3"));
}

TEST_CASE("the example policy decides realistic devices as its comments say", "[policy]")
{
	const char *root = std::getenv("VFIO_BROKER_SOURCE_ROOT");
	REQUIRE(root != nullptr);
	auto loaded = loadPolicy(std::string(root) + "/configs/policy.conf");
	INFO((loaded.ok() ? "" : loaded.error().message));
	REQUIRE(loaded.ok());
	Policy policy(*loaded);

	pb::PolicyVerdict edu = policy.evaluate(simDevice("sim:edu"));
	CHECK(edu.allowed());
	CHECK(edu.allowed_vms().empty());

	pb::PolicyVerdict nic = policy.evaluate(pciDevice("0000:05:00.0", 0x8086, 0x10d3));
	CHECK(nic.rule() == "nic");
	CHECK(nic.on_deassign() == pb::DEASSIGN_ACTION_QUARANTINE);
	CHECK(policy.vmAllowed(pciDevice("0000:05:00.0", 0x8086, 0x10d3), "web"));
	CHECK_FALSE(policy.vmAllowed(pciDevice("0000:05:00.0", 0x8086, 0x10d3), "db"));

	CHECK(policy.evaluate(pciDevice("0000:00:04.0", 0x1234, 0x11e8)).rule() == "edu");

	pb::PolicyVerdict rtc =
		policy.evaluate(platformDevice("9010000.pl031", "/pl031@9010000", "arm,pl031"));
	CHECK(rtc.rule() == "rtc");
	CHECK(rtc.allow_identity_mapping());
	CHECK(rtc.allow_no_iommu());

	CHECK(policy.evaluate(simDevice("sim:platform")).rule() == "sim-platform");
	pb::PolicyVerdict eth =
		policy.evaluate(platformDevice("ff0c0000.ethernet", "/soc/ethernet@ff0c0000", "snps,dwmac"));
	CHECK(eth.rule() == "soc-ethernet");
	CHECK_FALSE(eth.no_dma());
	CHECK_FALSE(policy.vmAllowed(platformDevice("ff0c0000.ethernet", "/soc/ethernet@ff0c0000", "snps,dwmac"),
				     "web"));
	pb::PolicyVerdict gpio = policy.evaluate(platformDevice("9030000.pl061", "/pl061@9030000", "arm,pl061"));
	CHECK(gpio.rule() == "gpio");
	CHECK(gpio.no_dma());
	CHECK_FALSE(rtc.no_dma());

	// A GPU nobody listed stays with the host.
	CHECK_FALSE(policy.evaluate(pciDevice("0000:00:02.0", 0x8086, 0x46a6)).allowed());
}
