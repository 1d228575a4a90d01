// SPDX-License-Identifier: Apache-2.0
// VFIO_USER_DEVICE_GET_REGION_INFO against the real daemon: every sim:edu region, the argsz
// probe, the sparse-mmap capability and the fd that only the full reply carries.
#include "daemon_fixture.h"

#include <sys/stat.h>
#include <unistd.h>

using namespace vfio_broker;
using namespace vfio_broker::test;
using vfio_user::RegionInfoPayload;

namespace {

constexpr uint32_t kRw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
constexpr uint32_t kRamBarFullArgsz = sizeof(RegionInfoPayload) +
				      sizeof(vfio_region_info_cap_sparse_mmap) +
				      sizeof(vfio_region_sparse_mmap_area);

Reply regionInfo(Client &c, uint32_t index, uint32_t argsz = sizeof(RegionInfoPayload))
{
	return exchange(c, Command::DeviceGetRegionInfo, bytesOf(RegionInfoPayload{ argsz, 0, index, 0, 0, 0 }));
}

std::string fdTarget(int fd)
{
	char buf[256];
	ssize_t n = ::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), buf, sizeof(buf) - 1);
	return n < 0 ? "" : std::string(buf, n);
}

} // namespace

TEST_CASE("REGION_INFO of BAR0 reports 1 MiB of trapped read/write registers and no fd", "[region_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	Reply r = regionInfo(c, VFIO_PCI_BAR0_REGION_INDEX);
	REQUIRE(outcome(r) == "ok");
	REQUIRE(r.payload.size() == sizeof(RegionInfoPayload));
	auto info = r.as<RegionInfoPayload>();
	CHECK(info.argsz == sizeof(RegionInfoPayload));
	CHECK(info.flags == kRw);
	CHECK(info.index == VFIO_PCI_BAR0_REGION_INDEX);
	CHECK(info.capOffset == 0);
	CHECK(info.size == edu::kBar0Size);
	CHECK(r.fds.empty());
}

TEST_CASE("REGION_INFO of config space reports 256 trapped read/write bytes", "[region_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	Reply r = regionInfo(c, VFIO_PCI_CONFIG_REGION_INDEX);
	REQUIRE(outcome(r) == "ok");
	auto info = r.as<RegionInfoPayload>();
	CHECK(info.flags == kRw);
	CHECK(info.index == VFIO_PCI_CONFIG_REGION_INDEX);
	CHECK(info.size == 256);
	CHECK(r.fds.empty());
}

TEST_CASE("REGION_INFO of the BARs, ROM and VGA that edu lacks reports size 0", "[region_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (uint32_t index : { 1u, 3u, 4u, 5u, 6u, 8u }) {
		INFO("region " << index);
		Reply r = regionInfo(c, index);
		REQUIRE(outcome(r) == "ok");
		auto info = r.as<RegionInfoPayload>();
		CHECK(info.index == index);
		CHECK(info.size == 0);
		CHECK((info.flags & VFIO_REGION_INFO_FLAG_MMAP) == 0);
		CHECK(r.fds.empty());
	}
}

TEST_CASE("REGION_INFO probe of the RAM BAR asks for the full size and carries no caps and no fd", "[region_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	Reply r = regionInfo(c, edu::kRamBar);
	REQUIRE(outcome(r) == "ok");
	REQUIRE(r.payload.size() == sizeof(RegionInfoPayload));
	auto info = r.as<RegionInfoPayload>();
	CHECK(info.argsz == kRamBarFullArgsz);
	CHECK(info.flags == (kRw | VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS));
	CHECK(info.capOffset == 0);
	CHECK(info.size == edu::kRamBarSize);
	CHECK(r.fds.empty());
}

TEST_CASE("REGION_INFO of the RAM BAR with the full argsz carries a sparse-mmap capability and the fd", "[region_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (uint32_t argsz : { kRamBarFullArgsz, 4096u }) {
		INFO("argsz " << argsz);
		Reply r = regionInfo(c, edu::kRamBar, argsz);
		REQUIRE(outcome(r) == "ok");
		REQUIRE(r.payload.size() == kRamBarFullArgsz);
		auto info = r.as<RegionInfoPayload>();
		CHECK(info.argsz == kRamBarFullArgsz);
		CHECK(info.flags == (kRw | VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS));
		CHECK(info.index == edu::kRamBar);
		CHECK(info.size == edu::kRamBarSize);
		REQUIRE(info.capOffset == sizeof(RegionInfoPayload));

		vfio_region_info_cap_sparse_mmap cap;
		std::memcpy(&cap, r.payload.data() + info.capOffset, sizeof(cap));
		CHECK(cap.header.id == VFIO_REGION_INFO_CAP_SPARSE_MMAP);
		CHECK(cap.header.version == 1);
		CHECK(cap.header.next == 0);
		REQUIRE(cap.nr_areas == 1);
		vfio_region_sparse_mmap_area area;
		std::memcpy(&area, r.payload.data() + info.capOffset + sizeof(cap), sizeof(area));
		CHECK(area.offset == 0);
		CHECK(area.size == edu::kRamBarMmapSize);

		// Exactly one fd, a memory file as large as the region.
		REQUIRE(r.fds.size() == 1);
		struct stat st;
		REQUIRE(::fstat(r.fds[0].get(), &st) == 0);
		CHECK(S_ISREG(st.st_mode));
		CHECK(static_cast<uint64_t>(st.st_size) >= info.offset + edu::kRamBarSize);
		CHECK(fdTarget(r.fds[0].get()).rfind("/memfd:", 0) == 0);
	}
}

TEST_CASE("REGION_INFO hands out the same RAM BAR memory on every request of one client", "[region_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	auto a = c.regionInfo(edu::kRamBar);
	auto b = c.regionInfo(edu::kRamBar);
	REQUIRE(outcome(a) == "ok");
	REQUIRE(outcome(b) == "ok");
	REQUIRE(a->fd);
	REQUIRE(b->fd);
	struct stat sa, sb;
	REQUIRE(::fstat(a->fd.get(), &sa) == 0);
	REQUIRE(::fstat(b->fd.get(), &sb) == 0);
	CHECK(sa.st_ino == sb.st_ino);
	CHECK(sa.st_dev == sb.st_dev);
	REQUIRE(a->sparse.size() == 1);
	CHECK(a->sparse[0].offset == 0);
	CHECK(a->sparse[0].size == edu::kRamBarMmapSize);
}

TEST_CASE("REGION_INFO of the RAM BAR with --no-mmap presents it trapped, without caps or fd", "[region_info]")
{
	Daemon d({ "--no-mmap" });
	Client c = d.connectNegotiated();
	Reply r = regionInfo(c, edu::kRamBar, 4096);
	REQUIRE(outcome(r) == "ok");
	REQUIRE(r.payload.size() == sizeof(RegionInfoPayload));
	auto info = r.as<RegionInfoPayload>();
	CHECK(info.argsz == sizeof(RegionInfoPayload));
	CHECK(info.flags == kRw);
	CHECK(info.capOffset == 0);
	CHECK(info.size == edu::kRamBarSize);
	CHECK(r.fds.empty());
}

TEST_CASE("REGION_INFO withholds the RAM BAR fd from a client that takes no fds (max_msg_fds 0)", "[region_info]")
{
	Daemon d;
	Client c = d.connect();
	REQUIRE(outcome(c.negotiate("{\"capabilities\":{\"max_msg_fds\":0}}")) == "ok");
	Reply r = regionInfo(c, edu::kRamBar, 4096);
	REQUIRE(outcome(r) == "ok");
	auto info = r.as<RegionInfoPayload>();
	CHECK(info.flags == kRw);
	CHECK(info.argsz == sizeof(RegionInfoPayload));
	CHECK(r.fds.empty());
	// The region is still there, by message.
	uint32_t v = 0x600df00d;
	REQUIRE(outcome(c.regionWrite(edu::kRamBar, 0x10, &v, 4)) == "ok");
	CHECK(read32(c, edu::kRamBar, 0x10) == 0x600df00d);
}

TEST_CASE("REGION_INFO of a region index past the last is refused with EINVAL", "[region_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (uint32_t index : { 9u, 10u, 0x80000000u, 0xffffffffu }) {
		INFO("region " << index);
		CHECK(outcome(regionInfo(c, index, 4096)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("REGION_INFO with a short payload is refused with EINVAL", "[region_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (size_t len : { 0, 12, 31 }) {
		INFO(len << "-byte payload");
		std::vector<uint8_t> payload = bytesOf(RegionInfoPayload{ 4096, 0, 0, 0, 0, 0 });
		payload.resize(len);
		CHECK(outcome(exchange(c, Command::DeviceGetRegionInfo, payload)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("REGION_INFO with argsz below 32 is refused with EINVAL", "[region_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (uint32_t argsz : { 0u, 16u, 31u }) {
		INFO("argsz " << argsz);
		CHECK(outcome(regionInfo(c, edu::kRamBar, argsz)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("REGION_INFO with a file descriptor attached is refused with EINVAL", "[region_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	int fds[] = { efd.get() };
	Reply r = exchange(c, Command::DeviceGetRegionInfo,
			   bytesOf(RegionInfoPayload{ 4096, 0, edu::kRamBar, 0, 0, 0 }), fds);
	CHECK(outcome(r) == "EINVAL");
	requireServes(c);
}
