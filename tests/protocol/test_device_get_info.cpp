// SPDX-License-Identifier: Apache-2.0
// VFIO_USER_DEVICE_GET_INFO against the real daemon: what sim:edu reports, and short or
// undersized requests.
#include "daemon_fixture.h"

using namespace vfio_broker;
using namespace vfio_broker::test;
using vfio_user::DeviceInfoPayload;

TEST_CASE("DEVICE_GET_INFO reports a resettable PCI device with 9 regions and 5 IRQ types", "[device_get_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	Reply r = exchange(c, Command::DeviceGetInfo, bytesOf(DeviceInfoPayload{ sizeof(DeviceInfoPayload), 0, 0, 0 }));
	REQUIRE(outcome(r) == "ok");
	REQUIRE(r.payload.size() == sizeof(DeviceInfoPayload));
	CHECK(r.fds.empty());
	auto info = r.as<DeviceInfoPayload>();
	CHECK(info.argsz == sizeof(DeviceInfoPayload));
	CHECK(info.flags == (VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET));
	CHECK(info.numRegions == 9);
	CHECK(info.numIrqs == 5);
}

TEST_CASE("DEVICE_GET_INFO with a larger argsz is answered with the 16 bytes the reply needs", "[device_get_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	// argsz is the most the client can take; the reply says what it needed.
	std::vector<uint8_t> payload = bytesOf(DeviceInfoPayload{ 4096, 0, 0, 0 }, std::vector<uint8_t>(48, 0));
	Reply r = exchange(c, Command::DeviceGetInfo, payload);
	REQUIRE(outcome(r) == "ok");
	REQUIRE(r.payload.size() == sizeof(DeviceInfoPayload));
	CHECK(r.as<DeviceInfoPayload>().argsz == sizeof(DeviceInfoPayload));
	CHECK(r.as<DeviceInfoPayload>().numRegions == 9);
}

TEST_CASE("DEVICE_GET_INFO with a payload shorter than its struct is refused with EINVAL", "[device_get_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (size_t len : { 0, 4, 15 }) {
		INFO(len << "-byte payload");
		std::vector<uint8_t> payload(len, 0);
		if (len >= 4)
			payload[0] = sizeof(DeviceInfoPayload); // a plausible argsz, so the length is the fault
		CHECK(outcome(exchange(c, Command::DeviceGetInfo, payload)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("DEVICE_GET_INFO with argsz below 16 is refused with EINVAL", "[device_get_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (uint32_t argsz : { 0u, 8u, 15u }) {
		INFO("argsz " << argsz);
		CHECK(outcome(exchange(c, Command::DeviceGetInfo, bytesOf(DeviceInfoPayload{ argsz, 0, 0, 0 }))) ==
		      "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("DEVICE_GET_INFO with a file descriptor attached is refused with EINVAL", "[device_get_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	size_t before = d.openFds();
	UniqueFd efd = makeEventfd();
	int fds[] = { efd.get() };
	CHECK(outcome(exchange(c, Command::DeviceGetInfo, bytesOf(DeviceInfoPayload{ sizeof(DeviceInfoPayload), 0, 0, 0 }),
			       fds)) == "EINVAL");
	// The refused message's fd was closed, not kept.
	CHECK(d.openFds() == before);
	requireServes(c);
}
