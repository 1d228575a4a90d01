// SPDX-License-Identifier: Apache-2.0
// DmaTable: the client's DMA mappings — validation, overlap and limit checks, our mmap of its fds.
#pragma once

#include <cstdint>
#include <map>

#include "device/device.h"

namespace vfio_broker::server {

class DmaTable
{
public:
	DmaTable(device::Device &device, uint32_t maxMappings);
	~DmaTable();
	DmaTable(const DmaTable &) = delete;
	DmaTable &operator=(const DmaTable &) = delete;

	// Map [iova, iova+size) to the client's fd at offset (fd may be invalid: no fd sent).
	// EINVAL bad range/alignment/flags/fd, EEXIST overlap, ENOSPC too many mappings,
	// or the device's error.
	Status map(uint64_t iova, uint64_t size, uint32_t prot, UniqueFd fd, uint64_t offset);
	// Unmap exactly a previous mapping; ENOENT when there is none.
	Status unmap(uint64_t iova, uint64_t size);
	// Remove everything; returns the first device error, if any, after trying all.
	Status unmapAll();

	size_t count() const { return entries_.size(); }
	uint32_t maxMappings() const { return maxMappings_; }
	uint64_t minPageSize() const { return minPage_; }

private:
	struct Entry {
		uint64_t size;
		uint32_t prot;
		void *vaddr; // nullptr when the client sent no fd
	};

	Status remove(std::map<uint64_t, Entry>::iterator it);

	device::Device &device_;
	device::IommuInfo iommu_;
	uint32_t maxMappings_;
	uint64_t minPage_;
	std::map<uint64_t, Entry> entries_; // by iova
};

} // namespace vfio_broker::server
