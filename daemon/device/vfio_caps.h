// SPDX-License-Identifier: Apache-2.0
// Pure, bounds-checked helpers for VFIO capability chains, IOMMU info caps, the PCI MSI-X capability and MSI-X-free mmap areas.
#pragma once

#include <linux/vfio.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/result.h"
#include "device/device.h"

// Nothing here issues an ioctl or trusts its input: every offset and count is checked against the
// buffer it came with, so the same code can parse kernel replies, vfio-user replies and fuzz input.
namespace vfio_broker::device {

// Linux 6.1's vfio_info_cap_add() packs capabilities back to back, so a 12-byte DMA-available cap puts the
// IOVA-range cap at offset 68 of a VFIO_IOMMU_GET_INFO reply (seen in the lab); later kernels pad each to 8.
// Walkers therefore accept 4-byte alignment (that of the header's u32 "next"), and read fields with memcpy.
constexpr uint32_t kCapMinAlign = 4;
// Chains we build are padded to 8, as newer kernels do, so the u64 fields in them are naturally aligned.
constexpr uint32_t kCapAlign = 8;
constexpr uint32_t kCapHeaderSize = sizeof(struct vfio_info_cap_header);
// The fixed part of vfio_region_info; our region capability chains start right after it.
constexpr uint32_t kRegionInfoSize = sizeof(struct vfio_region_info);

// A capability located inside an info buffer.
struct CapView {
	uint16_t id = 0;
	uint16_t version = 0;
	uint32_t offset = 0; // of its header, from the start of the info buffer
	// Bytes it may occupy, header included: up to the next capability in memory or the end of the buffer.
	// Chains carry no lengths, so this is the most a parser may read.
	uint32_t length = 0;
};

// A capability detached from any buffer. body holds the bytes after the header (padding included).
struct Capability {
	uint16_t id = 0;
	uint16_t version = 0;
	std::vector<uint8_t> body;
};

// Walk the chain whose first header is at firstOffset (0 = no chain) in an info buffer. Refuses headers
// before minOffset (inside the fixed struct), not 4-byte aligned, running past the buffer, or visited twice.
Result<std::vector<CapView>> walkCapChain(std::span<const uint8_t> info, uint32_t firstOffset, uint32_t minOffset);

// The first capability with this id, if any.
std::optional<CapView> findCap(std::span<const CapView> chain, uint16_t id);

// walkCapChain() plus a copy of each capability, in chain order.
Result<std::vector<Capability>> extractCaps(std::span<const uint8_t> info, uint32_t firstOffset, uint32_t minOffset);

// Serialise caps as a chain whose first header sits at base (e.g. kRegionInfoSize): returns the bytes that
// follow the fixed struct, each "next" relative to the start of the struct, 8-byte aligned, last next = 0.
std::vector<uint8_t> buildCapChain(std::span<const Capability> caps, uint32_t base);

// ---- Region capabilities

struct MmapArea {
	uint64_t offset = 0; // within the region
	uint64_t size = 0;
	bool operator==(const MmapArea &) const = default;
};

// Areas of a VFIO_REGION_INFO_CAP_SPARSE_MMAP body; refuses a count that does not fit.
Result<std::vector<MmapArea>> parseSparseMmap(std::span<const uint8_t> body);
Capability makeSparseMmapCap(std::span<const MmapArea> areas);

// ---- IOMMU info

struct IommuInfoCaps {
	bool hasIovaRanges = false;
	std::vector<IovaRange> iovaRanges; // sorted, non-overlapping, start <= last
	std::optional<uint32_t> dmaAvail;  // VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL
};

// Parse the caps of a whole vfio_iommu_type1_info reply (fixed struct included). Without
// VFIO_IOMMU_INFO_CAPS the result is empty.
Result<IommuInfoCaps> parseIommuInfoCaps(std::span<const uint8_t> info);

// ---- PCI MSI-X

constexpr uint8_t kPciCapIdMsix = 0x11;

struct MsixCapability {
	uint8_t capOffset = 0;   // in config space
	uint32_t entries = 0;    // table size, 1..2048
	uint8_t tableBar = 0;    // BIR, 0..5
	uint32_t tableOffset = 0;
	uint8_t pbaBar = 0;
	uint32_t pbaOffset = 0;

	uint64_t tableBytes() const { return uint64_t(entries) * 16; }
	uint64_t pbaBytes() const { return (uint64_t(entries) + 63) / 64 * 8; }
};

// Find the MSI-X capability in a config-space dump (at least the 64-byte header; MSI-X lives in the first
// 256 bytes). nullopt when the device has none; an error when the capability list is malformed.
Result<std::optional<MsixCapability>> parseMsixCapability(std::span<const uint8_t> config);

// Remove holes from a list of areas (all clipped to regionSize first); the result is sorted by offset.
std::vector<MmapArea> subtractAreas(std::span<const MmapArea> areas, std::span<const MmapArea> holes,
				    uint64_t regionSize);

// The parts of BAR `bar` (regionSize bytes) that may be mmap'd while its MSI-X table and PBA stay trapped:
// the kernel's sparse areas (or the whole BAR when it gave none) minus the table/PBA pages, widened to
// pageSize (a power of two). Empty when nothing is left.
std::vector<MmapArea> msixSparseAreas(uint32_t bar, uint64_t regionSize, const MsixCapability &msix,
				      const std::optional<std::vector<MmapArea>> &kernelAreas, uint64_t pageSize);

// What a client is told about one region: flags (CAPS set iff caps is non-empty) and the capability chain.
struct RegionExposure {
	uint32_t flags = 0;
	std::vector<Capability> caps;
};

// Turn the kernel's view of region `index` into what we expose: without mmap (!allowMmap, or no MMAP flag)
// the MMAP flag, sparse and MSI-X-mappable caps all go; for the BAR(s) holding the MSI-X table/PBA without
// the kernel's VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, a sparse cap that keeps the table/PBA pages out. A kernel
// sparse cap is clipped to the region, and MMAP is dropped when no area is left. Other caps pass unchanged.
// Fails only on a malformed kernel sparse cap.
Result<RegionExposure> exposeRegion(uint32_t index, uint32_t kernelFlags, uint64_t size, std::vector<Capability> caps,
				    const std::optional<MsixCapability> &msix, bool allowMmap, uint64_t pageSize);

} // namespace vfio_broker::device
