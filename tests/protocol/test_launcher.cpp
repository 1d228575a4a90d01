// SPDX-License-Identifier: Apache-2.0
// The daemon as a launcher starts it: inherited sockets (--fd), --exit-on-disconnect, refused
// invocations, the socket file's life and mode, and SIGTERM with a client connected.
#include "daemon_fixture.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>

using namespace vfio_broker;
using namespace vfio_broker::test;
using Catch::Matchers::Contains;

namespace {

struct SocketPair {
	UniqueFd ours, daemons;
};

SocketPair socketPair(int type = SOCK_STREAM)
{
	int sv[2];
	REQUIRE(::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) == 0);
	return { UniqueFd(sv[0]), UniqueFd(sv[1]) };
}

sockaddr_un unixAddress(const std::string &path)
{
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	REQUIRE(path.size() < sizeof(addr.sun_path));
	std::memcpy(addr.sun_path, path.c_str(), path.size());
	return addr;
}

// A socket bound at path; listening when asked.
UniqueFd boundSocket(const std::string &path, bool listening)
{
	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	REQUIRE(fd);
	sockaddr_un addr = unixAddress(path);
	REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0);
	if (listening)
		REQUIRE(::listen(fd.get(), 4) == 0);
	return fd;
}

bool exists(const std::string &path)
{
	struct stat st;
	return ::lstat(path.c_str(), &st) == 0;
}

mode_t modeOf(const std::string &path)
{
	struct stat st;
	REQUIRE(::lstat(path.c_str(), &st) == 0);
	REQUIRE(S_ISSOCK(st.st_mode));
	return st.st_mode & 07777;
}

// The invocation is refused: the daemon exits with `status`, says why on stderr, never reports
// readiness and leaves no socket behind.
void requireRefused(DaemonConfig config, const std::string &status, const std::string &message)
{
	config.waitReady = false;
	Daemon d(config);
	ExitStatus st = d.waitExit();
	INFO("daemon output:\n" << d.log());
	CHECK(st.describe() == status);
	CHECK_THAT(d.log(), Contains(message));
	CHECK(d.readyText().empty());
	CHECK(!exists(d.socketPath()));
}

} // namespace

TEST_CASE("--fd with an inherited connected socket serves that peer and exits 0 when it closes", "[launcher]")
{
	SocketPair sp = socketPair();
	DaemonConfig config{ "--fd", "4" };
	config.socket = false;
	config.inherit = { { sp.daemons.get(), 4 } };
	Daemon d(config);
	sp.daemons.reset(); // only the daemon holds its end now
	{
		Client c = adoptClient(std::move(sp.ours));
		REQUIRE(outcome(c.negotiate()) == "ok");
		requireServes(c);
		REQUIRE(d.alive());
	}
	CHECK(d.waitExit().describe() == "exited 0");
	CHECK_THAT(d.log(), Contains("exiting after 1 client(s)"));
}

TEST_CASE("--fd with an inherited listening socket accepts one client after another", "[launcher]")
{
	TempDir dir;
	std::string path = dir.file("launcher.sock");
	UniqueFd listening = boundSocket(path, true);
	DaemonConfig config{ "--fd", "5" };
	config.socket = false;
	config.inherit = { { listening.get(), 5 } };
	Daemon d(config);
	listening.reset();
	for (int i = 0; i < 2; i++) {
		INFO("client " << i);
		Client c = connectTo(path);
		REQUIRE(outcome(c.negotiate()) == "ok");
		requireServes(c);
	}
	REQUIRE(d.alive());
	CHECK(d.stop().describe() == "exited 0");
	CHECK(exists(path)); // the launcher's socket file is the launcher's to remove
}

TEST_CASE("--exit-on-disconnect serves one client, then exits 0 and removes its socket", "[launcher]")
{
	Daemon d({ "--exit-on-disconnect" });
	{
		Client c = d.connectNegotiated();
		requireServes(c);
	}
	CHECK(d.waitExit().describe() == "exited 0");
	CHECK(!exists(d.socketPath()));
}

TEST_CASE("An invocation without --device is refused", "[launcher]")
{
	DaemonConfig config;
	config.device = false;
	requireRefused(config, "exited 2", "--device is required");
}

TEST_CASE("An invocation with both --socket and --fd, or neither, is refused", "[launcher]")
{
	SocketPair sp = socketPair();
	DaemonConfig both{ "--fd", "4" };
	both.inherit = { { sp.daemons.get(), 4 } };
	requireRefused(both, "exited 2", "give exactly one of --socket and --fd");
	DaemonConfig neither;
	neither.socket = false;
	requireRefused(neither, "exited 2", "give exactly one of --socket and --fd");
}

TEST_CASE("--fd of something that is not a Unix stream socket is refused", "[launcher]")
{
	Pipe pipe = makePipe();
	SocketPair dgram = socketPair(SOCK_DGRAM);
	struct Case {
		const char *what;
		int fd;
		const char *message;
	};
	const Case cases[] = {
		{ "a pipe", pipe.readEnd.get(), "--fd 4 is not a socket" },
		{ "a datagram socket", dgram.daemons.get(), "--fd 4 is not an AF_UNIX stream socket" },
		{ "no open fd at all", -1, "--fd 4 is not a socket" },
	};
	for (const auto &c : cases) {
		INFO(c.what);
		DaemonConfig config{ "--fd", "4" };
		config.socket = false;
		if (c.fd >= 0)
			config.inherit = { { c.fd, 4 } };
		requireRefused(config, "exited 1", c.message);
	}
}

TEST_CASE("Unknown options, stray arguments and out-of-range numbers are refused", "[launcher]")
{
	requireRefused({ "--frobnicate" }, "exited 2", "unknown option \"--frobnicate\"");
	requireRefused({ "stray" }, "exited 2", "unexpected argument \"stray\"");
	requireRefused({ "--max-dma-maps", "0" }, "exited 2", "--max-dma-maps: 0 is outside 1..65535");
	requireRefused({ "--max-msg-fds", "254" }, "exited 2", "--max-msg-fds: 254 is outside 1..253");
	requireRefused({ "--socket-mode", "999" }, "exited 2", "--socket-mode: \"999\" is not a number");
	requireRefused({ "--max-data-xfer" }, "exited 2", "--max-data-xfer needs an argument");
}

TEST_CASE("An unknown simulated device is refused", "[launcher]")
{
	requireRefused({ "--device", "sim:nope" }, "exited 1", "unknown simulated device \"sim:nope\"");
}

TEST_CASE("--socket where a live daemon listens is refused, and the live daemon keeps serving", "[launcher]")
{
	Daemon live;
	DaemonConfig config{ "--socket", live.socketPath() };
	config.socket = false;
	requireRefused(config, "exited 1", "is served by another process");
	CHECK(exists(live.socketPath()));
	requireFreshClientWorks(live);
}

TEST_CASE("--socket on a stale socket file replaces it", "[launcher]")
{
	TempDir dir;
	std::string path = dir.file("stale.sock");
	boundSocket(path, false); // bound, never listening, closed: a dead daemon's leftover
	REQUIRE(exists(path));
	DaemonConfig config{ "--socket", path };
	config.socket = false;
	Daemon d(config);
	Client c = connectTo(path);
	REQUIRE(outcome(c.negotiate()) == "ok");
	requireServes(c);
}

TEST_CASE("--socket on a path that is not a socket is refused and leaves the file alone", "[launcher]")
{
	TempDir dir;
	std::string path = dir.file("not-a-socket");
	{
		UniqueFd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
		REQUIRE(f);
		REQUIRE(::write(f.get(), "keep", 4) == 4);
	}
	DaemonConfig config{ "--socket", path };
	config.socket = false;
	requireRefused(config, "exited 1", "exists and is not a socket");
	struct stat st;
	REQUIRE(::stat(path.c_str(), &st) == 0);
	CHECK(S_ISREG(st.st_mode));
	CHECK(st.st_size == 4);
}

TEST_CASE("--socket in a directory that does not exist is refused", "[launcher]")
{
	TempDir dir;
	DaemonConfig config{ "--socket", dir.file("missing/dev.sock") };
	config.socket = false;
	requireRefused(config, "exited 1", "No such file or directory");
}

TEST_CASE("The socket is created with mode 0600 unless --socket-mode says otherwise", "[launcher]")
{
	SECTION("default")
	{
		Daemon d;
		CHECK(modeOf(d.socketPath()) == 0600);
	}
	SECTION("--socket-mode 0660")
	{
		Daemon d({ "--socket-mode", "0660" });
		CHECK(modeOf(d.socketPath()) == 0660);
	}
	SECTION("--socket-mode 0666")
	{
		Daemon d({ "--socket-mode", "0666" });
		CHECK(modeOf(d.socketPath()) == 0666);
	}
}

TEST_CASE("SIGTERM or SIGINT with a client connected makes the daemon exit 0 at once, and the client sees EOF",
	  "[launcher]")
{
	int sig = GENERATE(SIGTERM, SIGINT);
	INFO("signal " << sig);
	Daemon d;
	Client c = d.connectNegotiated();
	GuestMemory mem(kPage);
	REQUIRE(outcome(c.dmaMap(mem.fd(), 0, 0x100000, kPage, kDmaRw)) == "ok");
	auto start = std::chrono::steady_clock::now();
	REQUIRE(::kill(d.pid(), sig) == 0);
	ExitStatus st = d.waitExit();
	auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
	CHECK(st.describe() == "exited 0");
	CHECK(took.count() < 5000);
	requireClosedByDaemon(c);
	CHECK(!exists(d.socketPath()));
}

TEST_CASE("SIGTERM makes the daemon exit 0 even while it is blocked writing to a client that does not read",
	  "[launcher]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	// 1 MiB replies to a client that never reads them: the first one already overflows the
	// socket buffer, so once its first bytes arrive the daemon is stuck in sendmsg().
	vfio_user::RegionAccessPayload read{ 0, kBar0, 1u << 20 };
	for (uint16_t id = 1; id <= 8; id++)
		REQUIRE(outcome(c.sendRaw(frame(id, Command::RegionRead, bytesOf(read)))) == "ok");
	pollfd p{ c.fd(), POLLIN, 0 };
	REQUIRE(::poll(&p, 1, kWaitMs) == 1);
	auto start = std::chrono::steady_clock::now();
	ExitStatus st = d.stop();
	auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
	CHECK(st.describe() == "exited 0");
	CHECK(took.count() < 5000);
}
