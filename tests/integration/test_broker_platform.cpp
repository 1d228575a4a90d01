// SPDX-License-Identifier: Apache-2.0
// Platform devices through the running broker: sim:platform served by its device daemon, an AMBA
// device bound to vfio-amba on the fake sysfs, the reset-requirement refusal, bind-only (launch
// mode), GetLaunchConfig and vfio-broker-launch --crosvm-overlay, the overlays applied by fdtoverlay.
#include "broker_fixture.h"

#include <fstream>
#include <iterator>

using namespace vfio_broker;
using namespace vfio_broker::itest;
using Catch::Matchers::Contains;

namespace {

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
	pl011@9000000 {
		compatible = "arm,pl011", "arm,primecell";
		reg = <0x0 0x9000000 0x0 0x1000>;
		interrupts = <0 1 4>;
	};
};
)";

// crosvm's aarch64 base tree as far as an overlay needs it: the GIC labelled "intc".
const char kGuestBaseDts[] = R"(/dts-v1/;
/ {
	#address-cells = <2>;
	#size-cells = <2>;
	interrupt-parent = <&intc>;
	intc: intc {
		compatible = "arm,gic-v3";
		#interrupt-cells = <3>;
		interrupt-controller;
		reg = <0x0 0x3fff0000 0x0 0x10000>;
	};
};
)";

const std::string kRtc = "amba:9010000.pl031";
const std::string kUart = "platform:9000000.serial";

std::string platformPolicy()
{
	return std::string(kDefaultPolicy) + R"(
rules { name: "sim-platform" simulated: "sim:platform" allow_identity_mapping: true }
rules { name: "rtc" dt_compatible: "arm,pl031" no_dma: true allow_identity_mapping: true }
rules { name: "uart" dt_compatible: "arm,pl011" no_dma: true }
)";
}

BrokerOptions platformOptions()
{
	BrokerOptions o;
	o.policy = platformPolicy();
	o.extraConfig = "simulated_devices: \"sim:platform\"\n";
	o.start = false;
	return o;
}

// The fixture's lab plus an AMBA RTC and a platform UART described by a host DTB, VFIO
// no-IOMMU mode on (they have no IOMMU group), vfio-platform's reset check modelled.
void addPlatformLab(BrokerFixture &fx, const std::string &resetRequired)
{
	fx.sysfs().setDeviceTree(testing::compileDts(kHostDts));
	fx.sysfs().setModuleParameter("vfio", "enable_unsafe_noiommu_mode", "Y");
	fx.sysfs().setModuleParameter("vfio_platform", "reset_required", resetRequired);
	testing::FakeBusDevice rtc;
	rtc.bus = "amba";
	rtc.name = "9010000.pl031";
	rtc.driver = "rtc-pl031";
	rtc.ofNode = "/pl031@9010000";
	rtc.compatible = "arm,pl031";
	fx.sysfs().addBusDevice(rtc);
	testing::FakeBusDevice uart;
	uart.name = "9000000.serial";
	uart.driver = "uart-pl011";
	uart.ofNode = "/pl011@9000000";
	uart.compatible = "arm,pl011";
	fx.sysfs().addBusDevice(uart);
	fx.kernel().watchNew();
	fx.kernel().modelVfioPlatformReset(false);
}

std::vector<uint8_t> readBytes(const std::string &path)
{
	std::ifstream in(path, std::ios::binary);
	return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

Reply<pb::GetLaunchConfigResponse> launchConfig(BrokerFixture &fx, const pb::GetLaunchConfigRequest &req)
{
	Reply<pb::GetLaunchConfigResponse> r;
	grpc::ClientContext ctx;
	ctx.set_deadline(std::chrono::system_clock::now() + kWait);
	r.status = fx.stub().GetLaunchConfig(&ctx, req, &r.value);
	return r;
}

} // namespace

TEST_CASE("simPlatform_assignStartsItsDeviceDaemonAndGetDeviceDescribesItsNode", "[broker_platform]")
{
	BrokerFixture fx(platformOptions());
	fx.start();
	pb::Device dev = fx.device("sim:platform");
	CHECK(dev.platform().dt_path() == "/soc/sim-platform@9100000");
	CHECK(dev.mmio_size() == 2);
	CHECK(dev.interrupts_size() == 1);
	CHECK(dev.policy().allowed());

	auto assigned = fx.assignOk("vm-p", { "sim:platform" });
	REQUIRE(assigned.size() == 1);
	// The daemon serves sim:platform itself, whatever testing_device_override says.
	CHECK(probeDeviceDaemon(assigned[0].socket_path()).empty());
	std::ifstream cmdline("/proc/" + std::to_string(assigned[0].daemon_pid()) + "/cmdline");
	std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
	CHECK_THAT(args, Contains(std::string("--device\0sim:platform", 22)));
	REQUIRE(fx.deassign("sim:platform", "vm-p").ok());
}

TEST_CASE("getLaunchConfig_simPlatform_givesCrosvmArgsAndAnOverlayFdtoverlayApplies", "[broker_platform]")
{
	BrokerFixture fx(platformOptions());
	fx.start();
	fx.assignOk("vm-p", { "sim:platform" });
	pb::GetLaunchConfigRequest req;
	req.set_vm("vm-p");
	req.set_guest_mmio_base(0x10000000);
	req.set_guest_mmio_size(0x100000);
	req.set_first_guest_spi(32);
	auto r = launchConfig(fx, req);
	INFO(describe(r.status));
	REQUIRE(r.ok());
	REQUIRE(r.value.placements_size() == 1);
	const pb::GuestPlacement &p = r.value.placements(0);
	CHECK(p.device_id() == "sim:platform");
	CHECK(std::vector<std::string>(r.value.args().begin(), r.value.args().end()) ==
	      std::vector<std::string>{ "--vfio", "/sys/bus/platform/devices/9100000.sim-platform,dt-symbol=" + p.label(),
					"--device-tree-overlay", "vm-p.dtbo,filter" });
	std::vector<uint8_t> overlay(r.value.overlay().begin(), r.value.overlay().end());
	std::string dts = testing::decompileDtb(testing::applyOverlay(testing::compileDts(kGuestBaseDts), overlay));
	CHECK_THAT(dts, Contains("vfio-broker,sim-platform"));

	// Another VM holds nothing: NOT_FOUND; a device the VM does not hold: INVALID_ARGUMENT.
	req.set_vm("vm-q");
	CHECK(launchConfig(fx, req).code() == grpc::StatusCode::NOT_FOUND);
	req.add_device_ids("sim:platform");
	CHECK(launchConfig(fx, req).code() == grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_CASE("launcher_crosvmOverlay_writesTheOverlayAndPrintsTheCrosvmArguments", "[broker_platform]")
{
	BrokerFixture fx(platformOptions());
	fx.start();
	std::string out = fx.dir() + "/vm-p.dtbo";
	auto r = runProcess({ requireEnv("VFIO_BROKER_LAUNCH"), "--control", fx.controlSocket(), "--vm", "vm-p",
			      "--device", "sim:platform", "--crosvm-overlay", out, "--guest-mmio",
			      "0x10000000:0x100000", "--first-spi", "32" });
	INFO(r.describe());
	REQUIRE((r.exited && r.code == 0));
	CHECK_THAT(r.out, Contains("crosvm args: --vfio /sys/bus/platform/devices/9100000.sim-platform,dt-symbol="));
	CHECK_THAT(r.out, Contains("--device-tree-overlay " + out + ",filter"));
	std::string dts = testing::decompileDtb(testing::applyOverlay(testing::compileDts(kGuestBaseDts), readBytes(out)));
	CHECK_THAT(dts, Contains("vfio-broker,sim-platform"));

	// With a VMM: "{crosvm-args}" expands to the argument list.
	REQUIRE(fx.deassign("sim:platform", "vm-p").ok());
	auto run = runProcess({ requireEnv("VFIO_BROKER_LAUNCH"), "--control", fx.controlSocket(), "--vm", "vm-p",
				"--device", "sim:platform", "--crosvm-overlay", out, "--guest-mmio",
				"0x10000000:0x100000", "--", "/bin/echo", "run", "{crosvm-args}", "kernel" });
	INFO(run.describe());
	REQUIRE((run.exited && run.code == 0));
	CHECK_THAT(run.out, Contains("run --vfio /sys/bus/platform/devices/9100000.sim-platform,dt-symbol="));
	CHECK_THAT(run.out, Contains(",filter kernel"));
	CHECK(fx.assignments("vm-p").empty());
}

TEST_CASE("assign_ambaDevice_bindsVfioAmbaAndListsItsWarnings", "[broker_platform]")
{
	BrokerFixture fx(platformOptions());
	addPlatformLab(fx, "N");
	fx.start();
	pb::Device rtc = fx.device("/pl031@9010000"); // by device-tree path
	CHECK(rtc.id() == kRtc);
	CHECK(rtc.kind() == pb::DEVICE_KIND_AMBA);
	CHECK(rtc.policy().no_dma());
	CHECK_FALSE(rtc.reset_supported());
	auto assigned = fx.assignOk("vm-p", { kRtc });
	REQUIRE(assigned.size() == 1);
	CHECK(fx.sysfs().driverOf("9010000.pl031", "amba") == "vfio-amba");
	CHECK(assigned[0].original_driver() == "rtc-pl031");
	REQUIRE(fx.deassign(kRtc, "vm-p").ok());
	CHECK(fx.sysfs().driverOf("9010000.pl031", "amba") == "rtc-pl031");
}

TEST_CASE("assign_platformDeviceVfioPlatformRefuses_failsNamingTheResetRequirement", "[broker_platform]")
{
	BrokerFixture fx(platformOptions());
	addPlatformLab(fx, "Y");
	fx.start();
	pb::Device uart = fx.device(kUart);
	CHECK(uart.warnings_size() >= 1);
	auto r = fx.assign("vm-p", { kUart });
	REQUIRE_FALSE(r.ok());
	CHECK(r.code() == grpc::StatusCode::FAILED_PRECONDITION);
	// This host's kernel decides which of the two causes is named.
	CHECK_THAT(r.status.error_message(), Contains("reset handler"));
	CHECK(fx.sysfs().driverOf("9000000.serial", "platform") == "uart-pl011");
	CHECK(fx.assignments().empty());
}

TEST_CASE("assign_bindOnly_bindsWithoutADeviceDaemonForTheVmmToOpen", "[broker_platform]")
{
	BrokerFixture fx(platformOptions());
	addPlatformLab(fx, "N");
	fx.start();
	pb::AssignOptions options;
	options.set_bind_only(true);
	options.set_identity_mapping(true);
	auto assigned = fx.assignOk("vm-p", { kRtc }, options);
	REQUIRE(assigned.size() == 1);
	CHECK(assigned[0].socket_path().empty());
	CHECK(assigned[0].daemon_pid() == 0);
	CHECK(fx.deviceDaemons().empty());
	CHECK(fx.sysfs().driverOf("9010000.pl031", "amba") == "vfio-amba");
	auto listed = fx.assignments("vm-p");
	REQUIRE(listed.size() == 1);
	CHECK(listed[0].daemon_state() == pb::DAEMON_STATE_STOPPED);

	// Identity-mapped, so no guest window is needed; crosvm opens the sysfs path itself.
	pb::GetLaunchConfigRequest req;
	req.set_vm("vm-p");
	auto r = launchConfig(fx, req);
	INFO(describe(r.status));
	REQUIRE(r.ok());
	REQUIRE(r.value.placements_size() == 1);
	CHECK(r.value.placements(0).guest_mmio(0).address() == 0x9010000);
	CHECK(r.value.args(1).rfind("/sys/bus/amba/devices/9010000.pl031,dt-symbol=", 0) == 0);

	// A broker restart keeps the binding and starts no daemon for it.
	fx.restart();
	CHECK(fx.assignments("vm-p").size() == 1);
	CHECK(fx.deviceDaemons().empty());
	REQUIRE(fx.deassign(kRtc, "vm-p").ok());
	CHECK(fx.sysfs().driverOf("9010000.pl031", "amba") == "rtc-pl031");

	// A simulated device lives only in its daemon: bind-only makes no sense for it.
	auto sim = fx.assign("vm-p", { "sim:platform" }, options);
	CHECK(sim.code() == grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_CASE("assign_platformPathOutsideThePlatformTree_isUnknownWithTheReason", "[broker_platform]")
{
	BrokerFixture fx(platformOptions());
	fx.sysfs().writeFile("kernel/uevent_seqnum", "1\n");
	fx.start();
	auto r = fx.check("vm-p", { "/sys/kernel/uevent_seqnum" });
	REQUIRE(r.ok());
	REQUIRE(r.value.conflicts_size() == 1);
	CHECK(r.value.conflicts(0).reason() == pb::CONFLICT_REASON_UNKNOWN_DEVICE);
	CHECK_THAT(r.value.conflicts(0).message(), Contains("/sys/devices/platform"));
}
