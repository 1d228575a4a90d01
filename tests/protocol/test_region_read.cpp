// SPDX-License-Identifier: Apache-2.0
// VFIO_USER_REGION_READ against the real daemon: edu registers, config space, the RAM BAR as
// its mmap'd fd sees it, the transfer limit, and every out-of-range or malformed read.
#include "daemon_fixture.h"

using namespace vfio_broker;
using namespace vfio_broker::test;
using vfio_user::RegionAccessPayload;

namespace {

Reply regionRead(Client &c, uint32_t region, uint64_t offset, uint32_t count)
{
	return exchange(c, Command::RegionRead, bytesOf(RegionAccessPayload{ offset, region, count }));
}

client::MappedRegion mapRamBar(Client &c)
{
	auto info = c.regionInfo(edu::kRamBar);
	REQUIRE(outcome(info) == "ok");
	auto map = c.mapRegion(*info);
	REQUIRE(outcome(map) == "ok");
	REQUIRE(map->at(0, edu::kRamBarMmapSize));
	return std::move(*map);
}

} // namespace

TEST_CASE("REGION_READ of BAR0 offset 0 returns edu's identification 0x010000ed", "[region_read]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	Reply r = regionRead(c, kBar0, edu::kRegId, 4);
	REQUIRE(outcome(r) == "ok");
	REQUIRE(r.payload.size() == sizeof(RegionAccessPayload) + 4);
	CHECK(r.fds.empty());
	auto echo = r.as<RegionAccessPayload>();
	CHECK(echo.offset == edu::kRegId);
	CHECK(echo.region == kBar0);
	CHECK(echo.count == 4);
	uint32_t id;
	std::memcpy(&id, r.payload.data() + sizeof(RegionAccessPayload), 4);
	CHECK(id == edu::kId);
}

TEST_CASE("REGION_READ of BAR0 is split into aligned 4-byte register reads; 1- and 2-byte pieces read as ones",
	  "[region_read]")
{
	// edu answers only 4- and 8-byte accesses, as vfio-pci issues them for a longer pread.
	Daemon d;
	Client c = d.connectNegotiated();
	write32(c, kBar0, edu::kRegLiveness, 0x0000ffff);
	uint32_t regs[3] = {};
	REQUIRE(outcome(c.regionRead(kBar0, edu::kRegId, regs, sizeof(regs))) == "ok");
	CHECK(regs[0] == edu::kId);
	CHECK(regs[1] == 0xffff0000);
	CHECK(regs[2] == 0); // factorial
	uint8_t byte = 0;
	REQUIRE(outcome(c.regionRead(kBar0, edu::kRegId, &byte, 1)) == "ok");
	CHECK(byte == 0xff);
	CHECK(read16(c, kBar0, edu::kRegId + 2) == 0xffff);
	uint8_t tail[6] = {};
	REQUIRE(outcome(c.regionRead(kBar0, edu::kRegId, tail, sizeof(tail))) == "ok");
	uint32_t first;
	std::memcpy(&first, tail, 4);
	CHECK(first == edu::kId);
	CHECK(tail[4] == 0xff);
	CHECK(tail[5] == 0xff);
}

TEST_CASE("REGION_READ of config space returns edu's ids and its MSI capability", "[region_read]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	CHECK(read32(c, kConfig, 0x00) == 0x11e81234);
	CHECK(read16(c, kConfig, 0x02) == 0x11e8);
	uint8_t capPtr = 0, capId = 0;
	REQUIRE(outcome(c.regionRead(kConfig, 0x34, &capPtr, 1)) == "ok");
	CHECK(capPtr == 0x40);
	REQUIRE(outcome(c.regionRead(kConfig, capPtr, &capId, 1)) == "ok");
	CHECK(capId == 0x05); // MSI
	std::vector<uint8_t> all(256);
	REQUIRE(outcome(c.regionRead(kConfig, 0, all.data(), 256)) == "ok");
	CHECK(all[0] == 0x34);
	CHECK(all[1] == 0x12);
}

TEST_CASE("REGION_READ of the RAM BAR returns what was written through the mmap of its fd", "[region_read]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	client::MappedRegion map = mapRamBar(c);
	volatile uint8_t *p = map.at(0, edu::kRamBarMmapSize);
	for (uint64_t i = 0; i < edu::kRamBarMmapSize; i++)
		p[i] = static_cast<uint8_t>(i * 13 + 7);
	std::vector<uint8_t> back(edu::kRamBarMmapSize);
	REQUIRE(outcome(c.regionRead(edu::kRamBar, 0, back.data(), back.size())) == "ok");
	bool same = true;
	for (uint64_t i = 0; i < back.size(); i++)
		same &= back[i] == static_cast<uint8_t>(i * 13 + 7);
	CHECK(same);
}

TEST_CASE("REGION_READ reaches the RAM BAR's trapped last page, outside the sparse mmap area", "[region_read]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	client::MappedRegion map = mapRamBar(c);
	CHECK(map.at(edu::kRamBarMmapSize, 1) == nullptr);
	uint32_t v = 0xfeedbeef;
	REQUIRE(outcome(c.regionWrite(edu::kRamBar, edu::kRamBarSize - 4, &v, 4)) == "ok");
	CHECK(read32(c, edu::kRamBar, edu::kRamBarSize - 4) == 0xfeedbeef);
}

TEST_CASE("REGION_READ of exactly max_data_xfer_size bytes is served", "[region_read]")
{
	SECTION("the default 1 MiB, all of BAR0")
	{
		Daemon d;
		Client c = d.connectNegotiated();
		Reply r = regionRead(c, kBar0, 0, 1u << 20);
		REQUIRE(outcome(r) == "ok");
		CHECK(r.payload.size() == sizeof(RegionAccessPayload) + (1u << 20));
		uint32_t id;
		std::memcpy(&id, r.payload.data() + sizeof(RegionAccessPayload), 4);
		CHECK(id == edu::kId);
	}
	SECTION("--max-data-xfer 4096")
	{
		Daemon d({ "--max-data-xfer", "4096" });
		Client c = d.connectNegotiated();
		Reply r = regionRead(c, edu::kRamBar, 0, 4096);
		REQUIRE(outcome(r) == "ok");
		CHECK(r.payload.size() == sizeof(RegionAccessPayload) + 4096);
	}
}

TEST_CASE("REGION_READ of more than max_data_xfer_size bytes is refused with E2BIG", "[region_read]")
{
	SECTION("the default 1 MiB")
	{
		Daemon d;
		Client c = d.connectNegotiated();
		CHECK(outcome(regionRead(c, kBar0, 0, (1u << 20) + 1)) == "E2BIG");
		CHECK(outcome(regionRead(c, kBar0, 0, 0xffffffff)) == "E2BIG");
		requireServes(c);
	}
	SECTION("--max-data-xfer 4096")
	{
		Daemon d({ "--max-data-xfer", "4096" });
		Client c = d.connectNegotiated();
		CHECK(outcome(regionRead(c, edu::kRamBar, 0, 4097)) == "E2BIG");
		requireServes(c);
	}
}

TEST_CASE("REGION_READ outside the region is refused with EINVAL", "[region_read]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	struct Case {
		uint32_t region;
		uint64_t offset;
		uint32_t count;
	};
	const Case bad[] = {
		{ kBar0, edu::kBar0Size, 4 },
		{ kBar0, edu::kBar0Size - 2, 4 },
		{ kBar0, UINT64_MAX - 1, 4 }, // offset + count wraps
		{ kConfig, 256, 1 },
		{ kConfig, 255, 2 },
		{ edu::kRamBar, edu::kRamBarSize - 1, 2 },
		{ edu::kRamBar, 1ull << 63, 1 },
	};
	for (const auto &b : bad) {
		INFO("region " << b.region << " offset 0x" << std::hex << b.offset << " count " << std::dec << b.count);
		CHECK(outcome(regionRead(c, b.region, b.offset, b.count)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("REGION_READ of 0 bytes is refused with EINVAL", "[region_read]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	CHECK(outcome(regionRead(c, kBar0, 0, 0)) == "EINVAL");
	requireServes(c);
}

TEST_CASE("REGION_READ of a region index past the last is refused with EINVAL", "[region_read]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (uint32_t region : { 9u, 0xffffffffu }) {
		INFO("region " << region);
		CHECK(outcome(regionRead(c, region, 0, 4)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("REGION_READ of a region edu does not have (size 0) is refused with EINVAL", "[region_read]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (uint32_t region : { 1u, 3u, 6u, 8u }) {
		INFO("region " << region);
		CHECK(outcome(regionRead(c, region, 0, 4)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("REGION_READ with a short payload is refused with EINVAL", "[region_read]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (size_t len : { 0, 8, 15 }) {
		INFO(len << "-byte payload");
		std::vector<uint8_t> payload = bytesOf(RegionAccessPayload{ 0, kBar0, 4 });
		payload.resize(len);
		CHECK(outcome(exchange(c, Command::RegionRead, payload)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("REGION_READ with a file descriptor attached is refused with EINVAL", "[region_read]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	int fds[] = { efd.get() };
	size_t before = d.openFds();
	CHECK(outcome(exchange(c, Command::RegionRead, bytesOf(RegionAccessPayload{ 0, kBar0, 4 }), fds)) == "EINVAL");
	CHECK(d.openFds() == before);
	requireServes(c);
}
