// SPDX-License-Identifier: Apache-2.0
// sim:platform's host device tree agrees with the layout the simulated device serves.
#include <catch2/catch.hpp>

#include "device/sim_platform_layout.h"
#include "platform/sim_platform_dt.h"
#include "platform_support.h"

extern "C" {
#include <libfdt.h>
}

using namespace vfio_broker::platform;
namespace layout = vfio_broker::device::sim_platform;

TEST_CASE("The sim:platform node decodes to the layout's regions and level SPI", "[sim_platform_dt]")
{
	auto tree = simPlatformHostTree();
	REQUIRE(tree.ok());
	CHECK(fdt_check_full(tree->blob().data(), tree->blob().size()) == 0);
	CHECK(std::string(simPlatformDtPath()) == std::string("/soc/") + layout::kNodeName);
	auto node = tree->node(simPlatformDtPath());
	REQUIRE(node.ok());
	CHECK(node->compatible == std::vector<std::string>{ layout::kCompatible });
	CHECK(node->passthrough);
	CHECK(node->status == "okay");
	CHECK(node->label == "sim_platform");
	REQUIRE(node->reg.size() == 2);
	CHECK(node->reg[0].address == layout::kRegion0Address);
	CHECK(node->reg[0].size == layout::kRegion0Size);
	CHECK(node->reg[1].address == layout::kRegion1Address);
	CHECK(node->reg[1].size == layout::kRegion1Size);
	REQUIRE(node->interrupts.size() == 1);
	CHECK(node->interrupts[0].controller == "/intc@8000000");
	CHECK(node->interrupts[0].specifier == std::vector<uint32_t>{ 0, layout::kGicSpi, layout::kGicFlags });
	CHECK(node->iommus.empty());
	CHECK(tree->rootAddressCells() == 2);
	CHECK(tree->rootSizeCells() == 2);

	auto marked = tree->passthroughNodes();
	REQUIRE(marked.ok());
	REQUIRE(marked->size() == 1);
	CHECK((*marked)[0].path == simPlatformDtPath());
}

TEST_CASE("The sim:platform tree goes through a real ranges translation", "[sim_platform_dt]")
{
	auto tree = simPlatformHostTree();
	REQUIRE(tree.ok());
	const void *fdt = tree->blob().data();
	int soc = fdt_path_offset(fdt, "/soc");
	REQUIRE(soc >= 0);
	int len = 0;
	const void *ranges = fdt_getprop(fdt, soc, "ranges", &len);
	REQUIRE(ranges != nullptr);
	// child (1 cell), parent (2 cells), size (1 cell)
	CHECK(len == 16);
	const void *cells = fdt_getprop(fdt, soc, "#address-cells", &len);
	REQUIRE(cells != nullptr);
	CHECK(fdt32_ld(static_cast<const fdt32_t *>(cells)) == 1);
}
