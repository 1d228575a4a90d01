// SPDX-License-Identifier: Apache-2.0
// Unit tests for the VFIO capability-chain, IOMMU-info, MSI-X and sparse-mmap helpers (pure functions, no device).
#include <catch2/catch.hpp>

#include <cstring>

#include "device/vfio_caps.h"

using namespace vfio_broker::device;

namespace {

// Builds an info buffer byte by byte, so tests can write chains the kernel never would.
struct InfoBuffer {
	std::vector<uint8_t> bytes;

	explicit InfoBuffer(size_t size) : bytes(size, 0) {}

	template<typename T>
	void put(size_t offset, T value)
	{
		REQUIRE(offset + sizeof(T) <= bytes.size());
		std::memcpy(bytes.data() + offset, &value, sizeof(T));
	}
	void header(size_t offset, uint16_t id, uint16_t version, uint32_t next)
	{
		put<uint16_t>(offset, id);
		put<uint16_t>(offset + 2, version);
		put<uint32_t>(offset + 4, next);
	}
	template<typename T>
	T get(size_t offset) const
	{
		T value;
		std::memcpy(&value, bytes.data() + offset, sizeof(T));
		return value;
	}
};

// A 256-byte config space with the capability-list bit set and the first capability at `first`.
std::vector<uint8_t> configWithCaps(uint8_t first)
{
	std::vector<uint8_t> config(256, 0);
	config[0x06] = 0x10;
	config[0x34] = first;
	return config;
}

void putMsix(std::vector<uint8_t> &config, uint8_t at, uint8_t next, uint16_t control, uint32_t table, uint32_t pba)
{
	config[at] = kPciCapIdMsix;
	config[at + 1] = next;
	std::memcpy(&config[at + 2], &control, 2);
	std::memcpy(&config[at + 4], &table, 4);
	std::memcpy(&config[at + 8], &pba, 4);
}

MsixCapability msixAt(uint8_t tableBar, uint32_t tableOffset, uint8_t pbaBar, uint32_t pbaOffset, uint32_t entries)
{
	MsixCapability msix;
	msix.entries = entries;
	msix.tableBar = tableBar;
	msix.tableOffset = tableOffset;
	msix.pbaBar = pbaBar;
	msix.pbaOffset = pbaOffset;
	return msix;
}

Capability capWithBody(uint16_t id, std::vector<uint8_t> body)
{
	return Capability{ id, 1, std::move(body) };
}

} // namespace

// ---- walkCapChain

TEST_CASE("walkCapChain_firstOffsetZero_returnsEmptyChain", "[vfio_caps]")
{
	InfoBuffer buf(64);
	auto chain = walkCapChain(buf.bytes, 0, 32);
	REQUIRE(chain.ok());
	CHECK(chain->empty());
}

TEST_CASE("walkCapChain_twoCaps_returnsThemInChainOrderWithLengthsToNextHeader", "[vfio_caps]")
{
	InfoBuffer buf(80);
	buf.header(32, 3, 1, 48);
	buf.header(48, 1, 1, 0);
	auto chain = walkCapChain(buf.bytes, 32, 32);
	REQUIRE(chain.ok());
	REQUIRE(chain->size() == 2);
	CHECK((*chain)[0].id == 3);
	CHECK((*chain)[0].offset == 32);
	CHECK((*chain)[0].length == 16);
	CHECK((*chain)[1].id == 1);
	CHECK((*chain)[1].offset == 48);
	CHECK((*chain)[1].length == 32); // up to the end of the buffer
}

TEST_CASE("walkCapChain_chainOrderDiffersFromMemoryOrder_lengthStopsAtNextHeaderInMemory", "[vfio_caps]")
{
	InfoBuffer buf(96);
	buf.header(64, 2, 1, 32); // first in the chain, last in memory
	buf.header(32, 1, 1, 0);
	auto chain = walkCapChain(buf.bytes, 64, 32);
	REQUIRE(chain.ok());
	REQUIRE(chain->size() == 2);
	CHECK((*chain)[0].offset == 64);
	CHECK((*chain)[0].length == 32);
	CHECK((*chain)[1].offset == 32);
	CHECK((*chain)[1].length == 32);
}

TEST_CASE("walkCapChain_capPointingToItself_isRefusedAsLoop", "[vfio_caps]")
{
	InfoBuffer buf(64);
	buf.header(32, 1, 1, 32);
	auto chain = walkCapChain(buf.bytes, 32, 32);
	REQUIRE_FALSE(chain.ok());
	CHECK(chain.error().code == EINVAL);
	CHECK_THAT(chain.error().message, Catch::Contains("loops"));
}

TEST_CASE("walkCapChain_twoCapsPointingAtEachOther_isRefusedAsLoop", "[vfio_caps]")
{
	InfoBuffer buf(64);
	buf.header(32, 1, 1, 48);
	buf.header(48, 2, 1, 32);
	auto chain = walkCapChain(buf.bytes, 32, 32);
	REQUIRE_FALSE(chain.ok());
	CHECK_THAT(chain.error().message, Catch::Contains("loops"));
}

TEST_CASE("walkCapChain_nextBeyondBuffer_isRefused", "[vfio_caps]")
{
	InfoBuffer buf(64);
	buf.header(32, 1, 1, 4096);
	auto chain = walkCapChain(buf.bytes, 32, 32);
	REQUIRE_FALSE(chain.ok());
	CHECK_THAT(chain.error().message, Catch::Contains("past the end"));
}

TEST_CASE("walkCapChain_nextAtMaximumOffset_isRefusedWithoutOverflow", "[vfio_caps]")
{
	InfoBuffer buf(64);
	buf.header(32, 1, 1, 0xfffffff8u);
	CHECK_FALSE(walkCapChain(buf.bytes, 32, 32).ok());
}

TEST_CASE("walkCapChain_headerStraddlingBufferEnd_isRefused", "[vfio_caps]")
{
	InfoBuffer buf(44); // a header at 40 would need bytes up to 48
	buf.header(32, 1, 1, 40);
	CHECK_FALSE(walkCapChain(buf.bytes, 32, 32).ok());
}

TEST_CASE("walkCapChain_misalignedNext_isRefused", "[vfio_caps]")
{
	InfoBuffer buf(64);
	buf.header(32, 1, 1, 42);
	auto chain = walkCapChain(buf.bytes, 32, 32);
	REQUIRE_FALSE(chain.ok());
	CHECK_THAT(chain.error().message, Catch::Contains("aligned"));
}

TEST_CASE("walkCapChain_capPackedAt4ByteOffsetLikeLinux61_isAccepted", "[vfio_caps]")
{
	InfoBuffer buf(64);
	buf.header(32, 1, 1, 44); // a 12-byte cap followed directly by the next, as 6.1 lays them out
	buf.header(44, 2, 1, 0);
	auto chain = walkCapChain(buf.bytes, 32, 32);
	REQUIRE(chain.ok());
	REQUIRE(chain->size() == 2);
	CHECK((*chain)[0].length == 12);
	CHECK((*chain)[1].offset == 44);
}

TEST_CASE("walkCapChain_headersCloserThanAHeaderApart_areRefusedAsOverlapping", "[vfio_caps]")
{
	// 4-byte alignment (needed for 6.1's packed chains) lets a hostile chain overlap two headers;
	// the first cap's length would underflow.
	InfoBuffer buf(64);
	buf.header(32, 1, 1, 36); // the second header starts inside the first: its id is the first's "next"
	buf.put<uint32_t>(40, 0);
	auto chain = walkCapChain(buf.bytes, 32, 32);
	REQUIRE_FALSE(chain.ok());
	CHECK_THAT(chain.error().message, Catch::Contains("overlap"));
	CHECK_FALSE(extractCaps(buf.bytes, 32, 32).ok());
}

TEST_CASE("walkCapChain_nextInsideFixedStruct_isRefused", "[vfio_caps]")
{
	InfoBuffer buf(64);
	buf.header(32, 1, 1, 8);
	auto chain = walkCapChain(buf.bytes, 32, 32);
	REQUIRE_FALSE(chain.ok());
	CHECK_THAT(chain.error().message, Catch::Contains("fixed info struct"));
}

TEST_CASE("walkCapChain_emptyBuffer_isRefused", "[vfio_caps]")
{
	std::vector<uint8_t> empty;
	CHECK_FALSE(walkCapChain(empty, 32, 32).ok());
}

TEST_CASE("findCap_returnsFirstCapWithIdOrNothing", "[vfio_caps]")
{
	std::vector<CapView> chain{ { 1, 1, 32, 16 }, { 3, 1, 48, 8 }, { 3, 2, 56, 8 } };
	auto found = findCap(chain, 3);
	REQUIRE(found.has_value());
	CHECK(found->offset == 48);
	CHECK_FALSE(findCap(chain, 2).has_value());
}

// ---- extractCaps / buildCapChain

TEST_CASE("extractCaps_kernelChainAtOffset40_isRebasedToStartAt32", "[vfio_caps]")
{
	InfoBuffer buf(72);
	buf.header(40, VFIO_REGION_INFO_CAP_TYPE, 1, 56);
	buf.put<uint32_t>(48, 0x11);
	buf.put<uint32_t>(52, 0x22);
	buf.header(56, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, 0);
	auto caps = extractCaps(buf.bytes, 40, 32);
	REQUIRE(caps.ok());
	REQUIRE(caps->size() == 2);

	auto chain = buildCapChain(*caps, kRegionInfoSize);
	// Our chain is handed out right after the 32-byte struct, so offsets in it are chain index + 32.
	InfoBuffer out(kRegionInfoSize + chain.size());
	std::memcpy(out.bytes.data() + kRegionInfoSize, chain.data(), chain.size());
	CHECK(out.get<uint16_t>(32) == VFIO_REGION_INFO_CAP_TYPE);
	CHECK(out.get<uint32_t>(36) == 48);
	CHECK(out.get<uint32_t>(40) == 0x11);
	CHECK(out.get<uint32_t>(44) == 0x22);
	CHECK(out.get<uint16_t>(48) == VFIO_REGION_INFO_CAP_MSIX_MAPPABLE);
	CHECK(out.get<uint32_t>(52) == 0);
	auto rewalked = walkCapChain(out.bytes, 32, 32);
	REQUIRE(rewalked.ok());
	CHECK(rewalked->size() == 2);
}

TEST_CASE("buildCapChain_padsEveryCapTo8Bytes", "[vfio_caps]")
{
	std::vector<Capability> caps{ capWithBody(7, { 1, 2, 3 }), capWithBody(9, {}) };
	auto chain = buildCapChain(caps, 32);
	REQUIRE(chain.size() == 16 + 8);
	vfio_info_cap_header first;
	std::memcpy(&first, chain.data(), sizeof(first));
	CHECK(first.next == 32 + 16);
	CHECK(chain[8] == 1);
	CHECK(chain[10] == 3);
	CHECK(chain[11] == 0);
}

TEST_CASE("buildCapChain_noCaps_isEmpty", "[vfio_caps]")
{
	CHECK(buildCapChain({}, 32).empty());
}

// ---- sparse mmap

TEST_CASE("makeSparseMmapCap_roundTripsThroughParseSparseMmap", "[vfio_caps]")
{
	std::vector<MmapArea> areas{ { 0, 0x2000 }, { 0x3000, 0x1000 } };
	Capability cap = makeSparseMmapCap(areas);
	CHECK(cap.id == VFIO_REGION_INFO_CAP_SPARSE_MMAP);
	CHECK(cap.version == 1);
	auto parsed = parseSparseMmap(cap.body);
	REQUIRE(parsed.ok());
	CHECK(*parsed == areas);
}

TEST_CASE("parseSparseMmap_countLargerThanBody_isRefused", "[vfio_caps]")
{
	Capability cap = makeSparseMmapCap(std::vector<MmapArea>{ { 0, 0x1000 } });
	uint32_t lie = 0x10000000;
	std::memcpy(cap.body.data(), &lie, sizeof(lie));
	auto parsed = parseSparseMmap(cap.body);
	REQUIRE_FALSE(parsed.ok());
	CHECK_THAT(parsed.error().message, Catch::Contains("claims"));
}

TEST_CASE("parseSparseMmap_truncatedBody_isRefused", "[vfio_caps]")
{
	std::vector<uint8_t> body{ 1, 0, 0 };
	CHECK_FALSE(parseSparseMmap(body).ok());
}

// ---- IOMMU info

namespace {

// A vfio_iommu_type1_info reply as Linux 6.1 returns it (captured in the lab): migration, DMA-available and
// IOVA-range caps packed back to back, so the 12-byte DMA-available cap leaves the IOVA cap at offset 68.
// With aligned = true the caps are padded to 8 bytes as newer kernels do.
struct IommuInfoLayout {
	size_t dmaAvail = 56;
	size_t iova = 68;
};

InfoBuffer kernelIommuInfo(bool aligned = false, IommuInfoLayout *layout = nullptr)
{
	IommuInfoLayout at;
	at.iova = aligned ? 72 : 68;
	InfoBuffer buf(at.iova + 16 + 2 * 16);
	buf.put<uint32_t>(0, static_cast<uint32_t>(buf.bytes.size()));
	buf.put<uint32_t>(4, VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);
	buf.put<uint64_t>(8, 0x40201000);
	buf.put<uint32_t>(16, 24);
	buf.header(24, VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, 1, static_cast<uint32_t>(at.dmaAvail));
	buf.header(at.dmaAvail, VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, 1, static_cast<uint32_t>(at.iova));
	buf.put<uint32_t>(at.dmaAvail + 8, 65535);
	buf.header(at.iova, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1, 0);
	buf.put<uint32_t>(at.iova + 8, 2);
	buf.put<uint64_t>(at.iova + 16, 0);
	buf.put<uint64_t>(at.iova + 24, 0xfedfffff);
	buf.put<uint64_t>(at.iova + 32, 0xfef00000);
	buf.put<uint64_t>(at.iova + 40, 0x7fffffffff);
	if (layout)
		*layout = at;
	return buf;
}

} // namespace

TEST_CASE("parseIommuInfoCaps_kernelReply_yieldsIovaRangesAndDmaAvail", "[vfio_caps]")
{
	InfoBuffer buf = kernelIommuInfo();
	auto caps = parseIommuInfoCaps(buf.bytes);
	REQUIRE(caps.ok());
	CHECK(caps->hasIovaRanges);
	REQUIRE(caps->iovaRanges.size() == 2);
	CHECK(caps->iovaRanges[0].start == 0);
	CHECK(caps->iovaRanges[0].last == 0xfedfffff);
	CHECK(caps->iovaRanges[1].start == 0xfef00000);
	CHECK(caps->iovaRanges[1].last == 0x7fffffffff);
	REQUIRE(caps->dmaAvail.has_value());
	CHECK(*caps->dmaAvail == 65535);
}

TEST_CASE("parseIommuInfoCaps_capsPaddedTo8Bytes_parseTheSame", "[vfio_caps]")
{
	InfoBuffer buf = kernelIommuInfo(true);
	auto caps = parseIommuInfoCaps(buf.bytes);
	REQUIRE(caps.ok());
	REQUIRE(caps->iovaRanges.size() == 2);
	CHECK(caps->iovaRanges[1].last == 0x7fffffffff);
	CHECK(caps->dmaAvail == 65535u);
}

TEST_CASE("parseIommuInfoCaps_withoutCapsFlag_isEmpty", "[vfio_caps]")
{
	InfoBuffer buf = kernelIommuInfo();
	buf.put<uint32_t>(4, VFIO_IOMMU_INFO_PGSIZES);
	auto caps = parseIommuInfoCaps(buf.bytes);
	REQUIRE(caps.ok());
	CHECK_FALSE(caps->hasIovaRanges);
	CHECK_FALSE(caps->dmaAvail.has_value());
}

TEST_CASE("parseIommuInfoCaps_rangeCountBeyondBuffer_isRefused", "[vfio_caps]")
{
	IommuInfoLayout at;
	InfoBuffer buf = kernelIommuInfo(false, &at);
	buf.put<uint32_t>(at.iova + 8, 3);
	CHECK_FALSE(parseIommuInfoCaps(buf.bytes).ok());
	buf.put<uint32_t>(at.iova + 8, 0xffffffff);
	CHECK_FALSE(parseIommuInfoCaps(buf.bytes).ok());
}

TEST_CASE("parseIommuInfoCaps_invertedRange_isRefused", "[vfio_caps]")
{
	IommuInfoLayout at;
	InfoBuffer buf = kernelIommuInfo(false, &at);
	buf.put<uint64_t>(at.iova + 16, 0x1000);
	buf.put<uint64_t>(at.iova + 24, 0xfff);
	CHECK_FALSE(parseIommuInfoCaps(buf.bytes).ok());
}

TEST_CASE("parseIommuInfoCaps_overlappingRanges_areRefused", "[vfio_caps]")
{
	IommuInfoLayout at;
	InfoBuffer buf = kernelIommuInfo(false, &at);
	buf.put<uint64_t>(at.iova + 32, 0xfed00000);
	CHECK_FALSE(parseIommuInfoCaps(buf.bytes).ok());
}

TEST_CASE("parseIommuInfoCaps_unknownIovaCapVersion_isSkipped", "[vfio_caps]")
{
	IommuInfoLayout at;
	InfoBuffer buf = kernelIommuInfo(false, &at);
	buf.put<uint16_t>(at.iova + 2, 2);
	auto caps = parseIommuInfoCaps(buf.bytes);
	REQUIRE(caps.ok());
	CHECK_FALSE(caps->hasIovaRanges);
}

TEST_CASE("parseIommuInfoCaps_capOffsetLoop_isRefused", "[vfio_caps]")
{
	IommuInfoLayout at;
	InfoBuffer buf = kernelIommuInfo(false, &at);
	buf.header(at.iova, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1, 24);
	CHECK_FALSE(parseIommuInfoCaps(buf.bytes).ok());
}

TEST_CASE("parseIommuInfoCaps_bufferShorterThanFixedStruct_isRefused", "[vfio_caps]")
{
	std::vector<uint8_t> tiny(12, 0);
	CHECK_FALSE(parseIommuInfoCaps(tiny).ok());
}

// ---- MSI-X capability

TEST_CASE("parseMsixCapability_afterAnotherCap_readsTableAndPba", "[vfio_caps]")
{
	auto config = configWithCaps(0x40);
	config[0x40] = 0x05; // MSI
	config[0x41] = 0x50;
	putMsix(config, 0x50, 0, 0x0004, 0x2000 | 3, 0x3000 | 3); // 5 entries in BAR3
	auto msix = parseMsixCapability(config);
	REQUIRE(msix.ok());
	REQUIRE(msix->has_value());
	const MsixCapability &m = **msix;
	CHECK(m.capOffset == 0x50);
	CHECK(m.entries == 5);
	CHECK(m.tableBar == 3);
	CHECK(m.tableOffset == 0x2000);
	CHECK(m.pbaBar == 3);
	CHECK(m.pbaOffset == 0x3000);
	CHECK(m.tableBytes() == 80);
	CHECK(m.pbaBytes() == 8);
}

TEST_CASE("parseMsixCapability_maximumTableSize_gives2048EntriesAnd256PbaBytes", "[vfio_caps]")
{
	auto config = configWithCaps(0x70);
	putMsix(config, 0x70, 0, 0xc7ff, 0, 0x8000); // enable+mask bits must not leak into the size
	auto msix = parseMsixCapability(config);
	REQUIRE(msix.ok());
	REQUIRE(msix->has_value());
	CHECK((*msix)->entries == 2048);
	CHECK((*msix)->tableBytes() == 32768);
	CHECK((*msix)->pbaBytes() == 256);
}

TEST_CASE("parseMsixCapability_noCapabilityListBit_meansNoMsix", "[vfio_caps]")
{
	auto config = configWithCaps(0x40);
	config[0x06] = 0;
	putMsix(config, 0x40, 0, 0, 0, 0);
	auto msix = parseMsixCapability(config);
	REQUIRE(msix.ok());
	CHECK_FALSE(msix->has_value());
}

TEST_CASE("parseMsixCapability_listWithoutMsix_meansNoMsix", "[vfio_caps]")
{
	auto config = configWithCaps(0x40);
	config[0x40] = 0x01; // PM
	config[0x41] = 0x48;
	config[0x48] = 0x05; // MSI
	auto msix = parseMsixCapability(config);
	REQUIRE(msix.ok());
	CHECK_FALSE(msix->has_value());
}

TEST_CASE("parseMsixCapability_loopingList_isRefused", "[vfio_caps]")
{
	auto config = configWithCaps(0x40);
	config[0x40] = 0x01;
	config[0x41] = 0x48;
	config[0x48] = 0x05;
	config[0x49] = 0x40;
	auto msix = parseMsixCapability(config);
	REQUIRE_FALSE(msix.ok());
	CHECK_THAT(msix.error().message, Catch::Contains("loops"));
}

TEST_CASE("parseMsixCapability_pointerIntoHeader_isRefused", "[vfio_caps]")
{
	auto config = configWithCaps(0x10);
	CHECK_FALSE(parseMsixCapability(config).ok());
}

TEST_CASE("parseMsixCapability_pointerBeyondShortDump_isRefused", "[vfio_caps]")
{
	auto config = configWithCaps(0x80);
	config.resize(0x80);
	CHECK_FALSE(parseMsixCapability(config).ok());
}

TEST_CASE("parseMsixCapability_capTruncatedAtEndOfStandardSpace_isRefused", "[vfio_caps]")
{
	auto config = configWithCaps(0xf8);
	config[0xf8] = kPciCapIdMsix;
	CHECK_FALSE(parseMsixCapability(config).ok());
}

TEST_CASE("parseMsixCapability_birAbove5_isRefused", "[vfio_caps]")
{
	auto config = configWithCaps(0x40);
	putMsix(config, 0x40, 0, 0, 0x1000 | 6, 0x2000);
	auto msix = parseMsixCapability(config);
	REQUIRE_FALSE(msix.ok());
	CHECK_THAT(msix.error().message, Catch::Contains("BIR"));
}

TEST_CASE("parseMsixCapability_allOnesId_endsWalkWithoutMsix", "[vfio_caps]")
{
	auto config = configWithCaps(0x40);
	config[0x40] = 0xff;
	config[0x41] = 0xff;
	auto msix = parseMsixCapability(config);
	REQUIRE(msix.ok());
	CHECK_FALSE(msix->has_value());
}

TEST_CASE("parseMsixCapability_dumpShorterThanHeader_isRefused", "[vfio_caps]")
{
	std::vector<uint8_t> config(32, 0);
	CHECK_FALSE(parseMsixCapability(config).ok());
}

// ---- MSI-X sparse areas

TEST_CASE("msixSparseAreas_tableInMiddleOfBar_leavesPagesBeforeAndAfter", "[vfio_caps]")
{
	auto msix = msixAt(0, 0x2000, 2, 0, 4);
	auto areas = msixSparseAreas(0, 0x4000, msix, std::nullopt, 4096);
	CHECK(areas == std::vector<MmapArea>{ { 0, 0x2000 }, { 0x3000, 0x1000 } });
}

TEST_CASE("msixSparseAreas_tableAndPbaInSamePage_excludeOnePage", "[vfio_caps]")
{
	auto msix = msixAt(3, 0x1000, 3, 0x1800, 8);
	auto areas = msixSparseAreas(3, 0x4000, msix, std::nullopt, 4096);
	CHECK(areas == std::vector<MmapArea>{ { 0, 0x1000 }, { 0x2000, 0x2000 } });
}

TEST_CASE("msixSparseAreas_tableAndPbaInDifferentPages_excludeBoth", "[vfio_caps]")
{
	auto msix = msixAt(3, 0, 3, 0x2000, 5); // QEMU e1000e: table at 0 and PBA at 0x2000 of a 16 KiB BAR3
	auto areas = msixSparseAreas(3, 0x4000, msix, std::nullopt, 4096);
	CHECK(areas == std::vector<MmapArea>{ { 0x1000, 0x1000 }, { 0x3000, 0x1000 } });
}

TEST_CASE("msixSparseAreas_tableStraddlingPageBoundary_excludesBothPages", "[vfio_caps]")
{
	auto msix = msixAt(0, 0x1ff0, 1, 0, 2); // 32 bytes from 0x1ff0 to 0x2010
	auto areas = msixSparseAreas(0, 0x8000, msix, std::nullopt, 4096);
	CHECK(areas == std::vector<MmapArea>{ { 0, 0x1000 }, { 0x3000, 0x5000 } });
}

TEST_CASE("msixSparseAreas_largerHostPages_widenTheHole", "[vfio_caps]")
{
	auto msix = msixAt(0, 0x12000, 1, 0, 16);
	auto areas = msixSparseAreas(0, 0x40000, msix, std::nullopt, 0x10000);
	CHECK(areas == std::vector<MmapArea>{ { 0, 0x10000 }, { 0x20000, 0x20000 } });
}

TEST_CASE("msixSparseAreas_existingKernelAreas_areIntersected", "[vfio_caps]")
{
	auto msix = msixAt(0, 0x2000, 0, 0x6000, 4);
	std::vector<MmapArea> kernel{ { 0, 0x3000 }, { 0x5000, 0x3000 } };
	auto areas = msixSparseAreas(0, 0x8000, msix, kernel, 4096);
	CHECK(areas == std::vector<MmapArea>{ { 0, 0x2000 }, { 0x5000, 0x1000 }, { 0x7000, 0x1000 } });
}

TEST_CASE("msixSparseAreas_kernelAreaPastBarEnd_isClipped", "[vfio_caps]")
{
	auto msix = msixAt(0, 0, 1, 0, 1);
	std::vector<MmapArea> kernel{ { 0x1000, UINT64_MAX }, { 0x9000, 0x1000 } };
	auto areas = msixSparseAreas(0, 0x4000, msix, kernel, 4096);
	CHECK(areas == std::vector<MmapArea>{ { 0x1000, 0x3000 } });
}

TEST_CASE("msixSparseAreas_tableCoveringWholeBar_leavesNothing", "[vfio_caps]")
{
	auto msix = msixAt(2, 0, 2, 0x800, 128); // 2 KiB table, PBA right after, one 4 KiB BAR
	CHECK(msixSparseAreas(2, 0x1000, msix, std::nullopt, 4096).empty());
}

TEST_CASE("msixSparseAreas_onlyPbaInThisBar_excludesOnlyPba", "[vfio_caps]")
{
	auto msix = msixAt(0, 0, 4, 0x1000, 3);
	auto areas = msixSparseAreas(4, 0x4000, msix, std::nullopt, 4096);
	CHECK(areas == std::vector<MmapArea>{ { 0, 0x1000 }, { 0x2000, 0x2000 } });
}

TEST_CASE("subtractAreas_holeWithOverflowingEnd_removesTail", "[vfio_caps]")
{
	std::vector<MmapArea> areas{ { 0, 0x4000 } };
	std::vector<MmapArea> holes{ { 0x2000, UINT64_MAX } };
	CHECK(subtractAreas(areas, holes, 0x4000) == std::vector<MmapArea>{ { 0, 0x2000 } });
}

// ---- exposeRegion

namespace {

const uint32_t kRw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
const uint32_t kRwMmap = kRw | VFIO_REGION_INFO_FLAG_MMAP;

bool hasCap(const RegionExposure &e, uint16_t id)
{
	for (const Capability &c : e.caps)
		if (c.id == id)
			return true;
	return false;
}

} // namespace

TEST_CASE("exposeRegion_msixBarWithoutMsixMappable_getsSparseCapExcludingTable", "[vfio_caps]")
{
	auto msix = msixAt(0, 0x2000, 0, 0x3000, 4);
	auto e = exposeRegion(0, kRwMmap, 0x8000, {}, msix, true, 4096);
	REQUIRE(e.ok());
	CHECK(e->flags == (kRwMmap | VFIO_REGION_INFO_FLAG_CAPS));
	REQUIRE(e->caps.size() == 1);
	auto areas = parseSparseMmap(e->caps[0].body);
	REQUIRE(areas.ok());
	CHECK(*areas == std::vector<MmapArea>{ { 0, 0x2000 }, { 0x4000, 0x4000 } });
}

TEST_CASE("exposeRegion_kernelSaysMsixMappable_keepsWholeBarMappable", "[vfio_caps]")
{
	auto msix = msixAt(3, 0, 3, 0x2000, 5);
	std::vector<Capability> caps{ Capability{ VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, {} } };
	auto e = exposeRegion(3, kRwMmap, 0x4000, caps, msix, true, 4096);
	REQUIRE(e.ok());
	CHECK(e->flags == (kRwMmap | VFIO_REGION_INFO_FLAG_CAPS));
	CHECK(hasCap(*e, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE));
	CHECK_FALSE(hasCap(*e, VFIO_REGION_INFO_CAP_SPARSE_MMAP));
}

TEST_CASE("exposeRegion_tableCoversWholeBar_dropsMmapFlagAndCaps", "[vfio_caps]")
{
	auto msix = msixAt(1, 0, 1, 0x800, 64);
	auto e = exposeRegion(1, kRwMmap, 0x1000, {}, msix, true, 4096);
	REQUIRE(e.ok());
	CHECK(e->flags == kRw);
	CHECK(e->caps.empty());
}

TEST_CASE("exposeRegion_kernelSparseCap_isReplacedByIntersection", "[vfio_caps]")
{
	auto msix = msixAt(0, 0x1000, 0, 0x1800, 4);
	std::vector<MmapArea> kernelAreas{ { 0, 0x2000 } };
	std::vector<Capability> caps{ makeSparseMmapCap(kernelAreas) };
	auto e = exposeRegion(0, kRwMmap, 0x4000, caps, msix, true, 4096);
	REQUIRE(e.ok());
	REQUIRE(e->caps.size() == 1);
	auto areas = parseSparseMmap(e->caps[0].body);
	REQUIRE(areas.ok());
	CHECK(*areas == std::vector<MmapArea>{ { 0, 0x1000 } });
}

TEST_CASE("exposeRegion_malformedKernelSparseCap_isAnError", "[vfio_caps]")
{
	auto msix = msixAt(0, 0x1000, 0, 0x1800, 4);
	std::vector<Capability> caps{ capWithBody(VFIO_REGION_INFO_CAP_SPARSE_MMAP, { 9, 0, 0, 0, 0, 0, 0, 0 }) };
	auto e = exposeRegion(0, kRwMmap, 0x4000, caps, msix, true, 4096);
	REQUIRE_FALSE(e.ok());
	CHECK_THAT(e.error().message, Catch::Contains("region 0"));
}

TEST_CASE("exposeRegion_mmapNotAllowed_clearsMmapAndDropsMmapCapsButKeepsOthers", "[vfio_caps]")
{
	std::vector<Capability> caps{ makeSparseMmapCap(std::vector<MmapArea>{ { 0, 0x1000 } }),
				      Capability{ VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, {} },
				      capWithBody(VFIO_REGION_INFO_CAP_TYPE, std::vector<uint8_t>(8, 0)) };
	auto e = exposeRegion(9, kRwMmap | VFIO_REGION_INFO_FLAG_CAPS, 0x4000, caps, std::nullopt, false, 4096);
	REQUIRE(e.ok());
	CHECK(e->flags == (kRw | VFIO_REGION_INFO_FLAG_CAPS));
	REQUIRE(e->caps.size() == 1);
	CHECK(e->caps[0].id == VFIO_REGION_INFO_CAP_TYPE);
}

TEST_CASE("exposeRegion_mmapNotAllowedAndNoOtherCaps_clearsCapsFlag", "[vfio_caps]")
{
	std::vector<Capability> caps{ makeSparseMmapCap(std::vector<MmapArea>{ { 0, 0x1000 } }) };
	auto e = exposeRegion(0, kRwMmap | VFIO_REGION_INFO_FLAG_CAPS, 0x4000, caps, std::nullopt, false, 4096);
	REQUIRE(e.ok());
	CHECK(e->flags == kRw);
	CHECK(e->caps.empty());
}

TEST_CASE("exposeRegion_barWithoutMsix_isForwardedUnchanged", "[vfio_caps]")
{
	auto msix = msixAt(3, 0, 3, 0x2000, 5);
	auto e = exposeRegion(0, kRwMmap, 0x20000, {}, msix, true, 4096);
	REQUIRE(e.ok());
	CHECK(e->flags == kRwMmap);
	CHECK(e->caps.empty());
}

TEST_CASE("exposeRegion_configRegion_isNeverTreatedAsMsixBar", "[vfio_caps]")
{
	auto msix = msixAt(5, 0, 5, 0x800, 4);
	auto e = exposeRegion(VFIO_PCI_CONFIG_REGION_INDEX, kRw, 256, {}, msix, true, 4096);
	REQUIRE(e.ok());
	CHECK(e->flags == kRw);
}

TEST_CASE("exposeRegion_kernelSparseAreaPastRegionEnd_isClipped", "[vfio_caps]")
{
	std::vector<Capability> caps{ makeSparseMmapCap(std::vector<MmapArea>{ { 0x1000, 0x10000 }, { 0x9000, 0x1000 } }) };
	auto e = exposeRegion(2, kRwMmap | VFIO_REGION_INFO_FLAG_CAPS, 0x4000, caps, std::nullopt, true, 4096);
	REQUIRE(e.ok());
	CHECK(e->flags == (kRwMmap | VFIO_REGION_INFO_FLAG_CAPS));
	REQUIRE(e->caps.size() == 1);
	auto areas = parseSparseMmap(e->caps[0].body);
	REQUIRE(areas.ok());
	CHECK(*areas == std::vector<MmapArea>{ { 0x1000, 0x3000 } });
}

TEST_CASE("exposeRegion_kernelSparseCapWithNoAreas_dropsMmapFlag", "[vfio_caps]")
{
	std::vector<Capability> caps{ makeSparseMmapCap(std::vector<MmapArea>{}) };
	auto e = exposeRegion(2, kRwMmap | VFIO_REGION_INFO_FLAG_CAPS, 0x4000, caps, std::nullopt, true, 4096);
	REQUIRE(e.ok());
	CHECK(e->flags == kRw);
	CHECK(e->caps.empty());
}

TEST_CASE("exposeRegion_malformedSparseCapOnPlainBar_isAnError", "[vfio_caps]")
{
	std::vector<Capability> caps{ capWithBody(VFIO_REGION_INFO_CAP_SPARSE_MMAP, { 2, 0, 0, 0, 0, 0, 0, 0 }) };
	CHECK_FALSE(exposeRegion(2, kRwMmap, 0x4000, caps, std::nullopt, true, 4096).ok());
}

TEST_CASE("exposeRegion_unknownSparseVersionOnPlainBar_passesUnchanged", "[vfio_caps]")
{
	std::vector<Capability> caps{ Capability{ VFIO_REGION_INFO_CAP_SPARSE_MMAP, 2, { 1, 2, 3 } } };
	auto e = exposeRegion(2, kRwMmap, 0x4000, caps, std::nullopt, true, 4096);
	REQUIRE(e.ok());
	REQUIRE(e->caps.size() == 1);
	CHECK(e->caps[0].version == 2);
	CHECK(e->caps[0].body == std::vector<uint8_t>{ 1, 2, 3 });
}

TEST_CASE("exposeRegion_unknownSparseVersionOnMsixBar_isAnError", "[vfio_caps]")
{
	auto msix = msixAt(0, 0, 0, 0x800, 4);
	std::vector<Capability> caps{ Capability{ VFIO_REGION_INFO_CAP_SPARSE_MMAP, 2, {} } };
	CHECK_FALSE(exposeRegion(0, kRwMmap, 0x4000, caps, msix, true, 4096).ok());
}

TEST_CASE("exposeRegion_mmapCapsOnRegionWithoutMmapFlag_areDropped", "[vfio_caps]")
{
	std::vector<Capability> caps{ makeSparseMmapCap(std::vector<MmapArea>{ { 0, 0x1000 } }),
				      Capability{ VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, {} } };
	auto e = exposeRegion(3, kRw | VFIO_REGION_INFO_FLAG_CAPS, 0x4000, caps, std::nullopt, true, 4096);
	REQUIRE(e.ok());
	CHECK(e->flags == kRw);
	CHECK(e->caps.empty());
}

TEST_CASE("exposeRegion_twoSparseCaps_isAnError", "[vfio_caps]")
{
	std::vector<Capability> caps{ Capability{ VFIO_REGION_INFO_CAP_SPARSE_MMAP, 2, {} },
				      makeSparseMmapCap(std::vector<MmapArea>{ { 0, 0x1000 } }) };
	auto e = exposeRegion(2, kRwMmap, 0x4000, caps, std::nullopt, true, 4096);
	REQUIRE_FALSE(e.ok());
	CHECK_THAT(e.error().message, Catch::Contains("more than one"));
}
