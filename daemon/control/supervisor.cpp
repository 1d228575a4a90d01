// SPDX-License-Identifier: Apache-2.0
// Device daemons: start (spawn or systemd), wait until their socket answers, stop, re-adopt, watch.
//
// Every daemon is watched through a pidfd, so a recycled pid can never be signalled or reported
// by mistake; only our own unreaped children are additionally reaped with waitpid (their pid
// cannot be reused before that). Nothing in the broker may call waitpid(-1) or ignore SIGCHLD,
// or our children's exit statuses are lost (reported as -1).
#include "control/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <sstream>

extern char **environ;

namespace vfio_broker::control {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char *kDefaultDeviceDaemon = "/usr/sbin/vfio-broker-device";
constexpr const char *kDefaultRuntimeDir = "/run/vfio-broker";
constexpr const char *kDefaultUnitTemplate = "vfio-broker-device@.service";
constexpr const char *kDefaultSystemctl = "systemctl";
constexpr const char *kReadyMessage = "READY=1\n";
constexpr int kReadyFd = 3;              // the device daemon's --ready-fd
constexpr size_t kMaxReadyBytes = 256;   // more than this without READY=1 is a protocol error
constexpr size_t kMaxCommandOutput = size_t(64) * 1024;
constexpr size_t kMaxUnitName = 255;     // systemd's UNIT_NAME_MAX - 1
// After SIGKILL a process normally dies at once; one stuck in the kernel (a wedged device
// reset) is given this long before we stop waiting for it.
constexpr milliseconds kKillGrace{ 5000 };
constexpr milliseconds kDefaultStopTimeout{ 5000 };

// glibc 2.36's <sys/pidfd.h> lacks extern "C" (fixed in 2.37): call the kernel directly.
int pidfdOpen(pid_t pid)
{
	return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0u)); // always O_CLOEXEC
}

int pidfdSendSignal(int pidfd, int sig)
{
	return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0u));
}

int msLeft(Clock::time_point deadline)
{
	auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
	return left > 0 ? static_cast<int>(std::min<long long>(left, INT32_MAX)) : 0;
}

std::string orDefault(const std::string &value, const char *fallback)
{
	return value.empty() ? fallback : value;
}

std::string describeStatus(int status)
{
	if (status < 0)
		return "exit status unknown";
	if (WIFEXITED(status))
		return "exited with status " + std::to_string(WEXITSTATUS(status));
	if (WIFSIGNALED(status)) {
		const char *name = ::sigabbrev_np(WTERMSIG(status));
		return std::string("killed by ") +
		       (name ? std::string("SIG") + name : "signal " + std::to_string(WTERMSIG(status)));
	}
	return "wait status " + std::to_string(status);
}

// Whether the process behind the pidfd has exited (it may be an unreaped zombie).
bool pidfdExited(int pidfd, int timeoutMs = 0)
{
	pollfd p{ pidfd, POLLIN, 0 };
	int rc;
	do {
		rc = ::poll(&p, 1, timeoutMs);
	} while (rc < 0 && errno == EINTR);
	return rc > 0;
}

// Reap our own child; -1 when its status is not ours to have (SIGCHLD ignored, or reaped
// elsewhere).
int reapChild(pid_t pid)
{
	int status = 0;
	pid_t rc;
	do {
		rc = ::waitpid(pid, &status, 0);
	} while (rc < 0 && errno == EINTR);
	return rc == pid ? status : -1;
}

// Whether pidfd is a child of this process (waitable), without reaping it.
bool isOurChild(int pidfd)
{
	siginfo_t info{};
	return ::waitid(P_PIDFD, static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG | WNOWAIT) == 0;
}

// /proc/<pid>/stat field 22, in clock ticks since boot.
Result<uint64_t> readStartTime(pid_t pid)
{
	std::string path = "/proc/" + std::to_string(pid) + "/stat";
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd)
		return errnoError(errno, "opening " + path);
	char buf[1024];
	ssize_t n;
	do {
		n = ::read(fd.get(), buf, sizeof(buf) - 1);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errnoError(errno, "reading " + path);
	std::string stat(buf, static_cast<size_t>(n));
	// comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
	size_t paren = stat.rfind(')');
	if (paren == std::string::npos)
		return makeError(EPROTO, "%s: no command field", path.c_str());
	std::istringstream rest(stat.substr(paren + 1));
	std::string field;
	for (int i = 3; i <= 22; i++) {
		if (!(rest >> field))
			return makeError(EPROTO, "%s: only %d fields", path.c_str(), i - 1);
	}
	char *end = nullptr;
	errno = 0;
	unsigned long long v = std::strtoull(field.c_str(), &end, 10);
	if (errno || !end || *end)
		return makeError(EPROTO, "%s: starttime \"%s\" is not a number", path.c_str(), field.c_str());
	return static_cast<uint64_t>(v);
}

// Move fd above the range the spawned process's file actions write to (0..3), so a dup2 onto
// one of those numbers can never clobber it. Returns fd itself when it is high enough.
Result<UniqueFd> fdAbove3(UniqueFd fd)
{
	if (fd.get() > kReadyFd)
		return fd;
	int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, kReadyFd + 1);
	if (moved < 0)
		return errnoError("F_DUPFD_CLOEXEC");
	return UniqueFd(moved);
}

// posix_spawn's attributes and file actions as owners, so every exit path destroys them.
class SpawnSetup
{
public:
	SpawnSetup()
	{
		::posix_spawnattr_init(&attr_);
		::posix_spawn_file_actions_init(&actions_);
	}
	~SpawnSetup()
	{
		::posix_spawnattr_destroy(&attr_);
		::posix_spawn_file_actions_destroy(&actions_);
	}
	SpawnSetup(const SpawnSetup &) = delete;
	SpawnSetup &operator=(const SpawnSetup &) = delete;

	// The child starts with no blocked signals and every disposition at its default: the
	// broker blocks signals for its signalfd and ignores SIGPIPE, neither of which a child
	// should inherit (a blocked SIGTERM would make the daemon unstoppable but for SIGKILL).
	// fds: stdin from /dev/null, stdout and stderr the broker's, `keep` dup'ed to the given
	// numbers, and everything above closed in the child.
	Status prepare(bool newSession, const std::vector<std::pair<int, int>> &keep)
	{
		short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
		if (newSession)
			flags |= POSIX_SPAWN_SETSID;
		sigset_t none, all;
		sigemptyset(&none);
		sigfillset(&all);
		int rc = ::posix_spawnattr_setflags(&attr_, flags);
		if (!rc)
			rc = ::posix_spawnattr_setsigmask(&attr_, &none);
		if (!rc)
			rc = ::posix_spawnattr_setsigdefault(&attr_, &all);
		if (!rc)
			rc = ::posix_spawn_file_actions_addopen(&actions_, 0, "/dev/null", O_RDONLY, 0);
		int highest = 2;
		for (const auto &[from, to] : keep) {
			if (!rc)
				rc = ::posix_spawn_file_actions_adddup2(&actions_, from, to);
			highest = std::max(highest, to);
		}
		// The allow-list's enforcement: whatever the broker holds without CLOEXEC (a library's
		// fd, an inherited one) still never reaches the child.
		if (!rc)
			rc = ::posix_spawn_file_actions_addclosefrom_np(&actions_, highest + 1);
		if (rc)
			return errnoError(rc, "preparing posix_spawn");
		return {};
	}

	Result<pid_t> spawn(const std::vector<std::string> &argv, bool searchPath)
	{
		std::vector<char *> cargv;
		cargv.reserve(argv.size() + 1);
		for (const auto &a : argv)
			cargv.push_back(const_cast<char *>(a.c_str()));
		cargv.push_back(nullptr);
		// Our environment minus what belongs to our own service manager relationship: a
		// child reporting READY=1 to our NOTIFY_SOCKET would be refused (NotifyAccess=main)
		// or, with nobody reading, block at exit.
		std::vector<char *> envp;
		for (char **e = environ; *e; e++) {
			std::string_view var(*e);
			if (var.rfind("NOTIFY_SOCKET=", 0) == 0 || var.rfind("LISTEN_FDS=", 0) == 0 ||
			    var.rfind("LISTEN_PID=", 0) == 0 || var.rfind("LISTEN_FDNAMES=", 0) == 0)
				continue;
			envp.push_back(*e);
		}
		envp.push_back(nullptr);
		pid_t pid = -1;
		int rc = searchPath ? ::posix_spawnp(&pid, cargv[0], &actions_, &attr_, cargv.data(), envp.data())
				    : ::posix_spawn(&pid, cargv[0], &actions_, &attr_, cargv.data(), envp.data());
		if (rc)
			return errnoError(rc, "starting " + argv[0]);
		return pid;
	}

private:
	posix_spawnattr_t attr_;
	posix_spawn_file_actions_t actions_;
};

std::string readAll(int fd)
{
	std::string out;
	char buf[4096];
	off_t off = 0;
	while (out.size() < kMaxCommandOutput) {
		ssize_t n = ::pread(fd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		out.append(buf, static_cast<size_t>(n));
		off += n;
	}
	while (!out.empty() && (out.back() == '\n' || out.back() == ' '))
		out.pop_back();
	return out;
}

struct CommandResult {
	int status = -1;
	std::string out, err;
};

std::string joinArgs(const std::vector<std::string> &argv)
{
	std::string s;
	for (const auto &a : argv)
		s += (s.empty() ? "" : " ") + a;
	return s;
}

// Run a short-lived helper (systemctl) and collect its output. Output goes to memfds rather
// than pipes: a helper that leaves a background process holding its stdout cannot make us wait
// for EOF, and a chatty one cannot fill a pipe while we wait for it to exit.
Result<CommandResult> runCommand(const std::vector<std::string> &argv, milliseconds timeout)
{
	UniqueFd out(::memfd_create("vfio-brokerd-stdout", MFD_CLOEXEC));
	UniqueFd err(::memfd_create("vfio-brokerd-stderr", MFD_CLOEXEC));
	if (!out || !err)
		return errnoError("memfd_create");
	auto outHigh = fdAbove3(std::move(out));
	if (!outHigh)
		return outHigh.takeError();
	auto errHigh = fdAbove3(std::move(err));
	if (!errHigh)
		return errHigh.takeError();
	SpawnSetup setup;
	if (Status s = setup.prepare(false, { { outHigh->get(), 1 }, { errHigh->get(), 2 } }); !s)
		return s.takeError();
	auto pid = setup.spawn(argv, true);
	if (!pid)
		return pid.takeError();
	UniqueFd pidfd(pidfdOpen(*pid));
	// An unreaped child cannot go away, so pidfd_open only fails for lack of fds; then we
	// wait without a deadline rather than leave a zombie.
	if (pidfd && !pidfdExited(pidfd.get(), static_cast<int>(timeout.count()))) {
		::kill(*pid, SIGKILL);
		reapChild(*pid);
		return makeError(ETIMEDOUT, "%s did not finish within %lld ms", joinArgs(argv).c_str(),
				 static_cast<long long>(timeout.count()));
	}
	CommandResult r;
	r.status = reapChild(*pid);
	r.out = readAll(outHigh->get());
	r.err = readAll(errHigh->get());
	return r;
}

Error commandFailed(const std::vector<std::string> &argv, const CommandResult &r)
{
	std::string msg = joinArgs(argv) + " " + describeStatus(r.status);
	if (!r.err.empty())
		msg += ": " + r.err;
	return Error{ EIO, msg };
}

// Poll until the socket accepts a connection, the daemon dies, or the deadline passes. Used
// where no readiness pipe exists (systemd mode): systemctl start of a Type=notify unit returns
// after READY=1, so the first try normally succeeds; the retries cover systemctl
// implementations that return earlier, backing off from 5 to 100 ms.
Status waitForSocket(const std::string &socketPath, int pidfd, Clock::time_point deadline,
		     const std::string &what)
{
	int backoff = 5;
	for (;;) {
		if (Supervisor::socketAnswers(socketPath))
			return {};
		int left = msLeft(deadline);
		if (left == 0)
			return makeError(ETIMEDOUT, "%s: socket %s did not answer in time", what.c_str(),
					 socketPath.c_str());
		if (pidfdExited(pidfd, std::min(backoff, left)))
			return makeError(ECHILD, "%s exited before its socket %s answered", what.c_str(),
					 socketPath.c_str());
		backoff = std::min(backoff * 2, 100);
	}
}

// The daemon's arguments after --device/--socket: owner, configured, then per-device ones.
std::vector<std::string> daemonArgs(const pb::DaemonConfig &config, const DaemonSpec &spec)
{
	std::vector<std::string> args;
	if (spec.socketUid || spec.socketGid) {
		std::string owner = spec.socketUid ? std::to_string(*spec.socketUid) : "";
		if (spec.socketGid)
			owner += ":" + std::to_string(*spec.socketGid);
		args.push_back("--socket-owner");
		args.push_back(owner);
	}
	args.insert(args.end(), config.device_daemon_args().begin(), config.device_daemon_args().end());
	args.insert(args.end(), spec.extraArgs.begin(), spec.extraArgs.end());
	return args;
}

// SIGTERM (or `systemctl stop`), wait up to timeout, SIGKILL, reap if ours. The pidfd makes
// every signal land on exactly the process we mean, even if its pid has been recycled.
Status terminateDaemon(const pb::DaemonConfig &config, const std::string &deviceId,
		       const DaemonHandle &handle, int pidfd, bool child, milliseconds timeout)
{
	Clock::time_point deadline = Clock::now() + timeout;
	std::string unitError;
	if (!handle.unit.empty()) {
		std::vector<std::string> argv{ orDefault(config.systemctl(), kDefaultSystemctl), "stop",
					       handle.unit };
		auto r = runCommand(argv, timeout);
		if (!r)
			unitError = r.error().message;
		else if (r->status != 0)
			unitError = commandFailed(argv, *r).message;
		// Whatever systemctl says, the process itself decides below whether we are done.
	}
	// Spawned daemons, and units systemctl failed to stop, get SIGTERM from us.
	if ((handle.unit.empty() || !unitError.empty()) && pidfdSendSignal(pidfd, SIGTERM) < 0 &&
	    errno != ESRCH)
		return errnoError(errno, "SIGTERM to the daemon of " + deviceId);
	bool dead = pidfdExited(pidfd, msLeft(deadline));
	if (!dead) {
		if (pidfdSendSignal(pidfd, SIGKILL) < 0 && errno != ESRCH)
			return errnoError(errno, "SIGKILL to the daemon of " + deviceId);
		// Spawned daemons lead their own process group: take any helpers with them. The
		// group id is safe to use while the leader is unreaped.
		if (child)
			::kill(-handle.pid, SIGKILL);
		dead = pidfdExited(pidfd, static_cast<int>(kKillGrace.count()));
	}
	if (!dead)
		return makeError(ETIMEDOUT, "the daemon of %s (pid %d) survived SIGKILL for %lld ms%s%s",
				 deviceId.c_str(), handle.pid,
				 static_cast<long long>(kKillGrace.count()),
				 unitError.empty() ? "" : "; ", unitError.c_str());
	if (child)
		reapChild(handle.pid);
	// A failed `systemctl stop` does not matter once the process is gone: that is all stop
	// promises, and the unit's own state is systemd's business.
	return {};
}

Result<std::string> unitNameFor(const pb::DaemonConfig &config, const std::string &instance)
{
	std::string tmpl = orDefault(config.systemd_unit_template(), kDefaultUnitTemplate);
	size_t at = tmpl.find("@.");
	if (at == std::string::npos || at == 0)
		return makeError(EINVAL, "systemd_unit_template \"%s\" is not a template (name@.service)",
				 tmpl.c_str());
	std::string unit = tmpl.substr(0, at + 1) + instance + tmpl.substr(at + 1);
	if (unit.size() > kMaxUnitName)
		return makeError(ENAMETOOLONG, "unit name %s is longer than %zu characters", unit.c_str(),
				 kMaxUnitName);
	return unit;
}

// systemd splits $VFIO_BROKER_ASSIGN_ARGS at whitespace and interprets no quotes in it, and
// the env file gives quotes and backslashes meaning: such arguments cannot be passed intact.
Status checkUnitArg(const std::string &arg)
{
	if (arg.empty())
		return makeError(EINVAL, "an empty device daemon argument cannot be passed through systemd");
	for (unsigned char c : arg) {
		if (c <= ' ' || c == 0x7f || c == '\'' || c == '"' || c == '\\')
			return makeError(EINVAL,
					 "device daemon argument \"%s\" holds whitespace, a quote or a "
					 "backslash, which systemd's $VFIO_BROKER_ASSIGN_ARGS cannot carry",
					 arg.c_str());
	}
	return {};
}

Status writeFileAtomically(const std::string &path, const std::string &content)
{
	std::string tmp = path + ".tmp";
	UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
	if (!fd)
		return errnoError(errno, "creating " + tmp);
	size_t done = 0;
	while (done < content.size()) {
		ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			::unlink(tmp.c_str());
			return errnoError(e, "writing " + tmp);
		}
		done += static_cast<size_t>(n);
	}
	if (::rename(tmp.c_str(), path.c_str()) < 0) {
		int e = errno;
		::unlink(tmp.c_str());
		return errnoError(e, "renaming " + tmp);
	}
	return {};
}

Status makeDirs(const std::string &path, mode_t mode)
{
	std::string partial;
	std::istringstream parts(path);
	std::string part;
	if (!path.empty() && path[0] == '/')
		partial = "/";
	while (std::getline(parts, part, '/')) {
		if (part.empty())
			continue;
		partial += (partial.empty() || partial.back() == '/' ? "" : "/") + part;
		if (::mkdir(partial.c_str(), mode) < 0 && errno != EEXIST)
			return errnoError(errno, "creating " + partial);
	}
	return {};
}

std::string envFilePath(const pb::DaemonConfig &config, const std::string &instance)
{
	return orDefault(config.runtime_dir(), kDefaultRuntimeDir) + "/devices/" + instance + ".env";
}

struct Started {
	DaemonHandle handle;
	UniqueFd pidfd;
	bool child = false;
};

// Spawn mode: posix_spawn with an fd allow-list of {0: /dev/null, 1, 2, 3: ready pipe}.
Result<Started> startSpawned(const pb::DaemonConfig &config, const DaemonSpec &spec,
			     milliseconds readyTimeout)
{
	Clock::time_point deadline = Clock::now() + readyTimeout;
	int p[2];
	if (::pipe2(p, O_CLOEXEC) < 0)
		return errnoError("pipe2 for --ready-fd");
	UniqueFd readEnd(p[0]);
	auto writeEnd = fdAbove3(UniqueFd(p[1]));
	if (!writeEnd)
		return writeEnd.takeError();

	std::vector<std::string> argv{ orDefault(config.device_daemon(), kDefaultDeviceDaemon),
				       "--device", spec.deviceArg, "--socket", spec.socketPath,
				       "--ready-fd", std::to_string(kReadyFd) };
	std::vector<std::string> rest = daemonArgs(config, spec);
	argv.insert(argv.end(), rest.begin(), rest.end());

	SpawnSetup setup;
	if (Status s = setup.prepare(true, { { writeEnd->get(), kReadyFd } }); !s)
		return s.takeError();
	auto pid = setup.spawn(argv, false);
	if (!pid)
		return withContext(pid.takeError(), "device daemon for " + spec.deviceId);
	writeEnd->reset(); // EOF on readEnd now means the daemon (and its children) closed fd 3

	Started st;
	st.child = true;
	st.handle.pid = *pid;
	std::string what = "device daemon for " + spec.deviceId + " (pid " + std::to_string(*pid) + ")";
	// Until it is handed over, a failure kills the whole new session and reaps the leader.
	auto fail = [&](Error err, bool killed) -> Error {
		::kill(-*pid, SIGKILL);
		::kill(*pid, SIGKILL);
		int status = reapChild(*pid);
		err.message += killed ? " (killed; " + describeStatus(status) + ")"
				      : " (" + describeStatus(status) + ")";
		return err;
	};

	st.pidfd = UniqueFd(pidfdOpen(*pid));
	if (!st.pidfd)
		return fail(errnoError(errno, "pidfd_open for the " + what), true);
	auto startTime = readStartTime(*pid);
	if (!startTime)
		return fail(withContext(startTime.takeError(), what), true);
	st.handle.startTime = *startTime;

	std::string got;
	for (;;) {
		if (got.find(kReadyMessage) != std::string::npos)
			break;
		int left = msLeft(deadline);
		if (left == 0)
			return fail(makeError(ETIMEDOUT, "%s did not report READY=1 within %lld ms",
					      what.c_str(),
					      static_cast<long long>(readyTimeout.count())),
				    true);
		pollfd fds[2] = { { readEnd.get(), POLLIN, 0 }, { st.pidfd.get(), POLLIN, 0 } };
		int rc = ::poll(fds, 2, left);
		if (rc < 0 && errno != EINTR)
			return fail(errnoError(errno, "poll for the " + what), true);
		if (rc <= 0)
			continue;
		if (fds[0].revents) {
			char buf[64];
			ssize_t n = ::read(readEnd.get(), buf, sizeof(buf));
			if (n < 0 && errno == EINTR)
				continue;
			if (n > 0) {
				got.append(buf, static_cast<size_t>(n));
				if (got.size() > kMaxReadyBytes)
					return fail(makeError(EPROTO, "%s wrote %zu bytes to its ready fd "
								      "without READY=1",
							      what.c_str(), got.size()),
						    true);
				continue;
			}
			// EOF: fd 3 closed without READY=1 (the daemon died or gave up on it).
			if (got.find(kReadyMessage) == std::string::npos)
				return fail(makeError(ECHILD, "%s closed its ready fd without READY=1",
						      what.c_str()),
					    false);
		} else if (fds[1].revents) {
			return fail(makeError(ECHILD, "%s exited before it was ready", what.c_str()), false);
		}
	}
	if (!Supervisor::socketAnswers(spec.socketPath))
		return fail(makeError(ECONNREFUSED, "%s reported READY=1 but %s does not accept connections",
				      what.c_str(), spec.socketPath.c_str()),
			    true);
	return st;
}

// Systemd mode: the unit decides the socket path (%t/vfio-broker/devices/%i.sock) and reads
// its extra arguments from <runtime_dir>/devices/<instance>.env.
Result<Started> startUnit(const pb::DaemonConfig &config, const DaemonSpec &spec,
			  milliseconds readyTimeout)
{
	Clock::time_point deadline = Clock::now() + readyTimeout;
	std::string instance = systemdInstanceFor(spec.deviceArg);
	if (instance.empty())
		return makeError(EINVAL, "no systemd instance name for an empty device");
	auto unit = unitNameFor(config, instance);
	if (!unit)
		return unit.takeError();
	std::string runtimeDir = orDefault(config.runtime_dir(), kDefaultRuntimeDir);
	std::string expectedSocket = runtimeDir + "/devices/" + instance + ".sock";
	if (spec.socketPath != expectedSocket)
		return makeError(EINVAL, "%s listens on %s, not on the requested %s", unit->c_str(),
				 expectedSocket.c_str(), spec.socketPath.c_str());

	std::string args;
	for (const auto &a : daemonArgs(config, spec)) {
		if (Status s = checkUnitArg(a); !s)
			return withContext(s.takeError(), *unit);
		args += (args.empty() ? "" : " ") + a;
	}
	if (Status s = makeDirs(runtimeDir + "/devices", 0750); !s)
		return s.takeError();
	std::string envFile = envFilePath(config, instance);
	std::string content = "# Written by vfio-brokerd for " + spec.deviceId + "; read by " + *unit +
			      "\nVFIO_BROKER_ASSIGN_ARGS='" + args + "'\n";
	if (Status s = writeFileAtomically(envFile, content); !s)
		return s.takeError();

	std::string systemctl = orDefault(config.systemctl(), kDefaultSystemctl);
	// Undo a half-done start: the unit may be running, or starting, or failed.
	auto fail = [&](Error err) -> Error {
		std::vector<std::string> stopArgv{ systemctl, "stop", *unit };
		auto r = runCommand(stopArgv, kDefaultStopTimeout);
		if (!r)
			err.message += "; stopping it again: " + r.error().message;
		else if (r->status != 0)
			err.message += "; stopping it again: " + commandFailed(stopArgv, *r).message;
		::unlink(envFile.c_str());
		return err;
	};

	std::vector<std::string> startArgv{ systemctl, "start", *unit };
	auto started = runCommand(startArgv, milliseconds(std::max(msLeft(deadline), 1)));
	if (!started)
		return fail(started.takeError());
	if (started->status != 0)
		return fail(commandFailed(startArgv, *started));

	std::vector<std::string> showArgv{ systemctl, "show", "-p", "MainPID", "--value", *unit };
	auto shown = runCommand(showArgv, milliseconds(std::max(msLeft(deadline), 1)));
	if (!shown)
		return fail(shown.takeError());
	if (shown->status != 0)
		return fail(commandFailed(showArgv, *shown));
	char *end = nullptr;
	long pid = std::strtol(shown->out.c_str(), &end, 10);
	if (!end || *end || shown->out.empty() || pid < 0 || pid > INT32_MAX)
		return fail(makeError(EPROTO, "%s: MainPID \"%s\" is not a pid", unit->c_str(),
				      shown->out.c_str()));
	if (pid == 0)
		return fail(makeError(ECHILD, "%s started but has no main process (it exited)",
				      unit->c_str()));

	Started st;
	st.handle.pid = static_cast<pid_t>(pid);
	st.handle.unit = *unit;
	Error exitedEarly = makeError(ECHILD, "%s: main process %ld exited right after starting",
				      unit->c_str(), pid);
	st.pidfd = UniqueFd(pidfdOpen(st.handle.pid));
	if (!st.pidfd) {
		if (errno == ESRCH)
			return fail(exitedEarly);
		return fail(errnoError(errno, *unit + ": pidfd_open of MainPID " + shown->out));
	}
	auto startTime = readStartTime(st.handle.pid);
	// The start time must belong to the process the pidfd holds, not to a successor.
	if (pidfdExited(st.pidfd.get()))
		return fail(exitedEarly);
	if (!startTime)
		return fail(withContext(startTime.takeError(), *unit));
	st.handle.startTime = *startTime;
	st.child = isOurChild(st.pidfd.get());

	std::string what = *unit + " (pid " + std::to_string(pid) + ")";
	if (Status s = waitForSocket(spec.socketPath, st.pidfd.get(), deadline, what); !s)
		return fail(s.takeError());
	return st;
}

void wake(int eventFd)
{
	uint64_t one = 1;
	ssize_t n;
	do {
		n = ::write(eventFd, &one, sizeof(one));
	} while (n < 0 && errno == EINTR);
	// EAGAIN: the counter is saturated, the watcher is woken anyway.
}

} // namespace

Supervisor::Supervisor(const pb::DaemonConfig &config, ExitCallback onExit)
	: config_(config), onExit_(std::move(onExit)),
	  wakeFd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))
{
	// Without the eventfd there is no watcher, and start/adopt refuse to run daemons.
	if (wakeFd_)
		watcher_ = std::thread([this] { watch(); });
}

Supervisor::~Supervisor()
{
	{
		std::lock_guard guard(lock_);
		stopping_ = true;
	}
	if (watcher_.joinable()) {
		wake(wakeFd_.get());
		watcher_.join();
	}
	// The daemons keep running: they outlive a broker restart by design, and the next broker
	// adopts them from its state directory. Our pidfds close with daemons_.
}

Result<DaemonHandle> Supervisor::start(const DaemonSpec &spec, std::chrono::milliseconds readyTimeout)
{
	if (spec.deviceId.empty() || spec.deviceArg.empty() || spec.socketPath.empty())
		return makeError(EINVAL, "a device daemon needs a device id, a device and a socket");
	{
		std::lock_guard guard(lock_);
		if (!wakeFd_)
			return makeError(EMFILE, "the supervisor has no eventfd for its watcher");
		if (daemons_.count(spec.deviceId))
			return makeError(EEXIST, "a device daemon for %s is running or starting",
					 spec.deviceId.c_str());
		// A placeholder without a pidfd reserves the id while we start, unlocked.
		daemons_.emplace(spec.deviceId, Watched{ DaemonHandle{}, UniqueFd(), false });
	}
	Result<Started> started = config_.launch_method() == pb::LAUNCH_METHOD_SYSTEMD
					  ? startUnit(config_, spec, readyTimeout)
					  : startSpawned(config_, spec, readyTimeout);
	std::lock_guard guard(lock_);
	if (!started) {
		daemons_.erase(spec.deviceId);
		return started.takeError();
	}
	DaemonHandle handle = started->handle;
	daemons_[spec.deviceId] = Watched{ handle, std::move(started->pidfd), started->child };
	wake(wakeFd_.get());
	return handle;
}

Status Supervisor::stop(const std::string &deviceId, std::chrono::milliseconds timeout)
{
	Watched w;
	{
		std::lock_guard guard(lock_);
		auto it = daemons_.find(deviceId);
		if (it == daemons_.end())
			return {};
		if (!it->second.pidfd)
			return makeError(EBUSY, "the device daemon for %s is still starting",
					 deviceId.c_str());
		// Out of the map first: from here on its exit is ours, not onExit's.
		w = std::move(it->second);
		daemons_.erase(it);
		wake(wakeFd_.get());
	}
	Status s = terminateDaemon(config_, deviceId, w.handle, w.pidfd.get(), w.child, timeout);
	if (s && !w.handle.unit.empty()) {
		std::string unitName = w.handle.unit;
		size_t at = unitName.find('@');
		size_t dot = unitName.rfind('.');
		if (at != std::string::npos && dot != std::string::npos && dot > at)
			::unlink(envFilePath(config_, unitName.substr(at + 1, dot - at - 1)).c_str());
	}
	return s;
}

Result<bool> Supervisor::adopt(const std::string &deviceId, const DaemonHandle &handle,
			       const std::string &socketPath)
{
	if (deviceId.empty() || handle.pid <= 0)
		return false;
	{
		std::lock_guard guard(lock_);
		if (!wakeFd_)
			return makeError(EMFILE, "the supervisor has no eventfd for its watcher");
		auto it = daemons_.find(deviceId);
		if (it != daemons_.end()) {
			if (it->second.pidfd && it->second.handle.pid == handle.pid &&
			    it->second.handle.startTime == handle.startTime)
				return true;
			return makeError(EEXIST, "%s already has a device daemon (pid %d)", deviceId.c_str(),
					 it->second.handle.pid);
		}
	}

	UniqueFd pidfd(pidfdOpen(handle.pid));
	if (!pidfd) {
		if (errno == ESRCH)
			return false;
		return errnoError(errno, "pidfd_open " + std::to_string(handle.pid) + " for " + deviceId);
	}
	auto startTime = readStartTime(handle.pid);
	// Read after pidfd_open: if the start time matches and the pidfd's process has not
	// exited since, both name the same process, and it is the one we recorded.
	if (!startTime || *startTime != handle.startTime)
		return false;
	bool child = isOurChild(pidfd.get());
	if (pidfdExited(pidfd.get())) {
		if (child)
			reapChild(handle.pid);
		return false;
	}
	if (!socketAnswers(socketPath)) {
		// Ours and alive but not serving: it still holds the device, so it must not linger
		// next to the replacement the caller is about to start.
		milliseconds timeout = config_.daemon_ready_timeout_ms()
					       ? milliseconds(config_.daemon_ready_timeout_ms())
					       : kDefaultStopTimeout;
		if (Status s = terminateDaemon(config_, deviceId, handle, pidfd.get(), child, timeout); !s)
			return withContext(s.takeError(), "stopping an unresponsive daemon");
		return false;
	}

	std::lock_guard guard(lock_);
	if (daemons_.count(deviceId))
		return makeError(EEXIST, "%s got a device daemon while being adopted", deviceId.c_str());
	daemons_.emplace(deviceId, Watched{ handle, std::move(pidfd), child });
	wake(wakeFd_.get());
	return true;
}

bool Supervisor::socketAnswers(const std::string &socketPath)
{
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (socketPath.empty() || socketPath.size() >= sizeof(addr.sun_path))
		return false;
	std::memcpy(addr.sun_path, socketPath.data(), socketPath.size());
	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
	if (!fd)
		return false;
	int rc;
	do {
		rc = ::connect(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr));
	} while (rc < 0 && errno == EINTR);
	// EAGAIN: listening, with a full backlog (a VMM is being served and others wait).
	return rc == 0 || errno == EAGAIN;
}

void Supervisor::watch()
{
	for (;;) {
		std::vector<pollfd> fds;
		{
			std::lock_guard guard(lock_);
			if (stopping_)
				return;
			fds.push_back({ wakeFd_.get(), POLLIN, 0 });
			for (const auto &[id, w] : daemons_)
				if (w.pidfd)
					fds.push_back({ w.pidfd.get(), POLLIN, 0 });
		}
		// A pidfd closed by stop() while we poll it is harmless: stop() wakes us after
		// taking it out of daemons_, and the set is rebuilt from daemons_ each round.
		if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR)
			return; // only EFAULT/ENOMEM/EINVAL: nothing sensible to retry
		if (fds[0].revents) {
			uint64_t count;
			(void)!::read(wakeFd_.get(), &count, sizeof(count));
		}

		std::vector<std::pair<std::string, Watched>> exited;
		{
			std::lock_guard guard(lock_);
			if (stopping_)
				return;
			for (auto it = daemons_.begin(); it != daemons_.end();) {
				if (it->second.pidfd && pidfdExited(it->second.pidfd.get())) {
					exited.emplace_back(it->first, std::move(it->second));
					it = daemons_.erase(it);
				} else {
					++it;
				}
			}
		}
		// Unlocked: onExit may start a replacement, or stop other daemons.
		for (auto &[id, w] : exited) {
			int status = w.child ? reapChild(w.handle.pid) : -1;
			w.pidfd.reset();
			if (onExit_)
				onExit_(id, w.handle, status);
		}
	}
}

// systemd's unit_name_escape(), as `systemd-escape STRING` prints it: '/' becomes '-'; a
// leading '.', and every byte that is not [A-Za-z0-9:_.], becomes "\xNN" (lowercase hex),
// including '-' and '\' themselves. So "sim:edu" and "0000:01:00.0" stay as they are, and
// "/sys/devices/platform/9010000.pl031" becomes "-sys-devices-platform-9010000.pl031".
// systemd's %I specifier undoes exactly this.
std::string systemdInstanceFor(const std::string &deviceId)
{
	static const char hex[] = "0123456789abcdef";
	std::string out;
	for (size_t i = 0; i < deviceId.size(); i++) {
		unsigned char c = static_cast<unsigned char>(deviceId[i]);
		bool valid = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			     c == ':' || c == '_' || (c == '.' && i > 0);
		if (c == '/') {
			out += '-';
		} else if (valid) {
			out += static_cast<char>(c);
		} else {
			out += "\\x";
			out += hex[c >> 4];
			out += hex[c & 15];
		}
	}
	return out;
}

} // namespace vfio_broker::control
