// SPDX-License-Identifier: Apache-2.0
// VFIO_USER_DMA_MAP against the real daemon: the edu DMA engine through mapped memfds, what
// the protection flags let through, blocked DMA, and every refused mapping with its errno.
#include "daemon_fixture.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace vfio_broker;
using namespace vfio_broker::test;
using vfio_user::DmaMapPayload;

namespace {

constexpr uint32_t kRead = vfio_user::kDmaMapFlagRead;
constexpr uint32_t kWrite = vfio_user::kDmaMapFlagWrite;
constexpr uint64_t kIova = 0x100000; // below edu's 28-bit DMA mask

Reply dmaMap(Client &c, int fd, uint64_t offset, uint64_t iova, uint64_t size, uint32_t flags = kDmaRw,
	     uint32_t argsz = sizeof(DmaMapPayload))
{
	int fds[] = { fd };
	return exchange(c, Command::DmaMap, bytesOf(DmaMapPayload{ argsz, flags, offset, iova, size }),
			fd >= 0 ? std::span<const int>(fds) : std::span<const int>());
}

void requireMapped(Client &c, int fd, uint64_t offset, uint64_t iova, uint64_t size, uint32_t flags = kDmaRw)
{
	Reply r = dmaMap(c, fd, offset, iova, size, flags);
	REQUIRE(outcome(r) == "ok");
	CHECK(r.payload.empty()); // DMA_MAP has no reply payload
}

void fill(uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = static_cast<uint8_t>(i * 7 + seed);
}

bool all(const uint8_t *p, size_t n, uint8_t value)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != value)
			return false;
	return true;
}

} // namespace

TEST_CASE("DMA_MAP of a memfd lets the edu DMA engine read and write guest memory", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(2 * kPage);
	requireMapped(c, mem.fd(), 0, kIova, 2 * kPage);
	CHECK(d.mapsFile(mem.mapsName()));
	enableBusMaster(c);
	fill(mem.data(), kPage, 3);
	dmaToDevice(c, kIova, 1024);
	dmaFromDevice(c, kIova + kPage, 1024);
	CHECK(std::memcmp(mem.data(), mem.data() + kPage, 1024) == 0);
}

TEST_CASE("DMA_MAP with an offset maps that part of the fd", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(3 * kPage);
	requireMapped(c, mem.fd(), 0, kIova, kPage);
	requireMapped(c, mem.fd(), 2 * kPage, 0x300000, kPage);
	enableBusMaster(c);
	fill(mem.data(), kPage, 9);
	dmaToDevice(c, kIova, kPage);
	dmaFromDevice(c, 0x300000, kPage);
	CHECK(std::memcmp(mem.data(), mem.data() + 2 * kPage, kPage) == 0);
	CHECK(all(mem.data() + kPage, kPage, 0)); // the page between was not the target
}

TEST_CASE("DMA to an IOVA outside every mapping is blocked", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(2 * kPage);
	requireMapped(c, mem.fd(), 0, kIova, kPage);
	requireMapped(c, mem.fd(), kPage, kIova + 0x10000, kPage);
	enableBusMaster(c);
	fill(mem.data(), kPage, 1);
	dmaToDevice(c, kIova, kPage); // the device buffer now holds the pattern
	std::memset(mem.data() + kPage, 0x5a, kPage);

	SECTION("an unmapped IOVA")
	{
		dmaFromDevice(c, kIova + 0x8000, 1024);
	}
	SECTION("a range running past the end of its mapping")
	{
		dmaFromDevice(c, kIova + 0x10000 + kPage - 512, 1024);
	}
	SECTION("with bus mastering off")
	{
		write16(c, kConfig, 0x04, kPciCommandMemory);
		dmaFromDevice(c, kIova + 0x10000, 1024);
	}
	CHECK(all(mem.data() + kPage, kPage, 0x5a));
	requireServes(c);
}

TEST_CASE("DMA_MAP read-only memory can be read by the device but not written", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory ro(kPage), rw(kPage);
	requireMapped(c, ro.fd(), 0, kIova, kPage, kRead);
	requireMapped(c, rw.fd(), 0, kIova + kPage, kPage, kDmaRw);
	enableBusMaster(c);
	fill(ro.data(), kPage, 5);
	dmaToDevice(c, kIova, 512); // read from the read-only range
	dmaFromDevice(c, kIova + kPage, 512);
	CHECK(std::memcmp(ro.data(), rw.data(), 512) == 0);

	std::memset(rw.data(), 0x77, kPage);
	dmaToDevice(c, kIova + kPage, 512);
	dmaFromDevice(c, kIova, 512); // write to the read-only range: blocked
	CHECK(ro.data()[0] == 5);
	CHECK(std::memcmp(ro.data(), rw.data(), 512) != 0);
	requireServes(c);
}

TEST_CASE("DMA_MAP write-only memory can be written by the device but not read", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory wo(kPage), rw(kPage);
	requireMapped(c, wo.fd(), 0, kIova, kPage, kWrite);
	requireMapped(c, rw.fd(), 0, kIova + kPage, kPage, kDmaRw);
	enableBusMaster(c);
	fill(rw.data(), kPage, 11);
	dmaToDevice(c, kIova + kPage, 512);
	dmaFromDevice(c, kIova, 512); // write into the write-only range
	CHECK(std::memcmp(wo.data(), rw.data(), 512) == 0);

	std::memset(wo.data(), 0x33, kPage);
	dmaToDevice(c, kIova, 512); // read from the write-only range: blocked, the buffer keeps the pattern
	std::memset(rw.data(), 0, kPage);
	dmaFromDevice(c, kIova + kPage, 512);
	CHECK(rw.data()[1] == 18);
	CHECK(!all(rw.data(), 512, 0x33));
}

TEST_CASE("DMA_MAP without an fd is recorded, but the device cannot reach the range", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	requireMapped(c, -1, 0, kIova, kPage);
	CHECK(outcome(dmaMap(c, -1, 0, kIova, kPage)) == "EEXIST");
	enableBusMaster(c);
	dmaFromDevice(c, kIova, 512); // nowhere to go; must not crash the daemon
	REQUIRE(outcome(c.dmaUnmap(kIova, kPage)) == "ok");
	requireServes(c);
}

TEST_CASE("DMA into memory the client shrank after DMA_MAP is blocked and the daemon survives",
	  "[dma_map]")
{
	// The client can truncate its memfd under our mapping: the device's DMA must fault
	// cleanly (SIGBUS guard), not kill the daemon.
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(2 * kPage);
	requireMapped(c, mem.fd(), 0, kIova, 2 * kPage);
	enableBusMaster(c);
	// Truncated under the daemon's mapping: its access would fault with SIGBUS.
	REQUIRE(::ftruncate(mem.fd(), 0) == 0);
	dmaFromDevice(c, kIova, 1024);
	dmaToDevice(c, kIova + kPage, 1024);
	REQUIRE(d.alive());
	requireServes(c);
	REQUIRE(outcome(c.dmaUnmap(kIova, 2 * kPage)) == "ok");
}

TEST_CASE("DMA_MAP over an existing mapping is refused with EEXIST; adjacent ranges are fine", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(8 * kPage);
	requireMapped(c, mem.fd(), 0, kIova, 2 * kPage);
	const std::pair<uint64_t, uint64_t> overlapping[] = {
		{ kIova, 2 * kPage },               // the same range
		{ kIova + kPage, kPage },           // inside
		{ kIova - kPage, 2 * kPage },       // over its start
		{ kIova + kPage, 2 * kPage },       // over its end
		{ kIova - kPage, 4 * kPage },       // around it
	};
	for (const auto &[iova, size] : overlapping) {
		INFO("iova 0x" << std::hex << iova << " size 0x" << size);
		CHECK(outcome(dmaMap(c, mem.fd(), 2 * kPage, iova, size)) == "EEXIST");
		requireServes(c);
	}
	requireMapped(c, mem.fd(), 4 * kPage, kIova - kPage, kPage);
	requireMapped(c, mem.fd(), 5 * kPage, kIova + 2 * kPage, kPage);
}

TEST_CASE("DMA_MAP of an unaligned or empty range is refused with EINVAL", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(4 * kPage);
	struct Case {
		uint64_t offset, iova, size;
	};
	const Case bad[] = {
		{ 0, kIova + 0x800, kPage },  { 0, kIova, 0x800 },        { 0x800, kIova, kPage },
		{ 0, kIova, kPage + 1 },      { 0, kIova + 1, kPage },    { 0, kIova, 0 },
	};
	for (const auto &b : bad) {
		INFO("offset 0x" << std::hex << b.offset << " iova 0x" << b.iova << " size 0x" << b.size);
		CHECK(outcome(dmaMap(c, mem.fd(), b.offset, b.iova, b.size)) == "EINVAL");
		requireServes(c);
	}
	CHECK(!d.mapsFile(mem.mapsName()));
}

TEST_CASE("DMA_MAP of a range that wraps around the address space is refused with EINVAL", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	CHECK(outcome(dmaMap(c, -1, 0, 0xfffffffffffff000ull, 2 * kPage)) == "EINVAL");
	CHECK(outcome(dmaMap(c, -1, 0, kIova, 0xfffffffffffff000ull)) == "EINVAL");
	requireServes(c);
}

TEST_CASE("DMA_MAP outside the IOMMU's IOVA windows is refused with EINVAL", "[dma_map]")
{
	// sim:edu reports the x86 windows: below the MSI range at 0xfee00000, and above it up to 2^39.
	Daemon d;
	Client c = d.connectNegotiated();
	const std::pair<uint64_t, uint64_t> bad[] = {
		{ 0xfee00000, kPage },              // in the MSI range
		{ 0xfedff000, 2 * kPage },          // running into it
		{ 0xfeeff000, 2 * kPage },          // running out of it
		{ 0x8000000000ull, kPage },         // above the top
		{ 0x7ffffff000ull, 2 * kPage },     // across the top
	};
	for (const auto &[iova, size] : bad) {
		INFO("iova 0x" << std::hex << iova << " size 0x" << size);
		CHECK(outcome(dmaMap(c, -1, 0, iova, size)) == "EINVAL");
		requireServes(c);
	}
	// The edges of the windows themselves are fine.
	requireMapped(c, -1, 0, 0xfedff000, kPage);
	requireMapped(c, -1, 0, 0xfef00000, kPage);
	requireMapped(c, -1, 0, 0x7ffffff000ull, kPage);
	requireMapped(c, -1, 0, 0, kPage);
}

TEST_CASE("DMA_MAP with flags other than read and write is refused with EINVAL", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(kPage);
	for (uint32_t flags : { 0u, 1u << 2, kDmaRw | (1u << 2), 0x80000000u }) {
		INFO("flags 0x" << std::hex << flags);
		CHECK(outcome(dmaMap(c, mem.fd(), 0, kIova, kPage, flags)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("DMA_MAP with an fd that is not a memory file is refused with EINVAL", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	Pipe pipe = makePipe();
	UniqueFd efd = makeEventfd();
	UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
	REQUIRE(null);
	int sv[2];
	REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	UniqueFd s0(sv[0]), s1(sv[1]);
	size_t before = d.openFds();
	for (int fd : { pipe.readEnd.get(), pipe.writeEnd.get(), efd.get(), null.get(), s0.get() }) {
		INFO("fd " << fd);
		CHECK(outcome(dmaMap(c, fd, 0, kIova, kPage)) == "EINVAL");
		requireServes(c);
	}
	CHECK(d.openFds() == before);
	requireMapped(c, -1, 0, kIova, kPage); // nothing was left at the IOVA
}

TEST_CASE("DMA_MAP of a range beyond the end of the memfd is refused with EINVAL", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(kPage);
	const std::pair<uint64_t, uint64_t> bad[] = {
		{ 0, 2 * kPage }, { kPage, kPage }, { 2 * kPage, kPage }, { 1ull << 62, kPage },
	};
	for (const auto &[offset, size] : bad) {
		INFO("offset 0x" << std::hex << offset << " size 0x" << size);
		CHECK(outcome(dmaMap(c, mem.fd(), offset, kIova, size)) == "EINVAL");
		requireServes(c);
	}
	CHECK(!d.mapsFile(mem.mapsName()));
	requireMapped(c, mem.fd(), 0, kIova, kPage);
}

TEST_CASE("DMA_MAP of a read-only fd is refused with EACCES when the device may write", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(kPage);
	UniqueFd ro(::open(("/proc/self/fd/" + std::to_string(mem.fd())).c_str(), O_RDONLY | O_CLOEXEC));
	REQUIRE(ro);
	CHECK(outcome(dmaMap(c, ro.get(), 0, kIova, kPage, kDmaRw)) == "EACCES");
	CHECK(outcome(dmaMap(c, ro.get(), 0, kIova, kPage, kWrite)) == "EACCES");
	requireServes(c);
	requireMapped(c, ro.get(), 0, kIova, kPage, kRead);
}

TEST_CASE("DMA_MAP beyond --max-dma-maps mappings is refused with ENOSPC until one is unmapped", "[dma_map]")
{
	Daemon d({ "--max-dma-maps", "3" });
	Client c = d.connectNegotiated();
	CHECK(c.negotiated().maxDmaMaps == 3);
	GuestMemory mem(4 * kPage);
	for (uint64_t i = 0; i < 3; i++)
		requireMapped(c, mem.fd(), i * kPage, kIova + i * 0x10000, kPage);
	CHECK(outcome(dmaMap(c, mem.fd(), 3 * kPage, kIova + 3 * 0x10000, kPage)) == "ENOSPC");
	CHECK(outcome(dmaMap(c, -1, 0, kIova + 4 * 0x10000, kPage)) == "ENOSPC");
	requireServes(c);
	REQUIRE(outcome(c.dmaUnmap(kIova + 0x10000, kPage)) == "ok");
	requireMapped(c, mem.fd(), 3 * kPage, kIova + 3 * 0x10000, kPage);
}

TEST_CASE("DMA_MAP with a short payload or argsz below 32 is refused with EINVAL", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(kPage);
	int fds[] = { mem.fd() };
	for (size_t len : { 0, 16, 31 }) {
		INFO(len << "-byte payload");
		std::vector<uint8_t> payload = bytesOf(DmaMapPayload{ sizeof(DmaMapPayload), kDmaRw, 0, kIova, kPage });
		payload.resize(len);
		CHECK(outcome(exchange(c, Command::DmaMap, payload, fds)) == "EINVAL");
		requireServes(c);
	}
	for (uint32_t argsz : { 0u, 24u, 31u }) {
		INFO("argsz " << argsz);
		CHECK(outcome(dmaMap(c, mem.fd(), 0, kIova, kPage, kDmaRw, argsz)) == "EINVAL");
		requireServes(c);
	}
	CHECK(!d.mapsFile(mem.mapsName()));
}

TEST_CASE("DMA_MAP with two fds is refused with EINVAL", "[dma_map]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory a(kPage), b(kPage);
	int fds[] = { a.fd(), b.fd() };
	size_t before = d.openFds();
	CHECK(outcome(exchange(c, Command::DmaMap, bytesOf(DmaMapPayload{ sizeof(DmaMapPayload), kDmaRw, 0, kIova, kPage }),
			       fds)) == "EINVAL");
	CHECK(d.openFds() == before);
	CHECK(!d.mapsFile(a.mapsName()));
	requireMapped(c, a.fd(), 0, kIova, kPage);
}
