// SPDX-License-Identifier: Apache-2.0
// region-read-bench: the trapped 4-byte REGION_READ round trip, measured against an AF_UNIX
// ping-pong floor in the same run, in interleaved rounds. A benchmark, not a test: it asserts
// nothing about speed; it fails only when a server misbehaves.
//
// The floor is the transport alone: a forked peer that reads exactly the request's 32 bytes
// and writes exactly the reply's 36, while this side does one sendmsg() and one recvmsg() the
// way client::Client does. What a server costs above it is its own work. Rounds of every
// target alternate (and rotate their order) because the scheduler's CPU placement drifts over
// a run, and interleaving exposes every target to the same drift.
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/vfio_user_client.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "vfio_user/protocol.h"

#ifndef REGION_READ_BENCH_DAEMON
#define REGION_READ_BENCH_DAEMON "vfio-broker-device"
#endif

namespace vfio_broker::bench {

namespace {

using vfio_user::Header;
using vfio_user::RegionAccessPayload;

constexpr uint32_t kReadSize = 4;
constexpr size_t kRequestSize = sizeof(Header) + sizeof(RegionAccessPayload);            // 32
constexpr size_t kReplySize = sizeof(Header) + sizeof(RegionAccessPayload) + kReadSize; // 36
constexpr uint32_t kEduId = 0x010000ed; // sim:edu BAR0 offset 0: the identification register
constexpr int kReadyTimeoutMs = 10000;

struct SocketTarget {
	std::string label;
	std::string path;
};

struct Options {
	std::string daemonPath;
	bool spawnDaemon = true;
	std::vector<SocketTarget> sockets;
	uint32_t region = 0;             // for --socket servers
	uint64_t offset = 0;             // for --socket servers
	std::optional<uint32_t> expect; // for --socket servers
	unsigned rounds = 20;
	unsigned ops = 20000;
	unsigned warmup = 2000;
	unsigned sampleEvery = 1;
	bool pin = false;
	int clientCpu = 0;
	int serverCpu = 1;
};

uint64_t nowNs()
{
	timespec ts;
	::clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + ts.tv_nsec;
}

Status pinTo(pid_t pid, int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (::sched_setaffinity(pid, sizeof(set), &set) < 0)
		return errnoError(errno, "pinning to CPU " + std::to_string(cpu));
	return {};
}

// One round of one target. With sampleEvery 1 (the default) every round trip is timed: one
// clock read per operation, back to back, so a sample is one round trip plus one vDSO clock
// read (measured and printed at start-up; it is in every target's numbers alike). With
// sampleEvery N only every Nth operation is timed alone. The round's median of those samples
// shrugs off the odd preempted operation, which the round's mean does not.
struct RoundResult {
	double meanNs = 0;
	double medianNs = 0; // of this round's samples; 0 without samples
};

double median(std::vector<double> v);

template<typename Op>
Result<RoundResult> timeBatch(unsigned ops, unsigned sampleEvery, std::vector<uint32_t> &samples, Op op)
{
	size_t first = samples.size();
	if (sampleEvery)
		samples.reserve(first + ops / sampleEvery + 1); // no reallocation inside the timed loop
	uint64_t start = nowNs();
	if (sampleEvery == 1) {
		uint64_t prev = start;
		for (unsigned i = 0; i < ops; i++) {
			if (Status s = op(); !s)
				return s.takeError();
			uint64_t t = nowNs();
			samples.push_back(static_cast<uint32_t>(std::min<uint64_t>(t - prev, UINT32_MAX)));
			prev = t;
		}
	} else {
		for (unsigned i = 0; i < ops; i++) {
			if (sampleEvery && i % sampleEvery == 0) {
				uint64_t t0 = nowNs();
				if (Status s = op(); !s)
					return s.takeError();
				samples.push_back(static_cast<uint32_t>(std::min<uint64_t>(nowNs() - t0, UINT32_MAX)));
			} else if (Status s = op(); !s) {
				return s.takeError();
			}
		}
	}
	RoundResult r;
	r.meanNs = static_cast<double>(nowNs() - start) / ops;
	if (samples.size() > first)
		r.medianNs = median(std::vector<double>(samples.begin() + first, samples.end()));
	return r;
}

// Cost of the clock read that each sample includes.
double clockReadNs()
{
	constexpr unsigned kReads = 100000;
	uint64_t start = nowNs(), t = start;
	for (unsigned i = 0; i < kReads; i++)
		t = nowNs();
	return static_cast<double>(t - start) / kReads;
}

class Target
{
public:
	explicit Target(std::string label) : label_(std::move(label)) {}
	virtual ~Target() = default;
	const std::string &label() const { return label_; }
	// ops round trips, the per-op loop inlined (no virtual call per operation).
	virtual Result<RoundResult> round(unsigned ops, unsigned sampleEvery) = 0;

	std::vector<double> roundMedians; // ns per round trip, one entry per round
	std::vector<double> roundMeans;
	std::vector<uint32_t> samples;    // per-op latencies in ns, all rounds

private:
	std::string label_;
};

// The floor: a forked echo peer on a socketpair.
class FloorTarget : public Target
{
public:
	FloorTarget() : Target("floor") {}
	~FloorTarget() override
	{
		sock_.reset(); // the peer sees EOF and exits
		if (child_ > 0)
			::waitpid(child_, nullptr, 0);
	}

	Status start(const Options &opts)
	{
		int sv[2];
		if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			return errnoError("socketpair");
		UniqueFd ours(sv[0]), peer(sv[1]);
		child_ = ::fork();
		if (child_ < 0)
			return errnoError("fork");
		if (child_ == 0) {
			ours.reset();
			if (opts.pin)
				(void)pinTo(0, opts.serverCpu);
			echoPeer(peer.get());
		}
		sock_ = std::move(ours);
		std::memset(request_, 0, sizeof(request_));
		Header h{};
		h.command = static_cast<uint16_t>(vfio_user::Command::RegionRead);
		h.msgSize = kRequestSize;
		std::memcpy(request_, &h, sizeof(h));
		rxBuf_.resize(128 * 1024); // what MessageReader hands recvmsg
		return {};
	}

	Result<RoundResult> round(unsigned ops, unsigned sampleEvery) override
	{
		return timeBatch(ops, sampleEvery, samples, [this] { return roundTrip(); });
	}

private:
	[[noreturn]] static void echoPeer(int fd)
	{
		uint8_t buf[kReplySize] = {};
		for (;;) {
			size_t got = 0;
			while (got < kRequestSize) {
				ssize_t n = ::read(fd, buf + got, kRequestSize - got);
				if (n <= 0)
					::_exit(n == 0 && got == 0 ? 0 : 1);
				got += n;
			}
			if (::write(fd, buf, kReplySize) != static_cast<ssize_t>(kReplySize))
				::_exit(1);
		}
	}

	// As client::Client sends (vfio_user::sendMessage: header and payload iovecs,
	// MSG_NOSIGNAL) and receives (a large buffer, room for SCM_RIGHTS, MSG_CMSG_CLOEXEC).
	Status roundTrip()
	{
		iovec out[2] = { { request_, sizeof(Header) },
				 { request_ + sizeof(Header), sizeof(RegionAccessPayload) } };
		msghdr msg{};
		msg.msg_iov = out;
		msg.msg_iovlen = 2;
		if (::sendmsg(sock_.get(), &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(kRequestSize))
			return errnoError(errno, "floor sendmsg");
		size_t got = 0;
		while (got < kReplySize) {
			iovec in{ rxBuf_.data() + got, rxBuf_.size() - got };
			msghdr rmsg{};
			rmsg.msg_iov = &in;
			rmsg.msg_iovlen = 1;
			rmsg.msg_control = control_;
			rmsg.msg_controllen = sizeof(control_);
			ssize_t n = ::recvmsg(sock_.get(), &rmsg, MSG_CMSG_CLOEXEC);
			if (n <= 0)
				return n == 0 ? makeError(EPROTO, "floor peer went away")
					      : errnoError(errno, "floor recvmsg");
			got += n;
		}
		return {};
	}

	UniqueFd sock_;
	pid_t child_ = -1;
	uint8_t request_[kRequestSize];
	std::vector<uint8_t> rxBuf_;
	alignas(cmsghdr) char control_[CMSG_SPACE(253 * sizeof(int))];
};

// A vfio-user server, through the real client library.
class ServerTarget : public Target
{
public:
	ServerTarget(std::string label, client::Client client, uint32_t region, uint64_t offset)
		: Target(std::move(label)), client_(std::move(client)), region_(region), offset_(offset)
	{
	}

	Status check(std::optional<uint32_t> expect)
	{
		uint32_t v = 0;
		if (Status s = client_.regionRead(region_, offset_, &v, kReadSize); !s)
			return withContext(s.takeError(), label() + ": first REGION_READ");
		std::printf("%s: region %u offset 0x%" PRIx64 " reads 0x%08x\n", label().c_str(), region_,
			    offset_, v);
		if (expect && v != *expect)
			return makeError(EPROTO, "%s: read 0x%08x, expected 0x%08x", label().c_str(), v, *expect);
		return {};
	}

	Result<RoundResult> round(unsigned ops, unsigned sampleEvery) override
	{
		uint32_t v;
		return timeBatch(ops, sampleEvery, samples,
				 [&] { return client_.regionRead(region_, offset_, &v, kReadSize); });
	}

private:
	client::Client client_;
	uint32_t region_;
	uint64_t offset_;
};

// vfio-broker-device on sim:edu in a private directory, reporting readiness on a pipe.
class SpawnedDaemon
{
public:
	~SpawnedDaemon()
	{
		if (pid_ > 0) {
			::kill(pid_, SIGTERM);
			::waitpid(pid_, nullptr, 0);
		}
		if (!socket_.empty())
			::unlink(socket_.c_str());
		if (!dir_.empty())
			::rmdir(dir_.c_str());
	}

	const std::string &socketPath() const { return socket_; }

	Status start(const Options &opts)
	{
		const char *tmp = std::getenv("TMPDIR");
		std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/region-read-bench.XXXXXX";
		if (!::mkdtemp(templ.data()))
			return errnoError(errno, "mkdtemp " + templ);
		dir_ = templ;
		socket_ = dir_ + "/edu.sock";

		int p[2];
		if (::pipe2(p, O_CLOEXEC) < 0)
			return errnoError("pipe2");
		UniqueFd readEnd(p[0]), writeEnd(p[1]);
		std::vector<std::string> args = { opts.daemonPath, "--device", "sim:edu", "--socket", socket_,
						  "--ready-fd", "3", "--exit-on-disconnect",
						  "--log-level", "warning" };
		std::vector<char *> argv;
		for (auto &a : args)
			argv.push_back(a.data());
		argv.push_back(nullptr);

		pid_ = ::fork();
		if (pid_ < 0)
			return errnoError("fork");
		if (pid_ == 0) {
			// Everything here is CLOEXEC; fd 3 is the one fd the daemon inherits.
			if (writeEnd.get() == 3)
				::fcntl(3, F_SETFD, 0);
			else if (::dup2(writeEnd.get(), 3) < 0)
				::_exit(127);
			if (opts.pin)
				(void)pinTo(0, opts.serverCpu); // inherited by every daemon thread
			::execv(argv[0], argv.data());
			std::fprintf(stderr, "region-read-bench: exec %s: %s\n", argv[0], std::strerror(errno));
			::_exit(127);
		}
		writeEnd.reset();
		return waitReady(readEnd.get());
	}

private:
	Status waitReady(int fd)
	{
		std::string got;
		for (;;) {
			pollfd pfd{ fd, POLLIN, 0 };
			int rc = ::poll(&pfd, 1, kReadyTimeoutMs);
			if (rc < 0 && errno == EINTR)
				continue;
			if (rc <= 0)
				return makeError(ETIMEDOUT, "%s did not report readiness", socket_.c_str());
			char buf[64];
			ssize_t n = ::read(fd, buf, sizeof(buf));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			got.append(buf, n);
		}
		if (got != "READY=1\n") {
			int status = 0;
			::waitpid(pid_, &status, 0);
			pid_ = -1;
			return makeError(EIO, "the daemon exited (status 0x%x) without reporting readiness",
					 status);
		}
		return {};
	}

	pid_t pid_ = -1;
	std::string dir_;
	std::string socket_;
};

Result<std::unique_ptr<ServerTarget>> connectServer(const std::string &label, const std::string &path,
						    uint32_t region, uint64_t offset,
						    std::optional<uint32_t> expect)
{
	auto c = client::Client::connect(path);
	if (!c)
		return withContext(c.takeError(), label);
	if (auto n = c->negotiate(); !n)
		return withContext(n.takeError(), label + ": VERSION");
	auto t = std::make_unique<ServerTarget>(label, std::move(*c), region, offset);
	if (Status s = t->check(expect); !s)
		return s.takeError();
	return t;
}

double median(std::vector<double> v)
{
	std::sort(v.begin(), v.end());
	size_t n = v.size();
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

uint32_t percentile(std::vector<uint32_t> v, double p)
{
	if (v.empty())
		return 0;
	size_t k = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * v.size()));
	std::nth_element(v.begin(), v.begin() + k, v.end());
	return v[k];
}

const char *usage()
{
	return "Usage: region-read-bench [options]\n"
	       "\n"
	       "Round-trip time of a 4-byte trapped REGION_READ against an AF_UNIX ping-pong floor,\n"
	       "in interleaved rounds. By default starts vfio-broker-device on sim:edu and reads BAR0\n"
	       "offset 0 (the edu ID register, 0x010000ed).\n"
	       "\n"
	       "  --daemon PATH         vfio-broker-device to start (default $VFIO_BROKER_DEVICE,\n"
	       "                        else the build's)\n"
	       "  --no-daemon           start no daemon; measure only the --socket servers\n"
	       "  --socket [LABEL=]PATH also measure an already running vfio-user server (repeatable;\n"
	       "                        LABEL names it in the output, default ext1, ext2, ...)\n"
	       "  --region N            region of the --socket servers to read (default 0)\n"
	       "  --offset X            offset in that region (default 0)\n"
	       "  --expect X            value the --socket servers must read there (default: any)\n"
	       "  --rounds N            rounds per target (default 20)\n"
	       "  --ops N               round trips per round (default 20000)\n"
	       "  --warmup N            untimed round trips per target first (default 2000)\n"
	       "  --sample-every N      time every Nth round trip (default 1: all; 0: none, then\n"
	       "                        rounds are compared by their means)\n"
	       "  --pin                 pin this process to one CPU and the servers it starts to\n"
	       "                        another (pin --socket servers yourself: taskset)\n"
	       "  --cpus C,S            the CPUs for --pin (default 0,1)\n"
	       "  -h, --help            this help\n"
	       "\n"
	       "The last line is machine-readable:\n"
	       "  region_read_4B: daemon_ns=... floor_ns=... ratio=... [LABEL_ns=... LABEL_ratio=...]\n";
}

Result<uint64_t> parseNumber(const char *opt, const char *text, uint64_t max)
{
	char *end = nullptr;
	errno = 0;
	unsigned long long v = std::strtoull(text, &end, 0);
	if (errno || !*text || *end || text[0] == '-' || v > max)
		return makeError(EINVAL, "%s: \"%s\" is not a number up to %" PRIu64, opt, text, max);
	return static_cast<uint64_t>(v);
}

Result<Options> parseOptions(int argc, char **argv)
{
	enum { kDaemon = 1000, kNoDaemon, kSocket, kRegion, kOffset, kExpect, kRounds, kOps, kWarmup,
	       kSampleEvery, kPin, kCpus };
	static const option longOptions[] = {
		{ "daemon", required_argument, nullptr, kDaemon },
		{ "no-daemon", no_argument, nullptr, kNoDaemon },
		{ "socket", required_argument, nullptr, kSocket },
		{ "region", required_argument, nullptr, kRegion },
		{ "offset", required_argument, nullptr, kOffset },
		{ "expect", required_argument, nullptr, kExpect },
		{ "rounds", required_argument, nullptr, kRounds },
		{ "ops", required_argument, nullptr, kOps },
		{ "warmup", required_argument, nullptr, kWarmup },
		{ "sample-every", required_argument, nullptr, kSampleEvery },
		{ "pin", no_argument, nullptr, kPin },
		{ "cpus", required_argument, nullptr, kCpus },
		{ "help", no_argument, nullptr, 'h' },
		{ nullptr, 0, nullptr, 0 },
	};
	Options o;
	const char *env = std::getenv("VFIO_BROKER_DEVICE");
	o.daemonPath = env && *env ? env : REGION_READ_BENCH_DAEMON;
	optind = 1;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":h", longOptions, nullptr)) != -1) {
		Result<uint64_t> n = uint64_t(0);
		auto number = [&](const char *name, uint64_t min, uint64_t max) -> Status {
			n = parseNumber(name, optarg, max);
			if (!n)
				return n.takeError();
			if (*n < min)
				return makeError(EINVAL, "%s: must be at least %" PRIu64, name, min);
			return {};
		};
		Status s;
		switch (c) {
		case kDaemon: o.daemonPath = optarg; break;
		case kNoDaemon: o.spawnDaemon = false; break;
		case kSocket: {
			std::string arg = optarg;
			size_t eq = arg.find('=');
			SocketTarget t;
			if (eq != std::string::npos && arg.find('/') > eq) {
				t.label = arg.substr(0, eq);
				t.path = arg.substr(eq + 1);
			} else {
				t.label = "ext" + std::to_string(o.sockets.size() + 1);
				t.path = arg;
			}
			if (t.label.empty() || t.path.empty() || t.label == "floor" || t.label == "daemon")
				return makeError(EINVAL, "--socket \"%s\": need [LABEL=]PATH, LABEL not "
						 "floor or daemon", optarg);
			o.sockets.push_back(t);
			break;
		}
		case kRegion: s = number("--region", 0, UINT32_MAX); if (s) o.region = *n; break;
		case kOffset: s = number("--offset", 0, UINT64_MAX); if (s) o.offset = *n; break;
		case kExpect: s = number("--expect", 0, UINT32_MAX); if (s) o.expect = *n; break;
		case kRounds: s = number("--rounds", 1, 100000); if (s) o.rounds = *n; break;
		case kOps: s = number("--ops", 1, 100000000); if (s) o.ops = *n; break;
		case kWarmup: s = number("--warmup", 0, 100000000); if (s) o.warmup = *n; break;
		case kSampleEvery: s = number("--sample-every", 0, 100000000); if (s) o.sampleEvery = *n; break;
		case kPin: o.pin = true; break;
		case kCpus:
			if (std::sscanf(optarg, "%d,%d", &o.clientCpu, &o.serverCpu) != 2 || o.clientCpu < 0 ||
			    o.serverCpu < 0 || o.clientCpu >= CPU_SETSIZE || o.serverCpu >= CPU_SETSIZE)
				return makeError(EINVAL, "--cpus: \"%s\" is not C,S", optarg);
			break;
		case 'h':
			std::fputs(usage(), stdout);
			std::exit(0);
		case ':': return makeError(EINVAL, "%s needs an argument", argv[optind - 1]);
		default: return makeError(EINVAL, "unknown option \"%s\" (see --help)", argv[optind - 1]);
		}
		if (!s)
			return s.takeError();
	}
	if (optind < argc)
		return makeError(EINVAL, "unexpected argument \"%s\"", argv[optind]);
	if (!o.spawnDaemon && o.sockets.empty())
		return makeError(EINVAL, "--no-daemon needs at least one --socket");
	return o;
}

Status run(const Options &opts)
{
	std::vector<std::unique_ptr<Target>> targets;

	// Fork the echo peer first, while this process is still single-threaded and small.
	auto floor = std::make_unique<FloorTarget>();
	if (Status s = floor->start(opts); !s)
		return s;
	targets.push_back(std::move(floor));

	std::unique_ptr<SpawnedDaemon> daemon;
	if (opts.spawnDaemon) {
		daemon = std::make_unique<SpawnedDaemon>();
		if (Status s = daemon->start(opts); !s)
			return withContext(s.takeError(), "starting " + opts.daemonPath);
		auto t = connectServer("daemon", daemon->socketPath(), VFIO_PCI_BAR0_REGION_INDEX, 0, kEduId);
		if (!t)
			return t.takeError();
		targets.push_back(std::move(*t));
	}
	for (const auto &sock : opts.sockets) {
		auto t = connectServer(sock.label, sock.path, opts.region, opts.offset, opts.expect);
		if (!t)
			return t.takeError();
		targets.push_back(std::move(*t));
	}
	if (opts.pin) {
		if (Status s = pinTo(0, opts.clientCpu); !s)
			return s;
	}

	std::printf("%u rounds x %u round trips per target, %s; ", opts.rounds, opts.ops,
		    opts.pin ? strFormat("pinned (client CPU %d, started servers CPU %d)", opts.clientCpu,
					 opts.serverCpu).c_str()
			     : "unpinned");
	if (opts.sampleEvery)
		std::printf("%s round trip timed (clock read: %.0f ns, in every sample)\n",
			    opts.sampleEvery == 1 ? "every" : strFormat("every %uth", opts.sampleEvery).c_str(),
			    clockReadNs());
	else
		std::printf("rounds timed whole\n");
	for (auto &t : targets) {
		auto r = t->round(opts.warmup ? opts.warmup : 1, 0);
		if (!r)
			return withContext(r.takeError(), t->label() + " warm-up");
	}

	// A round's figure is the median of its samples, or its mean without samples.
	bool byMedian = opts.sampleEvery != 0;
	auto figures = [&](const Target &t) -> const std::vector<double> & {
		return byMedian ? t.roundMedians : t.roundMeans;
	};
	std::printf("ns per round trip, %s of each round (ratio to the floor's):\n",
		    byMedian ? "median [mean]" : "mean");
	std::printf("%-6s", "round");
	for (auto &t : targets)
		std::printf(" %24s", t->label().c_str());
	std::printf("\n");
	std::vector<std::vector<double>> ratios(targets.size()), meanRatios(targets.size());
	for (unsigned round = 0; round < opts.rounds; round++) {
		// Rotate who goes first so no target always follows the same one.
		for (size_t k = 0; k < targets.size(); k++) {
			Target &t = *targets[(round + k) % targets.size()];
			auto r = t.round(opts.ops, opts.sampleEvery);
			if (!r)
				return withContext(r.takeError(), t.label() + " round " + std::to_string(round + 1));
			t.roundMedians.push_back(r->medianNs);
			t.roundMeans.push_back(r->meanNs);
		}
		std::printf("%-6u", round + 1);
		const Target &f = *targets[0];
		for (size_t i = 0; i < targets.size(); i++) {
			const Target &t = *targets[i];
			double v = figures(t).back();
			std::string cell = byMedian ? strFormat("%.0f [%.0f]", v, t.roundMeans.back())
						    : strFormat("%.0f", v);
			if (i > 0) {
				ratios[i].push_back(v / figures(f).back());
				meanRatios[i].push_back(t.roundMeans.back() / f.roundMeans.back());
				cell += strFormat(" %.3fx", ratios[i].back());
			}
			std::printf(" %24s", cell.c_str());
		}
		std::printf("\n");
	}

	std::printf("\nover the rounds: median [min..max] of the round %ss; p50/p99 of all timed round "
		    "trips\n", byMedian ? "median" : "mean");
	for (auto &t : targets) {
		const auto &v = figures(*t);
		auto [lo, hi] = std::minmax_element(v.begin(), v.end());
		std::string tail = t->samples.empty() ? std::string()
						      : strFormat("  p50 %u ns  p99 %u ns", percentile(t->samples, 50),
								  percentile(t->samples, 99));
		std::printf("  %-14s %6.0f ns [%.0f..%.0f]  mean %6.0f ns%s\n", t->label().c_str(), median(v),
			    *lo, *hi, median(t->roundMeans), tail.c_str());
	}
	for (size_t i = 1; i < targets.size(); i++) {
		auto [lo, hi] = std::minmax_element(ratios[i].begin(), ratios[i].end());
		std::printf("  %s/floor: %.3f [%.3f..%.3f] (median of per-round ratios; of the means: %.3f)\n",
			    targets[i]->label().c_str(), median(ratios[i]), *lo, *hi, median(meanRatios[i]));
	}

	// The machine-readable line; ratio= belongs to the first server (ours unless --no-daemon).
	std::string line = "region_read_4B:";
	line += strFormat(" %s_ns=%.0f floor_ns=%.0f ratio=%.3f", targets[1]->label().c_str(),
			  median(figures(*targets[1])), median(figures(*targets[0])), median(ratios[1]));
	for (size_t i = 2; i < targets.size(); i++)
		line += strFormat(" %s_ns=%.0f %s_ratio=%.3f", targets[i]->label().c_str(),
				  median(figures(*targets[i])), targets[i]->label().c_str(), median(ratios[i]));
	for (auto &t : targets) {
		if (!t->samples.empty())
			line += strFormat(" %s_p50_ns=%u %s_p99_ns=%u", t->label().c_str(),
					  percentile(t->samples, 50), t->label().c_str(),
					  percentile(t->samples, 99));
	}
	for (size_t i = 1; i < targets.size(); i++)
		line += strFormat(" %s_mean_ratio=%.3f", targets[i]->label().c_str(), median(meanRatios[i]));
	line += strFormat(" pinned=%d", opts.pin ? 1 : 0);
	std::printf("%s\n", line.c_str());

	targets.clear(); // disconnect before the daemon is stopped
	return {};
}

} // namespace

} // namespace vfio_broker::bench

int main(int argc, char **argv)
{
	using namespace vfio_broker;
	::signal(SIGPIPE, SIG_IGN);
	std::setvbuf(stdout, nullptr, _IOLBF, 0);
	auto opts = bench::parseOptions(argc, argv);
	if (!opts) {
		std::fprintf(stderr, "region-read-bench: %s\n%s", opts.error().message.c_str(), bench::usage());
		return 2;
	}
	if (Status s = bench::run(*opts); !s) {
		std::fprintf(stderr, "region-read-bench: %s\n", s.error().message.c_str());
		return 1;
	}
	return 0;
}
