// SPDX-License-Identifier: Apache-2.0
// VFIO_USER_DEVICE_RESET against the real daemon: registers and config space back to power-on
// values, while the client's interrupt wiring, DMA mappings and region fds survive.
#include "daemon_fixture.h"

#include <sys/stat.h>

using namespace vfio_broker;
using namespace vfio_broker::test;

namespace {

void requireReset(Client &c)
{
	Reply r = exchange(c, Command::DeviceReset, {});
	REQUIRE(outcome(r) == "ok");
	CHECK(r.payload.empty());
	CHECK(r.fds.empty());
}

} // namespace

TEST_CASE("DEVICE_RESET returns edu's registers and config space to their power-on values", "[device_reset]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	write32(c, kBar0, edu::kRegLiveness, 0x12345678);
	write32(c, kBar0, edu::kRegFactorial, 5);
	write32(c, kBar0, edu::kRegStatus, edu::kStatusIrqOnFactorial);
	write32(c, kBar0, edu::kRegIrqRaise, 0x40);
	write64(c, kBar0, edu::kRegDmaSrc, 0x1000);
	write64(c, kBar0, edu::kRegDmaDst, 0x2000);
	write64(c, kBar0, edu::kRegDmaCount, 0x100);
	write16(c, kConfig, 0x04, kPciCommandMemory | kPciCommandMaster | kPciCommandIntxDisable);
	uint32_t msiAddr = 0xfee00000;
	REQUIRE(outcome(c.regionWrite(kConfig, 0x44, &msiAddr, 4)) == "ok");
	REQUIRE(read32(c, kBar0, edu::kRegFactorial) == 120);

	requireReset(c);

	CHECK(read32(c, kBar0, edu::kRegId) == edu::kId);
	CHECK(read32(c, kBar0, edu::kRegLiveness) == 0);
	CHECK(read32(c, kBar0, edu::kRegFactorial) == 0);
	CHECK(read32(c, kBar0, edu::kRegStatus) == 0);
	CHECK(read32(c, kBar0, edu::kRegIrqStatus) == 0);
	CHECK(read64(c, kBar0, edu::kRegDmaSrc) == 0);
	CHECK(read64(c, kBar0, edu::kRegDmaDst) == 0);
	CHECK(read64(c, kBar0, edu::kRegDmaCount) == 0);
	CHECK(read16(c, kConfig, 0x04) == 0);
	CHECK(read32(c, kConfig, 0x44) == 0);
	CHECK(read32(c, kConfig, 0x00) == 0x11e81234);
}

TEST_CASE("DEVICE_RESET zeroes the RAM BAR but keeps the same memory behind the client's fd", "[device_reset]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	auto before = c.regionInfo(edu::kRamBar);
	REQUIRE(outcome(before) == "ok");
	auto map = c.mapRegion(*before);
	REQUIRE(outcome(map) == "ok");
	volatile uint8_t *p = map->at(0x100, 4);
	REQUIRE(p);
	p[0] = 0xab;
	REQUIRE(read32(c, edu::kRamBar, 0x100) == 0xab);

	requireReset(c);

	CHECK(p[0] == 0); // seen through the mapping the client already had
	auto after = c.regionInfo(edu::kRamBar);
	REQUIRE(outcome(after) == "ok");
	struct stat a, b;
	REQUIRE(::fstat(before->fd.get(), &a) == 0);
	REQUIRE(::fstat(after->fd.get(), &b) == 0);
	CHECK(a.st_ino == b.st_ino);
	p[0] = 0xcd;
	CHECK(read32(c, edu::kRamBar, 0x100) == 0xcd);
}

TEST_CASE("DEVICE_RESET keeps the client's interrupt eventfds and DMA mappings", "[device_reset]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	int fds[] = { efd.get() };
	REQUIRE(outcome(c.setIrqEventfds(kMsi, fds)) == "ok");
	GuestMemory mem(2 * kPage);
	REQUIRE(outcome(c.dmaMap(mem.fd(), 0, 0x100000, 2 * kPage, kDmaRw)) == "ok");

	requireReset(c);

	write32(c, kBar0, edu::kRegIrqRaise, 0x1);
	CHECK(waitEventfd(efd.get()));
	enableBusMaster(c); // reset turned bus mastering off
	for (size_t i = 0; i < kPage; i++)
		mem.data()[i] = static_cast<uint8_t>(i ^ 0x5a);
	dmaToDevice(c, 0x100000, 256);
	dmaFromDevice(c, 0x101000, 256);
	CHECK(std::memcmp(mem.data(), mem.data() + kPage, 256) == 0);
	CHECK(outcome(c.dmaUnmap(0x100000, 2 * kPage)) == "ok");
}

TEST_CASE("DEVICE_RESET drops a pending INTx and leaves the line unmasked", "[device_reset]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	int fds[] = { efd.get() };
	REQUIRE(outcome(c.setIrqEventfds(kIntx, fds)) == "ok");
	write32(c, kBar0, edu::kRegIrqRaise, 0x1);
	REQUIRE(waitEventfd(efd.get())); // now automasked, and still asserted

	requireReset(c);

	REQUIRE(outcome(c.unmaskIrq(kIntx)) == "ok");
	CHECK(takeEventfd(efd.get()) == 0); // nothing pending any more
	write32(c, kBar0, edu::kRegIrqRaise, 0x2);
	CHECK(waitEventfd(efd.get()));
}

TEST_CASE("DEVICE_RESET with a file descriptor attached is refused with EINVAL and resets nothing", "[device_reset]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	write32(c, kBar0, edu::kRegLiveness, 0);
	UniqueFd efd = makeEventfd();
	int fds[] = { efd.get() };
	CHECK(outcome(exchange(c, Command::DeviceReset, {}, fds)) == "EINVAL");
	CHECK(read32(c, kBar0, edu::kRegLiveness) == 0xffffffff);
	requireServes(c);
}
