// SPDX-License-Identifier: Apache-2.0
// Walks, builds and interprets VFIO capability chains and the PCI MSI-X capability without touching a device.
#include "device/vfio_caps.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <limits>
#include <unordered_set>

namespace vfio_broker::device {

namespace {

// Unaligned-safe load; every caller has checked offset + sizeof(T) against the buffer first.
template<typename T>
T load(std::span<const uint8_t> buf, size_t offset)
{
	T v;
	std::memcpy(&v, buf.data() + offset, sizeof(T));
	return v;
}

template<typename T>
void store(std::vector<uint8_t> &buf, size_t offset, const T &v)
{
	std::memcpy(buf.data() + offset, &v, sizeof(T));
}

uint64_t alignUp(uint64_t v, uint64_t align)
{
	return (v + align - 1) & ~(align - 1);
}

bool isPowerOfTwo(uint64_t v)
{
	return v && !(v & (v - 1));
}

} // namespace

Result<std::vector<CapView>> walkCapChain(std::span<const uint8_t> info, uint32_t firstOffset, uint32_t minOffset)
{
	std::vector<CapView> chain;
	if (firstOffset == 0)
		return chain;

	// Offsets are u32, so nothing past 4 GiB is addressable anyway.
	const uint64_t size = std::min<uint64_t>(info.size(), std::numeric_limits<uint32_t>::max());
	std::unordered_set<uint32_t> seen;
	for (uint32_t off = firstOffset; off != 0;) {
		if (off < minOffset)
			return makeError(EINVAL, "capability at offset %u overlaps the %u-byte fixed info struct",
					 off, minOffset);
		if (off % kCapMinAlign)
			return makeError(EINVAL, "capability at offset %u is not %u-byte aligned", off, kCapMinAlign);
		if (off > size || size - off < kCapHeaderSize)
			return makeError(EINVAL, "capability at offset %u runs past the end of the %llu-byte info buffer",
					 off, static_cast<unsigned long long>(size));
		if (!seen.insert(off).second)
			return makeError(EINVAL, "capability chain loops back to offset %u", off);
		auto header = load<vfio_info_cap_header>(info, off);
		chain.push_back(CapView{ header.id, header.version, off, 0 });
		off = header.next;
	}

	// A capability may extend up to whichever header comes next in memory, whatever the chain order.
	std::vector<uint32_t> starts;
	starts.reserve(chain.size());
	for (const CapView &cap : chain)
		starts.push_back(cap.offset);
	std::sort(starts.begin(), starts.end());
	for (CapView &cap : chain) {
		auto next = std::upper_bound(starts.begin(), starts.end(), cap.offset);
		uint64_t end = next == starts.end() ? size : *next;
		// Headers that overlap (two offsets closer than a header) make no chain a kernel builds.
		if (end - cap.offset < kCapHeaderSize)
			return makeError(EINVAL, "capability headers at offsets %u and %llu overlap", cap.offset,
					 static_cast<unsigned long long>(end));
		cap.length = static_cast<uint32_t>(end - cap.offset);
	}
	return chain;
}

std::optional<CapView> findCap(std::span<const CapView> chain, uint16_t id)
{
	for (const CapView &cap : chain)
		if (cap.id == id)
			return cap;
	return std::nullopt;
}

Result<std::vector<Capability>> extractCaps(std::span<const uint8_t> info, uint32_t firstOffset, uint32_t minOffset)
{
	auto chain = walkCapChain(info, firstOffset, minOffset);
	if (!chain)
		return chain.takeError();
	std::vector<Capability> caps;
	caps.reserve(chain->size());
	for (const CapView &view : *chain) {
		auto body = info.subspan(view.offset + kCapHeaderSize, view.length - kCapHeaderSize);
		caps.push_back(Capability{ view.id, view.version, std::vector<uint8_t>(body.begin(), body.end()) });
	}
	return caps;
}

std::vector<uint8_t> buildCapChain(std::span<const Capability> caps, uint32_t base)
{
	// Callers put the chain right after a fixed struct whose size is a multiple of 8.
	assert(base % kCapAlign == 0);
	std::vector<uint8_t> out;
	for (size_t i = 0; i < caps.size(); i++) {
		size_t at = out.size();
		size_t padded = alignUp(kCapHeaderSize + caps[i].body.size(), kCapAlign);
		out.resize(at + padded, 0);
		vfio_info_cap_header header{};
		header.id = caps[i].id;
		header.version = caps[i].version;
		header.next = i + 1 < caps.size() ? static_cast<uint32_t>(base + at + padded) : 0;
		store(out, at, header);
		if (!caps[i].body.empty())
			std::memcpy(out.data() + at + kCapHeaderSize, caps[i].body.data(), caps[i].body.size());
	}
	return out;
}

Result<std::vector<MmapArea>> parseSparseMmap(std::span<const uint8_t> body)
{
	constexpr size_t kFixed = sizeof(vfio_region_info_cap_sparse_mmap) - kCapHeaderSize;
	constexpr size_t kArea = sizeof(vfio_region_sparse_mmap_area);
	if (body.size() < kFixed)
		return makeError(EINVAL, "sparse mmap capability is truncated (%zu bytes)", body.size());
	uint32_t count = load<uint32_t>(body, 0);
	if (count > (body.size() - kFixed) / kArea)
		return makeError(EINVAL, "sparse mmap capability claims %u areas but holds room for %zu", count,
				 (body.size() - kFixed) / kArea);
	std::vector<MmapArea> areas(count);
	for (uint32_t i = 0; i < count; i++) {
		auto area = load<vfio_region_sparse_mmap_area>(body, kFixed + i * kArea);
		areas[i] = MmapArea{ area.offset, area.size };
	}
	return areas;
}

Capability makeSparseMmapCap(std::span<const MmapArea> areas)
{
	constexpr size_t kFixed = sizeof(vfio_region_info_cap_sparse_mmap) - kCapHeaderSize;
	constexpr size_t kArea = sizeof(vfio_region_sparse_mmap_area);
	Capability cap{ VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, std::vector<uint8_t>(kFixed + areas.size() * kArea, 0) };
	store(cap.body, 0, static_cast<uint32_t>(areas.size()));
	for (size_t i = 0; i < areas.size(); i++) {
		vfio_region_sparse_mmap_area area{ areas[i].offset, areas[i].size };
		store(cap.body, kFixed + i * kArea, area);
	}
	return cap;
}

Result<IommuInfoCaps> parseIommuInfoCaps(std::span<const uint8_t> info)
{
	IommuInfoCaps out;
	if (info.size() < sizeof(vfio_iommu_type1_info))
		return makeError(EINVAL, "IOMMU info is truncated (%zu bytes)", info.size());
	auto fixed = load<vfio_iommu_type1_info>(info, 0);
	if (!(fixed.flags & VFIO_IOMMU_INFO_CAPS))
		return out;
	auto chain = walkCapChain(info, fixed.cap_offset, sizeof(vfio_iommu_type1_info));
	if (!chain)
		return withContext(chain.takeError(), "IOMMU info");

	// Only version 1 layouts are known; a later version is skipped rather than misread.
	if (auto cap = findCap(*chain, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE); cap && cap->version == 1) {
		constexpr size_t kFixed = sizeof(vfio_iommu_type1_info_cap_iova_range);
		constexpr size_t kRange = sizeof(vfio_iova_range);
		if (cap->length < kFixed)
			return makeError(EINVAL, "IOVA range capability is truncated (%u bytes)", cap->length);
		auto hdr = load<vfio_iommu_type1_info_cap_iova_range>(info, cap->offset);
		if (hdr.nr_iovas > (cap->length - kFixed) / kRange)
			return makeError(EINVAL, "IOVA range capability claims %u ranges but holds room for %zu",
					 hdr.nr_iovas, (cap->length - kFixed) / kRange);
		for (uint32_t i = 0; i < hdr.nr_iovas; i++) {
			auto range = load<vfio_iova_range>(info, cap->offset + kFixed + i * kRange);
			if (range.start > range.end)
				return makeError(EINVAL, "IOVA range %u is inverted (0x%llx-0x%llx)", i,
						 static_cast<unsigned long long>(range.start),
						 static_cast<unsigned long long>(range.end));
			// Consumers search these windows in order, so overlap or disorder is malformed.
			if (!out.iovaRanges.empty() && range.start <= out.iovaRanges.back().last)
				return makeError(EINVAL, "IOVA range %u (0x%llx) is not above range %u", i,
						 static_cast<unsigned long long>(range.start), i - 1);
			out.iovaRanges.push_back(IovaRange{ range.start, range.end });
		}
		out.hasIovaRanges = true;
	}
	if (auto cap = findCap(*chain, VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL); cap && cap->version == 1) {
		if (cap->length < sizeof(vfio_iommu_type1_info_dma_avail))
			return makeError(EINVAL, "DMA-available capability is truncated (%u bytes)", cap->length);
		out.dmaAvail = load<vfio_iommu_type1_info_dma_avail>(info, cap->offset).avail;
	}
	return out;
}

Result<std::optional<MsixCapability>> parseMsixCapability(std::span<const uint8_t> config)
{
	constexpr size_t kHeaderSize = 0x40;
	constexpr size_t kStatus = 0x06;
	constexpr uint16_t kStatusCapList = 0x10;
	constexpr size_t kCapPtr = 0x34;
	constexpr size_t kMsixCapSize = 12;
	// Standard capabilities live in the first 256 bytes; with 4-byte alignment at most 48 fit after the header.
	constexpr int kMaxCaps = (256 - kHeaderSize) / 4;

	if (config.size() < kHeaderSize)
		return makeError(EINVAL, "config space dump is truncated (%zu bytes)", config.size());
	if (!(load<uint16_t>(config, kStatus) & kStatusCapList))
		return std::optional<MsixCapability>();
	const size_t limit = std::min<size_t>(config.size(), 256);
	size_t ptr = config[kCapPtr] & 0xfc;
	for (int seen = 0; ptr != 0; seen++) {
		if (seen == kMaxCaps)
			return makeError(EINVAL, "PCI capability list loops");
		if (ptr < kHeaderSize)
			return makeError(EINVAL, "PCI capability pointer 0x%zx points into the config header", ptr);
		if (ptr + 2 > limit)
			return makeError(EINVAL, "PCI capability at 0x%zx is beyond the %zu config bytes read", ptr, limit);
		uint8_t id = config[ptr];
		if (id == 0xff) // all ones: the device stopped answering; Linux ends the walk here too
			break;
		if (id == kPciCapIdMsix) {
			if (ptr + kMsixCapSize > limit)
				return makeError(EINVAL, "MSI-X capability at 0x%zx is truncated", ptr);
			uint16_t control = load<uint16_t>(config, ptr + 2);
			uint32_t table = load<uint32_t>(config, ptr + 4);
			uint32_t pba = load<uint32_t>(config, ptr + 8);
			MsixCapability msix;
			msix.capOffset = static_cast<uint8_t>(ptr);
			msix.entries = (control & 0x7ff) + 1u;
			msix.tableBar = table & 0x7;
			msix.tableOffset = table & ~0x7u;
			msix.pbaBar = pba & 0x7;
			msix.pbaOffset = pba & ~0x7u;
			if (msix.tableBar > 5 || msix.pbaBar > 5)
				return makeError(EINVAL, "MSI-X capability names BIR %u/%u, which is not a BAR",
						 msix.tableBar, msix.pbaBar);
			return std::optional<MsixCapability>(msix);
		}
		ptr = config[ptr + 1] & 0xfc;
	}
	return std::optional<MsixCapability>();
}

std::vector<MmapArea> subtractAreas(std::span<const MmapArea> areas, std::span<const MmapArea> holes,
				    uint64_t regionSize)
{
	std::vector<MmapArea> current;
	for (const MmapArea &area : areas) {
		if (area.size == 0 || area.offset >= regionSize)
			continue;
		current.push_back(MmapArea{ area.offset, std::min(area.size, regionSize - area.offset) });
	}
	for (const MmapArea &hole : holes) {
		uint64_t holeEnd = hole.size > UINT64_MAX - hole.offset ? UINT64_MAX : hole.offset + hole.size;
		std::vector<MmapArea> next;
		for (const MmapArea &area : current) {
			uint64_t areaEnd = area.offset + area.size;
			if (holeEnd <= area.offset || hole.offset >= areaEnd) {
				next.push_back(area);
				continue;
			}
			if (area.offset < hole.offset)
				next.push_back(MmapArea{ area.offset, hole.offset - area.offset });
			if (holeEnd < areaEnd)
				next.push_back(MmapArea{ holeEnd, areaEnd - holeEnd });
		}
		current = std::move(next);
	}
	std::sort(current.begin(), current.end(),
		  [](const MmapArea &a, const MmapArea &b) { return a.offset < b.offset; });
	return current;
}

std::vector<MmapArea> msixSparseAreas(uint32_t bar, uint64_t regionSize, const MsixCapability &msix,
				      const std::optional<std::vector<MmapArea>> &kernelAreas, uint64_t pageSize)
{
	assert(isPowerOfTwo(pageSize));
	// mmap works in whole pages, so every page the table or PBA touches stays trapped.
	std::vector<MmapArea> holes;
	auto addHole = [&](uint64_t offset, uint64_t bytes) {
		uint64_t start = offset & ~(pageSize - 1);
		holes.push_back(MmapArea{ start, alignUp(offset + bytes, pageSize) - start });
	};
	if (msix.tableBar == bar)
		addHole(msix.tableOffset, msix.tableBytes());
	if (msix.pbaBar == bar)
		addHole(msix.pbaOffset, msix.pbaBytes());
	std::vector<MmapArea> whole{ MmapArea{ 0, regionSize } };
	return subtractAreas(kernelAreas ? *kernelAreas : whole, holes, regionSize);
}

Result<RegionExposure> exposeRegion(uint32_t index, uint32_t kernelFlags, uint64_t size, std::vector<Capability> caps,
				    const std::optional<MsixCapability> &msix, bool allowMmap, uint64_t pageSize)
{
	RegionExposure out;
	out.flags = kernelFlags & ~VFIO_REGION_INFO_FLAG_CAPS;
	auto hasCap = [&](uint16_t id) {
		return std::any_of(caps.begin(), caps.end(), [id](const Capability &c) { return c.id == id; });
	};
	auto dropCaps = [&](uint16_t id) {
		std::erase_if(caps, [id](const Capability &c) { return c.id == id; });
	};

	if (!allowMmap || !(kernelFlags & VFIO_REGION_INFO_FLAG_MMAP)) {
		// MSIX_MAPPABLE and sparse areas are mmap permissions; without mmap they would only mislead.
		out.flags &= ~VFIO_REGION_INFO_FLAG_MMAP;
		dropCaps(VFIO_REGION_INFO_CAP_SPARSE_MMAP);
		dropCaps(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE);
	} else {
		// The kernel did not vouch for mapping the MSI-X structures, so a client mmap of them could
		// bypass the vector programming vfio-pci traps.
		const bool hideMsix = msix && index <= VFIO_PCI_BAR5_REGION_INDEX &&
				      (msix->tableBar == index || msix->pbaBar == index) &&
				      !hasCap(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE);
		auto isSparse = [](const Capability &c) { return c.id == VFIO_REGION_INFO_CAP_SPARSE_MMAP; };
		// One region has one set of areas; a second sparse cap could only contradict the first.
		if (std::count_if(caps.begin(), caps.end(), isSparse) > 1)
			return makeError(EINVAL, "region %u has more than one sparse mmap capability", index);
		auto sparse = std::find_if(caps.begin(), caps.end(), isSparse);
		std::optional<std::vector<MmapArea>> areas;
		if (sparse != caps.end()) {
			// A layout we do not know is passed on untouched, unless we must cut holes into it.
			if (sparse->version != 1 && hideMsix)
				return makeError(EINVAL, "region %u: sparse mmap capability version %u is unknown", index,
						 sparse->version);
			if (sparse->version == 1) {
				auto parsed = parseSparseMmap(sparse->body);
				if (!parsed)
					return withContext(parsed.takeError(), strFormat("region %u", index));
				// Clipped to the region so clients never see an area they cannot map.
				areas = subtractAreas(*parsed, {}, size);
			}
		}
		if (hideMsix)
			areas = msixSparseAreas(index, size, *msix, areas, pageSize);
		if (areas) {
			dropCaps(VFIO_REGION_INFO_CAP_SPARSE_MMAP);
			if (areas->empty())
				out.flags &= ~VFIO_REGION_INFO_FLAG_MMAP;
			else
				caps.push_back(makeSparseMmapCap(*areas));
		}
	}

	out.caps = std::move(caps);
	if (!out.caps.empty())
		out.flags |= VFIO_REGION_INFO_FLAG_CAPS;
	return out;
}

} // namespace vfio_broker::device
