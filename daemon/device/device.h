// SPDX-License-Identifier: Apache-2.0
// Device: the one interface the vfio-user server drives; kernel VFIO and the simulated devices implement it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace vfio_broker::device {

struct DeviceInfo {
	uint32_t flags = 0; // VFIO_DEVICE_FLAGS_*
	uint32_t numRegions = 0;
	uint32_t numIrqs = 0;
};

struct RegionInfo {
	uint32_t flags = 0;      // VFIO_REGION_INFO_FLAG_{READ,WRITE,MMAP,CAPS}
	uint64_t size = 0;
	uint64_t mmapOffset = 0; // offset to give mmap() on fd
	// Capability chain as it follows the 32-byte vfio_region_info; every "next" in it is
	// relative to the start of vfio_region_info, so the first capability sits at 32.
	std::vector<uint8_t> caps;
	int fd = -1; // borrowed: fd the client may mmap, valid while the device lives; -1 when none
};

struct IrqInfo {
	uint32_t flags = 0; // VFIO_IRQ_INFO_*
	uint32_t count = 0;
};

// A validated VFIO_USER_DEVICE_SET_IRQS request: exactly one DATA_ and one ACTION_ flag,
// index < numIrqs, start/count inside the index (or the count 0 "disable all" form).
struct IrqSetRequest {
	uint32_t flags = 0;
	uint32_t index = 0;
	uint32_t start = 0;
	uint32_t count = 0;
	std::span<const uint8_t> bools; // DATA_BOOL: count entries
	std::vector<UniqueFd> eventfds; // DATA_EVENTFD: count fds, or none to de-assign
};

// A range of client memory the device may DMA to, at an IO virtual address.
struct DmaRange {
	uint64_t iova = 0;
	uint64_t size = 0;
	void *vaddr = nullptr; // our mapping of the client's fd; nullptr when the client sent no fd
	uint32_t prot = 0;     // vfio_user::kDmaMapFlag{Read,Write}
};

struct IovaRange {
	uint64_t start;
	uint64_t last; // inclusive
};

struct IommuInfo {
	uint64_t pgsizes = 4096;          // bitmap of supported page sizes
	std::vector<IovaRange> iovaRanges; // usable IOVA windows
	bool translates = true;            // false for no-IOMMU: DMA_MAP is refused
	uint32_t maxMappings = 0;          // mappings the IOMMU driver still accepts; 0 = no limit known
};

class Device
{
public:
	virtual ~Device() = default;

	virtual std::string name() const = 0; // for logs: "sim:edu", "0000:00:01.0"
	virtual DeviceInfo info() const = 0;
	virtual Result<RegionInfo> regionInfo(uint32_t index) const = 0;
	virtual Result<IrqInfo> irqInfo(uint32_t index) const = 0;
	virtual IommuInfo iommuInfo() const = 0;

	// Trapped access. The server has checked index, bounds and READ/WRITE flags.
	virtual Status regionRead(uint32_t index, uint64_t offset, void *data, uint32_t count) = 0;
	virtual Status regionWrite(uint32_t index, uint64_t offset, const void *data, uint32_t count) = 0;

	virtual Status setIrqs(IrqSetRequest &request) = 0;

	// The server keeps the mapping table (overlaps, limits, alignment); the device only
	// installs and removes ranges in its IOMMU (or its simulated DMA engine).
	virtual Status dmaMap(const DmaRange &range) = 0;
	virtual Status dmaUnmap(const DmaRange &range) = 0;

	virtual Status reset() = 0;

	// The client is gone: disable every interrupt and drop every eventfd, then reset when
	// the device can. DMA ranges have already been unmapped by the server.
	virtual Status quiesce() = 0;
};

} // namespace vfio_broker::device
