// SPDX-License-Identifier: Apache-2.0
// Unit tests for Session in-process: a session thread on one end of a socketpair, raw vfio-user on the other, a fake device.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>

#include "client/vfio_user_client.h"
#include "common/log.h"
#include "fake_device.h"
#include "server/session.h"

using namespace vfio_broker;
using namespace vfio_broker::server;
using namespace vfio_broker::vfio_user;
using vfio_broker::testing::Call;
using vfio_broker::testing::FakeDevice;

namespace {

constexpr auto kPrompt = std::chrono::seconds(10); // a bound for failures, never waited out on success

template<typename T>
std::span<const uint8_t> bytesOf(const T &v)
{
	return { reinterpret_cast<const uint8_t *>(&v), sizeof(v) };
}

// A Session serving `dev` on its own thread; the test is the client on the other end.
struct Rig {
	FakeDevice dev;
	ServerLimits limits;
	std::unique_ptr<Session> session;
	std::future<Status> done;
	std::optional<client::Client> client;

	Rig() { log::setLevel(log::Level::Error); } // refused requests are expected here

	void start()
	{
		int sv[2];
		REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
		session = std::make_unique<Session>(dev, UniqueFd(sv[0]), limits);
		done = std::async(std::launch::async, [s = session.get()] { return s->run(); });
		auto c = client::Client::adopt(UniqueFd(sv[1]));
		REQUIRE(c.ok());
		client.emplace(std::move(c).value());
	}
	void startNegotiated()
	{
		start();
		auto n = client->negotiate();
		REQUIRE(n.ok());
	}
	// Hang up and wait for run() to return.
	Status finish()
	{
		client.reset();
		return waitDone();
	}
	Status waitDone()
	{
		REQUIRE(done.wait_for(kPrompt) == std::future_status::ready);
		return done.get();
	}
	~Rig()
	{
		client.reset();
		if (done.valid())
			done.wait();
	}

	// One raw message: header (msgSize filled in) + payload, with fds.
	void send(Command cmd, uint16_t id, std::span<const uint8_t> payload, uint32_t flags = kFlagTypeCommand,
		  std::span<const int> fds = {})
	{
		std::vector<uint8_t> bytes(sizeof(Header));
		Header h{ id, static_cast<uint16_t>(cmd), static_cast<uint32_t>(sizeof(Header) + payload.size()), flags, 0 };
		std::memcpy(bytes.data(), &h, sizeof(h));
		bytes.insert(bytes.end(), payload.begin(), payload.end());
		REQUIRE(client->sendRaw(bytes, fds).ok());
	}
	client::RawMessage receive()
	{
		auto m = client->receive();
		REQUIRE(m.ok());
		return std::move(m).value();
	}
};

RegionAccessPayload access(uint32_t region, uint64_t offset, uint32_t count)
{
	return RegionAccessPayload{ offset, region, count };
}

size_t openFdCount()
{
	DIR *dir = ::opendir("/proc/self/fd");
	REQUIRE(dir);
	size_t n = 0;
	while (dirent *e = ::readdir(dir))
		if (e->d_name[0] != '.')
			n++;
	::closedir(dir);
	return n - 1; // the directory's own fd
}

UniqueFd makeMemfd(size_t size)
{
	UniqueFd fd(::memfd_create("session-test-ram", MFD_CLOEXEC));
	REQUIRE(fd);
	REQUIRE(::ftruncate(fd.get(), size) == 0);
	return fd;
}

} // namespace

TEST_CASE("a device error comes back as an error reply carrying the device's errno", "[session]")
{
	Rig rig;
	rig.startNegotiated();
	rig.dev.failOn(Call::RegionWrite, ENOTRECOVERABLE, 1);

	std::vector<uint8_t> payload(sizeof(RegionAccessPayload) + 4, 0xab);
	auto req = access(0, 0x10, 4);
	std::memcpy(payload.data(), &req, sizeof(req));
	rig.send(Command::RegionWrite, 77, payload);
	client::RawMessage reply = rig.receive();
	CHECK(reply.header.msgId == 77);
	CHECK(reply.header.command == static_cast<uint16_t>(Command::RegionWrite));
	CHECK(reply.header.flags == (kFlagTypeReply | kFlagError));
	CHECK(reply.header.error == ENOTRECOVERABLE);
	CHECK(reply.header.msgSize == sizeof(Header));
	CHECK(reply.payload.empty());
	CHECK(rig.dev.count(Call::RegionWrite) == 1);

	// The session carries on.
	CHECK(rig.client->write32(0, 0x10, 1).ok());
	CHECK(rig.finish().ok());
}

TEST_CASE("each device entry point's errno reaches the client unchanged", "[session]")
{
	Rig rig;
	rig.startNegotiated();
	SECTION("REGION_READ") {
		rig.dev.failOn(Call::RegionRead, EHOSTDOWN);
		uint32_t v;
		CHECK(rig.client->regionRead(0, 0, &v, 4).error().code == EHOSTDOWN);
	}
	SECTION("DMA_MAP") {
		rig.dev.failOn(Call::DmaMap, ENOMEM);
		UniqueFd fd = makeMemfd(4096);
		CHECK(rig.client->dmaMap(fd.get(), 0, 0x100000, 4096, kDmaMapFlagRead | kDmaMapFlagWrite).error().code == ENOMEM);
	}
	SECTION("DMA_UNMAP") {
		REQUIRE(rig.client->dmaMap(-1, 0, 0x100000, 4096, kDmaMapFlagRead).ok());
		rig.dev.failOn(Call::DmaUnmap, EBUSY);
		CHECK(rig.client->dmaUnmap(0x100000, 4096).error().code == EBUSY);
	}
	SECTION("DEVICE_SET_IRQS") {
		rig.dev.failOn(Call::SetIrqs, ENOTSUP);
		CHECK(rig.client->unmaskIrq(0).error().code == ENOTSUP);
	}
	SECTION("DEVICE_RESET") {
		rig.dev.failOn(Call::Reset, ETIMEDOUT);
		CHECK(rig.client->reset().error().code == ETIMEDOUT);
	}
	CHECK(rig.finish().ok());
}

TEST_CASE("a NO_REPLY command is carried out and gets no reply", "[session]")
{
	Rig rig;
	rig.startNegotiated();
	std::vector<uint8_t> payload(sizeof(RegionAccessPayload) + 4);
	auto req = access(0, 0x20, 4);
	std::memcpy(payload.data(), &req, sizeof(req));
	uint32_t value = 0x600df00d;
	std::memcpy(payload.data() + sizeof(req), &value, 4);
	rig.send(Command::RegionWrite, 500, payload, kFlagTypeCommand | kFlagNoReply);

	// The next reply on the wire answers the next request: request() checks its id and command.
	auto info = rig.client->deviceInfo();
	REQUIRE(info.ok());
	CHECK(info->numRegions == 3);
	auto writes = rig.dev.calls(Call::RegionWrite);
	REQUIRE(writes.size() == 1);
	CHECK(writes[0].offset == 0x20);
	CHECK(writes[0].data == std::vector<uint8_t>{ 0x0d, 0xf0, 0x0d, 0x60 });
	CHECK(rig.finish().ok());
}

TEST_CASE("on disconnect the session unmaps every DMA range through the device, then quiesces it once", "[session]")
{
	Rig rig;
	rig.startNegotiated();
	UniqueFd ram = makeMemfd(3 * 4096);
	REQUIRE(rig.client->dmaMap(ram.get(), 0, 0x100000, 4096, kDmaMapFlagRead | kDmaMapFlagWrite).ok());
	REQUIRE(rig.client->dmaMap(ram.get(), 4096, 0x200000, 2 * 4096, kDmaMapFlagRead).ok());
	REQUIRE(rig.client->dmaMap(-1, 0, 0x300000, 4096, kDmaMapFlagWrite).ok());
	CHECK(rig.dev.count(Call::DmaMap) == 3);
	CHECK(rig.dev.count(Call::Quiesce) == 0);

	CHECK(rig.finish().ok());
	auto calls = rig.dev.calls();
	std::vector<uint64_t> unmapped;
	size_t quiesces = 0;
	for (const auto &c : calls) {
		if (c.call == Call::DmaUnmap) {
			CHECK(quiesces == 0); // DMA goes away before the device is quiesced
			unmapped.push_back(c.range.iova);
		}
		if (c.call == Call::Quiesce)
			quiesces++;
	}
	std::sort(unmapped.begin(), unmapped.end());
	CHECK(unmapped == std::vector<uint64_t>{ 0x100000, 0x200000, 0x300000 });
	CHECK(quiesces == 1);
}

TEST_CASE("a client that never negotiates still gets the device quiesced on disconnect", "[session]")
{
	Rig rig;
	rig.start();
	CHECK(rig.finish().ok());
	CHECK(rig.dev.count(Call::Quiesce) == 1);
	CHECK(rig.dev.count(Call::DmaUnmap) == 0);
}

TEST_CASE("a disconnect in the middle of a message ends run() with an error and still cleans up", "[session]")
{
	Rig rig;
	rig.startNegotiated();
	REQUIRE(rig.client->dmaMap(-1, 0, 0x100000, 4096, kDmaMapFlagRead).ok());
	Header h{ 9, static_cast<uint16_t>(Command::RegionRead), sizeof(Header) + sizeof(RegionAccessPayload),
		  kFlagTypeCommand, 0 };
	REQUIRE(::send(rig.client->fd(), &h, sizeof(h), MSG_NOSIGNAL) == sizeof(h)); // no payload follows
	Status s = rig.finish();
	REQUIRE_FALSE(s.ok());
	CHECK(s.error().code == EPROTO);
	CHECK(rig.dev.count(Call::DmaUnmap) == 1);
	CHECK(rig.dev.count(Call::Quiesce) == 1);
}

TEST_CASE("a device that fails to unmap or quiesce does not stop the cleanup", "[session]")
{
	Rig rig;
	rig.startNegotiated();
	REQUIRE(rig.client->dmaMap(-1, 0, 0x100000, 4096, kDmaMapFlagRead).ok());
	REQUIRE(rig.client->dmaMap(-1, 0, 0x200000, 4096, kDmaMapFlagRead).ok());
	rig.dev.failOn(Call::DmaUnmap, EIO);
	rig.dev.failOn(Call::Quiesce, EIO);
	CHECK(rig.finish().ok()); // the client left in order; the device's trouble is logged, not returned
	CHECK(rig.dev.count(Call::DmaUnmap) == 2);
	CHECK(rig.dev.count(Call::Quiesce) == 1);
}

TEST_CASE("stop() from another thread ends run() promptly, with cleanup", "[session]")
{
	Rig rig;
	rig.startNegotiated();
	REQUIRE(rig.client->dmaMap(-1, 0, 0x100000, 4096, kDmaMapFlagRead).ok());
	// The session is now blocked reading the next request.
	rig.session->stop();
	Status s = rig.waitDone();
	CHECK(s.ok());
	CHECK(rig.dev.count(Call::DmaUnmap) == 1);
	CHECK(rig.dev.count(Call::Quiesce) == 1);
	// The client sees the connection closed.
	auto m = rig.client->receive();
	REQUIRE_FALSE(m.ok());
}

namespace {

// A session blocked inside sendmsg() with a 1 MiB REGION_READ reply the client does not read.
void blockSessionInSend(Rig &rig)
{
	rig.dev.setRegion(0, device::RegionInfo{ VFIO_REGION_INFO_FLAG_READ, 1u << 20, 0, {}, -1 });
	rig.startNegotiated();
	auto req = access(0, 0, 1u << 20);
	rig.send(Command::RegionRead, 1, bytesOf(req));
	// Part of the reply has arrived and the rest cannot fit in the socket buffer: the session
	// is inside sendmsg(), waiting for the client. Spin on that state rather than sleep.
	auto deadline = std::chrono::steady_clock::now() + kPrompt;
	int queued = 0;
	while ((::ioctl(rig.client->fd(), FIONREAD, &queued) < 0 || queued == 0) &&
	       std::chrono::steady_clock::now() < deadline)
		sched_yield();
	REQUIRE(queued > 0);
	REQUIRE(static_cast<size_t>(queued) < (1u << 20));
}

} // namespace

TEST_CASE("stop() ends run() promptly even while a reply waits for a client that does not read", "[session]")
{
	Rig rig;
	blockSessionInSend(rig);
	rig.session->stop();
	REQUIRE(rig.done.wait_for(kPrompt) == std::future_status::ready);
	(void)rig.done.get();
	CHECK(rig.dev.count(Call::Quiesce) == 1);
}

// run() promises success for stop(), also when stop() interrupts a reply being sent (the EPIPE
// it causes is the stop, not a failure).
TEST_CASE("run() reports a stop() that interrupted a reply as a clean end", "[session]")
{
	Rig rig;
	blockSessionInSend(rig);
	rig.session->stop();
	Status s = rig.waitDone();
	INFO((s.ok() ? std::string("ok") : s.error().message));
	CHECK(s.ok());
}

TEST_CASE("stop() before run() makes run() return at once", "[session]")
{
	Rig rig;
	int sv[2];
	REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	UniqueFd peer(sv[1]);
	Session session(rig.dev, UniqueFd(sv[0]), rig.limits);
	session.stop();
	auto done = std::async(std::launch::async, [&] { return session.run(); });
	REQUIRE(done.wait_for(kPrompt) == std::future_status::ready);
	CHECK(done.get().ok());
	CHECK(rig.dev.count(Call::Quiesce) == 1);
}

TEST_CASE("REGION_READ does not reach the device when the bounds checks fail", "[session]")
{
	Rig rig;
	rig.limits.maxDataXfer = 8192;
	rig.startNegotiated();
	struct Case {
		RegionAccessPayload req;
		int err;
		const char *why;
	};
	for (const Case &c : { Case{ access(0, 0xffc, 8), EINVAL, "runs past the end" },
			       Case{ access(0, 0x1000, 1), EINVAL, "starts at the end" },
			       Case{ access(0, ~0ull, 2), EINVAL, "offset + count wraps" },
			       Case{ access(0, 0xfffffffffffff000ull, 0x1000), EINVAL, "huge offset" },
			       Case{ access(0, 0, 0), EINVAL, "zero bytes" },
			       Case{ access(0, 0, 8193), E2BIG, "beyond max_data_xfer_size" },
			       Case{ access(2, 0, 4), EINVAL, "write-only region" },
			       Case{ access(3, 0, 4), EINVAL, "no such region" },
			       Case{ access(0xffffffff, 0, 4), EINVAL, "no such region (huge index)" } }) {
		INFO(c.why);
		rig.send(Command::RegionRead, 1, bytesOf(c.req));
		client::RawMessage reply = rig.receive();
		CHECK((reply.header.flags & kFlagError));
		CHECK(reply.header.error == static_cast<uint32_t>(c.err));
	}
	CHECK(rig.dev.count(Call::RegionRead) == 0);

	// A read that fits reaches the device, up to the region's last byte.
	uint8_t last[4];
	CHECK(rig.client->regionRead(0, 0xffc, last, 4).ok());
	CHECK(rig.dev.count(Call::RegionRead) == 1);
	CHECK(rig.finish().ok());
}

TEST_CASE("a short REGION_READ payload is refused before the device", "[session]")
{
	Rig rig;
	rig.startNegotiated();
	uint8_t partial[8] = {};
	rig.send(Command::RegionRead, 2, partial);
	client::RawMessage reply = rig.receive();
	CHECK(reply.header.error == EINVAL);
	CHECK(rig.dev.count(Call::RegionRead) == 0);
	CHECK(rig.finish().ok());
}

TEST_CASE("a REGION_READ reply echoes the request and carries the device's bytes", "[session]")
{
	Rig rig;
	rig.startNegotiated();
	REQUIRE(rig.client->write32(0, 0x40, 0x12345678).ok());
	auto req = access(0, 0x40, 4);
	rig.send(Command::RegionRead, 3, bytesOf(req));
	client::RawMessage reply = rig.receive();
	CHECK(reply.header.flags == kFlagTypeReply);
	CHECK(reply.header.msgId == 3);
	REQUIRE(reply.payload.size() == sizeof(req) + 4);
	RegionAccessPayload echo;
	std::memcpy(&echo, reply.payload.data(), sizeof(echo));
	CHECK(echo.offset == 0x40);
	CHECK(echo.region == 0);
	CHECK(echo.count == 4);
	uint32_t v;
	std::memcpy(&v, reply.payload.data() + sizeof(req), 4);
	CHECK(v == 0x12345678);
	CHECK(rig.finish().ok());
}

TEST_CASE("REGION_WRITE does not reach the device when its checks fail", "[session]")
{
	Rig rig;
	rig.startNegotiated();
	auto attempt = [&](RegionAccessPayload req, size_t dataBytes) {
		std::vector<uint8_t> payload(sizeof(req) + dataBytes, 0x5a);
		std::memcpy(payload.data(), &req, sizeof(req));
		rig.send(Command::RegionWrite, 4, payload);
		return rig.receive().header.error;
	};
	CHECK(attempt(access(0, 0, 4), 3) == EINVAL);     // count and data disagree
	CHECK(attempt(access(0, 0, 4), 5) == EINVAL);
	CHECK(attempt(access(0, 0xffe, 4), 4) == EINVAL); // runs past the end
	CHECK(attempt(access(1, 0, 4), 4) == EINVAL);     // read-only region
	CHECK(rig.dev.count(Call::RegionWrite) == 0);
	CHECK(rig.finish().ok());
}

TEST_CASE("requests before VERSION are refused without touching the device", "[session]")
{
	Rig rig;
	rig.start();
	rig.dev.clearRecord();
	uint32_t v;
	CHECK(rig.client->regionRead(0, 0, &v, 4).error().code == EINVAL);
	CHECK(rig.client->reset().error().code == EINVAL);
	CHECK(rig.dev.count(Call::RegionRead) == 0);
	CHECK(rig.dev.count(Call::Reset) == 0);
	CHECK(rig.client->negotiate().ok());
	CHECK(rig.client->regionRead(0, 0, &v, 4).ok());
	CHECK(rig.finish().ok());
}

TEST_CASE("fds sent with a command that takes none are refused and closed", "[session]")
{
	Rig rig;
	rig.startNegotiated();
	UniqueFd ram = makeMemfd(4096);
	size_t baseline = openFdCount();
	int fds[2] = { ram.get(), ram.get() };
	auto req = access(0, 0, 4);
	rig.send(Command::RegionRead, 5, bytesOf(req), kFlagTypeCommand, fds);
	client::RawMessage reply = rig.receive();
	CHECK(reply.header.error == EINVAL);
	CHECK(rig.dev.count(Call::RegionRead) == 0);
	// The session (in this process) let go of both before it answered.
	CHECK(openFdCount() == baseline);
	CHECK(rig.finish().ok());
}

TEST_CASE("a framing error is answered with the offending header, then the connection is closed", "[session]")
{
	Rig rig;
	rig.startNegotiated();
	Header h{ 321, static_cast<uint16_t>(Command::RegionRead), 8, kFlagTypeCommand, 0 }; // msgSize < 16
	REQUIRE(::send(rig.client->fd(), &h, sizeof(h), MSG_NOSIGNAL) == sizeof(h));
	client::RawMessage reply = rig.receive();
	CHECK(reply.header.msgId == 321);
	CHECK((reply.header.flags & kFlagError));
	CHECK(reply.header.error == EINVAL);
	Status s = rig.waitDone();
	REQUIRE_FALSE(s.ok());
	CHECK(s.error().code == EINVAL);
	CHECK(rig.dev.count(Call::Quiesce) == 1);
	rig.session.reset(); // the owner drops the session, as DeviceServer does: that hangs up
	CHECK_FALSE(rig.client->receive().ok());
}

TEST_CASE("DMA_MAP hands the device a mapping of the client's fd", "[session]")
{
	Rig rig;
	rig.startNegotiated();
	UniqueFd ram = makeMemfd(2 * 4096);
	uint8_t marker = 0x9c;
	REQUIRE(::pwrite(ram.get(), &marker, 1, 4096) == 1);
	REQUIRE(rig.client->dmaMap(ram.get(), 4096, 0x100000, 4096, kDmaMapFlagRead).ok());
	auto maps = rig.dev.calls(Call::DmaMap);
	REQUIRE(maps.size() == 1);
	CHECK(maps[0].range.iova == 0x100000);
	CHECK(maps[0].range.size == 4096);
	CHECK(maps[0].range.prot == kDmaMapFlagRead);
	REQUIRE(maps[0].mapped.size() > 0);
	CHECK(maps[0].mapped[0] == 0x9c);
	CHECK(rig.finish().ok());
}
