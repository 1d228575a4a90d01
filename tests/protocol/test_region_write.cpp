// SPDX-License-Identifier: Apache-2.0
// VFIO_USER_REGION_WRITE against the real daemon: edu registers doing their work, the RAM BAR
// as its mmap'd fd sees it, config space masks, No_reply, and every malformed write.
#include "daemon_fixture.h"

#include <chrono>

using namespace vfio_broker;
using namespace vfio_broker::test;
using vfio_user::RegionAccessPayload;

namespace {

Reply regionWrite(Client &c, uint32_t region, uint64_t offset, uint32_t count, std::span<const uint8_t> data)
{
	return exchange(c, Command::RegionWrite, bytesOf(RegionAccessPayload{ offset, region, count }, data));
}

std::vector<uint8_t> le32(uint32_t v)
{
	std::vector<uint8_t> out(4);
	std::memcpy(out.data(), &v, 4);
	return out;
}

} // namespace

TEST_CASE("REGION_WRITE to edu's liveness register reads back as its inverse", "[region_write]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	Reply r = regionWrite(c, kBar0, edu::kRegLiveness, 4, le32(0x12345678));
	REQUIRE(outcome(r) == "ok");
	// The reply echoes offset, region and count, and carries no data.
	REQUIRE(r.payload.size() == sizeof(RegionAccessPayload));
	auto echo = r.as<RegionAccessPayload>();
	CHECK(echo.offset == edu::kRegLiveness);
	CHECK(echo.region == kBar0);
	CHECK(echo.count == 4);
	CHECK(read32(c, kBar0, edu::kRegLiveness) == ~0x12345678u);
}

TEST_CASE("REGION_WRITE to edu's factorial register makes the device compute n!", "[region_write]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	write32(c, kBar0, edu::kRegFactorial, 10);
	auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kWaitMs);
	while (read32(c, kBar0, edu::kRegStatus) & 0x1)
		REQUIRE(std::chrono::steady_clock::now() < deadline);
	CHECK(read32(c, kBar0, edu::kRegFactorial) == 3628800);
}

TEST_CASE("REGION_WRITE of edu's 64-bit DMA registers reads back as written", "[region_write]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	write64(c, kBar0, edu::kRegDmaSrc, 0x123456789aull);
	write64(c, kBar0, edu::kRegDmaCount, 0x800);
	CHECK(read64(c, kBar0, edu::kRegDmaSrc) == 0x123456789aull);
	CHECK(read32(c, kBar0, edu::kRegDmaSrc) == 0x3456789a);
	CHECK(read64(c, kBar0, edu::kRegDmaCount) == 0x800);
}

TEST_CASE("REGION_WRITE to the RAM BAR shows up in the mmap of its fd", "[region_write]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	auto info = c.regionInfo(edu::kRamBar);
	REQUIRE(outcome(info) == "ok");
	auto map = c.mapRegion(*info);
	REQUIRE(outcome(map) == "ok");
	volatile uint8_t *p = map->at(0, edu::kRamBarMmapSize);
	REQUIRE(p);
	std::vector<uint8_t> pattern(edu::kRamBarMmapSize);
	for (size_t i = 0; i < pattern.size(); i++)
		pattern[i] = static_cast<uint8_t>(i * 31 + 1);
	REQUIRE(outcome(c.regionWrite(edu::kRamBar, 0, pattern.data(), pattern.size())) == "ok");
	bool same = true;
	for (size_t i = 0; i < pattern.size(); i++)
		same &= p[i] == pattern[i];
	CHECK(same);
}

TEST_CASE("REGION_WRITE to config space changes only the writable bits", "[region_write]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	write16(c, kConfig, 0x00, 0xffff); // vendor id is read-only
	CHECK(read16(c, kConfig, 0x00) == 0x1234);
	write16(c, kConfig, 0x04, 0xffff);
	CHECK(read16(c, kConfig, 0x04) == (kPciCommandMemory | kPciCommandMaster | kPciCommandIntxDisable));
	write16(c, kConfig, 0x04, 0);
	CHECK(read16(c, kConfig, 0x04) == 0);
}

TEST_CASE("REGION_WRITE of exactly max_data_xfer_size bytes is applied", "[region_write]")
{
	Daemon d({ "--max-data-xfer", "4096" });
	Client c = d.connectNegotiated();
	std::vector<uint8_t> data(4096, 0xa5);
	REQUIRE(outcome(regionWrite(c, edu::kRamBar, 0x1000, 4096, data)) == "ok");
	CHECK(read32(c, edu::kRamBar, 0x1ffc) == 0xa5a5a5a5);
}

TEST_CASE("REGION_WRITE with more than max_data_xfer_size bytes is refused with E2BIG and the connection is closed",
	  "[region_write]")
{
	// The message itself is then longer than the daemon frames, so it cannot skip it.
	Daemon d({ "--max-data-xfer", "4096" });
	{
		Client c = d.connectNegotiated();
		std::vector<uint8_t> data(4097, 0x5a);
		auto bytes = frame(0x77, Command::RegionWrite, bytesOf(RegionAccessPayload{ 0, edu::kRamBar, 4097 }, data));
		REQUIRE(outcome(c.sendRaw(bytes)) == "ok");
		Reply r = receiveReply(c);
		CHECK(r.header.msgId == 0x77);
		CHECK(r.header.command == static_cast<uint16_t>(Command::RegionWrite));
		CHECK(outcome(r) == "E2BIG");
		requireClosedByDaemon(c);
	}
	requireFreshClientWorks(d);
	Client c = d.connectNegotiated();
	CHECK(read32(c, edu::kRamBar, 0) == 0); // nothing of it was written
}

TEST_CASE("REGION_WRITE above a small max_data_xfer_size is refused with E2BIG and the connection keeps working",
	  "[region_write]")
{
	// Below the daemon's floor for whole messages, the request still arrives intact.
	Daemon d({ "--max-data-xfer", "64" });
	Client c = d.connectNegotiated();
	std::vector<uint8_t> data(65, 0x5a);
	CHECK(outcome(regionWrite(c, edu::kRamBar, 0, 65, data)) == "E2BIG");
	requireServes(c);
	data.resize(64);
	CHECK(outcome(regionWrite(c, edu::kRamBar, 0, 64, data)) == "ok");
	CHECK(read32(c, edu::kRamBar, 60) == 0x5a5a5a5a);
}

TEST_CASE("REGION_WRITE whose data length differs from count is refused with EINVAL", "[region_write]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	const std::pair<uint32_t, size_t> bad[] = { { 4, 2 }, { 4, 8 }, { 4, 0 }, { 0, 4 }, { 0xffffffff, 4 } };
	for (const auto &[count, len] : bad) {
		INFO("count " << count << " with " << len << " bytes of data");
		std::vector<uint8_t> data(len, 0x11);
		CHECK(outcome(regionWrite(c, kBar0, edu::kRegLiveness, count, data)) == "EINVAL");
		requireServes(c);
	}
	CHECK(read32(c, kBar0, edu::kRegLiveness) == 0); // never written
}

TEST_CASE("REGION_WRITE of 0 bytes is refused with EINVAL", "[region_write]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	CHECK(outcome(regionWrite(c, kBar0, edu::kRegLiveness, 0, {})) == "EINVAL");
	requireServes(c);
}

TEST_CASE("REGION_WRITE outside the region is refused with EINVAL", "[region_write]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	struct Case {
		uint32_t region;
		uint64_t offset;
	};
	const Case bad[] = {
		{ kBar0, edu::kBar0Size },          { kBar0, edu::kBar0Size - 2 }, { kBar0, UINT64_MAX - 1 },
		{ kConfig, 254 },                   { edu::kRamBar, edu::kRamBarSize - 3 },
	};
	for (const auto &b : bad) {
		INFO("region " << b.region << " offset 0x" << std::hex << b.offset);
		CHECK(outcome(regionWrite(c, b.region, b.offset, 4, le32(0xdeadbeef))) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("REGION_WRITE to a region index past the last or of size 0 is refused with EINVAL", "[region_write]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (uint32_t region : { 1u, 6u, 8u, 9u, 0xffffffffu }) {
		INFO("region " << region);
		CHECK(outcome(regionWrite(c, region, 0, 4, le32(1))) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("REGION_WRITE with a short payload is refused with EINVAL", "[region_write]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (size_t len : { 0, 8, 15 }) {
		INFO(len << "-byte payload");
		std::vector<uint8_t> payload = bytesOf(RegionAccessPayload{ edu::kRegLiveness, kBar0, 0 });
		payload.resize(len);
		CHECK(outcome(exchange(c, Command::RegionWrite, payload)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("REGION_WRITE with a file descriptor attached is refused with EINVAL", "[region_write]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	int fds[] = { efd.get() };
	size_t before = d.openFds();
	CHECK(outcome(exchange(c, Command::RegionWrite,
			       bytesOf(RegionAccessPayload{ edu::kRegLiveness, kBar0, 4 }, le32(7)), fds)) == "EINVAL");
	CHECK(d.openFds() == before);
	CHECK(read32(c, kBar0, edu::kRegLiveness) == 0);
}

TEST_CASE("REGION_WRITE with No_reply is applied, and neither it nor its refusal is answered", "[region_write]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	const uint32_t noReply = vfio_user::kFlagTypeCommand | vfio_user::kFlagNoReply;
	auto good = frame(0x100, Command::RegionWrite,
			  bytesOf(RegionAccessPayload{ edu::kRegLiveness, kBar0, 4 }, le32(0x0f0f0f0f)), noReply);
	auto bad = frame(0x101, Command::RegionWrite, bytesOf(RegionAccessPayload{ 0, 9, 4 }, le32(0)), noReply);
	auto read = frame(0x102, Command::RegionRead, bytesOf(RegionAccessPayload{ edu::kRegLiveness, kBar0, 4 }));
	REQUIRE(outcome(c.sendRaw(good)) == "ok");
	REQUIRE(outcome(c.sendRaw(bad)) == "ok");
	REQUIRE(outcome(c.sendRaw(read)) == "ok");
	// The first reply to arrive is the read's, and it sees the write.
	Reply r = receiveReply(c);
	REQUIRE(r.header.msgId == 0x102);
	REQUIRE(outcome(r) == "ok");
	uint32_t v;
	REQUIRE(r.payload.size() == sizeof(RegionAccessPayload) + 4);
	std::memcpy(&v, r.payload.data() + sizeof(RegionAccessPayload), 4);
	CHECK(v == 0xf0f0f0f0);
	requireServes(c);
}
