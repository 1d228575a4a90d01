// SPDX-License-Identifier: Apache-2.0
// DMA mapping table. Our mmap of the client's fd gives the kernel (or the simulation) a
// virtual address for the range; it is removed when the range is unmapped.
#include "server/dma_table.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "device/vfio_group.h"
#include "vfio_user/protocol.h"

namespace vfio_broker::server {

using vfio_user::kDmaMapFlagRead;
using vfio_user::kDmaMapFlagWrite;

DmaTable::DmaTable(device::Device &device, uint32_t maxMappings)
	: device_(device), iommu_(device.iommuInfo()), maxMappings_(maxMappings)
{
	// The kernel's own limit (type1 dma_entry_limit) is the ceiling: refuse with our ENOSPC
	// before the kernel would.
	if (iommu_.maxMappings && iommu_.maxMappings < maxMappings_)
		maxMappings_ = iommu_.maxMappings;
	uint64_t host = device::hostPageSize();
	uint64_t iommu = iommu_.pgsizes ? (iommu_.pgsizes & -iommu_.pgsizes) : host;
	minPage_ = std::max(host, iommu);
}

DmaTable::~DmaTable()
{
	(void)unmapAll();
}

Status DmaTable::map(uint64_t iova, uint64_t size, uint32_t prot, UniqueFd fd, uint64_t offset)
{
	if (size == 0)
		return makeError(EINVAL, "DMA range of size 0");
	if (iova + size - 1 < iova)
		return makeError(EINVAL, "DMA range 0x%llx+0x%llx wraps around",
				 (unsigned long long)iova, (unsigned long long)size);
	if ((iova | size | offset) & (minPage_ - 1))
		return makeError(EINVAL, "DMA range iova 0x%llx size 0x%llx offset 0x%llx is not "
				 "aligned to the 0x%llx-byte page",
				 (unsigned long long)iova, (unsigned long long)size,
				 (unsigned long long)offset, (unsigned long long)minPage_);
	if (prot & ~(kDmaMapFlagRead | kDmaMapFlagWrite) || !prot)
		return makeError(EINVAL, "DMA map flags 0x%x: need readable and/or writeable only", prot);

	bool inWindow = false;
	uint64_t last = iova + size - 1;
	for (const auto &r : iommu_.iovaRanges)
		inWindow |= iova >= r.start && last <= r.last;
	if (!iommu_.iovaRanges.empty() && !inWindow)
		return makeError(EINVAL, "DMA range 0x%llx-0x%llx is outside the IOMMU's IOVA windows",
				 (unsigned long long)iova, (unsigned long long)last);

	// Overlap: the first entry at or after iova, and the one before it.
	auto next = entries_.lower_bound(iova);
	if (next != entries_.end() && next->first <= last)
		return makeError(EEXIST, "DMA range 0x%llx-0x%llx overlaps the mapping at 0x%llx",
				 (unsigned long long)iova, (unsigned long long)last,
				 (unsigned long long)next->first);
	if (next != entries_.begin()) {
		auto prev = std::prev(next);
		if (prev->first + (prev->second.size - 1) >= iova)
			return makeError(EEXIST, "DMA range 0x%llx-0x%llx overlaps the mapping at 0x%llx",
					 (unsigned long long)iova, (unsigned long long)last,
					 (unsigned long long)prev->first);
	}
	if (entries_.size() >= maxMappings_)
		return makeError(ENOSPC, "the limit of %u DMA mappings is reached", maxMappings_);

	void *vaddr = nullptr;
	if (fd) {
		struct stat st;
		if (::fstat(fd.get(), &st) < 0)
			return errnoError("fstat of the DMA fd");
		// Only files have a size we can check; mapping past the end would fault later.
		if (!S_ISREG(st.st_mode))
			return makeError(EINVAL, "the DMA fd is not a memory file (memfd, tmpfs or hugetlbfs)");
		if (offset > static_cast<uint64_t>(st.st_size) ||
		    size > static_cast<uint64_t>(st.st_size) - offset)
			return makeError(EINVAL, "DMA range offset 0x%llx size 0x%llx is beyond the end "
					 "of the fd (0x%llx bytes)", (unsigned long long)offset,
					 (unsigned long long)size, (unsigned long long)st.st_size);
		int mprot = (prot & kDmaMapFlagRead ? PROT_READ : 0) |
			    (prot & kDmaMapFlagWrite ? PROT_WRITE : 0);
		vaddr = ::mmap(nullptr, size, mprot, MAP_SHARED, fd.get(), offset);
		if (vaddr == MAP_FAILED)
			return errnoError(errno, "mmap of the DMA fd");
	}

	device::DmaRange range{ iova, size, vaddr, prot };
	if (Status s = device_.dmaMap(range); !s) {
		if (vaddr)
			::munmap(vaddr, size);
		return s;
	}
	entries_.emplace(iova, Entry{ size, prot, vaddr });
	return {};
}

Status DmaTable::remove(std::map<uint64_t, Entry>::iterator it)
{
	const Entry &e = it->second;
	device::DmaRange range{ it->first, e.size, e.vaddr, e.prot };
	Status s = device_.dmaUnmap(range);
	// Even if the device failed to unmap, the range is gone for the client; our mapping
	// of its memory is dropped so no stale view of the old client's memory remains.
	if (e.vaddr)
		::munmap(e.vaddr, e.size);
	entries_.erase(it);
	return s;
}

Status DmaTable::unmap(uint64_t iova, uint64_t size)
{
	auto it = entries_.find(iova);
	if (it == entries_.end() || it->second.size != size)
		return makeError(ENOENT, "no DMA mapping is exactly 0x%llx+0x%llx",
				 (unsigned long long)iova, (unsigned long long)size);
	return remove(it);
}

Status DmaTable::unmapAll()
{
	Status first;
	while (!entries_.empty()) {
		Status s = remove(entries_.begin());
		if (!s && first)
			first = s;
	}
	return first;
}

} // namespace vfio_broker::server
