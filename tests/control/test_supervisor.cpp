// SPDX-License-Identifier: Apache-2.0
// Supervisor against the real vfio-broker-device on sim:edu: spawn, fds, stop, watch, adopt, systemd mode.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <tuple>

#include "control/supervisor.h"

extern char **environ;

using namespace std::chrono_literals;
using vfio_broker::UniqueFd;
using vfio_broker::control::DaemonHandle;
using vfio_broker::control::DaemonSpec;
using vfio_broker::control::Supervisor;
using vfio_broker::control::systemdInstanceFor;
namespace pb = vfio_broker::v1;

namespace {

// glibc 2.36's <sys/pidfd.h> lacks extern "C": call the kernel directly.
int pidfdOpen(pid_t pid)
{
	return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0u));
}

constexpr auto kReady = 10000ms;   // a failure bound: sim:edu is ready in milliseconds
constexpr auto kStop = 5000ms;
constexpr auto kCallback = 10000ms; // a failure bound for onExit to arrive

std::string envOrFail(const char *name)
{
	const char *v = std::getenv(name);
	if (!v || !*v)
		FAIL(name << " is not set (meson test sets it)");
	return v;
}

std::string deviceDaemon() { return envOrFail("VFIO_BROKER_DEVICE"); }
std::string sourceRoot() { return envOrFail("VFIO_BROKER_SOURCE_ROOT"); }

// Short, so socket paths stay well inside sun_path.
class TempDir
{
public:
	TempDir()
	{
		char tmpl[] = "/tmp/vb-sup.XXXXXX";
		REQUIRE(::mkdtemp(tmpl));
		path_ = tmpl;
	}
	~TempDir()
	{
		std::error_code ec;
		std::filesystem::remove_all(path_, ec);
	}
	const std::string &path() const { return path_; }
	std::string operator/(const std::string &name) const { return path_ + "/" + name; }

private:
	std::string path_;
};

struct ExitRecord {
	std::string deviceId;
	DaemonHandle handle;
	int status;
};

// onExit's records, with a wait that wakes on the callback (the timeout only bounds failure).
class ExitLog
{
public:
	Supervisor::ExitCallback callback()
	{
		return [this](const std::string &id, const DaemonHandle &h, int status) {
			std::lock_guard guard(lock_);
			records_.push_back({ id, h, status });
			cv_.notify_all();
		};
	}
	bool waitFor(size_t n)
	{
		std::unique_lock guard(lock_);
		return cv_.wait_for(guard, kCallback, [&] { return records_.size() >= n; });
	}
	std::vector<ExitRecord> records()
	{
		std::lock_guard guard(lock_);
		return records_;
	}

private:
	std::mutex lock_;
	std::condition_variable cv_;
	std::vector<ExitRecord> records_;
};

pb::DaemonConfig spawnConfig(const TempDir &dir)
{
	pb::DaemonConfig c;
	c.set_launch_method(pb::LAUNCH_METHOD_SPAWN);
	c.set_device_daemon(deviceDaemon());
	c.set_runtime_dir(dir.path());
	return c;
}

DaemonSpec eduSpec(const TempDir &dir, const std::string &id = "sim:edu")
{
	DaemonSpec s;
	s.deviceId = id;
	s.deviceArg = "sim:edu";
	s.socketPath = dir / (id + ".sock");
	return s;
}

std::string readFile(const std::string &path)
{
	std::ifstream in(path, std::ios::binary);
	std::ostringstream out;
	out << in.rdbuf();
	return out.str();
}

void writeScript(const std::string &path, const std::string &body)
{
	{
		std::ofstream out(path);
		out << body;
	}
	REQUIRE(::chmod(path.c_str(), 0755) == 0);
}

// Fields of /proc/<pid>/stat from field 3 (state) on; empty when the process is gone.
std::vector<std::string> statFields(pid_t pid)
{
	std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
	size_t paren = stat.rfind(')');
	if (paren == std::string::npos)
		return {};
	std::istringstream in(stat.substr(paren + 2));
	std::vector<std::string> fields{ "", "", "" }; // so fields[n] is field n (1-based)
	for (std::string f; in >> f;)
		fields.push_back(f);
	return fields;
}

bool running(pid_t pid)
{
	auto f = statFields(pid);
	return f.size() > 3 && f[3] != "Z" && f[3] != "X";
}

// Our child and already reaped (or never ours): waitpid has nothing left for it.
bool reaped(pid_t pid)
{
	int st;
	return ::waitpid(pid, &st, WNOHANG) < 0 && errno == ECHILD;
}

// Processes of session `sid` that still run (zombies do not count: they hold nothing).
std::vector<pid_t> runningInSession(pid_t sid)
{
	std::vector<pid_t> found;
	for (const auto &entry : std::filesystem::directory_iterator("/proc")) {
		std::string name = entry.path().filename();
		if (name.find_first_not_of("0123456789") != std::string::npos)
			continue;
		pid_t pid = std::stoi(name);
		auto f = statFields(pid);
		if (f.size() > 6 && f[6] == std::to_string(sid) && f[3] != "Z" && f[3] != "X")
			found.push_back(pid);
	}
	return found;
}

// SIGKILL is delivered asynchronously: a killed process may still be on its way out when
// kill() returns. Wait (on pidfds; the deadline only bounds failure) for the session to empty.
bool sessionEnds(pid_t sid)
{
	auto deadline = std::chrono::steady_clock::now() + kCallback;
	for (;;) {
		auto members = runningInSession(sid);
		if (members.empty())
			return true;
		auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
			deadline - std::chrono::steady_clock::now()).count();
		if (left <= 0)
			return false;
		UniqueFd pidfd(pidfdOpen(members[0]));
		if (pidfd) {
			pollfd p{ pidfd.get(), POLLIN, 0 };
			::poll(&p, 1, static_cast<int>(left));
		}
	}
}

std::vector<std::string> cmdline(pid_t pid)
{
	std::string raw = readFile("/proc/" + std::to_string(pid) + "/cmdline");
	std::vector<std::string> args;
	std::istringstream in(raw);
	for (std::string a; std::getline(in, a, '\0');)
		args.push_back(a);
	return args;
}

bool contains(const std::vector<std::string> &v, const std::string &s)
{
	return std::find(v.begin(), v.end(), s) != v.end();
}

uint64_t startTimeOf(pid_t pid)
{
	auto f = statFields(pid);
	REQUIRE(f.size() > 22);
	return std::stoull(f[22]);
}

pid_t spawnProcess(const std::vector<std::string> &argv)
{
	std::vector<char *> cargv;
	cargv.reserve(argv.size() + 1);
	for (const auto &a : argv)
		cargv.push_back(const_cast<char *>(a.c_str()));
	cargv.push_back(nullptr);
	pid_t pid = -1;
	REQUIRE(::posix_spawnp(&pid, cargv[0], nullptr, nullptr, cargv.data(), environ) == 0);
	return pid;
}

pid_t pidInMessage(const std::string &message)
{
	std::smatch m;
	REQUIRE(std::regex_search(message, m, std::regex("pid ([0-9]+)")));
	return std::stoi(m[1]);
}

// Identity of what an fd refers to, for comparing a daemon's fds with ours.
struct FileId {
	dev_t dev;
	ino_t ino;
	bool operator<(const FileId &o) const { return std::tie(dev, ino) < std::tie(o.dev, o.ino); }
	bool operator==(const FileId &o) const { return dev == o.dev && ino == o.ino; }
};

// fd number -> link target, for every fd of pid.
std::map<int, std::string> fdsOf(pid_t pid)
{
	std::map<int, std::string> fds;
	std::string dir = "/proc/" + std::to_string(pid) + "/fd";
	for (const auto &entry : std::filesystem::directory_iterator(dir)) {
		std::error_code ec;
		auto target = std::filesystem::read_symlink(entry.path(), ec);
		if (!ec) // an fd may close while we look (the daemon accepting our probe)
			fds[std::stoi(entry.path().filename())] = target.string();
	}
	return fds;
}

std::optional<FileId> fileIdOf(pid_t pid, int fd)
{
	struct stat st;
	std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
	if (::stat(path.c_str(), &st) < 0)
		return std::nullopt;
	return FileId{ st.st_dev, st.st_ino };
}

// The fake systemctl's environment, and a config that runs it, under one temp dir.
struct FakeSystemd {
	explicit FakeSystemd(const TempDir &dir, const std::string &unitFile = "")
	{
		std::string unit = unitFile.empty() ? sourceRoot() + "/systemd/vfio-broker-device@.service"
						    : unitFile;
		::setenv("FAKE_SYSTEMCTL_UNIT_FILE", unit.c_str(), 1);
		::setenv("FAKE_SYSTEMCTL_RUNTIME_DIR", (dir / "run").c_str(), 1);
		::setenv("FAKE_SYSTEMCTL_STATE_DIR", (dir / "fake-systemd").c_str(), 1);
		::setenv("FAKE_SYSTEMCTL_EXEC", deviceDaemon().c_str(), 1);
		::setenv("FAKE_SYSTEMCTL_STOP_TIMEOUT", "5", 1);
		config.set_launch_method(pb::LAUNCH_METHOD_SYSTEMD);
		config.set_systemctl(sourceRoot() + "/tests/support/fake-systemctl");
		config.set_runtime_dir(dir / "run/vfio-broker");
		stateDir = dir / "fake-systemd";
	}
	DaemonSpec spec(const std::string &deviceArg = "sim:edu") const
	{
		DaemonSpec s;
		s.deviceId = deviceArg;
		s.deviceArg = deviceArg;
		s.socketPath = config.runtime_dir() + "/devices/" + systemdInstanceFor(deviceArg) + ".sock";
		return s;
	}
	std::string calls() const { return readFile(stateDir + "/calls.log"); }

	pb::DaemonConfig config;
	std::string stateDir;
};

// The unit the broker needs: the real one, plus the line that reads the broker-written env
// file if the real one does not have it yet (then say so).
std::string unitWithBrokerEnvFile(const TempDir &dir)
{
	std::string real = sourceRoot() + "/systemd/vfio-broker-device@.service";
	std::string text = readFile(real);
	const std::string line = "EnvironmentFile=-%t/vfio-broker/devices/%i.env";
	if (text.find(line) != std::string::npos)
		return real;
	WARN("systemd/vfio-broker-device@.service lacks '" << line
	     << "': testing a copy with it (the real unit ignores the broker's per-device arguments)");
	size_t at = text.find("ExecStart=");
	REQUIRE(at != std::string::npos);
	text.insert(at, line + "\n");
	std::string copy = dir / "vfio-broker-device@.service";
	std::ofstream(copy) << text;
	return copy;
}

} // namespace

// --- spawn mode ---

TEST_CASE("start_spawnMode_socketAnswersWhenStartReturns", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	Supervisor sup(spawnConfig(dir), exits.callback());
	DaemonSpec spec = eduSpec(dir);
	auto h = sup.start(spec, kReady);
	REQUIRE(h.ok());
	CHECK(h->pid > 0);
	CHECK(h->unit.empty());
	CHECK(h->startTime == startTimeOf(h->pid));
	CHECK(Supervisor::socketAnswers(spec.socketPath));
	auto args = cmdline(h->pid);
	REQUIRE(args.size() >= 7);
	CHECK(std::vector<std::string>(args.begin() + 1, args.begin() + 7) ==
	      std::vector<std::string>{ "--device", "sim:edu", "--socket", spec.socketPath, "--ready-fd",
					"3" });
	REQUIRE(sup.stop(spec.deviceId, kStop).ok());
}

TEST_CASE("start_spawnMode_passesOwnerConfiguredAndExtraArgsInOrder", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	pb::DaemonConfig config = spawnConfig(dir);
	config.add_device_daemon_args("--max-dma-maps=16");
	Supervisor sup(config, exits.callback());
	DaemonSpec spec = eduSpec(dir);
	spec.socketUid = ::getuid();
	spec.socketGid = ::getgid();
	spec.extraArgs = { "--log-level=debug" };
	auto h = sup.start(spec, kReady);
	REQUIRE(h.ok());
	auto args = cmdline(h->pid);
	REQUIRE(args.size() == 11);
	CHECK(std::vector<std::string>(args.begin() + 7, args.end()) ==
	      std::vector<std::string>{ "--socket-owner",
					std::to_string(::getuid()) + ":" + std::to_string(::getgid()),
					"--max-dma-maps=16", "--log-level=debug" });
	REQUIRE(sup.stop(spec.deviceId, kStop).ok());
}

TEST_CASE("start_spawnMode_daemonHoldsNoFdOfTheBroker", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	// What a broker holds: files, pipes, a listening socket (gRPC), an eventfd, a pidfd, all
	// deliberately inheritable: only the spawn's allow-list may keep them out.
	UniqueFd file(::open((dir / "state.lock").c_str(), O_RDWR | O_CREAT, 0600));
	int p[2];
	REQUIRE(::pipe(p) == 0);
	UniqueFd pipeRead(p[0]), pipeWrite(p[1]);
	UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM, 0));
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	std::string grpcPath = dir / "grpc.sock";
	REQUIRE(grpcPath.size() < sizeof(addr.sun_path));
	std::memcpy(addr.sun_path, grpcPath.c_str(), grpcPath.size());
	REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0);
	REQUIRE(::listen(listener.get(), 1) == 0);
	UniqueFd efd(::eventfd(0x5eed, 0));
	UniqueFd selfPidfd(pidfdOpen(::getpid()));
	REQUIRE((file && listener && efd && selfPidfd));
	REQUIRE(::fcntl(selfPidfd.get(), F_SETFD, 0) == 0);
	for (int fd : { file.get(), pipeRead.get(), pipeWrite.get(), listener.get(), efd.get(),
			selfPidfd.get() })
		REQUIRE((::fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0);

	Supervisor sup(spawnConfig(dir), exits.callback());
	// A first daemon, so the supervisor holds a pidfd the second one must not get either.
	auto first = sup.start(eduSpec(dir, "first"), kReady);
	REQUIRE(first.ok());
	auto second = sup.start(eduSpec(dir, "second"), kReady);
	REQUIRE(second.ok());

	std::set<FileId> ours;
	for (const auto &[fd, target] : fdsOf(::getpid()))
		if (fd > 2 && target.rfind("anon_inode:", 0) != 0)
			if (auto id = fileIdOf(::getpid(), fd))
				ours.insert(*id);
	auto fds = fdsOf(second->pid);
	REQUIRE(fds.count(0));
	CHECK(fds[0] == "/dev/null");
	for (int fd : { 1, 2 }) { // the broker's stdout and stderr (the journal)
		INFO("fd " << fd);
		CHECK(fileIdOf(second->pid, fd) == fileIdOf(::getpid(), fd));
	}
	// The fdinfo markers checked below do show on our own fds, so their absence means something.
	const std::string ourEventfd = "eventfd-count:             5eed";
	REQUIRE_THAT(readFile("/proc/self/fdinfo/" + std::to_string(efd.get())), Catch::Contains(ourEventfd));
	REQUIRE_THAT(readFile("/proc/self/fdinfo/" + std::to_string(selfPidfd.get())),
		     Catch::Contains("\nPid:"));
	for (const auto &[fd, target] : fds) {
		if (fd <= 2)
			continue;
		INFO("daemon fd " << fd << " -> " << target);
		if (target.rfind("anon_inode:", 0) != 0) {
			auto id = fileIdOf(second->pid, fd);
			if (id)
				CHECK(ours.count(*id) == 0);
		}
		std::string info =
			readFile("/proc/" + std::to_string(second->pid) + "/fdinfo/" + std::to_string(fd));
		CHECK(info.find("\nPid:") == std::string::npos);             // no pidfd at all
		CHECK(info.find(ourEventfd) == std::string::npos);  // not our eventfd
	}
	REQUIRE(sup.stop("first", kStop).ok());
	REQUIRE(sup.stop("second", kStop).ok());
}

TEST_CASE("start_spawnMode_daemonLeadsItsOwnSessionWithSignalsUnblocked", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	// A broker blocks signals for its signalfd; its children must not inherit the mask.
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	REQUIRE(::pthread_sigmask(SIG_BLOCK, &block, &old) == 0);
	Supervisor sup(spawnConfig(dir), exits.callback());
	auto h = sup.start(eduSpec(dir), kReady);
	::pthread_sigmask(SIG_SETMASK, &old, nullptr);
	REQUIRE(h.ok());
	auto f = statFields(h->pid);
	REQUIRE(f.size() > 6);
	CHECK(f[5] == std::to_string(h->pid)); // process group
	CHECK(f[6] == std::to_string(h->pid)); // session
	std::string status = readFile("/proc/" + std::to_string(h->pid) + "/status");
	std::smatch m;
	REQUIRE(std::regex_search(status, m, std::regex("SigBlk:\\s*([0-9a-f]+)")));
	CHECK((std::stoull(m[1], nullptr, 16) & (1ull << (SIGTERM - 1))) == 0);
	REQUIRE(sup.stop("sim:edu", kStop).ok());
}

TEST_CASE("start_daemonNeverReady_returnsEtimedoutAndLeavesNoProcess", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	// Never writes READY=1; its helper inherits fd 3 too, so the pipe never reaches EOF.
	std::string script = dir / "never-ready";
	writeScript(script, "#!/bin/bash\nsleep 1000 &\nwait\n");
	pb::DaemonConfig config = spawnConfig(dir);
	config.set_device_daemon(script);
	Supervisor sup(config, exits.callback());
	auto h = sup.start(eduSpec(dir), 300ms);
	REQUIRE_FALSE(h.ok());
	CHECK(h.error().code == ETIMEDOUT);
	CHECK_THAT(h.error().message, Catch::Contains("killed by SIGKILL"));
	pid_t pid = pidInMessage(h.error().message);
	CHECK(reaped(pid));                        // no zombie
	CHECK(sessionEnds(pid));                   // no orphan: its helper was killed too
	CHECK(sup.stop("sim:edu", kStop).ok());    // nothing left to stop
	CHECK(exits.records().empty());
}

TEST_CASE("start_daemonExitsEarly_reportsItsExitStatusWithoutWaitingForTheTimeout", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	std::string script = dir / "exit-3";
	writeScript(script, "#!/bin/sh\nexit 3\n");
	pb::DaemonConfig config = spawnConfig(dir);
	config.set_device_daemon(script);
	Supervisor sup(config, exits.callback());
	auto begin = std::chrono::steady_clock::now();
	auto h = sup.start(eduSpec(dir), 60000ms);
	REQUIRE_FALSE(h.ok());
	CHECK(std::chrono::steady_clock::now() - begin < 30000ms);
	CHECK_THAT(h.error().message, Catch::Contains("exited with status 3"));
	CHECK(reaped(pidInMessage(h.error().message)));
}

TEST_CASE("start_unknownDevice_reportsTheDaemonsFailure", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	Supervisor sup(spawnConfig(dir), exits.callback());
	DaemonSpec spec = eduSpec(dir);
	spec.deviceArg = "sim:no-such-device";
	auto h = sup.start(spec, kReady);
	REQUIRE_FALSE(h.ok());
	CHECK_THAT(h.error().message, Catch::Contains("exited with status 1"));
	CHECK(reaped(pidInMessage(h.error().message)));
}

TEST_CASE("start_missingExecutable_returnsEnoent", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	pb::DaemonConfig config = spawnConfig(dir);
	config.set_device_daemon(dir / "no-such-daemon");
	Supervisor sup(config, exits.callback());
	auto h = sup.start(eduSpec(dir), kReady);
	REQUIRE_FALSE(h.ok());
	CHECK(h.error().code == ENOENT);
}

TEST_CASE("start_deviceAlreadyRunning_returnsEexist", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	Supervisor sup(spawnConfig(dir), exits.callback());
	REQUIRE(sup.start(eduSpec(dir), kReady).ok());
	DaemonSpec again = eduSpec(dir);
	again.socketPath = dir / "other.sock";
	auto h = sup.start(again, kReady);
	REQUIRE_FALSE(h.ok());
	CHECK(h.error().code == EEXIST);
	REQUIRE(sup.stop("sim:edu", kStop).ok());
}

TEST_CASE("stop_runningDaemon_exitsIsReapedAndIsNotReported", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	DaemonSpec spec = eduSpec(dir);
	pid_t pid;
	{
		Supervisor sup(spawnConfig(dir), exits.callback());
		auto h = sup.start(spec, kReady);
		REQUIRE(h.ok());
		pid = h->pid;
		REQUIRE(sup.stop(spec.deviceId, kStop).ok());
		CHECK(reaped(pid));
		CHECK_FALSE(Supervisor::socketAnswers(spec.socketPath));
		CHECK(sup.stop(spec.deviceId, kStop).ok()); // already stopped: success
	} // joins the watcher: a late report would have happened by now
	CHECK(exits.records().empty());
}

TEST_CASE("stop_daemonIgnoringSigterm_isKilledAfterTheTimeout", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	// The leader ignores SIGTERM; the real daemon it runs (same session) serves the socket.
	std::string script = dir / "stubborn";
	writeScript(script, "#!/bin/bash\ntrap '' TERM\n\"$VFIO_BROKER_DEVICE\" \"$@\" &\nwait\n");
	pb::DaemonConfig config = spawnConfig(dir);
	config.set_device_daemon(script);
	Supervisor sup(config, exits.callback());
	DaemonSpec spec = eduSpec(dir);
	auto h = sup.start(spec, kReady);
	REQUIRE(h.ok());
	REQUIRE(sup.stop(spec.deviceId, 200ms).ok());
	CHECK(reaped(h->pid));
	CHECK(sessionEnds(h->pid)); // the real daemon it ran was killed with it
	CHECK_FALSE(Supervisor::socketAnswers(spec.socketPath));
	CHECK(exits.records().empty());
}

TEST_CASE("stop_unknownDevice_succeeds", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	Supervisor sup(spawnConfig(dir), exits.callback());
	CHECK(sup.stop("never-started", kStop).ok());
}

// --- watching ---

TEST_CASE("watch_daemonKilled_reportsSignalStatusAndReapsIt", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	Supervisor sup(spawnConfig(dir), exits.callback());
	auto h = sup.start(eduSpec(dir), kReady);
	REQUIRE(h.ok());
	REQUIRE(::kill(h->pid, SIGKILL) == 0);
	REQUIRE(exits.waitFor(1));
	auto r = exits.records();
	REQUIRE(r.size() == 1);
	CHECK(r[0].deviceId == "sim:edu");
	CHECK(r[0].handle.pid == h->pid);
	CHECK(r[0].handle.startTime == h->startTime);
	REQUIRE(r[0].status >= 0);
	CHECK(WIFSIGNALED(r[0].status));
	CHECK(WTERMSIG(r[0].status) == SIGKILL);
	CHECK(reaped(h->pid));
	CHECK(sup.stop("sim:edu", kStop).ok()); // no longer known: nothing to do
}

TEST_CASE("watch_daemonExitingOnItsOwn_reportsItsExitCode", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	Supervisor sup(spawnConfig(dir), exits.callback());
	auto h = sup.start(eduSpec(dir), kReady);
	REQUIRE(h.ok());
	REQUIRE(::kill(h->pid, SIGTERM) == 0); // someone else stops it: the daemon exits 0
	REQUIRE(exits.waitFor(1));
	auto r = exits.records();
	REQUIRE(r[0].status >= 0);
	CHECK(WIFEXITED(r[0].status));
	CHECK(WEXITSTATUS(r[0].status) == 0);
}

TEST_CASE("watch_onlyTheDeadDaemonIsReported", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	Supervisor sup(spawnConfig(dir), exits.callback());
	auto a = sup.start(eduSpec(dir, "a"), kReady);
	auto b = sup.start(eduSpec(dir, "b"), kReady);
	REQUIRE((a.ok() && b.ok()));
	REQUIRE(::kill(b->pid, SIGKILL) == 0);
	REQUIRE(exits.waitFor(1));
	REQUIRE(sup.stop("a", kStop).ok());
	auto r = exits.records();
	REQUIRE(r.size() == 1);
	CHECK(r[0].deviceId == "b");
}

TEST_CASE("watch_onExitMayStartAReplacement", "[supervisor]")
{
	TempDir dir;
	std::mutex lock;
	std::condition_variable cv;
	std::optional<vfio_broker::Result<DaemonHandle>> replacement;
	Supervisor *supPtr = nullptr;
	DaemonSpec spec = eduSpec(dir);
	// Runs on the watcher thread: it must not hold the supervisor's lock while calling us.
	Supervisor sup(spawnConfig(dir), [&](const std::string &, const DaemonHandle &, int) {
		auto r = supPtr->start(spec, kReady);
		std::lock_guard guard(lock);
		replacement.emplace(std::move(r));
		cv.notify_all();
	});
	supPtr = &sup;
	auto h = sup.start(spec, kReady);
	REQUIRE(h.ok());
	REQUIRE(::kill(h->pid, SIGKILL) == 0);
	{
		std::unique_lock guard(lock);
		REQUIRE(cv.wait_for(guard, kCallback, [&] { return replacement.has_value(); }));
	}
	REQUIRE(replacement->ok());
	CHECK((*replacement)->pid != h->pid);
	CHECK(Supervisor::socketAnswers(spec.socketPath));
	REQUIRE(sup.stop(spec.deviceId, kStop).ok());
}

// --- adoption (a broker restart) ---

TEST_CASE("adopt_daemonOfAPreviousSupervisor_isWatchedByTheNewOne", "[supervisor]")
{
	TempDir dir;
	ExitLog oldExits, newExits;
	DaemonSpec spec = eduSpec(dir);
	DaemonHandle h;
	{
		Supervisor before(spawnConfig(dir), oldExits.callback());
		auto started = before.start(spec, kReady);
		REQUIRE(started.ok());
		h = *started;
	} // the broker goes away; its daemon does not
	REQUIRE(running(h.pid));
	REQUIRE(Supervisor::socketAnswers(spec.socketPath));

	Supervisor after(spawnConfig(dir), newExits.callback());
	auto adopted = after.adopt(spec.deviceId, h, spec.socketPath);
	REQUIRE(adopted.ok());
	REQUIRE(*adopted);
	REQUIRE(::kill(h.pid, SIGKILL) == 0);
	REQUIRE(newExits.waitFor(1));
	auto r = newExits.records();
	CHECK(r[0].deviceId == spec.deviceId);
	CHECK(r[0].handle.pid == h.pid);
	// Here the new supervisor's process is the parent, so the status is known.
	REQUIRE(r[0].status >= 0);
	CHECK(WTERMSIG(r[0].status) == SIGKILL);
	CHECK(oldExits.records().empty());
}

TEST_CASE("adopt_adoptedDaemon_canBeStopped", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	DaemonSpec spec = eduSpec(dir);
	DaemonHandle h;
	{
		Supervisor before(spawnConfig(dir), exits.callback());
		auto started = before.start(spec, kReady);
		REQUIRE(started.ok());
		h = *started;
	}
	{
		Supervisor after(spawnConfig(dir), exits.callback());
		auto adopted = after.adopt(spec.deviceId, h, spec.socketPath);
		REQUIRE((adopted.ok() && *adopted));
		auto again = after.adopt(spec.deviceId, h, spec.socketPath);
		CHECK((again.ok() && *again)); // adopting twice is harmless
		REQUIRE(after.stop(spec.deviceId, kStop).ok());
		CHECK(reaped(h.pid));
	}
	CHECK(exits.records().empty());
}

TEST_CASE("adopt_recycledPid_wrongStartTime_isNotAdoptedNorTouched", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	Supervisor sup(spawnConfig(dir), exits.callback());
	DaemonSpec spec = eduSpec(dir);
	auto h = sup.start(spec, kReady);
	REQUIRE(h.ok());
	// Same pid, another start time: the recorded daemon is gone and this is someone else.
	DaemonHandle recycled = *h;
	recycled.startTime += 1;
	Supervisor other(spawnConfig(dir), exits.callback());
	auto adopted = other.adopt("sim:edu", recycled, spec.socketPath);
	REQUIRE(adopted.ok());
	CHECK_FALSE(*adopted);
	CHECK(running(h->pid));
	CHECK(Supervisor::socketAnswers(spec.socketPath));
	CHECK(other.stop("sim:edu", kStop).ok()); // not adopted, so unknown to it
	CHECK(running(h->pid));
	REQUIRE(sup.stop("sim:edu", kStop).ok());
}

TEST_CASE("adopt_deadPid_returnsFalse", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	pid_t pid = spawnProcess({ "true" });
	int st;
	REQUIRE(::waitpid(pid, &st, 0) == pid);
	Supervisor sup(spawnConfig(dir), exits.callback());
	auto adopted = sup.adopt("sim:edu", DaemonHandle{ pid, 12345, "" }, dir / "sim:edu.sock");
	REQUIRE(adopted.ok());
	CHECK_FALSE(*adopted);
}

TEST_CASE("adopt_liveProcessWithSilentSocket_isStoppedAndNotAdopted", "[supervisor]")
{
	TempDir dir;
	ExitLog exits;
	// Ours by pid and start time, but not serving: it must not linger next to a replacement.
	pid_t pid = spawnProcess({ "sleep", "1000" });
	DaemonHandle h{ pid, startTimeOf(pid), "" };
	pb::DaemonConfig config = spawnConfig(dir);
	config.set_daemon_ready_timeout_ms(2000);
	Supervisor sup(config, exits.callback());
	auto adopted = sup.adopt("sim:edu", h, dir / "sim:edu.sock");
	REQUIRE(adopted.ok());
	CHECK_FALSE(*adopted);
	CHECK(reaped(pid));
	CHECK(exits.records().empty());
}

// --- systemd mode, through tests/support/fake-systemctl and the real unit file ---

TEST_CASE("systemd_start_runsTheUnitAndWatchesItsMainPid", "[supervisor]")
{
	TempDir dir;
	FakeSystemd fake(dir);
	ExitLog exits;
	Supervisor sup(fake.config, exits.callback());
	DaemonSpec spec = fake.spec();
	auto h = sup.start(spec, kReady);
	REQUIRE(h.ok());
	CHECK(h->unit == "vfio-broker-device@sim:edu.service");
	CHECK(readFile(fake.stateDir + "/sim:edu.pid") == std::to_string(h->pid) + "\n");
	CHECK(h->startTime == startTimeOf(h->pid));
	CHECK(Supervisor::socketAnswers(spec.socketPath));
	auto args = cmdline(h->pid);
	CHECK(contains(args, "--device"));
	CHECK(contains(args, "sim:edu"));
	CHECK(contains(args, spec.socketPath));
	CHECK_THAT(readFile(fake.config.runtime_dir() + "/devices/sim:edu.env"),
		   Catch::Contains("VFIO_BROKER_ASSIGN_ARGS=''"));
	CHECK_THAT(fake.calls(), Catch::Contains("start vfio-broker-device@sim:edu.service"));
	CHECK_THAT(fake.calls(),
		   Catch::Contains("show -p MainPID --value vfio-broker-device@sim:edu.service"));
	REQUIRE(sup.stop(spec.deviceId, kStop).ok());
}

TEST_CASE("systemd_stop_stopsTheUnitRemovesTheEnvFileAndIsNotReported", "[supervisor]")
{
	TempDir dir;
	FakeSystemd fake(dir);
	ExitLog exits;
	DaemonSpec spec = fake.spec();
	{
		Supervisor sup(fake.config, exits.callback());
		auto h = sup.start(spec, kReady);
		REQUIRE(h.ok());
		UniqueFd pidfd(pidfdOpen(h->pid));
		REQUIRE(pidfd);
		REQUIRE(sup.stop(spec.deviceId, kStop).ok());
		CHECK_THAT(fake.calls(), Catch::Contains("stop vfio-broker-device@sim:edu.service"));
		CHECK_FALSE(running(h->pid));
		CHECK_FALSE(Supervisor::socketAnswers(spec.socketPath));
		CHECK_FALSE(std::filesystem::exists(fake.config.runtime_dir() + "/devices/sim:edu.env"));
	}
	CHECK(exits.records().empty());
}

TEST_CASE("systemd_envFile_carriesOwnerConfiguredAndExtraArgsToTheDaemon", "[supervisor]")
{
	TempDir dir;
	FakeSystemd fake(dir, unitWithBrokerEnvFile(dir));
	fake.config.add_device_daemon_args("--max-dma-maps=16");
	ExitLog exits;
	Supervisor sup(fake.config, exits.callback());
	DaemonSpec spec = fake.spec();
	spec.socketUid = ::getuid();
	spec.socketGid = ::getgid();
	spec.extraArgs = { "--log-level=debug" };
	auto h = sup.start(spec, kReady);
	REQUIRE(h.ok());
	std::string owner = std::to_string(::getuid()) + ":" + std::to_string(::getgid());
	CHECK(readFile(fake.config.runtime_dir() + "/devices/sim:edu.env").find(
		      "VFIO_BROKER_ASSIGN_ARGS='--socket-owner " + owner +
		      " --max-dma-maps=16 --log-level=debug'\n") != std::string::npos);
	auto args = cmdline(h->pid);
	REQUIRE(args.size() >= 5);
	CHECK(std::vector<std::string>(args.end() - 4, args.end()) ==
	      std::vector<std::string>{ "--socket-owner", owner, "--max-dma-maps=16", "--log-level=debug" });
	REQUIRE(sup.stop(spec.deviceId, kStop).ok());
}

TEST_CASE("systemd_argumentWithWhitespace_isRefusedBeforeSystemctlRuns", "[supervisor]")
{
	TempDir dir;
	FakeSystemd fake(dir);
	ExitLog exits;
	Supervisor sup(fake.config, exits.callback());
	DaemonSpec spec = fake.spec();
	spec.extraArgs = { "--log-level debug" };
	auto h = sup.start(spec, kReady);
	REQUIRE_FALSE(h.ok());
	CHECK(h.error().code == EINVAL);
	CHECK(fake.calls().empty());
}

TEST_CASE("systemd_socketPathOtherThanTheUnits_isRefused", "[supervisor]")
{
	TempDir dir;
	FakeSystemd fake(dir);
	ExitLog exits;
	Supervisor sup(fake.config, exits.callback());
	DaemonSpec spec = fake.spec();
	spec.socketPath = dir / "elsewhere.sock";
	auto h = sup.start(spec, kReady);
	REQUIRE_FALSE(h.ok());
	CHECK(h.error().code == EINVAL);
	CHECK_THAT(h.error().message, Catch::Contains("/devices/sim:edu.sock"));
	CHECK(fake.calls().empty());
}

TEST_CASE("systemd_systemctlFails_returnsItsStderr", "[supervisor]")
{
	TempDir dir;
	FakeSystemd fake(dir);
	fake.config.set_systemd_unit_template("no-such-unit@.service");
	ExitLog exits;
	Supervisor sup(fake.config, exits.callback());
	auto h = sup.start(fake.spec(), kReady);
	REQUIRE_FALSE(h.ok());
	CHECK_THAT(h.error().message, Catch::Contains("exited with status 5"));
	CHECK_THAT(h.error().message, Catch::Contains("Unit no-such-unit@sim:edu.service not found."));
	CHECK_FALSE(std::filesystem::exists(fake.config.runtime_dir() + "/devices/sim:edu.env"));
}

TEST_CASE("systemd_daemonFailsToStart_isReportedBeforeTheTimeout", "[supervisor]")
{
	TempDir dir;
	FakeSystemd fake(dir);
	ExitLog exits;
	Supervisor sup(fake.config, exits.callback());
	auto begin = std::chrono::steady_clock::now();
	auto h = sup.start(fake.spec("sim:no-such-device"), 60000ms);
	REQUIRE_FALSE(h.ok());
	CHECK(std::chrono::steady_clock::now() - begin < 30000ms);
	// The daemon can die before systemctl show (no MainPID) or after (exited before the
	// socket answered): either way it is an exit, not a timeout.
	CHECK(h.error().code == ECHILD);
	CHECK_THAT(fake.calls(),
		   Catch::Contains("stop vfio-broker-device@sim:no\\x2dsuch\\x2ddevice.service"));
	// %I gave the daemon the unescaped device back.
	CHECK_THAT(readFile(fake.stateDir + "/sim:no\\x2dsuch\\x2ddevice.log"),
		   Catch::Contains("opening sim:no-such-device"));
}

TEST_CASE("systemd_daemonKilled_isReportedWithUnknownStatus", "[supervisor]")
{
	TempDir dir;
	FakeSystemd fake(dir);
	ExitLog exits;
	Supervisor sup(fake.config, exits.callback());
	auto h = sup.start(fake.spec(), kReady);
	REQUIRE(h.ok());
	REQUIRE(::kill(h->pid, SIGKILL) == 0);
	REQUIRE(exits.waitFor(1));
	auto r = exits.records();
	CHECK(r[0].deviceId == "sim:edu");
	CHECK(r[0].handle.unit == h->unit);
	CHECK(r[0].status == -1); // not our child: systemd has its status
}

TEST_CASE("systemd_adopt_unitOfAPreviousSupervisor_isStoppedThroughSystemctl", "[supervisor]")
{
	TempDir dir;
	FakeSystemd fake(dir);
	ExitLog exits;
	DaemonSpec spec = fake.spec();
	DaemonHandle h;
	{
		Supervisor before(fake.config, exits.callback());
		auto started = before.start(spec, kReady);
		REQUIRE(started.ok());
		h = *started;
	}
	Supervisor after(fake.config, exits.callback());
	auto adopted = after.adopt(spec.deviceId, h, spec.socketPath);
	REQUIRE((adopted.ok() && *adopted));
	REQUIRE(after.stop(spec.deviceId, kStop).ok());
	CHECK_THAT(fake.calls(), Catch::Contains("stop vfio-broker-device@sim:edu.service"));
	CHECK_FALSE(running(h.pid));
	CHECK(exits.records().empty());
}

// --- instance names ---

TEST_CASE("systemdInstanceFor_matchesKnownSystemdEscapeOutputs", "[supervisor]")
{
	// Expected strings are what `systemd-escape -- STRING` (systemd 252) prints.
	const std::vector<std::pair<std::string, std::string>> known = {
		{ "sim:edu", "sim:edu" },
		{ "pci:0000:01:00.0", "pci:0000:01:00.0" },
		{ "0000:01:00.0", "0000:01:00.0" },
		{ "0000:00:1f.3", "0000:00:1f.3" },
		{ "platform:9010000.pl031", "platform:9010000.pl031" },
		{ "/sys/devices/platform/9010000.pl031", "-sys-devices-platform-9010000.pl031" },
		{ "sim:edu/", "sim:edu-" },
		{ "a//b", "a--b" },
		{ "a-b", "a\\x2db" },
		{ ".hidden", "\\x2ehidden" },
		{ "..", "\\x2e." },
		{ "x.", "x." },
		{ "a b", "a\\x20b" },
		{ "a\\b", "a\\x5cb" },
		{ "a@b", "a\\x40b" },
		{ "a%b", "a\\x25b" },
		{ "A~Z", "A\\x7eZ" },
		{ "a\tb", "a\\x09b" },
		{ "\xc3\xa9", "\\xc3\\xa9" },
		{ "a_b", "a_b" },
	};
	for (const auto &[in, out] : known) {
		INFO("input: " << in);
		CHECK(systemdInstanceFor(in) == out);
	}
}

TEST_CASE("systemdInstanceFor_matchesSystemdEscapeForEveryByte", "[supervisor]")
{
	if (::access("/usr/bin/systemd-escape", X_OK) != 0) {
		WARN("no /usr/bin/systemd-escape here: only the known outputs are checked");
		return;
	}
	// One call, one argument per byte value: "x<byte>y" and ".<byte>" (the leading-dot rule).
	TempDir dir;
	std::vector<std::string> inputs;
	for (int b = 1; b < 256; b++) {
		inputs.push_back(std::string("x") + static_cast<char>(b) + "y");
		inputs.push_back(std::string(".") + static_cast<char>(b));
	}
	std::vector<std::string> argv{ "/usr/bin/systemd-escape", "--" };
	argv.insert(argv.end(), inputs.begin(), inputs.end());
	std::vector<char *> cargv;
	cargv.reserve(argv.size() + 1);
	for (const auto &a : argv)
		cargv.push_back(const_cast<char *>(a.c_str()));
	cargv.push_back(nullptr);
	std::string outPath = dir / "out";
	posix_spawn_file_actions_t actions;
	posix_spawn_file_actions_init(&actions);
	posix_spawn_file_actions_addopen(&actions, 1, outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	pid_t pid;
	int rc = ::posix_spawn(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
	posix_spawn_file_actions_destroy(&actions);
	REQUIRE(rc == 0);
	int st;
	REQUIRE(::waitpid(pid, &st, 0) == pid);
	REQUIRE((WIFEXITED(st) && WEXITSTATUS(st) == 0));
	// Outputs are separated by spaces (a space itself comes out as \x20).
	std::istringstream out(readFile(outPath));
	std::vector<std::string> expected;
	for (std::string w; out >> w;)
		expected.push_back(w);
	REQUIRE(expected.size() == inputs.size());
	for (size_t i = 0; i < inputs.size(); i++) {
		INFO("byte " << static_cast<int>(static_cast<unsigned char>(inputs[i][1])));
		CHECK(systemdInstanceFor(inputs[i]) == expected[i]);
	}
}
