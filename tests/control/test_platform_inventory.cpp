// SPDX-License-Identifier: Apache-2.0
// Platform and AMBA devices in the inventory: a fake sysfs tree with of_node links and a host DTB
// compiled by dtc, the kernel facts (reset handlers, reset_required, Linux 6.1), ids and paths.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>

#include "control/inventory.h"
#include "support/fake_sysfs.h"

using namespace vfio_broker::control;
using vfio_broker::testing::compileDts;
using vfio_broker::testing::FakeBusDevice;
using vfio_broker::testing::FakePciDevice;
using vfio_broker::testing::FakeSysfs;

namespace {

// A QEMU-virt-like host: GICv3, an SMMUv3, a PL031 on the root bus, and a simple-bus whose
// "ranges" move its children to 0x10000000, holding an XGMAC (a reset handler exists, behind the
// SMMU, marked for passthrough) and a PL011 sharing the XGMAC's first SPI with other flags.
const char kHostDts[] = R"(/dts-v1/;
/ {
	#address-cells = <2>;
	#size-cells = <2>;
	interrupt-parent = <&gic>;
	gic: intc@8000000 {
		compatible = "arm,gic-v3";
		#interrupt-cells = <3>;
		interrupt-controller;
		reg = <0x0 0x8000000 0x0 0x10000>, <0x0 0x80a0000 0x0 0xf60000>;
	};
	smmu: iommu@9050000 {
		compatible = "arm,smmu-v3";
		reg = <0x0 0x9050000 0x0 0x20000>;
		#iommu-cells = <1>;
	};
	clk: apb-pclk {
		compatible = "fixed-clock";
		#clock-cells = <0>;
		clock-frequency = <24000000>;
	};
	pl031@9010000 {
		compatible = "arm,pl031", "arm,primecell";
		reg = <0x0 0x9010000 0x0 0x1000>;
		interrupts = <0 2 4>;
		clocks = <&clk>;
		clock-names = "apb_pclk";
	};
	soc {
		compatible = "simple-bus";
		#address-cells = <1>;
		#size-cells = <1>;
		ranges = <0x0 0x0 0x10000000 0x1000000>;
		ethernet@20000 {
			compatible = "calxeda,hb-xgmac";
			reg = <0x20000 0x1000>;
			interrupts = <0 80 4>, <0 81 4>;
			iommus = <&smmu 0x100>;
			dma-coherent;
			vfio-broker,passthrough;
		};
		serial@30000 {
			compatible = "arm,pl011", "arm,primecell";
			reg = <0x30000 0x1000>;
			interrupts = <0 80 1>;
			status = "disabled";
		};
	};
};
)";

struct Host {
	FakeSysfs sysfs;
	InventoryOptions opts;

	explicit Host(const std::string &release = "6.12.0-1-arm64")
	{
		sysfs.setDeviceTree(compileDts(kHostDts));
		sysfs.addBusDevice(rtc());
		sysfs.addBusDevice(ethernet());
		opts.sysfsRoot = sysfs.root();
		opts.kernelRelease = release;
	}

	static FakeBusDevice rtc()
	{
		FakeBusDevice d;
		d.bus = "amba";
		d.name = "9010000.pl031";
		d.driver = "rtc-pl031";
		d.ofNode = "/pl031@9010000";
		d.compatible = "arm,pl031";
		return d;
	}

	static FakeBusDevice ethernet()
	{
		FakeBusDevice d;
		d.name = "10020000.ethernet";
		d.driver = "calxedaxgmac";
		d.ofNode = "/soc/ethernet@20000";
		d.compatible = "calxeda,hb-xgmac";
		d.group = 5;
		d.parent = "platform/soc";
		return d;
	}

	pb::Device scan(const std::string &id) const
	{
		auto dev = scanDevice(opts, id);
		INFO((dev ? std::string() : dev.error().message));
		REQUIRE(dev.ok());
		return *dev;
	}
};

std::vector<std::string> ids(const std::vector<pb::Device> &devices)
{
	std::vector<std::string> out;
	for (const auto &d : devices)
		out.push_back(d.id());
	return out;
}

bool anyContains(const pb::Device &dev, const std::string &text)
{
	return std::any_of(dev.warnings().begin(), dev.warnings().end(),
			   [&](const std::string &w) { return w.find(text) != std::string::npos; });
}

} // namespace

TEST_CASE("scanAll_platformAndAmbaDevicesWithOfNode_areListedBesidePci", "[platform_inventory]")
{
	Host host;
	FakeBusDevice noNode; // a software device (no of_node): never offered
	noNode.name = "serial8250";
	host.sysfs.addBusDevice(noNode);
	FakePciDevice nic;
	nic.bdf = "0000:00:01.0";
	nic.driver = "e1000e";
	nic.group = 1;
	host.sysfs.addPciDevice(nic);
	host.opts.simulated = { "sim:platform" };
	auto all = scanAll(host.opts);
	REQUIRE(all.ok());
	CHECK(ids(*all) == std::vector<std::string>{ "amba:9010000.pl031", "pci:0000:00:01.0",
						      "platform:10020000.ethernet", "sim:platform" });
}

TEST_CASE("scanDevice_amba_readsDtNodeMmioInterruptsClocksAndDriver", "[platform_inventory]")
{
	Host host;
	pb::Device dev = host.scan("amba:9010000.pl031");
	CHECK(dev.kind() == pb::DEVICE_KIND_AMBA);
	CHECK(dev.sysfs_path() == "/sys/devices/platform/9010000.pl031");
	CHECK(dev.driver() == "rtc-pl031");
	CHECK(dev.platform().dt_path() == "/pl031@9010000");
	CHECK(std::vector<std::string>(dev.platform().compatible().begin(), dev.platform().compatible().end()) ==
	      std::vector<std::string>{ "arm,pl031", "arm,primecell" });
	CHECK(dev.platform().status() == "okay");
	CHECK_FALSE(dev.platform().passthrough());
	REQUIRE(dev.platform().clocks_size() == 1);
	CHECK(dev.platform().clocks(0) == "/apb-pclk");
	REQUIRE(dev.mmio_size() == 1);
	CHECK(dev.mmio(0).address() == 0x9010000);
	CHECK(dev.mmio(0).size() == 0x1000);
	REQUIRE(dev.interrupts_size() == 1);
	CHECK(dev.interrupts(0).controller() == "/intc@8000000");
	CHECK(std::vector<uint32_t>(dev.interrupts(0).specifier().begin(), dev.interrupts(0).specifier().end()) ==
	      std::vector<uint32_t>{ 0, 2, 4 });
	CHECK(dev.stream_ids_size() == 0);
	// No IOMMU group: as for PCI, only no-IOMMU mode could drive it.
	CHECK(dev.iommu_group().number() == -1);
	CHECK(dev.iommu_group().no_iommu());
	CHECK(std::vector<std::string>(dev.iommu_group().members().begin(), dev.iommu_group().members().end()) ==
	      std::vector<std::string>{ "amba:9010000.pl031" });
}

TEST_CASE("scanDevice_platform_translatesRegThroughRangesAndReadsIommusAndGroup", "[platform_inventory]")
{
	Host host;
	pb::Device dev = host.scan("platform:10020000.ethernet");
	CHECK(dev.kind() == pb::DEVICE_KIND_PLATFORM);
	CHECK(dev.sysfs_path() == "/sys/devices/platform/soc/10020000.ethernet");
	REQUIRE(dev.mmio_size() == 1);
	CHECK(dev.mmio(0).address() == 0x10020000);
	CHECK(dev.mmio(0).size() == 0x1000);
	CHECK(dev.interrupts_size() == 2);
	REQUIRE(dev.stream_ids_size() == 1);
	CHECK(dev.stream_ids(0).iommu() == "/iommu@9050000");
	CHECK(dev.stream_ids(0).stream_id() == 0x100);
	CHECK(dev.platform().passthrough());
	CHECK(dev.platform().dma_coherent());
	CHECK(dev.iommu_group().number() == 5);
	CHECK_FALSE(dev.iommu_group().no_iommu());
	CHECK(std::vector<std::string>(dev.iommu_group().members().begin(), dev.iommu_group().members().end()) ==
	      std::vector<std::string>{ "platform:10020000.ethernet" });
	// The host driver does DMA: the group is not viable until it is unbound.
	CHECK_FALSE(dev.iommu_group().viable());
}

TEST_CASE("scanDevice_compatibleWithResetModule_hasResetAndNoWarnings", "[platform_inventory]")
{
	Host host;
	pb::Device dev = host.scan("platform:10020000.ethernet");
	CHECK(dev.reset_supported());
	CHECK(dev.reset_method() == "vfio-platform reset module for \"calxeda,hb-xgmac\" (vfio-platform-calxedaxgmac)");
	CHECK(dev.warnings_size() == 0);
}

TEST_CASE("scanDevice_noResetHandlerAndResetRequired_warnsThatVfioPlatformRefusesIt", "[platform_inventory]")
{
	Host host;
	FakeBusDevice uart;
	uart.name = "10030000.serial";
	uart.ofNode = "/soc/serial@30000";
	uart.compatible = "arm,pl011";
	uart.group = 6;
	host.sysfs.addBusDevice(uart);
	host.sysfs.setModuleParameter("vfio_platform", "reset_required", "Y");
	pb::Device dev = host.scan("platform:10030000.serial");
	CHECK_FALSE(dev.reset_supported());
	CHECK(dev.platform().status() == "disabled");
	CHECK(anyContains(dev, "vfio-platform refuses devices without a reset handler (none handles \"arm,pl011\", "
			       "and reset_required=Y); load vfio-platform with reset_required=0"));
	CHECK(anyContains(dev, "cannot reset the device"));

	host.sysfs.setModuleParameter("vfio_platform", "reset_required", "N");
	dev = host.scan("platform:10030000.serial");
	CHECK_FALSE(anyContains(dev, "refuses"));
	CHECK(anyContains(dev, "cannot reset the device"));
}

TEST_CASE("scanDevice_linux61WithoutResetHandler_warnsOfTheEnoentProbeFailure", "[platform_inventory]")
{
	Host host("6.1.0-56-arm64");
	host.sysfs.setModuleParameter("vfio_platform", "reset_required", "N");
	host.sysfs.setModuleParameter("vfio", "enable_unsafe_noiommu_mode", "Y");
	pb::Device dev = host.scan("amba:9010000.pl031");
	CHECK(anyContains(dev, "Linux 6.1.0-56-arm64 fails the vfio-amba probe with ENOENT"));
	CHECK(anyContains(dev, "and always for vfio-amba"));
	CHECK(anyContains(dev, "168a9c91fe0a"));
	// With a reset handler 6.1 binds fine.
	CHECK_FALSE(anyContains(host.scan("platform:10020000.ethernet"), "ENOENT"));
	// And a later kernel does not have the bug: vfio-amba never requires a reset handler.
	host.opts.kernelRelease = "6.12.0-1-arm64";
	CHECK_FALSE(anyContains(host.scan("amba:9010000.pl031"), "ENOENT"));
	CHECK_FALSE(anyContains(host.scan("amba:9010000.pl031"), "refuses"));
}

TEST_CASE("scanDevice_noIommuGroupWhileNoIommuModeIsOff_warnsItCannotBind", "[platform_inventory]")
{
	Host host;
	pb::Device dev = host.scan("amba:9010000.pl031");
	CHECK(anyContains(dev, "no IOMMU group, and vfio-amba binds such a device only in VFIO no-IOMMU mode"));
	host.sysfs.setModuleParameter("vfio", "enable_unsafe_noiommu_mode", "Y");
	CHECK_FALSE(anyContains(host.scan("amba:9010000.pl031"), "no-IOMMU mode"));
}

TEST_CASE("scanDevice_unreadableHostTree_keepsSysfsFactsAndSaysWhy", "[platform_inventory]")
{
	Host host;
	host.sysfs.writeFile("firmware/fdt", "not a device tree");
	pb::Device dev = host.scan("amba:9010000.pl031");
	CHECK(dev.platform().dt_path() == "/pl031@9010000");
	CHECK(dev.mmio_size() == 0);
	CHECK(anyContains(dev, "the host device tree"));
}

TEST_CASE("scanDevice_simPlatform_describesItsNodeWithoutAGroup", "[platform_inventory]")
{
	Host host;
	host.opts.simulated = { "sim:platform" };
	pb::Device dev = host.scan("sim:platform");
	CHECK(dev.kind() == pb::DEVICE_KIND_SIMULATED);
	CHECK(dev.platform().dt_path() == "/soc/sim-platform@9100000");
	REQUIRE(dev.platform().compatible_size() >= 1);
	CHECK(dev.platform().compatible(0) == "vfio-broker,sim-platform");
	REQUIRE(dev.mmio_size() == 2);
	CHECK(dev.mmio(0).address() == 0x9100000);
	CHECK(dev.mmio(0).size() == 0x1000);
	CHECK(dev.mmio(1).address() == 0x9101000);
	CHECK(dev.mmio(1).size() == 0x200);
	REQUIRE(dev.interrupts_size() == 1);
	CHECK(std::vector<uint32_t>(dev.interrupts(0).specifier().begin(), dev.interrupts(0).specifier().end()) ==
	      std::vector<uint32_t>{ 0, 96, 4 });
	CHECK(dev.iommu_group().number() == -1);
	CHECK_FALSE(dev.iommu_group().no_iommu());
	CHECK(dev.iommu_group().viable());
}

// ---- ids and paths

TEST_CASE("resolveDeviceId_everySpellingOfAPlatformDevice_givesItsId", "[platform_inventory]")
{
	Host host;
	for (const char *spelling : { "amba:9010000.pl031", "/sys/bus/amba/devices/9010000.pl031",
				      "/sys/devices/platform/9010000.pl031", "/pl031@9010000" }) {
		INFO(spelling);
		auto id = resolveDeviceId(host.opts, spelling);
		INFO((id ? std::string() : id.error().message));
		REQUIRE(id.ok());
		CHECK(*id == "amba:9010000.pl031");
	}
	for (const char *spelling : { "platform:10020000.ethernet", "/sys/bus/platform/devices/10020000.ethernet",
				      "/sys/devices/platform/soc/10020000.ethernet", "/soc/ethernet@20000" }) {
		INFO(spelling);
		auto id = resolveDeviceId(host.opts, spelling);
		INFO((id ? std::string() : id.error().message));
		REQUIRE(id.ok());
		CHECK(*id == "platform:10020000.ethernet");
	}
	// Under the fake root's own path too.
	auto id = resolveDeviceId(host.opts, host.sysfs.root() + "/bus/amba/devices/9010000.pl031");
	REQUIRE(id.ok());
	CHECK(*id == "amba:9010000.pl031");
}

TEST_CASE("resolveDeviceId_sysfsPathOutsideThePlatformTree_isRefused", "[platform_inventory]")
{
	Host host;
	// A platform-bus device registered elsewhere (e.g. under devices/system), and a sysfs path
	// that is no device at all: neither is a platform device we bind.
	FakeBusDevice odd;
	odd.name = "cpufreq-dt";
	odd.ofNode = "/cpus";
	odd.parent = "system";
	host.sysfs.addBusDevice(odd);
	host.sysfs.writeFile("kernel/uevent_seqnum", "1\n");
	for (const char *path : { "/sys/bus/platform/devices/cpufreq-dt", "/sys/devices/system/cpufreq-dt",
				  "/sys/kernel/uevent_seqnum" }) {
		INFO(path);
		auto id = resolveDeviceId(host.opts, path);
		REQUIRE_FALSE(id.ok());
		CHECK(id.error().code == EINVAL);
		CHECK_THAT(id.error().message, Catch::Contains("/sys/devices/platform"));
	}
	auto id = resolveDeviceId(host.opts, "platform:cpufreq-dt");
	REQUIRE_FALSE(id.ok());
	CHECK(id.error().code == EINVAL);
	// And it is not listed.
	auto all = scanAll(host.opts);
	REQUIRE(all.ok());
	CHECK(ids(*all) == std::vector<std::string>{ "amba:9010000.pl031", "platform:10020000.ethernet" });
}

TEST_CASE("resolveDeviceId_unknownPlatformNamesAndDtPaths_areEnoent", "[platform_inventory]")
{
	Host host;
	for (const char *input : { "platform:9999.nothing", "amba:10020000.ethernet", "/soc/nothing@0",
				   "/sys/bus/platform/devices/9999.nothing" }) {
		INFO(input);
		auto id = resolveDeviceId(host.opts, input);
		REQUIRE_FALSE(id.ok());
		CHECK(id.error().code == ENOENT);
	}
	auto id = resolveDeviceId(host.opts, "platform:../amba");
	REQUIRE_FALSE(id.ok());
	CHECK(id.error().code == EINVAL);
}

TEST_CASE("deviceDaemonArgument_platformIds_areTheirBusSysfsPaths", "[platform_inventory]")
{
	CHECK(deviceDaemonArgument("platform:10020000.ethernet") == "/sys/bus/platform/devices/10020000.ethernet");
	CHECK(deviceDaemonArgument("amba:9010000.pl031") == "/sys/bus/amba/devices/9010000.pl031");
	CHECK(deviceDaemonArgument("sim:platform") == "sim:platform");
}
