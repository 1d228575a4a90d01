// SPDX-License-Identifier: Apache-2.0
// Hostile and broken clients (bad framing, unknown and misdirected commands, fd floods,
// pipelining, a seeded random storm), after each of which the daemon is alive, has closed
// what the client sent, and serves the next client.
#include "daemon_fixture.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>
#include <random>

using namespace vfio_broker;
using namespace vfio_broker::test;
using vfio_user::Header;
using vfio_user::RegionAccessPayload;
using vfio_user::RegionInfoPayload;

namespace {

constexpr uint32_t kDefaultMaxMsgSize = sizeof(Header) + sizeof(RegionAccessPayload) + (1u << 20);

// The daemon's open fds with one fresh, negotiated client connected: the steady state every
// hostile episode must return to.
size_t steadyFds(Daemon &d)
{
	Client c = d.connectNegotiated();
	requireServes(c);
	return d.openFds();
}

void requireRecovered(Daemon &d, size_t fds)
{
	REQUIRE(d.alive());
	Client c = d.connectNegotiated();
	requireServes(c);
	CHECK(d.openFds() == fds);
}

std::vector<UniqueFd> eventfds(size_t n)
{
	std::vector<UniqueFd> out;
	for (size_t i = 0; i < n; i++)
		out.push_back(makeEventfd());
	return out;
}

std::vector<int> raw(const std::vector<UniqueFd> &fds)
{
	std::vector<int> out;
	for (const auto &f : fds)
		out.push_back(f.get());
	return out;
}

void sendBytes(Client &c, std::span<const uint8_t> bytes, std::span<const int> fds = {})
{
	REQUIRE(outcome(c.sendRaw(bytes, fds)) == "ok");
}

} // namespace

TEST_CASE("A truncated header followed by close leaves the daemon serving, with the fds it carried closed", "[hostile]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	{
		Client c = d.connectNegotiated();
		auto efds = eventfds(4);
		auto bytes = frame(1, Command::DeviceGetInfo, {});
		sendBytes(c, std::span(bytes).first(7), raw(efds));
	}
	requireRecovered(d, fds);
}

TEST_CASE("A message size below the header size is refused with EINVAL and the connection is closed", "[hostile]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	for (uint32_t size : { 0u, 8u, 15u }) {
		INFO("msg_size " << size);
		{
			Client c = d.connectNegotiated();
			auto bytes = frame(0x1234, Command::DeviceGetInfo, std::vector<uint8_t>(16, 0),
					   vfio_user::kFlagTypeCommand, size);
			sendBytes(c, bytes);
			Reply r = receiveReply(c);
			CHECK(r.header.msgId == 0x1234);
			CHECK(r.header.command == static_cast<uint16_t>(Command::DeviceGetInfo));
			CHECK(outcome(r) == "EINVAL");
			requireClosedByDaemon(c);
		}
		requireRecovered(d, fds);
	}
}

TEST_CASE("A message size above the limit is refused with E2BIG and the connection is closed", "[hostile]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	for (uint32_t size : { kDefaultMaxMsgSize + 1, 0x7fffffffu, 0xffffffffu }) {
		INFO("msg_size " << size);
		{
			Client c = d.connectNegotiated();
			auto bytes = frame(0x4321, Command::RegionWrite, bytesOf(RegionAccessPayload{ 0, kBar0, 4 }),
					   vfio_user::kFlagTypeCommand, size);
			sendBytes(c, bytes);
			Reply r = receiveReply(c);
			CHECK(r.header.msgId == 0x4321);
			CHECK(outcome(r) == "E2BIG");
			requireClosedByDaemon(c);
		}
		requireRecovered(d, fds);
	}
}

TEST_CASE("A message of exactly the size limit is served", "[hostile]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	{
		Client c = d.connectNegotiated();
		std::vector<uint8_t> data(1u << 20, 0);
		std::memcpy(data.data() + edu::kRegLiveness, "\x01\x00\x00\x00", 4);
		auto bytes = frame(7, Command::RegionWrite, bytesOf(RegionAccessPayload{ 0, kBar0, 1u << 20 }, data));
		REQUIRE(bytes.size() == kDefaultMaxMsgSize);
		sendBytes(c, bytes);
		Reply r = receiveReply(c);
		CHECK(r.header.msgId == 7);
		CHECK(outcome(r) == "ok");
		requireServes(c);
	}
	requireRecovered(d, fds);
}

TEST_CASE("An unknown command is refused with ENOSYS and the connection keeps working", "[hostile]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	{
		Client c = d.connectNegotiated();
		for (uint16_t command : { 0, 14, 19, 100, 0x7fff, 0xffff }) {
			INFO("command " << command);
			CHECK(outcome(exchange(c, command, std::vector<uint8_t>(24, 0xee))) == "ENOSYS");
			requireServes(c);
		}
	}
	requireRecovered(d, fds);
}

TEST_CASE("Commands this server does not implement are refused with ENOTSUP", "[hostile]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	{
		Client c = d.connectNegotiated();
		for (Command command : { Command::DeviceGetRegionIoFds, Command::RegionWriteMulti, Command::DeviceFeature,
					 Command::MigDataRead, Command::MigDataWrite }) {
			INFO(vfio_user::commandName(static_cast<uint16_t>(command)));
			CHECK(outcome(exchange(c, command, std::vector<uint8_t>(16, 0))) == "ENOTSUP");
			requireServes(c);
		}
	}
	requireRecovered(d, fds);
}

TEST_CASE("Server-to-client commands sent by the client are refused with EINVAL", "[hostile]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	{
		Client c = d.connectNegotiated();
		for (Command command : { Command::DmaRead, Command::DmaWrite }) {
			INFO(vfio_user::commandName(static_cast<uint16_t>(command)));
			CHECK(outcome(exchange(c, command, std::vector<uint8_t>(24, 0))) == "EINVAL");
			requireServes(c);
		}
	}
	requireRecovered(d, fds);
}

TEST_CASE("More fds than --max-msg-fds are refused with EINVAL and closed in the daemon", "[hostile]")
{
	SECTION("the default limit of 16, exceeded by one and by the kernel's maximum")
	{
		Daemon d;
		size_t steady = steadyFds(d);
		{
			Client c = d.connectNegotiated();
			for (size_t n : { 17, 253 }) {
				INFO(n << " fds");
				size_t before = d.openFds();
				auto efds = eventfds(n);
				auto fds = raw(efds);
				vfio_user::IrqSetPayload p{ sizeof(p),
							    VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, kMsi,
							    0, 1 };
				CHECK(outcome(exchange(c, Command::DeviceSetIrqs, bytesOf(p), fds)) == "EINVAL");
				CHECK(d.openFds() == before);
				requireServes(c);
			}
		}
		requireRecovered(d, steady);
	}
	SECTION("--max-msg-fds 1: one fd is taken, two are refused")
	{
		Daemon d({ "--max-msg-fds", "1" });
		size_t steady = steadyFds(d);
		{
			Client c = d.connectNegotiated();
			GuestMemory a(kPage), b(kPage);
			int two[] = { a.fd(), b.fd() };
			size_t before = d.openFds();
			vfio_user::DmaMapPayload p{ sizeof(p), kDmaRw, 0, 0x100000, kPage };
			CHECK(outcome(exchange(c, Command::DmaMap, bytesOf(p), two)) == "EINVAL");
			CHECK(d.openFds() == before);
			CHECK(!d.mapsFile(a.mapsName()));
			int one[] = { a.fd() };
			CHECK(outcome(exchange(c, Command::DmaMap, bytesOf(p), one)) == "ok");
			CHECK(d.mapsFile(a.mapsName()));
		}
		requireRecovered(d, steady);
	}
}

TEST_CASE("fds sprayed ahead of any message are bounded: the daemon hangs up and closes them all", "[hostile]")
{
	Daemon d({ "--max-msg-fds", "1" });
	size_t steady = steadyFds(d);
	{
		Client c = d.connectNegotiated();
		auto efds = eventfds(32);
		auto fds = raw(efds);
		const uint8_t byte = 0;
		// One byte at a time, each with 32 fds: the header never completes.
		for (int i = 0; i < 15; i++) {
			iovec iov{ const_cast<uint8_t *>(&byte), 1 };
			alignas(cmsghdr) char control[CMSG_SPACE(32 * sizeof(int))];
			msghdr msg{};
			msg.msg_iov = &iov;
			msg.msg_iovlen = 1;
			msg.msg_control = control;
			msg.msg_controllen = sizeof(control);
			cmsghdr *cm = CMSG_FIRSTHDR(&msg);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(32 * sizeof(int));
			std::memcpy(CMSG_DATA(cm), fds.data(), 32 * sizeof(int));
			if (::sendmsg(c.fd(), &msg, MSG_NOSIGNAL) != 1)
				break; // the daemon hung up already
		}
		requireClosedByDaemon(c);
	}
	requireRecovered(d, steady);
}

TEST_CASE("A message of reply type, or of a reserved type, is refused with EINVAL", "[hostile]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	{
		Client c = d.connectNegotiated();
		vfio_user::DeviceInfoPayload info{ sizeof(info), 0, 0, 0 };
		for (uint32_t flags : { vfio_user::kFlagTypeReply, vfio_user::kFlagTypeReply | vfio_user::kFlagError, 0x2u, 0xfu }) {
			INFO("flags 0x" << std::hex << flags);
			sendBytes(c, frame(0x55, Command::DeviceGetInfo, bytesOf(info), flags));
			Reply r = receiveReply(c);
			CHECK(r.header.msgId == 0x55);
			CHECK(outcome(r) == "EINVAL");
			requireServes(c);
		}
	}
	requireRecovered(d, fds);
}

TEST_CASE("Garbage bytes are refused without crashing the daemon", "[hostile]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	SECTION("all ones: a 4 GiB message size, refused with E2BIG and the connection is closed")
	{
		Client c = d.connectNegotiated();
		std::vector<uint8_t> junk(64, 0xff);
		sendBytes(c, junk);
		CHECK(outcome(receiveReply(c)) == "E2BIG");
		requireClosedByDaemon(c);
	}
	SECTION("random bytes behind a plausible size: refused, and the connection keeps working")
	{
		Client c = d.connectNegotiated();
		std::mt19937 rng(7);
		std::vector<uint8_t> payload(40);
		for (auto &b : payload)
			b = static_cast<uint8_t>(rng());
		Header h{ 0xbeef, 0xdead, static_cast<uint32_t>(sizeof(Header) + payload.size()), 0x7fffffe0, 0x12345678 };
		sendBytes(c, bytesOf(h, payload));
		Reply r = receiveReply(c);
		CHECK(r.header.msgId == 0xbeef);
		CHECK(outcome(r) == "ENOSYS");
		requireServes(c);
	}
	requireRecovered(d, fds);
}

TEST_CASE("A client that disconnects in the middle of a message leaves the daemon serving", "[hostile]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	SECTION("inside a small message, with an fd")
	{
		Client c = d.connectNegotiated();
		GuestMemory mem(kPage);
		int fd[] = { mem.fd() };
		vfio_user::DmaMapPayload p{ sizeof(p), kDmaRw, 0, 0x100000, kPage };
		auto bytes = frame(3, Command::DmaMap, bytesOf(p));
		sendBytes(c, std::span(bytes).first(sizeof(Header) + 10), fd);
	}
	SECTION("half way through a 1 MiB write")
	{
		Client c = d.connectNegotiated();
		std::vector<uint8_t> data(1u << 20, 0x11);
		auto bytes = frame(4, Command::RegionWrite, bytesOf(RegionAccessPayload{ 0, kBar0, 1u << 20 }, data));
		sendBytes(c, std::span(bytes).first(bytes.size() / 2));
	}
	requireRecovered(d, fds);
}

TEST_CASE("Requests pipelined in one write are answered in order, region fds with their own replies", "[hostile]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	{
		Client c = d.connectNegotiated();
		vfio_user::DeviceInfoPayload info{ sizeof(info), 0, 0, 0 };
		RegionInfoPayload ramBar{ 4096, 0, edu::kRamBar, 0, 0, 0 };
		uint32_t pattern = 0x600dcafe;
		std::vector<uint8_t> stream;
		auto add = [&](uint16_t id, uint16_t command, const std::vector<uint8_t> &payload) {
			auto m = frame(id, command, payload);
			stream.insert(stream.end(), m.begin(), m.end());
		};
		add(1, 4, bytesOf(info));
		add(2, 5, bytesOf(ramBar));
		add(3, 9, bytesOf(RegionAccessPayload{ 0, 9, 4 })); // refused: no region 9
		add(4, 10, bytesOf(RegionAccessPayload{ 0x40, edu::kRamBar, 4 },
				   std::span(reinterpret_cast<const uint8_t *>(&pattern), 4)));
		add(5, 9, bytesOf(RegionAccessPayload{ 0x40, edu::kRamBar, 4 }));
		add(6, 0x777, {}); // refused: unknown
		add(7, 5, bytesOf(ramBar));
		add(8, 4, bytesOf(info));
		sendBytes(c, stream);

		const char *expected[] = { "ok", "ok", "EINVAL", "ok", "ok", "ENOSYS", "ok", "ok" };
		for (uint16_t id = 1; id <= 8; id++) {
			INFO("reply " << id);
			Reply r = receiveReply(c);
			REQUIRE(r.header.msgId == id);
			CHECK(outcome(r) == expected[id - 1]);
			CHECK(r.fds.size() == (id == 2 || id == 7 ? 1u : 0u));
			if (id == 5) {
				uint32_t v;
				REQUIRE(r.payload.size() == sizeof(RegionAccessPayload) + 4);
				std::memcpy(&v, r.payload.data() + sizeof(RegionAccessPayload), 4);
				CHECK(v == pattern);
			}
		}
		requireServes(c);
	}
	requireRecovered(d, fds);
}

TEST_CASE("Requests pipelined in separate writes without waiting each keep their own fds", "[hostile]")
{
	Daemon d;
	size_t fds = steadyFds(d);
	{
		Client c = d.connectNegotiated();
		GuestMemory mem(kPage);
		UniqueFd efd = makeEventfd();
		int memFd[] = { mem.fd() }, irqFd[] = { efd.get() };
		vfio_user::DmaMapPayload withFd{ sizeof(withFd), kDmaRw, 0, 0x100000, kPage };
		vfio_user::DmaMapPayload noFd{ sizeof(noFd), kDmaRw, 0, 0x200000, kPage };
		vfio_user::IrqSetPayload msi{ sizeof(msi), VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, kMsi, 0, 1 };
		vfio_user::DeviceInfoPayload info{ sizeof(info), 0, 0, 0 };
		sendBytes(c, frame(1, Command::DeviceGetInfo, bytesOf(info)));
		sendBytes(c, frame(2, Command::DmaMap, bytesOf(withFd)), memFd);
		sendBytes(c, frame(3, Command::RegionRead, bytesOf(RegionAccessPayload{ 0, kBar0, 4 })));
		sendBytes(c, frame(4, Command::DeviceSetIrqs, bytesOf(msi)), irqFd);
		sendBytes(c, frame(5, Command::DmaMap, bytesOf(noFd)));
		sendBytes(c, frame(6, Command::DeviceGetInfo, bytesOf(info)));
		for (uint16_t id = 1; id <= 6; id++) {
			INFO("reply " << id);
			Reply r = receiveReply(c);
			REQUIRE(r.header.msgId == id);
			CHECK(outcome(r) == "ok");
		}
		// Each fd reached the request it was sent with.
		CHECK(d.mapsFile(mem.mapsName()));
		write32(c, kBar0, edu::kRegIrqRaise, 1);
		CHECK(waitEventfd(efd.get()));
	}
	requireRecovered(d, fds);
}

TEST_CASE("A seeded storm of 2000 random messages never crashes the daemon", "[hostile]")
{
	Daemon d;
	size_t steady = steadyFds(d);
	std::mt19937_64 rng(0x5eed2024);
	auto pick = [&](uint64_t n) { return static_cast<uint64_t>(rng() % n); };
	// Numbers that sit on the edges the handlers check.
	const uint64_t interesting[] = { 0,        1,          2,          4,          8,
					 16,       20,         24,         32,         0x40,
					 0x98,     0xfff,      0x1000,     0xf000,     0x10000,
					 0x100000, 0xfee00000, 0xffffffff, 1ull << 39, ~0ull };
	auto number = [&]() -> uint64_t {
		return pick(3) ? interesting[pick(std::size(interesting))] : rng();
	};

	GuestMemory mem(4 * kPage);
	UniqueFd efd = makeEventfd();
	Pipe pipe = makePipe();
	const int pool[] = { mem.fd(), efd.get(), pipe.readEnd.get() };

	std::optional<Client> c;
	auto reconnect = [&]() {
		c.reset(); // one client at a time: the next waits in the backlog until this one is gone
		c.emplace(d.connect());
		if (pick(10))
			REQUIRE(outcome(c->negotiate()) == "ok");
	};
	reconnect();

	uint16_t id = 0;
	for (int i = 0; i < 2000; i++) {
		INFO("iteration " << i);
		id++;
		uint64_t kind = pick(100);
		if (kind < 3) {
			reconnect();
			continue;
		}
		// A command id from the protocol (mostly) or anywhere.
		uint16_t command = pick(8) ? static_cast<uint16_t>(1 + pick(18)) : static_cast<uint16_t>(rng());
		// Half the time a well-formed request of that command with a field or two mutated, so
		// the storm gets past the first checks; otherwise random words.
		std::vector<std::pair<uint64_t, size_t>> fields; // value, width
		switch (pick(2) ? command : 0) {
		case 2: fields = { { 32, 4 }, { 3, 4 }, { 0, 8 }, { 0x100000 + pick(4) * kPage, 8 }, { kPage, 8 } }; break;
		case 3: fields = { { 24, 4 }, { 0, 4 }, { 0x100000 + pick(4) * kPage, 8 }, { kPage, 8 } }; break;
		case 4: fields = { { 16, 4 }, { 0, 4 }, { 0, 4 }, { 0, 4 } }; break;
		case 5: fields = { { pick(2) ? 32 : 64, 4 }, { 0, 4 }, { pick(10), 4 }, { 0, 4 }, { 0, 8 }, { 0, 8 } }; break;
		case 7: fields = { { 16, 4 }, { 0, 4 }, { pick(6), 4 }, { 0, 4 } }; break;
		case 8: fields = { { 20, 4 }, { (1u << pick(3)) | (8u << pick(3)), 4 }, { pick(5), 4 }, { 0, 4 }, { pick(2), 4 } }; break;
		case 9: fields = { { pick(0x100) & ~3ull, 8 }, { pick(9), 4 }, { 4, 4 } }; break;
		case 10: fields = { { pick(0x100) & ~3ull, 8 }, { pick(9), 4 }, { 4, 4 }, { rng(), 4 } }; break;
		default:
			for (size_t w = pick(7); w > 0; w--)
				fields.push_back({ number(), pick(2) ? 4 : 8 });
			break;
		}
		for (size_t m = fields.empty() ? 0 : pick(3); m > 0; m--)
			fields[pick(fields.size())].first = number();
		std::vector<uint8_t> payload;
		for (auto [v, width] : fields)
			payload.insert(payload.end(), reinterpret_cast<uint8_t *>(&v), reinterpret_cast<uint8_t *>(&v) + width);
		if (pick(8) == 0)
			payload.resize(payload.size() + pick(3) - 1 + (payload.empty() ? 1 : 0)); // a ragged end
		std::vector<int> fds;
		for (size_t n = pick(4) == 0 ? 1 + pick(2) : 0; n > 0; n--)
			fds.push_back(pool[pick(std::size(pool))]);

		if (kind < 6) {
			// Broken framing: a size below the header or above the limit, then hang up.
			uint32_t size = pick(2) ? static_cast<uint32_t>(pick(16)) : kDefaultMaxMsgSize + 1 + static_cast<uint32_t>(pick(1000));
			sendBytes(*c, frame(id, command, payload, vfio_user::kFlagTypeCommand, size), fds);
			Reply r = receiveReply(*c);
			CHECK(r.header.msgId == id);
			CHECK(r.isError());
			requireClosedByDaemon(*c);
			reconnect();
			continue;
		}
		// Not on VERSION: a refused major closes the connection, unanswered under No_reply.
		bool noReply = pick(10) == 0 && command != static_cast<uint16_t>(Command::Version);
		uint32_t flags = vfio_user::kFlagTypeCommand | (noReply ? vfio_user::kFlagNoReply : 0);
		sendBytes(*c, frame(id, command, payload, flags), fds);
		if (noReply) {
			// The next reply must belong to the request after it.
			id++;
			vfio_user::DeviceInfoPayload info{ sizeof(info), 0, 0, 0 };
			sendBytes(*c, frame(id, Command::DeviceGetInfo, bytesOf(info)));
		}
		Reply r = receiveReply(*c);
		REQUIRE(r.header.msgId == id);
		REQUIRE((r.header.flags & vfio_user::kFlagTypeMask) == vfio_user::kFlagTypeReply);
		if (command == static_cast<uint16_t>(Command::Version) && r.isError() && r.header.error == ENOTSUP) {
			requireClosedByDaemon(*c);
			reconnect();
		}
		if (i % 100 == 0)
			REQUIRE(d.alive());
	}
	c.reset();
	requireRecovered(d, steady);
}
