// SPDX-License-Identifier: Apache-2.0
// Hostile device-tree blobs: truncated, corrupted, oversized, with absurd cell counts and
// interrupt-parent loops. Each is an error (or a decodable tree), never a crash or an over-read;
// the ASan/UBSan CI build runs these too.
#include <catch2/catch.hpp>

#include <cstring>

#include "platform_support.h"

extern "C" {
#include <libfdt.h>
}

using namespace vfio_broker;
using namespace vfio_broker::platform;
using namespace vfio_broker::platform::test;

namespace {

// Decode every node; errors are fine, the point is that nothing reads out of bounds.
size_t decodeAll(const HostDeviceTree &tree)
{
	size_t decoded = 0;
	const void *fdt = tree.blob().data();
	for (int off = 0; off >= 0; off = fdt_next_node(fdt, off, nullptr)) {
		char path[1024];
		if (fdt_get_path(fdt, off, path, sizeof(path)) != 0)
			continue;
		if (tree.node(path).ok())
			decoded++;
	}
	(void)tree.passthroughNodes();
	return decoded;
}

std::vector<uint8_t> validBlob()
{
	DtbBuilder b;
	b.begin("").cells("#address-cells", { 2 }).cells("#size-cells", { 2 }).cells("interrupt-parent", { 1 });
	b.begin("intc").cells("#interrupt-cells", { 3 }).empty("interrupt-controller").cells("phandle", { 1 }).end();
	b.begin("smmu").cells("#iommu-cells", { 1 }).cells("phandle", { 2 }).end();
	b.begin("soc").cells("#address-cells", { 1 }).cells("#size-cells", { 1 }).cells("ranges", { 0, 0, 0x40000000, 0x10000000 });
	b.begin("dev@1000").str("compatible", "test,dev").cells("reg", { 0x1000, 0x1000 }).cells("interrupts", { 0, 5, 4 });
	b.cells("iommus", { 2, 7 }).empty("vfio-broker,passthrough").end();
	b.end();
	b.begin("__symbols__").str("dev", "/soc/dev@1000").end();
	b.end();
	return b.finish();
}

} // namespace

TEST_CASE("Every truncation of a valid blob is refused with EINVAL", "[dt_hostile]")
{
	auto blob = validBlob();
	REQUIRE(HostDeviceTree::fromBlob(blob).ok());
	for (size_t len = 0; len < blob.size(); len++) {
		auto tree = HostDeviceTree::fromBlob(std::vector<uint8_t>(blob.begin(), blob.begin() + len));
		INFO("length " << len);
		REQUIRE_FALSE(tree.ok());
		CHECK(tree.error().code == EINVAL);
	}
}

TEST_CASE("Header offsets pointing outside the blob are refused", "[dt_hostile]")
{
	auto blob = validBlob();
	auto *hdr = reinterpret_cast<fdt_header *>(blob.data());
	SECTION("struct block beyond the end")
	{
		hdr->off_dt_struct = cpu_to_fdt32(static_cast<uint32_t>(blob.size() + 64));
	}
	SECTION("strings block beyond the end")
	{
		hdr->off_dt_strings = cpu_to_fdt32(0xfffffff0u);
	}
	SECTION("totalsize larger than the buffer")
	{
		hdr->totalsize = cpu_to_fdt32(static_cast<uint32_t>(blob.size() * 4));
	}
	SECTION("bad magic")
	{
		hdr->magic = cpu_to_fdt32(0x12345678);
	}
	SECTION("struct size covering the strings")
	{
		hdr->size_dt_struct = cpu_to_fdt32(fdt32_to_cpu(hdr->size_dt_struct) + fdt32_to_cpu(hdr->size_dt_strings) + 8);
	}
	auto tree = HostDeviceTree::fromBlob(blob);
	REQUIRE_FALSE(tree.ok());
	CHECK(tree.error().code == EINVAL);
	CHECK_THAT(tree.error().message, Catch::Contains("corrupt device tree") || Catch::Contains("shorter"));
}

TEST_CASE("Byte flips anywhere in a blob never crash the decoder", "[dt_hostile]")
{
	auto blob = validBlob();
	uint32_t state = 12345; // a fixed LCG: the same mutations on every run
	size_t accepted = 0;
	for (int round = 0; round < 4000; round++) {
		auto mutated = blob;
		for (int k = 0; k < 1 + round % 4; k++) {
			state = state * 1103515245u + 12345u;
			size_t pos = (state >> 8) % mutated.size();
			state = state * 1103515245u + 12345u;
			mutated[pos] ^= static_cast<uint8_t>(1u << ((state >> 16) % 8));
		}
		auto tree = HostDeviceTree::fromBlob(std::move(mutated));
		if (!tree)
			continue;
		accepted++;
		decodeAll(*tree);
	}
	// Flips inside property values keep the structure valid: some mutants must get through to
	// the decoder, or this test would not exercise it.
	CHECK(accepted > 100);
}

TEST_CASE("A blob over 64 MiB is E2BIG before any parsing", "[dt_hostile]")
{
	std::vector<uint8_t> huge((64u << 20) + 1, 0);
	auto tree = HostDeviceTree::fromBlob(std::move(huge));
	REQUIRE_FALSE(tree.ok());
	CHECK(tree.error().code == E2BIG);
}

TEST_CASE("Huge cell counts are refused, not used as loop bounds", "[dt_hostile]")
{
	DtbBuilder b;
	b.begin("").cells("#address-cells", { 2 }).cells("#size-cells", { 2 });
	b.begin("intc").cells("#interrupt-cells", { 0xffffffffu }).empty("interrupt-controller").cells("phandle", { 1 }).end();
	b.begin("smmu").cells("#iommu-cells", { 0x40000000u }).cells("phandle", { 2 }).end();
	b.begin("bus").cells("#address-cells", { 0x7fffffffu }).cells("#size-cells", { 1 }).empty("ranges");
	b.begin("dev@0").cells("reg", { 0, 0 }).end();
	b.end();
	b.begin("a@0").cells("interrupt-parent", { 1 }).cells("interrupts", { 0, 1, 4 }).end();
	b.begin("b@0").cells("iommus", { 2, 1 }).end();
	b.end();
	auto tree = treeOf(b.finish());
	for (const char *path : { "/bus/dev@0", "/a@0", "/b@0" }) {
		auto n = tree.node(path);
		INFO(path);
		REQUIRE_FALSE(n.ok());
		CHECK(n.error().code == EINVAL);
		CHECK_THAT(n.error().message, Catch::Contains("cells are not supported"));
	}
}

TEST_CASE("A root with unsupported cell counts is refused when loading", "[dt_hostile]")
{
	DtbBuilder b;
	b.begin("").cells("#address-cells", { 3 }).cells("#size-cells", { 2 }).end();
	auto tree = HostDeviceTree::fromBlob(b.finish());
	REQUIRE_FALSE(tree.ok());
	CHECK(tree.error().code == EINVAL);
}

TEST_CASE("An interrupt-parent loop is EINVAL, not an endless walk", "[dt_hostile]")
{
	DtbBuilder b;
	b.begin("").cells("#address-cells", { 2 }).cells("#size-cells", { 2 });
	// Neither node is a controller; each names the other as its interrupt parent.
	b.begin("a").cells("phandle", { 1 }).cells("interrupt-parent", { 2 }).cells("interrupts", { 1 }).end();
	b.begin("b").cells("phandle", { 2 }).cells("interrupt-parent", { 1 }).end();
	b.begin("self").cells("phandle", { 3 }).cells("interrupt-parent", { 3 }).cells("interrupts", { 1 }).end();
	b.end();
	auto tree = treeOf(b.finish());
	for (const char *path : { "/a", "/self" }) {
		auto n = tree.node(path);
		INFO(path);
		REQUIRE_FALSE(n.ok());
		CHECK(n.error().code == EINVAL);
		CHECK_THAT(n.error().message, Catch::Contains("loop"));
	}
}

TEST_CASE("An interrupt with no parent up to the root is EINVAL", "[dt_hostile]")
{
	DtbBuilder b;
	b.begin("").cells("#address-cells", { 2 }).cells("#size-cells", { 2 });
	b.begin("dev").cells("interrupts", { 0, 1, 4 }).end();
	b.end();
	auto n = treeOf(b.finish()).node("/dev");
	REQUIRE_FALSE(n.ok());
	CHECK_THAT(n.error().message, Catch::Contains("no interrupt parent"));
}

TEST_CASE("A reference list longer than the limit is refused", "[dt_hostile]")
{
	std::vector<uint32_t> iommus;
	for (uint32_t i = 0; i < 2000; i++) {
		iommus.push_back(1);
		iommus.push_back(i);
	}
	DtbBuilder b;
	b.begin("").cells("#address-cells", { 2 }).cells("#size-cells", { 2 });
	b.begin("smmu").cells("#iommu-cells", { 1 }).cells("phandle", { 1 }).end();
	b.begin("dev").cells("iommus", iommus).end();
	b.end();
	auto n = treeOf(b.finish()).node("/dev");
	REQUIRE_FALSE(n.ok());
	CHECK_THAT(n.error().message, Catch::Contains("more than 1024"));
}
