// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: VFIO capability chains, IOMMU info caps, sparse-mmap bodies and the MSI-X
// capability parser, all on arbitrary bytes (they parse kernel replies we must not trust blindly).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "device/vfio_caps.h"

using namespace vfio_broker::device;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	std::span<const uint8_t> in(data, size);
	uint32_t first = 0;
	if (size >= 4)
		std::memcpy(&first, data, 4);
	if (auto chain = walkCapChain(in, first % (size + 1), kRegionInfoSize); chain)
		(void)findCap(*chain, VFIO_REGION_INFO_CAP_SPARSE_MMAP);
	if (auto caps = extractCaps(in, first % (size + 1), kRegionInfoSize); caps) {
		for (const auto &c : *caps)
			if (c.id == VFIO_REGION_INFO_CAP_SPARSE_MMAP)
				(void)parseSparseMmap(c.body);
		(void)buildCapChain(*caps, kRegionInfoSize);
	}
	(void)parseIommuInfoCaps(in);
	(void)parseSparseMmap(in);
	if (auto msix = parseMsixCapability(in); msix && *msix) {
		for (uint32_t bar = 0; bar < 6; bar++)
			(void)msixSparseAreas(bar, 1ull << 20, **msix, std::nullopt, 4096);
	}
	return 0;
}
