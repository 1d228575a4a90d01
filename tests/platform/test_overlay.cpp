// SPDX-License-Identifier: Apache-2.0
// Guest overlays: built, applied by fdtoverlay onto crosvm- and QEMU-shaped base trees, read
// back with libfdt (reg, interrupts resolved to the base GIC, labels, memory-region -> pool) and
// round-tripped through dtc; placement rules (identity, relocated, in-page offsets) and errors.
#include <catch2/catch.hpp>

#include <cstring>

#include "device/sim_platform_layout.h"
#include "platform/guest_overlay.h"
#include "platform/sim_platform_dt.h"
#include "platform_support.h"

extern "C" {
#include <libfdt.h>
}

using namespace vfio_broker;
using namespace vfio_broker::platform;
using namespace vfio_broker::platform::test;

namespace {

constexpr uint64_t kWindow = 0x100000000ull; // crosvm: platform MMIO right after 2 GiB of RAM at 2 GiB

bool haveTools()
{
	// meson requires both for this suite (Debian package device-tree-compiler, installed by
	// scripts/install-deps.sh): a missing tool is a failure, never a silent pass.
	if (findProgram("fdtoverlay").empty() || findProgram("dtc").empty())
		FAIL("fdtoverlay/dtc not installed (Debian package device-tree-compiler)");
	return true;
}

OverlayOptions windowOptions()
{
	OverlayOptions o;
	o.guestMmioBase = kWindow;
	o.guestMmioSize = 0x40000000;
	o.firstGuestSpi = 32;
	return o;
}

GuestDeviceRequest simPlatformRequest()
{
	auto tree = simPlatformHostTree();
	REQUIRE(tree.ok());
	auto node = tree->node(simPlatformDtPath());
	REQUIRE(node.ok());
	GuestDeviceRequest r;
	r.host = std::move(*node);
	return r;
}

GuestDeviceRequest boardRequest(const std::string &rel)
{
	static HostDeviceTree tree = [] {
		auto t = HostDeviceTree::load(fixtureDtb("soc-board"));
		REQUIRE(t.ok());
		return std::move(*t);
	}();
	auto node = tree.node("/soc/bus@2000000/" + rel);
	INFO(rel << ": " << (node ? "" : node.error().message));
	REQUIRE(node.ok());
	GuestDeviceRequest r;
	r.host = std::move(*node);
	return r;
}

// A device node made up in the test (root 2/2 cells, GIC phandle 1).
GuestDeviceRequest madeUp(const std::string &name, std::vector<uint32_t> reg, std::vector<uint32_t> interrupts)
{
	DtbBuilder b;
	b.begin("").cells("#address-cells", { 2 }).cells("#size-cells", { 2 }).cells("interrupt-parent", { 1 });
	b.begin("intc").cells("#interrupt-cells", { 3 }).empty("interrupt-controller").cells("phandle", { 1 }).end();
	b.begin(name).str("compatible", "test,dev");
	if (!reg.empty())
		b.cells("reg", reg);
	if (!interrupts.empty())
		b.cells("interrupts", interrupts);
	b.end().end();
	auto tree = treeOf(b.finish());
	auto node = tree.node("/" + name);
	REQUIRE(node.ok());
	GuestDeviceRequest r;
	r.host = std::move(*node);
	return r;
}

Overlay build(const std::vector<GuestDeviceRequest> &devices, const OverlayOptions &options,
	      const std::string &gic = "intc")
{
	auto ov = buildOverlay(devices, options, gic);
	INFO((ov ? std::string() : ov.error().message));
	REQUIRE(ov.ok());
	CHECK(fdt_check_full(ov->dtbo.data(), ov->dtbo.size()) == 0);
	return std::move(*ov);
}

HostDeviceTree applied(const std::string &base, const Overlay &ov)
{
	std::vector<uint8_t> out;
	std::string error;
	bool ok = applyOverlay(fixtureDtb(base), ov.dtbo, &out, &error);
	INFO(error);
	REQUIRE(ok);
	return treeOf(std::move(out));
}

std::string dts(const std::vector<uint8_t> &blob)
{
	TempDir dir;
	writeBytes(dir.file("x.dtb"), blob);
	auto r = runCommand({ "dtc", "-q", "-I", "dtb", "-O", "dts", dir.file("x.dtb") });
	INFO(r.err);
	REQUIRE(r.exitCode == 0);
	return r.out;
}

Error buildError(const std::vector<GuestDeviceRequest> &devices, const OverlayOptions &options)
{
	auto ov = buildOverlay(devices, options);
	REQUIRE_FALSE(ov.ok());
	return ov.error();
}

} // namespace

TEST_CASE("sim:platform relocated onto a crosvm-shaped base: reg, SPI and GIC phandle as crosvm expects", "[overlay]")
{
	if (!haveTools())
		return;
	auto ov = build({ simPlatformRequest() }, windowOptions());
	REQUIRE(ov.placements.size() == 1);
	const auto &p = ov.placements[0];
	CHECK(p.label == "sim_platform");
	CHECK(p.nodeName == "sim-platform@100000000");
	REQUIRE(p.guestReg.size() == 2);
	CHECK(p.guestReg[0].address == kWindow);
	CHECK(p.guestReg[0].size == 0x1000);
	CHECK(p.guestReg[1].address == kWindow + 0x1000);
	CHECK(p.guestReg[1].size == 0x200);
	CHECK(p.guestSpis == std::vector<uint32_t>{ 32 });
	CHECK(p.guestIrqFlags == std::vector<uint32_t>{ 4 });

	auto guest = applied("crosvm-base", ov);
	auto node = guest.node("/sim-platform@100000000");
	INFO((node ? std::string() : node.error().message));
	REQUIRE(node.ok());
	CHECK(node->label == "sim_platform");
	CHECK(node->compatible == std::vector<std::string>{ device::sim_platform::kCompatible });
	REQUIRE(node->reg.size() == 2);
	CHECK(node->reg[0].address == kWindow);
	CHECK(node->reg[1].address == kWindow + 0x1000);
	CHECK(node->reg[1].size == 0x200);
	REQUIRE(node->interrupts.size() == 1);
	// fdtoverlay resolved the __fixups__ entry to the base tree's GIC ("intc", phandle 1).
	CHECK(node->interrupts[0].controller == "/intc");
	CHECK(node->interrupts[0].specifier == std::vector<uint32_t>{ 0, 32, 4 });
	CHECK(node->properties.count("vfio-broker,passthrough") == 0);
	// reg as 2-cell address / 2-cell size: 2 entries x 16 bytes.
	CHECK(node->properties.at("reg").size() == 32);
}

TEST_CASE("Identity placement keeps host addresses; relocated entries keep their in-page offset", "[overlay]")
{
	if (!haveTools())
		return;
	auto identity = boardRequest("crypto@20000");
	identity.identity = true;
	auto relocated = madeUp("uart@9000800", { 0, 0x09000800, 0, 0x100 }, { 0, 9, 4 });
	auto ov = build({ identity, relocated }, windowOptions());
	REQUIRE(ov.placements.size() == 2);
	CHECK(ov.placements[0].nodeName == "crypto@42020000");
	REQUIRE(ov.placements[0].guestReg.size() == 2);
	CHECK(ov.placements[0].guestReg[0].address == 0x42020000);
	CHECK(ov.placements[0].guestReg[1].address == 0x42021000);
	CHECK(ov.placements[0].guestReg[1].size == 0x100);
	CHECK(ov.placements[1].guestReg[0].address == kWindow + 0x800);
	CHECK(ov.placements[1].nodeName == "uart@100000800");

	auto guest = applied("crosvm-base", ov);
	auto crypto = guest.node("/crypto@42020000");
	REQUIRE(crypto.ok());
	CHECK(crypto->reg[0].address == 0x42020000);
	CHECK(crypto->label == "crypto");
	// Copied through the default allow-list ...
	CHECK(crypto->properties.count("reg-names") == 1);
	CHECK(crypto->properties.count("clock-frequency") == 1);
	// ... and host-only references are not.
	CHECK(crypto->properties.count("iommus") == 0);
	CHECK(crypto->properties.count("xen,passthrough") == 0);
	auto uart = guest.node("/uart@100000800");
	REQUIRE(uart.ok());
	CHECK(uart->reg[0].address == kWindow + 0x800);
	CHECK(uart->interrupts[0].specifier == std::vector<uint32_t>{ 0, 33, 4 });
}

TEST_CASE("A restricted-DMA pool: reserved-memory node, memory-region on DMA devices only", "[overlay]")
{
	if (!haveTools())
		return;
	auto opts = windowOptions();
	opts.dmaPoolBase = 0xfc000000;
	opts.dmaPoolSize = 0x400000;
	auto dma = boardRequest("dma-controller@10000");
	auto mbox = boardRequest("mailbox@40000");
	mbox.dma = false;
	auto ov = build({ dma, mbox }, opts);
	auto guest = applied("crosvm-base", ov);

	auto dmaNode = guest.node("/dma-controller@100000000");
	REQUIRE(dmaNode.ok());
	CHECK(dmaNode->dmaCoherent);
	// Host clocks/resets/power-domains/iommus do not exist in the guest.
	CHECK(dmaNode->clocks.empty());
	CHECK(dmaNode->resets.empty());
	CHECK(dmaNode->powerDomains.empty());
	CHECK(dmaNode->iommus.empty());
	const auto &region = dmaNode->properties.at("memory-region");
	REQUIRE(region.size() == 4);
	fdt32_t be;
	std::memcpy(&be, region.data(), 4);
	auto poolPath = guest.pathOfPhandle(fdt32_to_cpu(be));
	REQUIRE(poolPath.ok());
	CHECK(*poolPath == "/reserved-memory/vfio-broker-dma@fc000000");
	auto pool = guest.node(*poolPath);
	REQUIRE(pool.ok());
	CHECK(pool->compatible == std::vector<std::string>{ "restricted-dma-pool" });
	REQUIRE(pool->reg.size() == 1);
	CHECK(pool->reg[0].address == 0xfc000000);
	CHECK(pool->reg[0].size == 0x400000);
	CHECK(pool->properties.count("no-map") == 0); // Linux refuses a restricted pool with no-map
	// The overlay's local phandle was renumbered past the base tree's (crosvm-base uses up to 0x100).
	CHECK(fdt32_to_cpu(be) > 0x100);

	auto mboxNode = guest.node("/mailbox@100001000");
	REQUIRE(mboxNode.ok());
	CHECK(mboxNode->properties.count("memory-region") == 0);
	// Interrupt-less: no interrupts and no interrupt-parent to fix up.
	CHECK(mboxNode->interrupts.empty());
	CHECK(mboxNode->properties.count("interrupt-parent") == 0);
}

TEST_CASE("The GIC reference goes through __fixups__ to the label the base tree uses", "[overlay]")
{
	if (!haveTools())
		return;
	// QEMU's virt tree (compiled with -@) calls its GIC "gic", at /intc@8000000.
	auto ov = build({ simPlatformRequest() }, windowOptions(), "gic");
	auto guest = applied("qemu-virt-arm64", ov);
	auto node = guest.node("/sim-platform@100000000");
	REQUIRE(node.ok());
	CHECK(node->interrupts[0].controller == "/intc@8000000");

	// With the wrong label fdtoverlay cannot resolve the reference: the fixup is real.
	auto wrong = build({ simPlatformRequest() }, windowOptions(), "intc");
	std::vector<uint8_t> out;
	std::string error;
	CHECK_FALSE(applyOverlay(fixtureDtb("qemu-virt-arm64"), wrong.dtbo, &out, &error));
}

TEST_CASE("The overlay round-trips through dtc unchanged", "[overlay]")
{
	if (!haveTools())
		return;
	auto opts = windowOptions();
	opts.dmaPoolBase = 0xfc000000;
	opts.dmaPoolSize = 0x200000;
	auto ov = build({ simPlatformRequest(), boardRequest("dma-controller@10000"), boardRequest("gpio@70000") }, opts);
	std::string first = dts(ov.dtbo);
	CHECK_THAT(first, Catch::Contains("target-path = \"/\"") && Catch::Contains("__fixups__") &&
				  Catch::Contains("__local_fixups__") && Catch::Contains("__symbols__"));
	CHECK_THAT(first, Catch::Contains("intc = \"/fragment@0/__overlay__/sim-platform@100000000:interrupt-parent:0"));
	CHECK_THAT(first, Catch::Contains("gpio3 = \"/fragment@0/__overlay__/gpio@100003000\""));
	TempDir dir;
	writeBytes(dir.file("a.dts"), std::vector<uint8_t>(first.begin(), first.end()));
	auto r = runCommand({ "dtc", "-q", "-I", "dts", "-O", "dtb", "-o", dir.file("b.dtbo"), dir.file("a.dts") });
	INFO(r.err);
	REQUIRE(r.exitCode == 0);
	CHECK(dts(readBytes(dir.file("b.dtbo"))) == first);
	// gpio@70000's edge trigger survives (interrupts-extended on the host, interrupts in the guest).
	CHECK(ov.placements[2].guestIrqFlags == std::vector<uint32_t>{ 1 });
}

TEST_CASE("Relocation skips pages that identity devices and the pool occupy", "[overlay]")
{
	auto opts = windowOptions();
	auto first = madeUp("a@100000000", { 0x1, 0x0, 0, 0x1000 }, {});
	first.identity = true; // sits at the start of the window
	auto second = madeUp("b@0", { 0, 0x09000000, 0, 0x1000 }, {});
	auto ov = buildOverlay({ first, second }, opts);
	REQUIRE(ov.ok());
	CHECK(ov->placements[1].guestReg[0].address == kWindow + 0x1000);
}

TEST_CASE("Placement errors: ENOSPC, EEXIST, identity overlap, non-SPI interrupts", "[overlay]")
{
	auto opts = windowOptions();
	SECTION("the MMIO window runs out")
	{
		opts.guestMmioSize = 0x1000;
		auto e = buildError({ simPlatformRequest() }, opts); // needs two pages
		CHECK(e.code == ENOSPC);
		CHECK_THAT(e.message, Catch::Contains("window"));
	}
	SECTION("no window at all for a relocated device")
	{
		OverlayOptions none;
		CHECK(buildError({ simPlatformRequest() }, none).code == ENOSPC);
	}
	SECTION("the SPI range runs out")
	{
		opts.firstGuestSpi = 987;
		auto a = madeUp("a@0", { 0, 0x1000, 0, 0x100 }, { 0, 1, 4, 0, 2, 4 });
		auto e = buildError({ a }, opts);
		CHECK(e.code == ENOSPC);
		CHECK_THAT(e.message, Catch::Contains("SPI"));
	}
	SECTION("two devices with one label")
	{
		auto a = simPlatformRequest();
		auto b = boardRequest("mailbox@40000");
		b.label = "sim_platform";
		CHECK(buildError({ a, b }, opts).code == EEXIST);
	}
	SECTION("a device label equal to the GIC's")
	{
		auto a = simPlatformRequest();
		a.label = "intc";
		CHECK(buildError({ a }, opts).code == EEXIST);
	}
	SECTION("identity devices that overlap")
	{
		auto a = madeUp("a@9000000", { 0, 0x09000000, 0, 0x2000 }, {});
		auto b = madeUp("b@9001000", { 0, 0x09001000, 0, 0x1000 }, {});
		a.identity = b.identity = true;
		auto e = buildError({ a, b }, opts);
		CHECK(e.code == EINVAL);
		CHECK_THAT(e.message, Catch::Contains("overlaps"));
	}
	SECTION("an identity device over the DMA pool")
	{
		opts.dmaPoolBase = 0x09000000;
		opts.dmaPoolSize = 0x100000;
		auto a = madeUp("a@9000000", { 0, 0x09000000, 0, 0x1000 }, {});
		a.identity = true;
		CHECK(buildError({ a }, opts).code == EINVAL);
	}
	SECTION("a PPI cannot be passed through")
	{
		auto a = madeUp("a@0", { 0, 0x1000, 0, 0x100 }, { 1, 9, 4 });
		auto e = buildError({ a }, opts);
		CHECK(e.code == EINVAL);
		CHECK_THAT(e.message, Catch::Contains("not a GIC SPI"));
	}
	SECTION("an invalid label")
	{
		auto a = simPlatformRequest();
		a.label = "9bad-label";
		CHECK(buildError({ a }, opts).code == EINVAL);
	}
	SECTION("a property that names host nodes cannot be copied")
	{
		opts.copyProperties = { "reg-names", "clocks" };
		auto e = buildError({ boardRequest("dma-controller@10000") }, opts);
		CHECK(e.code == EINVAL);
		CHECK_THAT(e.message, Catch::Contains("\"clocks\""));
	}
	SECTION("a sysfs path crosvm could not parse")
	{
		auto a = simPlatformRequest();
		a.sysfsPath = "/sys/bus/platform/devices/a,b";
		CHECK(buildError({ a }, opts).code == EINVAL);
	}
	SECTION("an unaligned pool")
	{
		opts.dmaPoolBase = 0xfc000800;
		opts.dmaPoolSize = 0x1000;
		CHECK(buildError({ simPlatformRequest() }, opts).code == EINVAL);
	}
}

TEST_CASE("An explicit copy list replaces the default allow-list", "[overlay]")
{
	auto opts = windowOptions();
	opts.copyProperties = { "reg-shift" };
	auto ov = buildOverlay({ boardRequest("serial@30000") }, opts);
	REQUIRE(ov.ok());
	const void *fdt = ov->dtbo.data();
	int node = fdt_path_offset(fdt, "/fragment@0/__overlay__/serial@100000000");
	REQUIRE(node >= 0);
	CHECK(fdt_getprop(fdt, node, "reg-shift", nullptr) != nullptr);
	CHECK(fdt_getprop(fdt, node, "reg-io-width", nullptr) == nullptr);
	CHECK(fdt_getprop(fdt, node, "clocks", nullptr) == nullptr);
}
