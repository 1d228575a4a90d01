// SPDX-License-Identifier: Apache-2.0
// Unit tests for vfio-user message framing over a real AF_UNIX socketpair: reassembly, fd attachment, limits, EOF.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <thread>
#include <vector>

#include "vfio_user/message_io.h"

using namespace vfio_broker;
using namespace vfio_broker::vfio_user;

namespace {

struct SocketPair {
	UniqueFd sender, receiver;
	SocketPair()
	{
		int sv[2];
		REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
		sender.reset(sv[0]);
		receiver.reset(sv[1]);
	}
};

// Header + payload bytes; msgSize is the real size unless `claimedSize` overrides it.
std::vector<uint8_t> message(uint16_t id, std::vector<uint8_t> payload = {}, uint32_t claimedSize = 0)
{
	Header h{};
	h.msgId = id;
	h.command = static_cast<uint16_t>(Command::RegionWrite);
	h.msgSize = claimedSize ? claimedSize : static_cast<uint32_t>(sizeof(Header) + payload.size());
	h.flags = kFlagTypeCommand;
	std::vector<uint8_t> bytes(sizeof(h));
	std::memcpy(bytes.data(), &h, sizeof(h));
	bytes.insert(bytes.end(), payload.begin(), payload.end());
	return bytes;
}

std::vector<uint8_t> pattern(size_t size, uint8_t seed)
{
	std::vector<uint8_t> v(size);
	for (size_t i = 0; i < size; i++)
		v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
	return v;
}

// One sendmsg() of exactly these bytes with these fds attached, bypassing sendMessage() so
// the reader is tested against chunks we choose.
void rawSend(int fd, std::span<const uint8_t> bytes, std::span<const int> fds = {})
{
	iovec iov{ const_cast<uint8_t *>(bytes.data()), bytes.size() };
	alignas(cmsghdr) char control[CMSG_SPACE(253 * sizeof(int))];
	msghdr msg{};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (!fds.empty()) {
		msg.msg_control = control;
		msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
		cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
		std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
	}
	REQUIRE(::sendmsg(fd, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
}

// A memfd: each has its own inode, so a received fd can be matched to the one sent.
UniqueFd makeMemfd(const char *name = "message-io-test")
{
	UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
	REQUIRE(fd);
	return fd;
}

ino_t inodeOf(int fd)
{
	struct stat st;
	REQUIRE(::fstat(fd, &st) == 0);
	return st.st_ino;
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

ReaderLimits limits(uint32_t maxMsgSize = 4096, uint32_t maxFds = 4)
{
	ReaderLimits l;
	l.maxMsgSize = maxMsgSize;
	l.maxFds = maxFds;
	return l;
}

std::vector<uint8_t> payloadOf(const ReceivedMessage &m)
{
	return std::vector<uint8_t>(m.payload.begin(), m.payload.end());
}

// Spin (no sleeping) until `done` holds; false after a generous deadline so a bug fails, not hangs.
bool waitFor(const std::function<bool()> &done)
{
	auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
	while (!done()) {
		if (std::chrono::steady_clock::now() > deadline)
			return false;
		sched_yield();
	}
	return true;
}

// Is thread `tid` of this process asleep inside system call `nr`? (/proc/<tid>/syscall reads
// "running" while it runs.)
bool blockedIn(pid_t tid, long nr)
{
	std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/syscall");
	std::string first;
	if (!(f >> first))
		return false;
	return first == std::to_string(nr);
}

std::atomic<unsigned> gSignals{ 0 };
void countSignal(int) { gSignals++; }

} // namespace

TEST_CASE("a whole message is read with its header and payload", "[message_io]")
{
	SocketPair sp;
	auto bytes = message(7, pattern(100, 1));
	rawSend(sp.sender.get(), bytes);

	MessageReader reader(sp.receiver.get(), limits());
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE(r.ok());
	REQUIRE(*r);
	CHECK(msg.header.msgId == 7);
	CHECK(msg.header.command == static_cast<uint16_t>(Command::RegionWrite));
	CHECK(msg.header.msgSize == 116);
	CHECK(payloadOf(msg) == pattern(100, 1));
	CHECK(msg.fds.empty());
	CHECK_FALSE(msg.fdsOverLimit);
	CHECK_FALSE(msg.fdsTruncated);
	CHECK(reader.bytesReceived() == 116);
}

TEST_CASE("a header-only message has an empty payload", "[message_io]")
{
	SocketPair sp;
	rawSend(sp.sender.get(), message(1));
	MessageReader reader(sp.receiver.get(), limits());
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE(r.ok());
	REQUIRE(*r);
	CHECK(msg.payload.empty());
}

TEST_CASE("a message split over many writes is whole only after its last byte", "[message_io]")
{
	SocketPair sp;
	REQUIRE(::fcntl(sp.receiver.get(), F_SETFL, O_NONBLOCK) == 0);
	UniqueFd memfd = makeMemfd();
	int fds[1] = { memfd.get() };
	auto bytes = message(3, pattern(40, 9));

	MessageReader reader(sp.receiver.get(), limits());
	ReceivedMessage msg;
	for (size_t i = 0; i + 1 < bytes.size(); i++) {
		// The fd travels with the first byte, as sendMessage() sends it.
		rawSend(sp.sender.get(), { bytes.data() + i, 1 }, i == 0 ? std::span<const int>(fds) : std::span<const int>());
		auto r = reader.read(msg);
		INFO("after byte " << i);
		REQUIRE_FALSE(r.ok());
		REQUIRE(r.error().code == EAGAIN);
	}
	rawSend(sp.sender.get(), { bytes.data() + bytes.size() - 1, 1 });
	auto r = reader.read(msg);
	REQUIRE(r.ok());
	REQUIRE(*r);
	CHECK(msg.header.msgId == 3);
	CHECK(payloadOf(msg) == pattern(40, 9));
	REQUIRE(msg.fds.size() == 1);
	CHECK(inodeOf(msg.fds[0].get()) == inodeOf(memfd.get()));
}

TEST_CASE("several messages in one write are returned one at a time", "[message_io]")
{
	SocketPair sp;
	std::vector<uint8_t> all;
	for (uint16_t id = 1; id <= 3; id++) {
		auto m = message(id, pattern(id * 10, static_cast<uint8_t>(id)));
		all.insert(all.end(), m.begin(), m.end());
	}
	rawSend(sp.sender.get(), all);
	sp.sender.reset();

	MessageReader reader(sp.receiver.get(), limits());
	ReceivedMessage msg;
	for (uint16_t id = 1; id <= 3; id++) {
		auto r = reader.read(msg);
		REQUIRE(r.ok());
		REQUIRE(*r);
		CHECK(msg.header.msgId == id);
		CHECK(payloadOf(msg) == pattern(id * 10, static_cast<uint8_t>(id)));
	}
	auto r = reader.read(msg);
	REQUIRE(r.ok());
	CHECK_FALSE(*r);
}

TEST_CASE("fds sent with the second of two pipelined messages attach to the second", "[message_io]")
{
	SocketPair sp;
	UniqueFd a = makeMemfd(), b = makeMemfd();
	int fds[2] = { a.get(), b.get() };
	rawSend(sp.sender.get(), message(1, pattern(24, 1)));
	rawSend(sp.sender.get(), message(2, pattern(24, 2)), fds);

	MessageReader reader(sp.receiver.get(), limits());
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE((r.ok() && *r));
	CHECK(msg.header.msgId == 1);
	CHECK(msg.fds.empty());

	r = reader.read(msg);
	REQUIRE((r.ok() && *r));
	CHECK(msg.header.msgId == 2);
	REQUIRE(msg.fds.size() == 2);
	CHECK(inodeOf(msg.fds[0].get()) == inodeOf(a.get()));
	CHECK(inodeOf(msg.fds[1].get()) == inodeOf(b.get()));
}

TEST_CASE("fds sent with the first of two pipelined messages stay with the first", "[message_io]")
{
	SocketPair sp;
	UniqueFd a = makeMemfd();
	int fds[1] = { a.get() };
	rawSend(sp.sender.get(), message(1, pattern(24, 1)), fds);
	rawSend(sp.sender.get(), message(2, pattern(24, 2)));

	MessageReader reader(sp.receiver.get(), limits());
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE((r.ok() && *r));
	CHECK(msg.header.msgId == 1);
	REQUIRE(msg.fds.size() == 1);
	CHECK(inodeOf(msg.fds[0].get()) == inodeOf(a.get()));

	r = reader.read(msg);
	REQUIRE((r.ok() && *r));
	CHECK(msg.header.msgId == 2);
	CHECK(msg.fds.empty());
}

TEST_CASE("each of three pipelined messages gets exactly its own fds", "[message_io]")
{
	SocketPair sp;
	UniqueFd a = makeMemfd(), b = makeMemfd(), c = makeMemfd();
	int first[1] = { a.get() };
	int third[2] = { b.get(), c.get() };
	rawSend(sp.sender.get(), message(1, pattern(8, 1)), first);
	rawSend(sp.sender.get(), message(2, pattern(8, 2)));
	rawSend(sp.sender.get(), message(3, pattern(8, 3)), third);

	MessageReader reader(sp.receiver.get(), limits());
	ReceivedMessage msg;
	std::vector<std::vector<ino_t>> got;
	for (int i = 0; i < 3; i++) {
		auto r = reader.read(msg);
		REQUIRE((r.ok() && *r));
		std::vector<ino_t> inodes;
		for (auto &fd : msg.fds)
			inodes.push_back(inodeOf(fd.get()));
		got.push_back(inodes);
	}
	CHECK(got[0] == std::vector<ino_t>{ inodeOf(a.get()) });
	CHECK(got[1].empty());
	CHECK(got[2] == std::vector<ino_t>{ inodeOf(b.get()), inodeOf(c.get()) });
}

TEST_CASE("received fds are close-on-exec", "[message_io]")
{
	SocketPair sp;
	UniqueFd a = makeMemfd();
	int fds[1] = { a.get() };
	rawSend(sp.sender.get(), message(1), fds);
	MessageReader reader(sp.receiver.get(), limits());
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE((r.ok() && *r));
	REQUIRE(msg.fds.size() == 1);
	CHECK((::fcntl(msg.fds[0].get(), F_GETFD) & FD_CLOEXEC));
}

TEST_CASE("exactly maxFds fds are delivered", "[message_io]")
{
	SocketPair sp;
	UniqueFd a = makeMemfd();
	int fds[3] = { a.get(), a.get(), a.get() };
	rawSend(sp.sender.get(), message(1), fds);
	MessageReader reader(sp.receiver.get(), limits(4096, 3));
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE((r.ok() && *r));
	CHECK(msg.fds.size() == 3);
	CHECK_FALSE(msg.fdsOverLimit);
}

TEST_CASE("fds beyond maxFds fail the message with fdsOverLimit and are all closed", "[message_io]")
{
	SocketPair sp;
	UniqueFd a = makeMemfd(), b = makeMemfd();
	int fds[3] = { a.get(), b.get(), a.get() };
	MessageReader reader(sp.receiver.get(), limits(4096, 2));
	size_t baseline = openFdCount();

	rawSend(sp.sender.get(), message(1, pattern(16, 1)), fds);
	rawSend(sp.sender.get(), message(2, pattern(16, 2)), std::span<const int>(fds, 1));
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE((r.ok() && *r));
	CHECK(msg.header.msgId == 1);
	CHECK(msg.fdsOverLimit);
	CHECK(msg.fds.empty());
	CHECK(payloadOf(msg) == pattern(16, 1)); // framing is intact: the caller can answer it
	CHECK(openFdCount() == baseline);        // none of the three is left open

	// The next message is read normally, with its own fd.
	r = reader.read(msg);
	REQUIRE((r.ok() && *r));
	CHECK(msg.header.msgId == 2);
	CHECK_FALSE(msg.fdsOverLimit);
	REQUIRE(msg.fds.size() == 1);
	CHECK(inodeOf(msg.fds[0].get()) == inodeOf(a.get()));
}

TEST_CASE("a message's fds are closed when the caller reads the next message", "[message_io]")
{
	SocketPair sp;
	UniqueFd a = makeMemfd();
	int fds[2] = { a.get(), a.get() };
	MessageReader reader(sp.receiver.get(), limits());
	size_t baseline = openFdCount();
	rawSend(sp.sender.get(), message(1), fds);
	rawSend(sp.sender.get(), message(2));
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE((r.ok() && *r));
	REQUIRE(msg.fds.size() == 2);
	CHECK(openFdCount() == baseline + 2);
	r = reader.read(msg);
	REQUIRE((r.ok() && *r));
	CHECK(openFdCount() == baseline);
}

TEST_CASE("msgSize below the header size is EINVAL with the header reported", "[message_io]")
{
	SocketPair sp;
	rawSend(sp.sender.get(), message(42, {}, 15));
	MessageReader reader(sp.receiver.get(), limits());
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().code == EINVAL);
	CHECK(msg.header.msgId == 42);
	CHECK(msg.header.msgSize == 15);
}

TEST_CASE("msgSize above maxMsgSize is E2BIG with the header reported, before the payload arrives", "[message_io]")
{
	SocketPair sp;
	rawSend(sp.sender.get(), message(43, {}, 4097)); // the header alone: the rest never comes
	MessageReader reader(sp.receiver.get(), limits(4096));
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().code == E2BIG);
	CHECK(msg.header.msgId == 43);
	CHECK(msg.header.msgSize == 4097);
}

TEST_CASE("a message of exactly maxMsgSize is accepted", "[message_io]")
{
	SocketPair sp;
	rawSend(sp.sender.get(), message(1, pattern(4096 - sizeof(Header), 5)));
	MessageReader reader(sp.receiver.get(), limits(4096));
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE((r.ok() && *r));
	CHECK(payloadOf(msg) == pattern(4096 - sizeof(Header), 5));
}

TEST_CASE("EOF between messages is an orderly end", "[message_io]")
{
	SocketPair sp;
	rawSend(sp.sender.get(), message(1));
	sp.sender.reset();
	MessageReader reader(sp.receiver.get(), limits());
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE((r.ok() && *r));
	r = reader.read(msg);
	REQUIRE(r.ok());
	CHECK_FALSE(*r);
	r = reader.read(msg); // and stays so
	REQUIRE(r.ok());
	CHECK_FALSE(*r);
}

TEST_CASE("EOF before any message is an orderly end", "[message_io]")
{
	SocketPair sp;
	::shutdown(sp.sender.get(), SHUT_WR);
	MessageReader reader(sp.receiver.get(), limits());
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE(r.ok());
	CHECK_FALSE(*r);
}

TEST_CASE("EOF in the middle of a message is EPROTO", "[message_io]")
{
	SocketPair sp;
	auto bytes = message(1, pattern(32, 1));
	size_t cut = GENERATE(1, 15, 16, 47);
	INFO("cut after " << cut << " bytes");
	rawSend(sp.sender.get(), { bytes.data(), cut });
	::shutdown(sp.sender.get(), SHUT_WR);
	MessageReader reader(sp.receiver.get(), limits());
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().code == EPROTO);
}

TEST_CASE("a message larger than the initial buffer is read whole", "[message_io]")
{
	SocketPair sp;
	const uint32_t maxMsg = (1u << 20) + 32;
	auto big = pattern(maxMsg - sizeof(Header), 3); // beyond the reader's initial 128 KiB
	auto small = pattern(10, 4);
	UniqueFd a = makeMemfd();

	Status sent;
	std::thread sender([&] {
		Header h{ 1, static_cast<uint16_t>(Command::RegionWrite), maxMsg, kFlagTypeCommand, 0 };
		iovec iov{ big.data(), big.size() };
		int fds[1] = { a.get() };
		sent = sendMessage(sp.sender.get(), h, { &iov, 1 }, fds);
		if (sent) {
			Header h2{ 2, static_cast<uint16_t>(Command::RegionWrite),
				   static_cast<uint32_t>(sizeof(Header) + small.size()), kFlagTypeCommand, 0 };
			iovec iov2{ small.data(), small.size() };
			sent = sendMessage(sp.sender.get(), h2, { &iov2, 1 });
		}
	});

	MessageReader reader(sp.receiver.get(), limits(maxMsg));
	ReceivedMessage msg;
	auto r = reader.read(msg);
	bool firstOk = r.ok() && *r;
	std::vector<uint8_t> firstPayload = firstOk ? payloadOf(msg) : std::vector<uint8_t>();
	size_t firstFds = msg.fds.size();
	auto r2 = reader.read(msg);
	sender.join();

	REQUIRE(sent.ok());
	REQUIRE(firstOk);
	CHECK(firstPayload == big);
	CHECK(firstFds == 1);
	REQUIRE((r2.ok() && *r2));
	CHECK(msg.header.msgId == 2);
	CHECK(payloadOf(msg) == small);
	CHECK(msg.fds.empty());
}

TEST_CASE("sendMessage delivers messages intact through a small send buffer", "[message_io]")
{
	SocketPair sp;
	int small = 4096;
	REQUIRE(::setsockopt(sp.sender.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) == 0);
	UniqueFd a = makeMemfd(), b = makeMemfd();
	const std::vector<size_t> sizes = { 300 * 1024, 0, 17, 64 * 1024 };

	// The reader runs on its own thread; the test thread only checks what it collected.
	struct Got {
		uint16_t id;
		std::vector<uint8_t> payload;
		std::vector<ino_t> inodes;
	};
	std::vector<Got> got;
	std::string readError;
	std::thread reader([&] {
		MessageReader r(sp.receiver.get(), limits(1u << 20));
		ReceivedMessage msg;
		for (;;) {
			auto res = r.read(msg);
			if (!res) {
				readError = res.error().message;
				return;
			}
			if (!*res)
				return;
			Got g{ msg.header.msgId, payloadOf(msg), {} };
			for (auto &fd : msg.fds) {
				struct stat st;
				::fstat(fd.get(), &st);
				g.inodes.push_back(st.st_ino);
			}
			got.push_back(std::move(g));
		}
	});

	std::vector<Status> results;
	for (size_t i = 0; i < sizes.size(); i++) {
		auto payload = pattern(sizes[i], static_cast<uint8_t>(i));
		// Payload in two parts, to exercise the iovec walk across part boundaries.
		size_t half = payload.size() / 2;
		iovec iov[2] = { { payload.data(), half }, { payload.data() + half, payload.size() - half } };
		Header h{ static_cast<uint16_t>(i + 1), static_cast<uint16_t>(Command::RegionWrite),
			  static_cast<uint32_t>(sizeof(Header) + payload.size()), kFlagTypeCommand, 0 };
		int fds[2] = { a.get(), b.get() };
		results.push_back(sendMessage(sp.sender.get(), h, iov, std::span<const int>(fds, i % 3)));
	}
	sp.sender.reset();
	reader.join();

	for (const auto &s : results)
		CHECK(s.ok());
	CHECK(readError.empty());
	REQUIRE(got.size() == sizes.size());
	for (size_t i = 0; i < sizes.size(); i++) {
		INFO("message " << i + 1);
		CHECK(got[i].id == i + 1);
		CHECK(got[i].payload == pattern(sizes[i], static_cast<uint8_t>(i)));
		std::vector<ino_t> want;
		if (i % 3 >= 1)
			want.push_back(inodeOf(a.get()));
		if (i % 3 >= 2)
			want.push_back(inodeOf(b.get()));
		CHECK(got[i].inodes == want);
	}
}

TEST_CASE("sendMessage resumes after a signal cuts a write short", "[message_io]")
{
	SocketPair sp;
	int small = 4096;
	REQUIRE(::setsockopt(sp.sender.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) == 0);
	// No SA_RESTART: an interrupted sendmsg() returns what it sent so far (or EINTR).
	struct sigaction sa {}, old {};
	sa.sa_handler = countSignal;
	sigemptyset(&sa.sa_mask);
	REQUIRE(::sigaction(SIGUSR1, &sa, &old) == 0);

	auto payload = pattern(256 * 1024, 11);
	UniqueFd a = makeMemfd();
	std::atomic<pid_t> tid{ 0 };
	Status sent;
	std::thread sender([&] {
		tid = ::gettid();
		Header h{ 9, static_cast<uint16_t>(Command::RegionWrite),
			  static_cast<uint32_t>(sizeof(Header) + payload.size()), kFlagTypeCommand, 0 };
		iovec iov{ payload.data(), payload.size() };
		int fds[1] = { a.get() };
		sent = sendMessage(sp.sender.get(), h, { &iov, 1 }, fds);
	});

	// Nobody reads yet, so the sender fills the small buffer and sleeps inside sendmsg(); the
	// first signal makes that call return short, the second interrupts the resumed call.
	bool interrupted = true;
	for (int i = 0; i < 2 && interrupted; i++) {
		unsigned before = gSignals;
		interrupted = waitFor([&] { return tid != 0 && blockedIn(tid, SYS_sendmsg); }) &&
			      ::pthread_kill(sender.native_handle(), SIGUSR1) == 0 &&
			      waitFor([&] { return gSignals > before; });
	}

	MessageReader reader(sp.receiver.get(), limits(1u << 20));
	ReceivedMessage msg;
	auto r = reader.read(msg);
	sender.join();
	::sigaction(SIGUSR1, &old, nullptr);

	REQUIRE(interrupted);
	REQUIRE(sent.ok());
	REQUIRE((r.ok() && *r));
	CHECK(msg.header.msgId == 9);
	CHECK(payloadOf(msg) == payload);
	REQUIRE(msg.fds.size() == 1); // sent once, with the first part only
	CHECK(inodeOf(msg.fds[0].get()) == inodeOf(a.get()));
}

TEST_CASE("fds the kernel could not install are reported as truncated", "[message_io]")
{
	SocketPair sp;
	UniqueFd a = makeMemfd();
	int fds[3] = { a.get(), a.get(), a.get() };
	rawSend(sp.sender.get(), message(1), fds);
	MessageReader reader(sp.receiver.get(), limits());

	// Room for exactly one more fd: RLIMIT_NOFILE bounds fd numbers, and the lowest free one
	// is the only free number below the new limit.
	int lowest = ::fcntl(0, F_DUPFD_CLOEXEC, 0);
	REQUIRE(lowest >= 0);
	::close(lowest);
	rlimit saved{};
	REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
	rlimit tight = saved;
	tight.rlim_cur = static_cast<rlim_t>(lowest) + 1;
	REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE(::setrlimit(RLIMIT_NOFILE, &saved) == 0);

	REQUIRE((r.ok() && *r));
	CHECK(msg.fdsTruncated);
	CHECK(msg.fds.size() == 1);
}

TEST_CASE("fds sprayed with no message to carry them fail the read with EMFILE", "[message_io]")
{
	SocketPair sp;
	UniqueFd a = makeMemfd();
	std::vector<int> fds(100, a.get());
	size_t baseline = openFdCount();
	{
		MessageReader reader(sp.receiver.get(), limits(4096, 1));
		// Three 1-byte chunks with 100 fds each: no header ever completes.
		uint8_t byte = 0;
		for (int i = 0; i < 3; i++)
			rawSend(sp.sender.get(), { &byte, 1 }, fds);
		ReceivedMessage msg;
		auto r = reader.read(msg);
		REQUIRE_FALSE(r.ok());
		CHECK(r.error().code == EMFILE);
		CHECK(msg.fds.empty());
	}
	// Whatever the reader was holding went with it.
	CHECK(openFdCount() == baseline);
}

TEST_CASE("a non-blocking socket with no data is EAGAIN and the reader stays usable", "[message_io]")
{
	SocketPair sp;
	REQUIRE(::fcntl(sp.receiver.get(), F_SETFL, O_NONBLOCK) == 0);
	MessageReader reader(sp.receiver.get(), limits());
	ReceivedMessage msg;
	auto r = reader.read(msg);
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().code == EAGAIN);
	rawSend(sp.sender.get(), message(5));
	r = reader.read(msg);
	REQUIRE((r.ok() && *r));
	CHECK(msg.header.msgId == 5);
}

TEST_CASE("sendMessage refuses more payload parts or fds than it can send", "[message_io]")
{
	SocketPair sp;
	uint8_t byte = 0;
	std::vector<iovec> parts(8, iovec{ &byte, 1 });
	Header h{ 1, static_cast<uint16_t>(Command::RegionWrite), sizeof(Header) + 8, kFlagTypeCommand, 0 };
	Status s = sendMessage(sp.sender.get(), h, parts);
	REQUIRE_FALSE(s.ok());
	CHECK(s.error().code == EINVAL);

	std::vector<int> fds(254, sp.sender.get());
	h.msgSize = sizeof(Header);
	s = sendMessage(sp.sender.get(), h, {}, fds);
	REQUIRE_FALSE(s.ok());
	CHECK(s.error().code == EINVAL);

	// Nothing was written by either refusal.
	REQUIRE(::fcntl(sp.receiver.get(), F_SETFL, O_NONBLOCK) == 0);
	char c;
	CHECK(::recv(sp.receiver.get(), &c, 1, 0) == -1);
	CHECK(errno == EAGAIN);
}

TEST_CASE("sendMessage to a closed peer is EPIPE, not SIGPIPE", "[message_io]")
{
	SocketPair sp;
	sp.receiver.reset();
	Header h{ 1, static_cast<uint16_t>(Command::RegionWrite), sizeof(Header), kFlagTypeCommand, 0 };
	Status s = sendMessage(sp.sender.get(), h, {});
	REQUIRE_FALSE(s.ok());
	CHECK(s.error().code == EPIPE);
}

TEST_CASE("iovLength sums every part", "[message_io]")
{
	uint8_t buf[8];
	iovec parts[3] = { { buf, 3 }, { buf, 0 }, { buf, 5 } };
	CHECK(iovLength(parts) == 8);
	CHECK(iovLength({}) == 0);
}
