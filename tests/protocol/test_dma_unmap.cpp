// SPDX-License-Identifier: Apache-2.0
// VFIO_USER_DMA_UNMAP against the real daemon: the echoed entry, the daemon letting go of the
// client's memory before it replies, unmap-all, and every refused unmap with its errno.
#include "daemon_fixture.h"

using namespace vfio_broker;
using namespace vfio_broker::test;
using vfio_user::DmaUnmapPayload;

namespace {

constexpr uint64_t kIova = 0x100000;
constexpr uint32_t kAll = vfio_user::kDmaUnmapFlagAll;
constexpr uint32_t kDirty = vfio_user::kDmaUnmapFlagGetDirtyBitmap;

Reply dmaUnmap(Client &c, uint64_t iova, uint64_t size, uint32_t flags = 0,
	       uint32_t argsz = sizeof(DmaUnmapPayload), std::span<const int> fds = {})
{
	return exchange(c, Command::DmaUnmap, bytesOf(DmaUnmapPayload{ argsz, flags, iova, size }), fds);
}

void requireMapped(Client &c, const GuestMemory &mem, uint64_t offset, uint64_t iova, uint64_t size)
{
	REQUIRE(outcome(c.dmaMap(mem.fd(), offset, iova, size, kDmaRw)) == "ok");
}

void requireEcho(const Reply &r, uint32_t flags, uint64_t iova, uint64_t size)
{
	REQUIRE(outcome(r) == "ok");
	REQUIRE(r.payload.size() == sizeof(DmaUnmapPayload));
	auto echo = r.as<DmaUnmapPayload>();
	CHECK(echo.argsz == sizeof(DmaUnmapPayload));
	CHECK(echo.flags == flags);
	CHECK(echo.address == iova);
	CHECK(echo.size == size);
}

} // namespace

TEST_CASE("DMA_UNMAP of a mapping succeeds and the reply echoes the entry", "[dma_unmap]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(2 * kPage);
	requireMapped(c, mem, 0, kIova, 2 * kPage);
	for (uint32_t argsz : { static_cast<uint32_t>(sizeof(DmaUnmapPayload)), 4096u }) {
		INFO("argsz " << argsz);
		requireMapped(c, mem, 0, 0x400000, kPage);
		requireEcho(dmaUnmap(c, 0x400000, kPage, 0, argsz), 0, 0x400000, kPage);
	}
	requireEcho(dmaUnmap(c, kIova, 2 * kPage), 0, kIova, 2 * kPage);
}

TEST_CASE("DMA_UNMAP releases the daemon's mapping of the client's memory before it replies", "[dma_unmap]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(2 * kPage);
	requireMapped(c, mem, 0, kIova, 2 * kPage);
	REQUIRE(d.mapsFile(mem.mapsName()));
	REQUIRE(outcome(c.dmaUnmap(kIova, 2 * kPage)) == "ok");
	CHECK(!d.mapsFile(mem.mapsName()));
}

TEST_CASE("DMA_UNMAP leaves the device unable to reach the range", "[dma_unmap]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(2 * kPage);
	requireMapped(c, mem, 0, kIova, kPage);
	requireMapped(c, mem, kPage, kIova + kPage, kPage);
	enableBusMaster(c);
	for (size_t i = 0; i < kPage; i++)
		mem.data()[i] = static_cast<uint8_t>(i);
	dmaToDevice(c, kIova, 1024);
	REQUIRE(outcome(c.dmaUnmap(kIova + kPage, kPage)) == "ok");
	std::memset(mem.data() + kPage, 0x5a, kPage);
	dmaFromDevice(c, kIova + kPage, 1024);
	CHECK(mem.data()[kPage + 1] == 0x5a);
	CHECK(mem.data()[kPage + 1023] == 0x5a);
	requireServes(c);
}

TEST_CASE("DMA_UNMAP of an unknown range is refused with ENOENT", "[dma_unmap]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	CHECK(outcome(dmaUnmap(c, kIova, kPage)) == "ENOENT");
	requireServes(c);
	GuestMemory mem(kPage);
	requireMapped(c, mem, 0, kIova, kPage);
	CHECK(outcome(dmaUnmap(c, 0x200000, kPage)) == "ENOENT");
	requireServes(c);
}

TEST_CASE("DMA_UNMAP of part of a mapping, or more than it, is refused with ENOENT", "[dma_unmap]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(2 * kPage);
	requireMapped(c, mem, 0, kIova, 2 * kPage);
	const std::pair<uint64_t, uint64_t> bad[] = {
		{ kIova, kPage }, { kIova + kPage, kPage }, { kIova, 3 * kPage }, { kIova - kPage, 3 * kPage },
		{ kIova, 0 },
	};
	for (const auto &[iova, size] : bad) {
		INFO("iova 0x" << std::hex << iova << " size 0x" << size);
		CHECK(outcome(dmaUnmap(c, iova, size)) == "ENOENT");
		requireServes(c);
	}
	// Still mapped as a whole.
	CHECK(d.mapsFile(mem.mapsName()));
	requireEcho(dmaUnmap(c, kIova, 2 * kPage), 0, kIova, 2 * kPage);
}

TEST_CASE("DMA_UNMAP of a range already unmapped is refused with ENOENT", "[dma_unmap]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(kPage);
	requireMapped(c, mem, 0, kIova, kPage);
	REQUIRE(outcome(dmaUnmap(c, kIova, kPage)) == "ok");
	CHECK(outcome(dmaUnmap(c, kIova, kPage)) == "ENOENT");
	requireServes(c);
}

TEST_CASE("DMA_UNMAP with the unmap-all flag removes every mapping", "[dma_unmap]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory a(kPage), b(2 * kPage);
	requireMapped(c, a, 0, kIova, kPage);
	requireMapped(c, b, 0, 0x200000, kPage);
	requireMapped(c, b, kPage, 0x300000, kPage);
	REQUIRE(outcome(c.dmaMap(-1, 0, 0x400000, kPage, kDmaRw)) == "ok");
	requireEcho(dmaUnmap(c, 0, 0, kAll), kAll, 0, 0);
	CHECK(!d.mapsFile(a.mapsName()));
	CHECK(!d.mapsFile(b.mapsName()));
	for (uint64_t iova : std::initializer_list<uint64_t>{ kIova, 0x200000, 0x300000, 0x400000 }) {
		INFO("iova 0x" << std::hex << iova);
		CHECK(outcome(dmaUnmap(c, iova, kPage)) == "ENOENT");
	}
	requireMapped(c, a, 0, kIova, kPage); // the IOVAs are free again
	// With nothing (else) mapped it still succeeds.
	requireEcho(dmaUnmap(c, 0, 0, kAll), kAll, 0, 0);
	requireEcho(dmaUnmap(c, 0, 0, kAll), kAll, 0, 0);
}

TEST_CASE("DMA_UNMAP with the unmap-all flag and a nonzero address or size is refused with EINVAL", "[dma_unmap]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(kPage);
	requireMapped(c, mem, 0, kIova, kPage);
	CHECK(outcome(dmaUnmap(c, kIova, kPage, kAll)) == "EINVAL");
	CHECK(outcome(dmaUnmap(c, kIova, 0, kAll)) == "EINVAL");
	CHECK(outcome(dmaUnmap(c, 0, kPage, kAll)) == "EINVAL");
	CHECK(d.mapsFile(mem.mapsName())); // nothing was removed
	requireEcho(dmaUnmap(c, kIova, kPage), 0, kIova, kPage);
}

TEST_CASE("DMA_UNMAP asking for a dirty bitmap is refused with ENOTSUP", "[dma_unmap]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(kPage);
	requireMapped(c, mem, 0, kIova, kPage);
	CHECK(outcome(dmaUnmap(c, kIova, kPage, kDirty)) == "ENOTSUP");
	CHECK(outcome(dmaUnmap(c, 0, 0, kDirty | kAll)) == "ENOTSUP");
	CHECK(d.mapsFile(mem.mapsName()));
	requireEcho(dmaUnmap(c, kIova, kPage), 0, kIova, kPage);
}

TEST_CASE("DMA_UNMAP with unknown flags is refused with EINVAL", "[dma_unmap]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(kPage);
	requireMapped(c, mem, 0, kIova, kPage);
	for (uint32_t flags : { 1u << 2, 0x80000000u }) {
		INFO("flags 0x" << std::hex << flags);
		CHECK(outcome(dmaUnmap(c, kIova, kPage, flags)) == "EINVAL");
		requireServes(c);
	}
	CHECK(d.mapsFile(mem.mapsName()));
}

TEST_CASE("DMA_UNMAP with a short payload or argsz below 24 is refused with EINVAL", "[dma_unmap]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(kPage);
	requireMapped(c, mem, 0, kIova, kPage);
	for (size_t len : { 0, 8, 23 }) {
		INFO(len << "-byte payload");
		std::vector<uint8_t> payload = bytesOf(DmaUnmapPayload{ sizeof(DmaUnmapPayload), 0, kIova, kPage });
		payload.resize(len);
		CHECK(outcome(exchange(c, Command::DmaUnmap, payload)) == "EINVAL");
		requireServes(c);
	}
	for (uint32_t argsz : { 0u, 16u, 23u }) {
		INFO("argsz " << argsz);
		CHECK(outcome(dmaUnmap(c, kIova, kPage, 0, argsz)) == "EINVAL");
		requireServes(c);
	}
	CHECK(d.mapsFile(mem.mapsName()));
}

TEST_CASE("DMA_UNMAP with a file descriptor attached is refused with EINVAL", "[dma_unmap]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(kPage);
	requireMapped(c, mem, 0, kIova, kPage);
	int fds[] = { mem.fd() };
	CHECK(outcome(dmaUnmap(c, kIova, kPage, 0, sizeof(DmaUnmapPayload), fds)) == "EINVAL");
	CHECK(d.mapsFile(mem.mapsName()));
	requireEcho(dmaUnmap(c, kIova, kPage), 0, kIova, kPage);
}
