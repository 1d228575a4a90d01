// SPDX-License-Identifier: Apache-2.0
// VFIO_USER_VERSION against the real daemon: minor negotiation, the capabilities JSON both
// ways, every malformed proposal, and that nothing else is served before VERSION.
#include "daemon_fixture.h"
#include "vfio_user/json.h"

using namespace vfio_broker;
using namespace vfio_broker::test;
using vfio_user::VersionPayload;

namespace {

std::vector<uint8_t> versionPayload(uint16_t major, uint16_t minor, const std::string &json = "",
				    bool nul = true)
{
	std::vector<uint8_t> tail(json.begin(), json.end());
	if (nul && !json.empty())
		tail.push_back('\0');
	return bytesOf(VersionPayload{ major, minor }, tail);
}

// The reply's JSON, REQUIRing the NUL terminator the spec puts after it.
std::string replyJson(const Reply &r)
{
	REQUIRE(r.payload.size() > sizeof(VersionPayload));
	REQUIRE(r.payload.back() == '\0');
	return std::string(r.payload.begin() + sizeof(VersionPayload), r.payload.end() - 1);
}

uint64_t capability(const std::string &json, const char *key)
{
	auto doc = vfio_user::parseJson(json);
	INFO("reply JSON: " << json);
	REQUIRE(doc);
	REQUIRE(doc->isObject());
	const vfio_user::JsonValue *caps = doc->find("capabilities");
	REQUIRE(caps);
	REQUIRE(caps->isObject());
	const vfio_user::JsonValue *v = caps->find(key);
	INFO("capability " << key);
	REQUIRE(v);
	REQUIRE(v->asUint());
	return *v->asUint();
}

// Every proposal in `bad` is refused with EINVAL on one connection, which then still negotiates.
void requireAllRefused(Daemon &d, const std::vector<std::string> &bad)
{
	Client c = d.connect();
	for (const auto &json : bad) {
		INFO("capabilities JSON: " << json);
		CHECK(outcome(exchange(c, Command::Version, versionPayload(0, 2, json))) == "EINVAL");
	}
	REQUIRE(outcome(c.negotiate()) == "ok");
	requireServes(c);
}

} // namespace

TEST_CASE("VERSION is answered with major 0 and the lower of the two minor versions", "[version]")
{
	Daemon d;
	const std::pair<uint16_t, uint16_t> cases[] = { { 0, 0 }, { 1, 1 }, { 2, 2 }, { 3, 2 }, { 0xffff, 2 } };
	for (const auto &[proposed, expected] : cases) {
		INFO("client proposes 0." << proposed);
		Client c = d.connect();
		Reply r = exchange(c, Command::Version, versionPayload(0, proposed));
		REQUIRE(outcome(r) == "ok");
		auto v = r.as<VersionPayload>();
		CHECK(v.major == 0);
		CHECK(v.minor == expected);
		requireServes(c);
	}
}

TEST_CASE("VERSION reply carries the server's limits as NUL-terminated JSON capabilities", "[version]")
{
	SECTION("defaults")
	{
		Daemon d;
		Client c = d.connect();
		Reply r = exchange(c, Command::Version, versionPayload(0, 2, Client::defaultCapabilities()));
		REQUIRE(outcome(r) == "ok");
		CHECK(r.fds.empty());
		std::string json = replyJson(r);
		CHECK(capability(json, "max_msg_fds") == 16);
		CHECK(capability(json, "max_data_xfer_size") == 1048576);
		CHECK(capability(json, "max_dma_maps") == 4096);
		// sim:edu reports the lab's VT-d page sizes: 4 KiB, 2 MiB and 1 GiB.
		CHECK(capability(json, "pgsizes") == 0x40201000);
	}
	SECTION("limits set on the command line")
	{
		Daemon d({ "--max-msg-fds", "4", "--max-data-xfer", "8192", "--max-dma-maps", "7" });
		Client c = d.connect();
		auto n = c.negotiate();
		REQUIRE(outcome(n) == "ok");
		CHECK(n->maxMsgFds == 4);
		CHECK(n->maxDataXfer == 8192);
		CHECK(n->maxDmaMaps == 7);
		CHECK(capability(n->json, "max_msg_fds") == 4);
		CHECK(capability(n->json, "max_data_xfer_size") == 8192);
		CHECK(capability(n->json, "max_dma_maps") == 7);
	}
}

TEST_CASE("VERSION and the fixed-size requests are served with the smallest --max-data-xfer", "[version]")
{
	Daemon d({ "--max-data-xfer", "8" });
	Client c = d.connect();
	auto n = c.negotiate(Client::defaultCapabilities() + std::string(512, ' '));
	REQUIRE(outcome(n) == "ok");
	CHECK(n->maxDataXfer == 8);
	GuestMemory mem(kPage);
	CHECK(outcome(c.dmaMap(mem.fd(), 0, 0x100000, kPage, kDmaRw)) == "ok");
	requireServes(c);
	CHECK(read64(c, kBar0, 0x80) == 0);
	uint8_t nine[9];
	CHECK(outcome(c.regionRead(kBar0, 0, nine, 9)) == "E2BIG");
	requireServes(c);
}

TEST_CASE("VERSION capabilities are accepted with and without the terminating NUL", "[version]")
{
	Daemon d;
	for (bool nul : { true, false }) {
		INFO("with NUL: " << nul);
		Client c = d.connect();
		Reply r = exchange(c, Command::Version,
				   versionPayload(0, 2, "{\"capabilities\":{\"max_msg_fds\":8}}", nul));
		REQUIRE(outcome(r) == "ok");
		requireServes(c);
	}
}

TEST_CASE("VERSION without any capabilities JSON is accepted", "[version]")
{
	Daemon d;
	Client c = d.connect();
	Reply r = exchange(c, Command::Version, versionPayload(0, 2));
	REQUIRE(outcome(r) == "ok");
	CHECK(r.as<VersionPayload>().minor == 2);
	requireServes(c);
}

TEST_CASE("VERSION ignores capabilities it does not know and offers no twin socket", "[version]")
{
	Daemon d;
	Client c = d.connect();
	Reply r = exchange(c, Command::Version,
			   versionPayload(0, 2, "{\"capabilities\":{\"twin_socket\":{\"supported\":true},"
						"\"write_multiple\":true,\"future\":[1,2]},\"other\":null}"));
	REQUIRE(outcome(r) == "ok");
	CHECK(r.fds.empty());
	CHECK(replyJson(r).find("twin_socket") == std::string::npos);
	requireServes(c);
}

TEST_CASE("VERSION with malformed capabilities JSON is refused with EINVAL", "[version]")
{
	Daemon d;
	requireAllRefused(d, {
		"{\"capabilities\":",
		"{capabilities:{}}",
		"{\"capabilities\":{},}",
		"{\"capabilities\" {}}",
		"{\"capabilities\":{}} trailing",
		"{\"a\":\"unterminated}",
		"\xff\xfe{}",
		std::string(64, '['),
	});
}

TEST_CASE("VERSION JSON that is not an object is refused with EINVAL", "[version]")
{
	Daemon d;
	requireAllRefused(d, { "[]", "42", "\"capabilities\"", "null", "true" });
}

TEST_CASE("VERSION with a capabilities member that is not an object is refused with EINVAL", "[version]")
{
	Daemon d;
	requireAllRefused(d, { "{\"capabilities\":[]}", "{\"capabilities\":1}", "{\"capabilities\":\"x\"}",
			       "{\"capabilities\":null}" });
}

TEST_CASE("VERSION with a capability that is not a non-negative integer is refused with EINVAL", "[version]")
{
	Daemon d;
	std::vector<std::string> bad;
	for (const char *key : { "max_msg_fds", "max_data_xfer_size", "pgsizes", "max_dma_maps" })
		for (const char *value : { "\"16\"", "-1", "1.5", "1e3", "true", "null", "{}", "[4096]",
					   "99999999999999999999999" })
			bad.push_back(std::string("{\"capabilities\":{\"") + key + "\":" + value + "}}");
	requireAllRefused(d, bad);
}

TEST_CASE("VERSION with a payload shorter than major and minor is refused with EINVAL", "[version]")
{
	Daemon d;
	Client c = d.connect();
	for (size_t len : { 0, 1, 3 }) {
		INFO(len << "-byte payload");
		std::vector<uint8_t> payload(len, 0);
		CHECK(outcome(exchange(c, Command::Version, payload)) == "EINVAL");
	}
	REQUIRE(outcome(c.negotiate()) == "ok");
	requireServes(c);
}

TEST_CASE("VERSION with major 1 is refused with ENOTSUP and the connection is closed", "[version]")
{
	Daemon d;
	{
		Client c = d.connect();
		Reply r = exchange(c, Command::Version, versionPayload(1, 0, Client::defaultCapabilities()));
		CHECK(outcome(r) == "ENOTSUP");
		requireClosedByDaemon(c);
	}
	requireFreshClientWorks(d);
}

TEST_CASE("A second VERSION on a negotiated connection is refused with EINVAL", "[version]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	CHECK(outcome(exchange(c, Command::Version, versionPayload(0, 2))) == "EINVAL");
	CHECK(outcome(exchange(c, Command::Version, versionPayload(0, 1, Client::defaultCapabilities()))) ==
	      "EINVAL");
	requireServes(c);
}

TEST_CASE("Every command sent before VERSION is refused with EINVAL", "[version]")
{
	Daemon d;
	Client c = d.connect();
	// Well-formed requests, so only their position can be the reason for the refusal.
	vfio_user::DeviceInfoPayload info{ sizeof(info), 0, 0, 0 };
	vfio_user::RegionInfoPayload region{ sizeof(region), 0, 0, 0, 0, 0 };
	vfio_user::IrqInfoPayload irq{ sizeof(irq), 0, 0, 0 };
	vfio_user::RegionAccessPayload read{ 0, 0, 4 };
	vfio_user::DmaUnmapPayload unmap{ sizeof(unmap), vfio_user::kDmaUnmapFlagAll, 0, 0 };
	const std::pair<uint16_t, std::vector<uint8_t>> requests[] = {
		{ 4, bytesOf(info) },   { 5, bytesOf(region) }, { 7, bytesOf(irq) },
		{ 9, bytesOf(read) },   { 3, bytesOf(unmap) },  { 13, {} },
		{ 2, {} },              { 8, {} },              { 10, {} },
		{ 6, {} },              { 15, {} },             { 16, {} },
		{ 99, {} },             { 0, {} },
	};
	for (const auto &[command, payload] : requests) {
		INFO("command " << command << " (" << vfio_user::commandName(command) << ")");
		CHECK(outcome(exchange(c, command, payload)) == "EINVAL");
	}
	REQUIRE(outcome(c.negotiate()) == "ok");
	requireServes(c);
}
