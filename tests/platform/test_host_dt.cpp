// SPDX-License-Identifier: Apache-2.0
// HostDeviceTree: reg translation through ranges, interrupt parents, iommus and provider
// references, labels, passthrough markers, on trees built here and on the checked-in fixtures.
#include <catch2/catch.hpp>

#include "platform_support.h"

using namespace vfio_broker;
using namespace vfio_broker::platform;
using namespace vfio_broker::platform::test;

namespace {

// Root 2/2 cells with a GIC (phandle 1); `body` adds the rest inside the root node.
template<typename F>
std::vector<uint8_t> treeWith(F body)
{
	DtbBuilder b;
	b.begin("").cells("#address-cells", { 2 }).cells("#size-cells", { 2 }).cells("interrupt-parent", { 1 });
	b.begin("intc@8000000").str("compatible", "arm,gic-v3").cells("#interrupt-cells", { 3 }).empty("interrupt-controller");
	b.cells("reg", { 0, 0x08000000, 0, 0x10000 }).cells("phandle", { 1 }).end();
	body(b);
	b.end();
	return b.finish();
}

Error nodeError(const HostDeviceTree &tree, const std::string &path)
{
	auto n = tree.node(path);
	REQUIRE_FALSE(n.ok());
	return n.error();
}

} // namespace

TEST_CASE("reg is translated through two levels of ranges to a host physical address", "[host_dt]")
{
	auto tree = treeOf(treeWith([](DtbBuilder &b) {
		b.begin("soc").cells("#address-cells", { 1 }).cells("#size-cells", { 1 });
		b.cells("ranges", { 0x0, 0x0, 0x40000000, 0x20000000 });
		b.begin("bus@2000000").cells("#address-cells", { 1 }).cells("#size-cells", { 1 });
		b.cells("ranges", { 0x0, 0x2000000, 0x100000 });
		b.begin("dev@10000").str("compatible", "test,dev").cells("reg", { 0x10000, 0x1000, 0x11800, 0x100 }).end();
		b.end().end();
	}));
	auto n = tree.node("/soc/bus@2000000/dev@10000");
	REQUIRE(n.ok());
	REQUIRE(n->reg.size() == 2);
	CHECK(n->reg[0].address == 0x42010000);
	CHECK(n->reg[0].size == 0x1000);
	CHECK(n->reg[1].address == 0x42011800);
	CHECK(n->reg[1].size == 0x100);
}

TEST_CASE("An empty ranges is an identity mapping", "[host_dt]")
{
	auto tree = treeWith([](DtbBuilder &b) {
		b.begin("soc").cells("#address-cells", { 2 }).cells("#size-cells", { 1 }).empty("ranges");
		b.begin("dev@1_9000000").str("compatible", "test,dev").cells("reg", { 0x1, 0x09000000, 0x1000 }).end();
		b.end();
	});
	auto n = treeOf(tree).node("/soc/dev@1_9000000");
	REQUIRE(n.ok());
	REQUIRE(n->reg.size() == 1);
	CHECK(n->reg[0].address == 0x109000000ull);
	CHECK(n->reg[0].size == 0x1000);
}

TEST_CASE("A bus without ranges makes reg untranslatable, never an identity address", "[host_dt]")
{
	auto tree = treeOf(treeWith([](DtbBuilder &b) {
		b.begin("i2c@9000000").cells("#address-cells", { 1 }).cells("#size-cells", { 0 });
		b.cells("reg", { 0, 0x09000000, 0, 0x1000 });
		b.begin("sensor@48").str("compatible", "test,sensor").cells("reg", { 0x48 }).end();
		b.end();
	}));
	auto parent = tree.node("/i2c@9000000");
	REQUIRE(parent.ok());
	CHECK(parent->reg[0].address == 0x09000000);
	auto e = nodeError(tree, "/i2c@9000000/sensor@48");
	CHECK(e.code == EINVAL);
	CHECK_THAT(e.message, Catch::Contains("/i2c@9000000/sensor@48") && Catch::Contains("\"ranges\""));
}

TEST_CASE("reg outside every ranges window, or straddling its end, is EINVAL", "[host_dt]")
{
	auto tree = treeOf(treeWith([](DtbBuilder &b) {
		b.begin("soc").cells("#address-cells", { 1 }).cells("#size-cells", { 1 });
		b.cells("ranges", { 0x1000, 0x0, 0x40000000, 0x1000 });
		b.begin("outside@3000").cells("reg", { 0x3000, 0x100 }).end();
		b.begin("straddle@1800").cells("reg", { 0x1800, 0x1000 }).end();
		b.end();
	}));
	CHECK_THAT(nodeError(tree, "/soc/outside@3000").message, Catch::Contains("outside every \"ranges\" window"));
	CHECK_THAT(nodeError(tree, "/soc/straddle@1800").message, Catch::Contains("extends past"));
}

TEST_CASE("Malformed reg and cell counts are EINVAL naming the node and property", "[host_dt]")
{
	auto tree = treeOf(treeWith([](DtbBuilder &b) {
		b.begin("short@0").cells("reg", { 0, 0x1000, 0 }).end();
		b.begin("pci").cells("#address-cells", { 3 }).cells("#size-cells", { 2 });
		b.begin("dev@0").cells("reg", { 0, 0, 0, 0, 0x1000 }).end();
		b.end();
		b.begin("badcells").cells("#address-cells", { 1, 2 }).cells("#size-cells", { 1 });
		b.begin("dev@0").cells("reg", { 0, 0x10 }).end();
		b.end();
		b.begin("wrap@0").cells("reg", { 0xffffffff, 0xfffff000, 0, 0x2000 }).end();
	}));
	auto e = nodeError(tree, "/short@0");
	CHECK(e.code == EINVAL);
	CHECK_THAT(e.message, Catch::Contains("/short@0") && Catch::Contains("\"reg\"") && Catch::Contains("multiple of 16"));
	CHECK_THAT(nodeError(tree, "/pci/dev@0").message, Catch::Contains("#address-cells") && Catch::Contains("3 cells are not supported"));
	CHECK_THAT(nodeError(tree, "/badcells/dev@0").message, Catch::Contains("#address-cells") && Catch::Contains("expected one cell"));
	CHECK_THAT(nodeError(tree, "/wrap@0").message, Catch::Contains("wraps around"));
}

TEST_CASE("The interrupt parent is inherited from an ancestor and decoded with its #interrupt-cells", "[host_dt]")
{
	auto tree = treeOf(treeWith([](DtbBuilder &b) {
		b.begin("gpio-intc").empty("interrupt-controller").cells("#interrupt-cells", { 2 }).cells("phandle", { 2 });
		b.cells("interrupts", { 0, 30, 4 }).end();
		b.begin("bus").cells("#address-cells", { 2 }).cells("#size-cells", { 2 }).empty("ranges");
		b.cells("interrupt-parent", { 2 });
		b.begin("child@0").cells("reg", { 0, 0x1000, 0, 0x100 }).cells("interrupts", { 5, 8, 6, 2 }).end();
		b.end();
		b.begin("rootchild@0").cells("reg", { 0, 0x2000, 0, 0x100 }).cells("interrupts", { 0, 7, 1 }).end();
	}));
	auto child = tree.node("/bus/child@0");
	REQUIRE(child.ok());
	REQUIRE(child->interrupts.size() == 2);
	CHECK(child->interrupts[0].controller == "/gpio-intc");
	CHECK(child->interrupts[0].specifier == std::vector<uint32_t>{ 5, 8 });
	CHECK(child->interrupts[1].specifier == std::vector<uint32_t>{ 6, 2 });
	auto rootChild = tree.node("/rootchild@0");
	REQUIRE(rootChild.ok());
	REQUIRE(rootChild->interrupts.size() == 1);
	CHECK(rootChild->interrupts[0].controller == "/intc@8000000");
	CHECK(rootChild->interrupts[0].specifier == std::vector<uint32_t>{ 0, 7, 1 });
	auto gpio = tree.node("/gpio-intc");
	REQUIRE(gpio.ok());
	CHECK(gpio->interrupts[0].controller == "/intc@8000000");
}

TEST_CASE("interrupts-extended names each controller and wins over interrupts", "[host_dt]")
{
	auto tree = treeOf(treeWith([](DtbBuilder &b) {
		b.begin("pdc").empty("interrupt-controller").cells("#interrupt-cells", { 2 }).cells("phandle", { 2 }).end();
		b.begin("dev@0").cells("interrupts", { 0, 1, 4 });
		b.cells("interrupts-extended", { 1, 0, 40, 4, 2, 17, 3 }).end();
	}));
	auto n = tree.node("/dev@0");
	REQUIRE(n.ok());
	REQUIRE(n->interrupts.size() == 2);
	CHECK(n->interrupts[0].controller == "/intc@8000000");
	CHECK(n->interrupts[0].specifier == std::vector<uint32_t>{ 0, 40, 4 });
	CHECK(n->interrupts[1].controller == "/pdc");
	CHECK(n->interrupts[1].specifier == std::vector<uint32_t>{ 17, 3 });
}

TEST_CASE("Broken interrupt descriptions are EINVAL", "[host_dt]")
{
	auto tree = treeOf(treeWith([](DtbBuilder &b) {
		b.begin("odd@0").cells("interrupts", { 0, 1 }).end();
		b.begin("dangling@0").cells("interrupt-parent", { 0x77 }).cells("interrupts", { 0, 1, 4 }).end();
		b.begin("nocells").cells("phandle", { 3 }).empty("interrupt-controller").end();
		b.begin("ext@0").cells("interrupts-extended", { 3, 1 }).end();
		b.begin("trunc@0").cells("interrupts-extended", { 1, 0, 40 }).end();
	}));
	CHECK_THAT(nodeError(tree, "/odd@0").message, Catch::Contains("\"interrupts\"") && Catch::Contains("multiple of 3"));
	CHECK_THAT(nodeError(tree, "/dangling@0").message, Catch::Contains("0x77") && Catch::Contains("resolves to no node"));
	CHECK_THAT(nodeError(tree, "/ext@0").message, Catch::Contains("/nocells") && Catch::Contains("#interrupt-cells"));
	CHECK_THAT(nodeError(tree, "/trunc@0").message, Catch::Contains("truncated"));
}

TEST_CASE("iommus, clocks, resets and power-domains are decoded with the provider's cell counts", "[host_dt]")
{
	auto tree = treeOf(treeWith([](DtbBuilder &b) {
		b.begin("smmu").cells("#iommu-cells", { 1 }).cells("phandle", { 10 }).end();
		b.begin("simple-iommu").cells("#iommu-cells", { 0 }).cells("phandle", { 11 }).end();
		b.begin("crg").cells("#clock-cells", { 1 }).cells("#reset-cells", { 2 }).cells("phandle", { 12 }).end();
		b.begin("osc").cells("#clock-cells", { 0 }).cells("phandle", { 13 }).end();
		b.begin("pd").cells("#power-domain-cells", { 0 }).cells("phandle", { 14 }).end();
		b.begin("dev@0").cells("iommus", { 10, 0x20, 11, 10, 0x21 });
		b.cells("clocks", { 12, 3, 0, 13 }).cells("resets", { 12, 1, 2 }).cells("power-domains", { 14 });
		b.empty("dma-coherent").end();
	}));
	auto n = tree.node("/dev@0");
	REQUIRE(n.ok());
	REQUIRE(n->iommus.size() == 3);
	CHECK(n->iommus[0].iommu == "/smmu");
	CHECK(n->iommus[0].specifier == std::vector<uint32_t>{ 0x20 });
	CHECK(n->iommus[1].iommu == "/simple-iommu");
	CHECK(n->iommus[1].specifier.empty());
	CHECK(n->iommus[2].specifier == std::vector<uint32_t>{ 0x21 });
	// A zero phandle is an empty slot in a clocks list.
	REQUIRE(n->clocks.size() == 2);
	CHECK(n->clocks[0].toString() == "/crg:3");
	CHECK(n->clocks[1].toString() == "/osc");
	REQUIRE(n->resets.size() == 1);
	CHECK(n->resets[0].toString() == "/crg:1,2");
	REQUIRE(n->powerDomains.size() == 1);
	CHECK(n->powerDomains[0].provider == "/pd");
	CHECK(n->dmaCoherent);
}

TEST_CASE("A provider without its #...-cells or a short specifier is EINVAL", "[host_dt]")
{
	auto tree = treeOf(treeWith([](DtbBuilder &b) {
		b.begin("smmu").cells("phandle", { 10 }).end();
		b.begin("crg").cells("#clock-cells", { 2 }).cells("phandle", { 12 }).end();
		b.begin("a@0").cells("iommus", { 10, 1 }).end();
		b.begin("b@0").cells("clocks", { 12, 1 }).end();
		b.begin("c@0").cells("resets", { 99, 1 }).end();
	}));
	CHECK_THAT(nodeError(tree, "/a@0").message, Catch::Contains("\"iommus\"") && Catch::Contains("#iommu-cells"));
	CHECK_THAT(nodeError(tree, "/b@0").message, Catch::Contains("\"clocks\"") && Catch::Contains("truncated"));
	CHECK_THAT(nodeError(tree, "/c@0").message, Catch::Contains("\"resets\"") && Catch::Contains("0x63"));
}

TEST_CASE("status, labels, passthrough markers and raw properties", "[host_dt]")
{
	auto tree = treeOf(treeWith([](DtbBuilder &b) {
		b.begin("a@0").strings("compatible", { "vendor,a", "generic-a" }).empty("vfio-broker,passthrough").end();
		b.begin("b@0").str("status", "disabled").empty("xen,passthrough").end();
		b.begin("c@0").str("compatible", "vendor,c").end();
		b.begin("__symbols__").str("gic", "/intc@8000000").str("dev_a", "/a@0").end();
	}));
	auto a = tree.node("/a@0");
	REQUIRE(a.ok());
	CHECK(a->compatible == std::vector<std::string>{ "vendor,a", "generic-a" });
	CHECK(a->status == "okay");
	CHECK(a->label == "dev_a");
	CHECK(a->passthrough);
	CHECK(a->properties.count("vfio-broker,passthrough") == 1);
	CHECK(a->properties.at("compatible").size() == std::string("vendor,a").size() + std::string("generic-a").size() + 2);
	auto b = tree.node("/b@0");
	REQUIRE(b.ok());
	CHECK(b->status == "disabled");
	CHECK(b->passthrough);
	CHECK(b->label.empty());
	auto c = tree.node("/c@0");
	REQUIRE(c.ok());
	CHECK_FALSE(c->passthrough);

	auto marked = tree.passthroughNodes();
	REQUIRE(marked.ok());
	REQUIRE(marked->size() == 2);
	CHECK((*marked)[0].path == "/a@0");
	CHECK((*marked)[1].path == "/b@0");

	CHECK(tree.rootAddressCells() == 2);
	CHECK(tree.rootSizeCells() == 2);
	auto gic = tree.pathOfPhandle(1);
	REQUIRE(gic.ok());
	CHECK(*gic == "/intc@8000000");
	CHECK(tree.pathOfPhandle(0x1234).error().code == ENOENT);
	CHECK(tree.node("/nope").error().code == ENOENT);
	CHECK(tree.node("relative").error().code == EINVAL);
}

TEST_CASE("A status or compatible that is not NUL-terminated is EINVAL", "[host_dt]")
{
	auto tree = treeOf(treeWith([](DtbBuilder &b) {
		b.begin("a@0").raw("status", { 'o', 'k' }).end();
		b.begin("b@0").raw("compatible", { 'x' }).end();
	}));
	CHECK_THAT(nodeError(tree, "/a@0").message, Catch::Contains("\"status\""));
	CHECK_THAT(nodeError(tree, "/b@0").message, Catch::Contains("\"compatible\""));
}

TEST_CASE("The QEMU virt fixture: pl031 and virtio-mmio as the arm64 lab sees them", "[host_dt]")
{
	auto tree = HostDeviceTree::load(fixtureDtb("qemu-virt-arm64"));
	REQUIRE(tree.ok());
	auto rtc = tree->node("/pl031@9010000");
	REQUIRE(rtc.ok());
	CHECK(rtc->label == "rtc");
	CHECK(rtc->compatible == std::vector<std::string>{ "arm,pl031", "arm,primecell" });
	REQUIRE(rtc->reg.size() == 1);
	CHECK(rtc->reg[0].address == 0x09010000);
	CHECK(rtc->reg[0].size == 0x1000);
	REQUIRE(rtc->interrupts.size() == 1);
	CHECK(rtc->interrupts[0].controller == "/intc@8000000");
	CHECK(rtc->interrupts[0].specifier == std::vector<uint32_t>{ 0, 2, 4 });
	REQUIRE(rtc->clocks.size() == 1);
	CHECK(rtc->clocks[0].toString() == "/apb-pclk");
	CHECK(rtc->iommus.empty());

	auto uart = tree->node("/pl011@9000000");
	REQUIRE(uart.ok());
	CHECK(uart->clocks.size() == 2);

	auto marked = tree->passthroughNodes();
	REQUIRE(marked.ok());
	REQUIRE(marked->size() == 2);
	CHECK((*marked)[0].path == "/virtio_mmio@a000000");
	CHECK((*marked)[0].dmaCoherent);
	CHECK((*marked)[0].interrupts[0].specifier == std::vector<uint32_t>{ 0, 16, 1 });
	CHECK((*marked)[1].path == "/pl031@9010000");

	// The PCI host's children would have 3 address cells: the bridge itself decodes fine.
	auto pcie = tree->node("/pcie@10000000");
	REQUIRE(pcie.ok());
	CHECK(pcie->reg[0].address == 0x4010000000ull);
}

TEST_CASE("The SoC board fixture: nested buses, SMMU stream IDs, providers, Xen's device classes", "[host_dt]")
{
	auto tree = HostDeviceTree::load(fixtureDtb("soc-board"));
	REQUIRE(tree.ok());
	const std::string bus = "/soc/bus@2000000/";

	auto dma = tree->node(bus + "dma-controller@10000");
	REQUIRE(dma.ok());
	CHECK(dma->reg[0].address == 0x42010000);
	REQUIRE(dma->iommus.size() == 2);
	CHECK(dma->iommus[0].iommu == "/soc/iommu@10000000");
	CHECK(dma->iommus[0].specifier == std::vector<uint32_t>{ 0x10 });
	CHECK(dma->iommus[1].specifier == std::vector<uint32_t>{ 0x11 });
	REQUIRE(dma->clocks.size() == 2);
	CHECK(dma->clocks[0].toString() == "/soc/clock-controller@11000000:3");
	CHECK(dma->clocks[1].toString() == "/oscillator");
	REQUIRE(dma->resets.size() == 1);
	CHECK(dma->resets[0].toString() == "/soc/clock-controller@11000000:7");
	REQUIRE(dma->powerDomains.size() == 1);
	CHECK(dma->powerDomains[0].toString() == "/soc/power-controller@11010000:2");
	CHECK(dma->dmaCoherent);

	auto crypto = tree->node(bus + "crypto@20000");
	REQUIRE(crypto.ok());
	CHECK(crypto->passthrough); // xen,passthrough
	REQUIRE(crypto->reg.size() == 2);
	CHECK(crypto->reg[1].address == 0x42021000);
	CHECK(crypto->reg[1].size == 0x100);
	auto video = tree->node(bus + "video@28000");
	REQUIRE(video.ok());
	CHECK(video->iommus[0].iommu == crypto->iommus[0].iommu);
	CHECK(video->iommus[0].specifier == crypto->iommus[0].specifier);

	auto serial = tree->node(bus + "serial@30000");
	auto timer = tree->node(bus + "timer@31000");
	REQUIRE(serial.ok());
	REQUIRE(timer.ok());
	CHECK(serial->iommus.empty());
	CHECK(serial->interrupts[0].controller == timer->interrupts[0].controller);
	CHECK(serial->interrupts[0].specifier == timer->interrupts[0].specifier);

	auto mbox = tree->node(bus + "mailbox@40000");
	REQUIRE(mbox.ok());
	CHECK(mbox->interrupts.empty());

	auto wdt = tree->node(bus + "watchdog@50000");
	REQUIRE(wdt.ok());
	CHECK(wdt->status == "disabled");

	auto gpio = tree->node(bus + "gpio@70000");
	REQUIRE(gpio.ok());
	REQUIRE(gpio->interrupts.size() == 1);
	CHECK(gpio->interrupts[0].controller == "/interrupt-controller@2f000000");
	CHECK(gpio->interrupts[0].specifier == std::vector<uint32_t>{ 0, 60, 1 });

	CHECK(tree->node(bus + "i2c@60000/sensor@48").error().code == EINVAL);

	auto marked = tree->passthroughNodes();
	REQUIRE(marked.ok());
	std::vector<std::string> paths;
	for (const auto &n : *marked)
		paths.push_back(n.path.substr(bus.size()));
	CHECK(paths == std::vector<std::string>{ "dma-controller@10000", "crypto@20000", "video@28000", "serial@30000",
						 "timer@31000", "mailbox@40000", "watchdog@50000", "gpio@70000" });
}

TEST_CASE("load() reports a missing file with its errno", "[host_dt]")
{
	auto tree = HostDeviceTree::load("/nonexistent/vfio-broker.dtb");
	REQUIRE_FALSE(tree.ok());
	CHECK(tree.error().code == ENOENT);
}

TEST_CASE("dtPathFromOfNodeLink maps of_node link targets to node paths", "[host_dt]")
{
	auto p = dtPathFromOfNodeLink("../../../firmware/devicetree/base/soc/rtc@9010000");
	REQUIRE(p.ok());
	CHECK(*p == "/soc/rtc@9010000");
	auto abs = dtPathFromOfNodeLink("/sys/firmware/devicetree/base/pl031@9010000/");
	REQUIRE(abs.ok());
	CHECK(*abs == "/pl031@9010000");
	auto root = dtPathFromOfNodeLink("../../firmware/devicetree/base");
	REQUIRE(root.ok());
	CHECK(*root == "/");
	CHECK(dtPathFromOfNodeLink("../../../devices/platform/foo").error().code == EINVAL);
	CHECK(dtPathFromOfNodeLink("/x/myfirmware/devicetree/base/a").error().code == EINVAL);
	CHECK(dtPathFromOfNodeLink("../firmware/devicetree/base/a/../b").error().code == EINVAL);
	CHECK(dtPathFromOfNodeLink("../firmware/devicetree/basement/a").error().code == EINVAL);
}
