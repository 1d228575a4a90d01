// SPDX-License-Identifier: Apache-2.0
// crosvm launch arguments: the --vfio/--device-tree-overlay syntax of crosvm's
// src/crosvm/cmdline.rs (commit fd4df63707ae), labels matching the overlay's __symbols__.
#include <catch2/catch.hpp>

#include "platform/guest_overlay.h"
#include "platform/sim_platform_dt.h"
#include "platform_support.h"

extern "C" {
#include <libfdt.h>
}

using namespace vfio_broker::platform;
using namespace vfio_broker::platform::test;

namespace {

GuestDeviceRequest nodeRequest(const HostDeviceTree &tree, const std::string &path)
{
	auto node = tree.node(path);
	REQUIRE(node.ok());
	GuestDeviceRequest r;
	r.host = std::move(*node);
	return r;
}

} // namespace

TEST_CASE("One --vfio per device with its dt-symbol, then the overlay with filter", "[crosvm_args]")
{
	auto sim = simPlatformHostTree();
	REQUIRE(sim.ok());
	auto virt = HostDeviceTree::load(fixtureDtb("qemu-virt-arm64"));
	REQUIRE(virt.ok());
	auto a = nodeRequest(*sim, simPlatformDtPath());
	auto b = nodeRequest(*virt, "/virtio_mmio@a000000");
	b.sysfsPath = "/sys/devices/platform/a000000.virtio_mmio";
	b.label = "blk0";
	auto args = crosvmArguments({ a, b }, "/run/vm1/devices.dtbo");
	CHECK(args == std::vector<std::string>{
			      "--vfio", "/sys/bus/platform/devices/9100000.sim-platform,dt-symbol=sim_platform",
			      "--vfio", "/sys/devices/platform/a000000.virtio_mmio,dt-symbol=blk0",
			      "--device-tree-overlay", "/run/vm1/devices.dtbo,filter" });
}

TEST_CASE("Labels and default sysfs paths follow the host node", "[crosvm_args]")
{
	auto virt = HostDeviceTree::load(fixtureDtb("qemu-virt-arm64"));
	REQUIRE(virt.ok());
	// Host label from __symbols__ when there is one; an AMBA (primecell) device on the amba bus.
	auto rtc = nodeRequest(*virt, "/pl031@9010000");
	CHECK(effectiveLabel(rtc) == "rtc");
	CHECK(platformSysfsPath(rtc.host) == "/sys/bus/amba/devices/9010000.pl031");
	// No label: the node name made a label.
	auto second = nodeRequest(*virt, "/virtio_mmio@a000200");
	CHECK(effectiveLabel(second) == "virtio_mmio_a000200");
	CHECK(platformSysfsPath(second.host) == "/sys/bus/platform/devices/a000200.virtio_mmio");
	auto args = crosvmArguments({ second }, "o.dtbo");
	CHECK(args[1] == "/sys/bus/platform/devices/a000200.virtio_mmio,dt-symbol=virtio_mmio_a000200");
}

TEST_CASE("Every dt-symbol crosvm is given is a label in the overlay's __symbols__", "[crosvm_args]")
{
	auto board = HostDeviceTree::load(fixtureDtb("soc-board"));
	REQUIRE(board.ok());
	std::vector<GuestDeviceRequest> devs = { nodeRequest(*board, "/soc/bus@2000000/serial@30000"),
						 nodeRequest(*board, "/soc/bus@2000000/mailbox@40000") };
	OverlayOptions opts;
	opts.guestMmioBase = 0x100000000ull;
	opts.guestMmioSize = 0x40000000;
	opts.firstGuestSpi = 40;
	auto ov = buildOverlay(devs, opts);
	REQUIRE(ov.ok());
	auto args = crosvmArguments(devs, "x.dtbo");
	const void *fdt = ov->dtbo.data();
	int symbols = fdt_path_offset(fdt, "/__symbols__");
	REQUIRE(symbols >= 0);
	for (size_t i = 1; i < args.size() - 2; i += 2) {
		auto pos = args[i].find(",dt-symbol=");
		REQUIRE(pos != std::string::npos);
		std::string label = args[i].substr(pos + 11);
		const char *path = static_cast<const char *>(fdt_getprop(fdt, symbols, label.c_str(), nullptr));
		INFO(label);
		REQUIRE(path != nullptr);
		// crosvm (arch/src/fdt.rs) patches the node the symbol names: it must exist in the overlay.
		CHECK(fdt_path_offset(fdt, path) >= 0);
	}
}
