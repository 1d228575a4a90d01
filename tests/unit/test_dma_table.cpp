// SPDX-License-Identifier: Apache-2.0
// Unit tests for the server's DMA mapping table against a recording fake device: validation, overlaps, limits, cleanup.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "fake_device.h"
#include "server/dma_table.h"
#include "vfio_user/protocol.h"

using namespace vfio_broker;
using namespace vfio_broker::server;
using vfio_broker::testing::Call;
using vfio_broker::testing::CallRecord;
using vfio_broker::testing::FakeDevice;

namespace {

constexpr uint32_t kRW = vfio_user::kDmaMapFlagRead | vfio_user::kDmaMapFlagWrite;
constexpr uint32_t kRO = vfio_user::kDmaMapFlagRead;
constexpr uint64_t kPage = 4096;

// A client memory file with a name we can find in /proc/self/maps.
struct MemFile {
	UniqueFd fd;
	std::string name;
	explicit MemFile(size_t size, const std::string &tag = "dma-table-test")
	{
		static int serial = 0;
		name = tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(serial++);
		fd.reset(::memfd_create(name.c_str(), MFD_CLOEXEC));
		REQUIRE(fd);
		REQUIRE(::ftruncate(fd.get(), size) == 0);
		// A recognisable byte at the start of every page: page i holds i + 1.
		for (size_t off = 0; off < size; off += kPage) {
			uint8_t v = static_cast<uint8_t>(off / kPage + 1);
			REQUIRE(::pwrite(fd.get(), &v, 1, off) == 1);
		}
	}
	// A new fd for the same file, as the client would send one per DMA_MAP.
	UniqueFd dup() const
	{
		UniqueFd d(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
		REQUIRE(d);
		return d;
	}
	// How many of our mappings of this file exist in the process.
	size_t mappings() const
	{
		std::ifstream maps("/proc/self/maps");
		std::string line;
		size_t n = 0;
		while (std::getline(maps, line))
			if (line.find("/memfd:" + name + " (deleted)") != std::string::npos)
				n++;
		return n;
	}
};

Status mapNoFd(DmaTable &t, uint64_t iova, uint64_t size, uint32_t prot = kRW)
{
	return t.map(iova, size, prot, UniqueFd(), 0);
}

int errorOf(const Status &s)
{
	return s.ok() ? 0 : s.error().code;
}

} // namespace

TEST_CASE("a mapping reaches the device with our mmap of the client's fd at its offset", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	MemFile mem(4 * kPage);
	REQUIRE(table.map(0x100000, 2 * kPage, kRW, mem.dup(), kPage).ok());
	CHECK(table.count() == 1);

	auto maps = dev.calls(Call::DmaMap);
	REQUIRE(maps.size() == 1);
	CHECK(maps[0].range.iova == 0x100000);
	CHECK(maps[0].range.size == 2 * kPage);
	CHECK(maps[0].range.prot == kRW);
	REQUIRE(maps[0].range.vaddr != nullptr);
	REQUIRE_FALSE(maps[0].mapped.empty());
	CHECK(maps[0].mapped[0] == 2); // the file's second page: offset honoured
	CHECK(mem.mappings() == 1);

	// The mapping is shared with the client: a device write shows in the file.
	static_cast<uint8_t *>(maps[0].range.vaddr)[1] = 0x5a;
	uint8_t v = 0;
	REQUIRE(::pread(mem.fd.get(), &v, 1, kPage + 1) == 1);
	CHECK(v == 0x5a);
}

TEST_CASE("a read-only mapping accepts a read-only fd and maps it read-only", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	MemFile mem(kPage);
	UniqueFd ro(::open(("/proc/self/fd/" + std::to_string(mem.fd.get())).c_str(), O_RDONLY | O_CLOEXEC));
	REQUIRE(ro);
	REQUIRE(table.map(0x100000, kPage, kRO, std::move(ro), 0).ok());
	auto maps = dev.calls(Call::DmaMap);
	REQUIRE(maps.size() == 1);
	CHECK(maps[0].range.prot == kRO);
	CHECK(maps[0].mapped[0] == 1);
}

TEST_CASE("a writable mapping of a read-only fd is refused with no entry left", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	MemFile mem(kPage);
	UniqueFd ro(::open(("/proc/self/fd/" + std::to_string(mem.fd.get())).c_str(), O_RDONLY | O_CLOEXEC));
	REQUIRE(ro);
	Status s = table.map(0x100000, kPage, kRW, std::move(ro), 0);
	REQUIRE_FALSE(s.ok());
	CHECK(s.error().code == EACCES);
	CHECK(table.count() == 0);
	CHECK(dev.count(Call::DmaMap) == 0);
}

TEST_CASE("a mapping without an fd passes a null host address", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	REQUIRE(mapNoFd(table, 0x200000, 4 * kPage).ok());
	auto maps = dev.calls(Call::DmaMap);
	REQUIRE(maps.size() == 1);
	CHECK(maps[0].range.vaddr == nullptr);
	CHECK(maps[0].range.iova == 0x200000);
	CHECK(maps[0].range.size == 4 * kPage);
}

TEST_CASE("iova, size and offset must be page-aligned", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	MemFile mem(4 * kPage);
	CHECK(errorOf(table.map(0x100800, kPage, kRW, mem.dup(), 0)) == EINVAL);
	CHECK(errorOf(table.map(0x100000, kPage + 1, kRW, mem.dup(), 0)) == EINVAL);
	CHECK(errorOf(table.map(0x100000, kPage, kRW, mem.dup(), 512)) == EINVAL);
	CHECK(errorOf(mapNoFd(table, 1, kPage)) == EINVAL);
	CHECK(table.count() == 0);
	CHECK(dev.count(Call::DmaMap) == 0);
	CHECK(mem.mappings() == 0);
}

TEST_CASE("the IOMMU's smallest page size sets the alignment", "[dma_table]")
{
	FakeDevice dev;
	device::IommuInfo io;
	io.pgsizes = 0x40200000; // 2 MiB and 1 GiB only
	dev.setIommu(io);
	DmaTable table(dev, 16);
	CHECK(table.minPageSize() == 0x200000);
	CHECK(errorOf(mapNoFd(table, 0x200000, kPage)) == EINVAL);
	CHECK(errorOf(mapNoFd(table, 0x201000, 0x200000)) == EINVAL);
	CHECK(mapNoFd(table, 0x200000, 0x200000).ok());
}

TEST_CASE("a mapping of size 0 is refused", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	CHECK(errorOf(mapNoFd(table, 0x100000, 0)) == EINVAL);
	CHECK(dev.count(Call::DmaMap) == 0);
}

TEST_CASE("a range that wraps around the 64-bit IOVA space is refused", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	CHECK(errorOf(mapNoFd(table, 0xfffffffffffff000ull, 2 * kPage)) == EINVAL);
	CHECK(errorOf(mapNoFd(table, 2 * kPage, 0xfffffffffffff000ull)) == EINVAL);
	CHECK(dev.count(Call::DmaMap) == 0);
}

// The last page of the IOVA space does not wrap: iova + size - 1 is 2^64 - 1 (the kernel's type1
// check is `iova + size - 1 < iova`), and the overlap check must not wrap for such an entry.
TEST_CASE("a range ending exactly at the top of the IOVA space is accepted", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	CHECK(mapNoFd(table, 0xfffffffffffff000ull, kPage).ok());
	// and it still collides with an overlapping request
	CHECK(errorOf(mapNoFd(table, 0xffffffffffffe000ull, 2 * kPage)) == EEXIST);
}

TEST_CASE("flags other than read and write, or neither, are refused", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	CHECK(errorOf(mapNoFd(table, 0x100000, kPage, 0)) == EINVAL);
	CHECK(errorOf(mapNoFd(table, 0x100000, kPage, kRW | 4)) == EINVAL);
	CHECK(mapNoFd(table, 0x100000, kPage, vfio_user::kDmaMapFlagWrite).ok());
}

TEST_CASE("ranges outside the IOMMU's IOVA windows are refused", "[dma_table]")
{
	FakeDevice dev;
	device::IommuInfo io;
	io.pgsizes = kPage;
	io.iovaRanges = { { 0, 0xfedfffff }, { 0xfef00000, 0x7fffffffff } };
	dev.setIommu(io);
	DmaTable table(dev, 16);
	CHECK(errorOf(mapNoFd(table, 0xfee00000, kPage)) == EINVAL);       // in the MSI hole
	CHECK(errorOf(mapNoFd(table, 0xfedff000, 2 * kPage)) == EINVAL);   // straddles its start
	CHECK(errorOf(mapNoFd(table, 0xfeeff000, 2 * kPage)) == EINVAL);   // straddles its end
	CHECK(errorOf(mapNoFd(table, 0x8000000000, kPage)) == EINVAL);     // above the last window
	CHECK(errorOf(mapNoFd(table, 0xfed00000, 0x200000)) == EINVAL);    // across two windows
	CHECK(dev.count(Call::DmaMap) == 0);
	// The edges of each window are inside it.
	CHECK(mapNoFd(table, 0, kPage).ok());
	CHECK(mapNoFd(table, 0xfedff000, kPage).ok());
	CHECK(mapNoFd(table, 0xfef00000, kPage).ok());
	CHECK(mapNoFd(table, 0x7ffffff000, kPage).ok());
}

TEST_CASE("overlaps on either side are refused with EEXIST; adjacent ranges are fine", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	REQUIRE(mapNoFd(table, 0x10000, 4 * kPage).ok()); // [0x10000, 0x14000)
	dev.clearRecord();

	CHECK(errorOf(mapNoFd(table, 0xf000, 2 * kPage)) == EEXIST);   // its tail covers our head
	CHECK(errorOf(mapNoFd(table, 0x13000, 2 * kPage)) == EEXIST);  // its head inside our tail
	CHECK(errorOf(mapNoFd(table, 0x8000, 0x20000)) == EEXIST);     // covers us
	CHECK(errorOf(mapNoFd(table, 0x11000, kPage)) == EEXIST);      // inside us
	CHECK(errorOf(mapNoFd(table, 0x10000, 4 * kPage)) == EEXIST);  // the same range
	CHECK(errorOf(mapNoFd(table, 0x10000, kPage)) == EEXIST);      // the same start
	CHECK(dev.count(Call::DmaMap) == 0);

	CHECK(mapNoFd(table, 0xc000, 4 * kPage).ok());  // ends where we start
	CHECK(mapNoFd(table, 0x14000, 4 * kPage).ok()); // starts where we end
	CHECK(table.count() == 3);
	// Now a request between two neighbours that touches both is refused too.
	CHECK(errorOf(mapNoFd(table, 0x13000, 2 * kPage)) == EEXIST);
}

TEST_CASE("the mapping limit is ENOSPC, and room comes back after an unmap", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 2);
	CHECK(table.maxMappings() == 2);
	REQUIRE(mapNoFd(table, 0x100000, kPage).ok());
	REQUIRE(mapNoFd(table, 0x200000, kPage).ok());
	CHECK(errorOf(mapNoFd(table, 0x300000, kPage)) == ENOSPC);
	CHECK(dev.count(Call::DmaMap) == 2);
	REQUIRE(table.unmap(0x100000, kPage).ok());
	CHECK(mapNoFd(table, 0x300000, kPage).ok());
}

TEST_CASE("an fd that is not a regular file is refused", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	int p[2];
	REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
	UniqueFd rd(p[0]), wr(p[1]);
	CHECK(errorOf(table.map(0x100000, kPage, kRW, std::move(rd), 0)) == EINVAL);
	CHECK(errorOf(table.map(0x100000, kPage, kRW, UniqueFd(::eventfd(0, EFD_CLOEXEC)), 0)) == EINVAL);
	CHECK(errorOf(table.map(0x100000, kPage, kRW, UniqueFd(::open("/dev/null", O_RDWR | O_CLOEXEC)), 0)) == EINVAL);
	CHECK(dev.count(Call::DmaMap) == 0);
	CHECK(table.count() == 0);
}

TEST_CASE("a range beyond the end of the client's file is refused", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	MemFile mem(2 * kPage);
	CHECK(errorOf(table.map(0x100000, 3 * kPage, kRW, mem.dup(), 0)) == EINVAL);
	CHECK(errorOf(table.map(0x100000, 2 * kPage, kRW, mem.dup(), kPage)) == EINVAL);
	CHECK(errorOf(table.map(0x100000, kPage, kRW, mem.dup(), 2 * kPage)) == EINVAL);
	CHECK(errorOf(table.map(0x100000, kPage, kRW, mem.dup(), 0xfffffffffffff000ull)) == EINVAL);
	CHECK(dev.count(Call::DmaMap) == 0);
	CHECK(mem.mappings() == 0);
	CHECK(table.map(0x100000, kPage, kRW, mem.dup(), kPage).ok()); // the last page exactly
}

TEST_CASE("a device failure on map leaves no entry and no mmap behind", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	MemFile mem(2 * kPage);
	dev.failOn(Call::DmaMap, EHOSTDOWN, 1);
	Status s = table.map(0x100000, 2 * kPage, kRW, mem.dup(), 0);
	REQUIRE_FALSE(s.ok());
	CHECK(s.error().code == EHOSTDOWN);
	CHECK(table.count() == 0);
	CHECK(mem.mappings() == 0);
	CHECK(dev.count(Call::DmaUnmap) == 0);
	// Nothing stale: the same range maps now.
	CHECK(table.map(0x100000, 2 * kPage, kRW, mem.dup(), 0).ok());
	CHECK(mem.mappings() == 1);
}

TEST_CASE("unmap needs an exact match of iova and size, else ENOENT", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	MemFile mem(4 * kPage);
	REQUIRE(table.map(0x100000, 4 * kPage, kRW, mem.dup(), 0).ok());
	void *vaddr = dev.calls(Call::DmaMap).at(0).range.vaddr;

	CHECK(errorOf(table.unmap(0x100000, kPage)) == ENOENT);       // a prefix
	CHECK(errorOf(table.unmap(0x101000, kPage)) == ENOENT);       // inside
	CHECK(errorOf(table.unmap(0x100000, 8 * kPage)) == ENOENT);   // larger
	CHECK(errorOf(table.unmap(0x200000, 4 * kPage)) == ENOENT);   // elsewhere
	CHECK(dev.count(Call::DmaUnmap) == 0);
	CHECK(table.count() == 1);
	CHECK(mem.mappings() == 1);

	REQUIRE(table.unmap(0x100000, 4 * kPage).ok());
	auto unmaps = dev.calls(Call::DmaUnmap);
	REQUIRE(unmaps.size() == 1);
	CHECK(unmaps[0].range.iova == 0x100000);
	CHECK(unmaps[0].range.size == 4 * kPage);
	CHECK(unmaps[0].range.vaddr == vaddr);
	CHECK(unmaps[0].range.prot == kRW);
	CHECK(table.count() == 0);
	CHECK(mem.mappings() == 0);
	CHECK(errorOf(table.unmap(0x100000, 4 * kPage)) == ENOENT); // not twice
}

TEST_CASE("a device failure on unmap still removes the range and our mmap", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	MemFile mem(kPage);
	REQUIRE(table.map(0x100000, kPage, kRW, mem.dup(), 0).ok());
	dev.failOn(Call::DmaUnmap, EBUSY);
	Status s = table.unmap(0x100000, kPage);
	REQUIRE_FALSE(s.ok());
	CHECK(s.error().code == EBUSY);
	CHECK(table.count() == 0);
	CHECK(mem.mappings() == 0);
}

TEST_CASE("unmapAll visits every entry even when the device fails some, and returns the first error", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	MemFile mem(4 * kPage);
	for (uint64_t i = 0; i < 4; i++)
		REQUIRE(table.map(0x100000 * (i + 1), kPage, kRW, mem.dup(), i * kPage).ok());
	REQUIRE(mapNoFd(table, 0x900000, kPage).ok());
	CHECK(mem.mappings() == 4);

	dev.failOn(Call::DmaUnmap, EIO, FakeDevice::kAlways,
		   [](const CallRecord &c) { return c.range.iova == 0x200000; });
	Status s = table.unmapAll();
	REQUIRE_FALSE(s.ok());
	CHECK(s.error().code == EIO);

	auto unmaps = dev.calls(Call::DmaUnmap);
	std::vector<uint64_t> iovas;
	for (const auto &c : unmaps)
		iovas.push_back(c.range.iova);
	std::sort(iovas.begin(), iovas.end());
	CHECK(iovas == std::vector<uint64_t>{ 0x100000, 0x200000, 0x300000, 0x400000, 0x900000 });
	CHECK(table.count() == 0);
	CHECK(mem.mappings() == 0);
}

TEST_CASE("unmapAll reports the first of several device errors", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	for (uint64_t i = 1; i <= 3; i++)
		REQUIRE(mapNoFd(table, 0x100000 * i, kPage).ok());
	// Entries are removed in IOVA order; the second fails with EBUSY, the third with EIO.
	dev.failOn(Call::DmaUnmap, EBUSY, 1, [](const CallRecord &c) { return c.range.iova == 0x200000; });
	Status s = table.unmapAll();
	REQUIRE_FALSE(s.ok());
	CHECK(s.error().code == EBUSY);
	CHECK(dev.count(Call::DmaUnmap) == 3);
}

TEST_CASE("unmapAll of an empty table succeeds without calling the device", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	CHECK(table.unmapAll().ok());
	CHECK(dev.count(Call::DmaUnmap) == 0);
}

TEST_CASE("the destructor unmaps every range through the device", "[dma_table]")
{
	FakeDevice dev;
	MemFile mem(2 * kPage);
	{
		DmaTable table(dev, 16);
		REQUIRE(table.map(0x100000, kPage, kRW, mem.dup(), 0).ok());
		REQUIRE(table.map(0x200000, kPage, kRO, mem.dup(), kPage).ok());
		REQUIRE(mapNoFd(table, 0x300000, kPage).ok());
		dev.failOn(Call::DmaUnmap, EIO, 1); // a failure does not stop the rest
		CHECK(mem.mappings() == 2);
	}
	CHECK(dev.count(Call::DmaUnmap) == 3);
	CHECK(mem.mappings() == 0);
}

TEST_CASE("the table keeps no reference to the client's fd after mapping", "[dma_table]")
{
	FakeDevice dev;
	DmaTable table(dev, 16);
	MemFile mem(kPage);
	UniqueFd fd = mem.dup();
	int number = fd.get();
	REQUIRE(table.map(0x100000, kPage, kRW, std::move(fd), 0).ok());
	// The mapping pins the memory; the fd itself was closed.
	CHECK(::fcntl(number, F_GETFD) == -1);
	CHECK(errno == EBADF);
}
