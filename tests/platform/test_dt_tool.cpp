// SPDX-License-Identifier: Apache-2.0
// The vfio-broker-dt tool, run as a subprocess: show, passthrough, overlay --crosvm-args, errors.
#include <catch2/catch.hpp>

#include <cstdlib>

#include "platform_support.h"

using namespace vfio_broker::platform;
using namespace vfio_broker::platform::test;

namespace {

std::string tool()
{
	const char *path = std::getenv("VFIO_BROKER_DT");
	INFO("VFIO_BROKER_DT is set by meson test");
	REQUIRE(path != nullptr);
	return path;
}

CommandResult dt(std::vector<std::string> args)
{
	args.insert(args.begin(), tool());
	return runCommand(args);
}

} // namespace

TEST_CASE("show decodes a node, as text and as JSON", "[dt_tool]")
{
	auto text = dt({ "show", "--dtb", fixtureDtb("soc-board"), "/soc/bus@2000000/dma-controller@10000" });
	INFO(text.err);
	REQUIRE(text.exitCode == 0);
	CHECK_THAT(text.out, Catch::Contains("reg:          0x42010000 size 0x1000 (host physical)"));
	CHECK_THAT(text.out, Catch::Contains("(SPI 40, level-high)"));
	CHECK_THAT(text.out, Catch::Contains("iommu:        /soc/iommu@10000000 <0x10>"));
	CHECK_THAT(text.out, Catch::Contains("reset:        /soc/clock-controller@11000000:7"));

	auto json = dt({ "show", "--sim-platform", "--json" });
	REQUIRE(json.exitCode == 0);
	CHECK_THAT(json.out, Catch::StartsWith("{\"path\":\"/soc/sim-platform@9100000\",\"label\":\"sim_platform\""));
	CHECK_THAT(json.out, Catch::Contains("\"reg\":[{\"address\":152043520,\"size\":4096},{\"address\":152047616,\"size\":512}]"));
	CHECK_THAT(json.out, Catch::Contains("\"interrupts\":[{\"controller\":\"/intc@8000000\",\"specifier\":[0,96,4]}]"));
}

TEST_CASE("passthrough lists the marked nodes", "[dt_tool]")
{
	auto r = dt({ "passthrough", "--dtb", fixtureDtb("qemu-virt-arm64") });
	REQUIRE(r.exitCode == 0);
	auto first = r.out.find("/virtio_mmio@a000000\n");
	auto second = r.out.find("/pl031@9010000\n");
	CHECK(first != std::string::npos);
	CHECK(second != std::string::npos);
	CHECK(first < second);
	CHECK(r.out.find("/pl011@9000000") == std::string::npos);
}

TEST_CASE("overlay writes the DTBO and prints the placement and crosvm arguments", "[dt_tool]")
{
	TempDir dir;
	std::string out = dir.file("sim.dtbo");
	auto r = dt({ "overlay", "--sim-platform", "--mmio-base", "0x100000000", "--mmio-size", "0x40000000",
		      "--first-spi", "32", "-o", out, "--crosvm-args" });
	INFO(r.err);
	REQUIRE(r.exitCode == 0);
	CHECK(r.out == "# sim_platform: /sim-platform@100000000 reg 0x100000000+0x1000 reg 0x100001000+0x200 spi 32 level-high\n"
		       "--vfio\n"
		       "/sys/bus/platform/devices/9100000.sim-platform,dt-symbol=sim_platform\n"
		       "--device-tree-overlay\n" +
			       out + ",filter\n");
	auto blob = readBytes(out);
	auto tree = HostDeviceTree::fromBlob(blob);
	CHECK(tree.ok());

	// meson requires fdtoverlay for this suite (scripts/install-deps.sh installs it).
	REQUIRE_FALSE(findProgram("fdtoverlay").empty());
	auto apply = runCommand({ "fdtoverlay", "-i", fixtureDtb("crosvm-base"), "-o", dir.file("out.dtb"), out });
	INFO(apply.err);
	CHECK(apply.exitCode == 0);
}

TEST_CASE("overlay takes per-device flags for a board device", "[dt_tool]")
{
	TempDir dir;
	auto r = dt({ "overlay", "--dtb", fixtureDtb("soc-board"), "--device",
		      "/soc/bus@2000000/serial@30000:identity:label=uart3:sysfs=/sys/bus/platform/devices/42030000.serial",
		      "--device", "/soc/bus@2000000/dma-controller@10000:label=dma", "--mmio-base", "0x100000000",
		      "--mmio-size", "0x1000000", "--first-spi", "64", "--dma-pool", "0xfc000000,0x400000", "-o",
		      dir.file("b.dtbo"), "--crosvm-args" });
	INFO(r.err);
	REQUIRE(r.exitCode == 0);
	CHECK_THAT(r.out, Catch::Contains("# uart3: /serial@42030000 reg 0x42030000+0x100 spi 64 level-high\n"));
	CHECK_THAT(r.out, Catch::Contains("# dma: /dma-controller@100000000 reg 0x100000000+0x1000 spi 65 level-high\n"));
	CHECK_THAT(r.out, Catch::Contains("--vfio\n/sys/bus/platform/devices/42030000.serial,dt-symbol=uart3\n"));
	CHECK_THAT(r.out, Catch::Contains("--vfio\n/sys/bus/amba/devices/42010000.dma-controller,dt-symbol=dma\n"));
	// crosvm refuses vfio-amba devices; the tool says so.
	CHECK_THAT(r.err, Catch::Contains("amba"));
}

TEST_CASE("Errors: exit 1 with the reason, exit 2 for usage", "[dt_tool]")
{
	TempDir dir;
	auto missing = dt({ "show", "--dtb", fixtureDtb("soc-board"), "/soc/nope" });
	CHECK(missing.exitCode == 1);
	CHECK_THAT(missing.err, Catch::Contains("/soc/nope"));

	writeBytes(dir.file("junk.dtb"), std::vector<uint8_t>(100, 0x5a));
	auto junk = dt({ "passthrough", "--dtb", dir.file("junk.dtb") });
	CHECK(junk.exitCode == 1);
	CHECK_THAT(junk.err, Catch::Contains("corrupt device tree"));

	auto full = dt({ "overlay", "--sim-platform", "--mmio-base", "0x100000000", "--mmio-size", "0x1000", "-o",
			 dir.file("x.dtbo") });
	CHECK(full.exitCode == 1);
	CHECK_THAT(full.err, Catch::Contains("No space left"));

	CHECK(dt({ "frobnicate" }).exitCode == 2);
	CHECK(dt({ "show" }).exitCode == 2);
	CHECK(dt({ "overlay", "--sim-platform" }).exitCode == 2);
	CHECK(dt({ "overlay", "--sim-platform", "--mmio-base", "banana", "-o", dir.file("y") }).exitCode == 2);
	auto badFlag = dt({ "overlay", "--sim-platform", "--device", "/soc/sim-platform@9100000:bogus", "-o", dir.file("z") });
	CHECK(badFlag.exitCode == 1);
	CHECK_THAT(badFlag.err, Catch::Contains("unknown flag"));
}
