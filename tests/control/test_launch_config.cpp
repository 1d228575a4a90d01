// SPDX-License-Identifier: Apache-2.0
// Launch mode: crosvm arguments and guest overlays for a VM's platform devices, the overlays
// applied with fdtoverlay onto a crosvm-like base tree.
#include <catch2/catch.hpp>

#include <cerrno>

#include "control/launch_config.h"
#include "support/fake_sysfs.h"

using namespace vfio_broker::control;
using vfio_broker::testing::applyOverlay;
using vfio_broker::testing::compileDts;
using vfio_broker::testing::decompileDtb;
using vfio_broker::testing::FakeBusDevice;
using vfio_broker::testing::FakeSysfs;

namespace {

// What crosvm's aarch64 base tree offers an overlay: the GIC labelled "intc" (arch/src/fdt.rs
// and aarch64/src/fdt.rs name the phandle label so), 2-cell addresses and sizes.
const char kGuestBaseDts[] = R"(/dts-v1/;
/ {
	#address-cells = <2>;
	#size-cells = <2>;
	interrupt-parent = <&intc>;
	intc: intc {
		compatible = "arm,gic-v3";
		#interrupt-cells = <3>;
		interrupt-controller;
		reg = <0x0 0x3fff0000 0x0 0x10000>, <0x0 0x3ffd0000 0x0 0x20000>;
	};
};
)";

const char kHostDts[] = R"(/dts-v1/;
/ {
	#address-cells = <2>;
	#size-cells = <2>;
	interrupt-parent = <&gic>;
	gic: intc@8000000 {
		compatible = "arm,gic-v3";
		#interrupt-cells = <3>;
		interrupt-controller;
		reg = <0x0 0x8000000 0x0 0x10000>;
	};
	pl031@9010000 {
		compatible = "arm,pl031", "arm,primecell";
		reg = <0x0 0x9010000 0x0 0x1000>;
		interrupts = <0 2 4>;
	};
};
)";

LaunchDevice simPlatform(bool identity)
{
	InventoryOptions opts;
	opts.simulated = { "sim:platform" };
	auto dev = scanDevice(opts, "sim:platform");
	REQUIRE(dev.ok());
	LaunchDevice d;
	d.device = *dev;
	d.options.set_identity_mapping(identity);
	return d;
}

pb::GetLaunchConfigRequest request()
{
	pb::GetLaunchConfigRequest req;
	req.set_vm("vm-a");
	req.set_guest_mmio_base(0x10000000);
	req.set_guest_mmio_size(0x100000);
	req.set_first_guest_spi(40);
	return req;
}

std::vector<std::string> args(const pb::GetLaunchConfigResponse &resp)
{
	return { resp.args().begin(), resp.args().end() };
}

std::vector<uint8_t> bytes(const std::string &s)
{
	return std::vector<uint8_t>(s.begin(), s.end());
}

} // namespace

TEST_CASE("buildLaunchConfig_simPlatformRelocated_givesCrosvmArgsAndAnOverlayFdtoverlayApplies",
	  "[launch_config]")
{
	auto resp = buildLaunchConfig(InventoryOptions{}, request(), { simPlatform(false) });
	INFO((resp ? std::string() : resp.error().message));
	REQUIRE(resp.ok());
	REQUIRE(resp->placements_size() == 1);
	const pb::GuestPlacement &p = resp->placements(0);
	CHECK(p.device_id() == "sim:platform");
	CHECK_FALSE(p.identity_mapping());
	REQUIRE(p.guest_mmio_size() == 2);
	for (const auto &r : p.guest_mmio()) {
		CHECK(r.address() >= 0x10000000);
		CHECK(r.address() + r.size() <= 0x10100000);
		CHECK(r.address() % 0x1000 == 0);
	}
	CHECK(p.guest_mmio(0).size() == 0x1000);
	CHECK(p.guest_mmio(1).size() == 0x200);
	CHECK(std::vector<uint32_t>(p.guest_spis().begin(), p.guest_spis().end()) == std::vector<uint32_t>{ 40 });
	CHECK(std::vector<uint32_t>(p.guest_irq_flags().begin(), p.guest_irq_flags().end()) ==
	      std::vector<uint32_t>{ 4 });
	CHECK(resp->overlay_path() == "vm-a.dtbo");
	CHECK(args(*resp) == std::vector<std::string>{ "--vfio",
						       "/sys/bus/platform/devices/9100000.sim-platform,dt-symbol=" +
							       p.label(),
						       "--device-tree-overlay", "vm-a.dtbo,filter" });

	auto merged = applyOverlay(compileDts(kGuestBaseDts), bytes(resp->overlay()));
	std::string dts = decompileDtb(merged);
	CHECK_THAT(dts, Catch::Contains("vfio-broker,sim-platform"));
	CHECK_THAT(dts, Catch::Contains(p.node_name()));
}

TEST_CASE("buildLaunchConfig_identityMappedHostDevice_keepsHostAddressesAndReadsTheHostTree",
	  "[launch_config]")
{
	FakeSysfs sysfs;
	sysfs.setDeviceTree(compileDts(kHostDts));
	FakeBusDevice rtc;
	rtc.bus = "amba";
	rtc.name = "9010000.pl031";
	rtc.ofNode = "/pl031@9010000";
	sysfs.addBusDevice(rtc);
	InventoryOptions opts;
	opts.sysfsRoot = sysfs.root();
	opts.kernelRelease = "6.12.0-1-arm64";
	auto dev = scanDevice(opts, "amba:9010000.pl031");
	REQUIRE(dev.ok());
	LaunchDevice d;
	d.device = *dev;
	d.options.set_identity_mapping(true);
	d.noDma = true;
	pb::GetLaunchConfigRequest req = request();
	req.clear_guest_mmio_size(); // identity only: no window needed
	req.set_overlay_path("/run/vm-a/devices.dtbo");
	auto resp = buildLaunchConfig(opts, req, { d });
	INFO((resp ? std::string() : resp.error().message));
	REQUIRE(resp.ok());
	REQUIRE(resp->placements_size() == 1);
	const pb::GuestPlacement &p = resp->placements(0);
	CHECK(p.identity_mapping());
	REQUIRE(p.guest_mmio_size() == 1);
	CHECK(p.guest_mmio(0).address() == 0x9010000);
	CHECK(p.guest_mmio(0).size() == 0x1000);
	CHECK(args(*resp) == std::vector<std::string>{ "--vfio",
						       "/sys/bus/amba/devices/9010000.pl031,dt-symbol=" + p.label(),
						       "--device-tree-overlay", "/run/vm-a/devices.dtbo,filter" });
	std::string dts = decompileDtb(applyOverlay(compileDts(kGuestBaseDts), bytes(resp->overlay())));
	CHECK_THAT(dts, Catch::Contains("arm,pl031"));
}

TEST_CASE("buildLaunchConfig_pciDevices_areSkippedAndAloneAreEnoent", "[launch_config]")
{
	LaunchDevice pci;
	pci.device.set_id("pci:0000:01:00.0");
	pci.device.set_kind(pb::DEVICE_KIND_PCI);
	auto alone = buildLaunchConfig(InventoryOptions{}, request(), { pci });
	REQUIRE_FALSE(alone.ok());
	CHECK(alone.error().code == ENOENT);

	auto mixed = buildLaunchConfig(InventoryOptions{}, request(), { pci, simPlatform(false) });
	REQUIRE(mixed.ok());
	REQUIRE(mixed->skipped_size() == 1);
	CHECK_THAT(mixed->skipped(0), Catch::StartsWith("pci:0000:01:00.0: not a device-tree device"));
	CHECK(mixed->placements_size() == 1);
}

TEST_CASE("buildLaunchConfig_requestsOutOfBounds_areEinval", "[launch_config]")
{
	SECTION("a relocated device without a guest window")
	{
		pb::GetLaunchConfigRequest req = request();
		req.clear_guest_mmio_size();
		auto r = buildLaunchConfig(InventoryOptions{}, req, { simPlatform(false) });
		REQUIRE_FALSE(r.ok());
		CHECK(r.error().code == EINVAL);
		CHECK_THAT(r.error().message, Catch::Contains("guest_mmio_base and guest_mmio_size"));
	}
	SECTION("an SPI past the GIC's last")
	{
		pb::GetLaunchConfigRequest req = request();
		req.set_first_guest_spi(1000);
		auto r = buildLaunchConfig(InventoryOptions{}, req, { simPlatform(false) });
		REQUIRE_FALSE(r.ok());
		CHECK(r.error().code == EINVAL);
	}
	SECTION("an overlay path crosvm would split at a comma")
	{
		pb::GetLaunchConfigRequest req = request();
		req.set_overlay_path("/tmp/a,filter=no.dtbo");
		auto r = buildLaunchConfig(InventoryOptions{}, req, { simPlatform(false) });
		REQUIRE_FALSE(r.ok());
		CHECK(r.error().code == EINVAL);
	}
	SECTION("a window wrapping around the address space")
	{
		pb::GetLaunchConfigRequest req = request();
		req.set_guest_mmio_base(~uint64_t(0) - 0xfff);
		req.set_guest_mmio_size(0x2000);
		auto r = buildLaunchConfig(InventoryOptions{}, req, { simPlatform(false) });
		REQUIRE_FALSE(r.ok());
		CHECK(r.error().code == EINVAL);
	}
	SECTION("an unknown VMM")
	{
		pb::GetLaunchConfigRequest req = request();
		req.set_vmm(static_cast<pb::Vmm>(7));
		auto r = buildLaunchConfig(InventoryOptions{}, req, { simPlatform(false) });
		REQUIRE_FALSE(r.ok());
		CHECK(r.error().code == EINVAL);
	}
}
