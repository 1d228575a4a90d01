// SPDX-License-Identifier: Apache-2.0
// Starts, stops and cleans up the real vfio-brokerd on a fake lab host, and talks gRPC to it.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include "broker_fixture.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "client/vfio_user_client.h"

extern char **environ;

namespace vfio_broker::itest {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int msLeft(Clock::time_point deadline)
{
	auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
	return left > 0 ? static_cast<int>(left) : 0;
}

int pidfdOpen(pid_t pid)
{
	return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0u));
}

// Poll a pidfd until its process exits; false at the bound.
bool waitExited(int pidfd, int timeoutMs)
{
	pollfd p{ pidfd, POLLIN, 0 };
	int rc;
	do {
		rc = ::poll(&p, 1, timeoutMs);
	} while (rc < 0 && errno == EINTR);
	return rc > 0;
}

int reap(pid_t pid)
{
	int status = -1;
	pid_t rc;
	do {
		rc = ::waitpid(pid, &status, 0);
	} while (rc < 0 && errno == EINTR);
	return rc == pid ? status : -1;
}

std::string readWhole(const std::string &path)
{
	std::ifstream in(path, std::ios::binary);
	std::stringstream ss;
	ss << in.rdbuf();
	return ss.str();
}

void writeWhole(const std::string &path, const std::string &text)
{
	std::ofstream out(path, std::ios::binary | std::ios::trunc);
	out << text;
	if (!out)
		throw std::runtime_error("writing " + path + " failed");
}

std::string readFd(int fd)
{
	std::string out;
	char buf[4096];
	off_t off = 0;
	for (;;) {
		ssize_t n = ::pread(fd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		out.append(buf, static_cast<size_t>(n));
		off += n;
	}
	return out;
}

std::vector<std::string> cmdlineOf(pid_t pid)
{
	std::string raw = readWhole("/proc/" + std::to_string(pid) + "/cmdline");
	std::vector<std::string> args;
	size_t start = 0;
	while (start < raw.size()) {
		size_t end = raw.find('\0', start);
		if (end == std::string::npos)
			end = raw.size();
		args.push_back(raw.substr(start, end - start));
		start = end + 1;
	}
	return args;
}

std::vector<pid_t> allPids()
{
	std::vector<pid_t> pids;
	if (DIR *d = ::opendir("/proc")) {
		while (dirent *e = ::readdir(d)) {
			char *end = nullptr;
			long pid = std::strtol(e->d_name, &end, 10);
			if (end && *end == '\0' && pid > 0)
				pids.push_back(static_cast<pid_t>(pid));
		}
		::closedir(d);
	}
	return pids;
}

// The argument after `flag` in a command line starts with `prefix`.
bool argUnder(const std::vector<std::string> &args, const std::string &flag, const std::string &prefix)
{
	for (size_t i = 0; i + 1 < args.size(); i++)
		if (args[i] == flag && args[i + 1].rfind(prefix, 0) == 0)
			return true;
	return false;
}

// ---- Failure reporting and skips

std::mutex gFixturesLock;
std::set<BrokerFixture *> gFixtures;

struct RunCounts {
	size_t run = 0, skipped = 0, failedAssertions = 0;
	bool currentSkipped = false;
	bool currentExpectedToFail = false; // [!shouldfail]: its failures are no news
} gCounts;

// Prints the logs of every live fixture at the first failed assertion (and what is new at
// later ones), next to the failure; counts skips so a run of only skipped tests exits 77.
class FixtureListener : public Catch::TestEventListenerBase
{
public:
	using TestEventListenerBase::TestEventListenerBase;

	void testCaseStarting(const Catch::TestCaseInfo &info) override
	{
		TestEventListenerBase::testCaseStarting(info);
		gCounts.currentSkipped = false;
		gCounts.currentExpectedToFail = info.expectedToFail();
	}

	bool assertionEnded(const Catch::AssertionStats &stats) override
	{
		if (!stats.assertionResult.isOk() && !gCounts.currentExpectedToFail) {
			gCounts.failedAssertions++;
			std::lock_guard<std::mutex> lock(gFixturesLock);
			for (BrokerFixture *f : gFixtures)
				f->dumpLogs();
		}
		return true;
	}

	void testCaseEnded(const Catch::TestCaseStats &stats) override
	{
		gCounts.run++;
		if (gCounts.currentSkipped)
			gCounts.skipped++;
		TestEventListenerBase::testCaseEnded(stats);
	}

	void testRunEnded(const Catch::TestRunStats &stats) override
	{
		TestEventListenerBase::testRunEnded(stats);
		if (gCounts.run > 0 && gCounts.skipped == gCounts.run && gCounts.failedAssertions == 0) {
			// The reporter prints its summary after us; exit 77 once it has.
			std::atexit([] {
				std::cout.flush();
				std::fflush(nullptr);
				std::_Exit(77);
			});
		}
	}
};

} // namespace

CATCH_REGISTER_LISTENER(FixtureListener)

void markSkipped(const std::string &reason)
{
	gCounts.currentSkipped = true;
	std::fprintf(stderr, "SKIP: %s\n", reason.c_str());
}

// ---- Helpers

std::string bdfOf(const std::string &id)
{
	return id.rfind("pci:", 0) == 0 ? id.substr(4) : id;
}

std::string requireEnv(const char *name)
{
	const char *v = std::getenv(name);
	INFO("the meson test sets " << name << "; run through `meson test --suite integration`");
	REQUIRE(v);
	REQUIRE(*v);
	return v;
}

std::string describe(const grpc::Status &status)
{
	static const char *names[] = { "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
				       "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
				       "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
				       "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED" };
	int code = static_cast<int>(status.error_code());
	std::string name = code >= 0 && code < 17 ? names[code] : std::to_string(code);
	return status.ok() ? name : name + ": " + status.error_message();
}

bool processAlive(pid_t pid)
{
	std::string stat = readWhole("/proc/" + std::to_string(pid) + "/stat");
	size_t paren = stat.rfind(')');
	if (paren == std::string::npos || paren + 2 >= stat.size())
		return false;
	char state = stat[paren + 2];
	return state != 'Z' && state != 'X';
}

bool killProcess(pid_t pid)
{
	UniqueFd pidfd(pidfdOpen(pid));
	if (!pidfd)
		return false;
	if (::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0u) != 0)
		return false;
	bool gone = waitExited(pidfd.get(), static_cast<int>(kWait.count()));
	int status;
	(void)::waitpid(pid, &status, WNOHANG);
	return gone;
}

std::string ProcessResult::describe() const
{
	std::string s;
	if (timedOut)
		s = "timed out";
	else if (exited)
		s = "exited " + std::to_string(code);
	else
		s = "killed by signal " + std::to_string(signal);
	return s + "\n--- stdout:\n" + out + "--- stderr:\n" + err;
}

ProcessResult runProcess(const std::vector<std::string> &argv, milliseconds limit,
			 std::optional<std::pair<uid_t, gid_t>> credentials)
{
	ProcessResult r;
	UniqueFd out(::memfd_create("itest-stdout", MFD_CLOEXEC));
	UniqueFd err(::memfd_create("itest-stderr", MFD_CLOEXEC));
	REQUIRE(out);
	REQUIRE(err);
	std::vector<char *> cargv;
	for (const auto &a : argv)
		cargv.push_back(const_cast<char *>(a.c_str()));
	cargv.push_back(nullptr);

	pid_t pid;
	if (!credentials) {
		posix_spawn_file_actions_t actions;
		posix_spawnattr_t attr;
		::posix_spawn_file_actions_init(&actions);
		::posix_spawnattr_init(&attr);
		sigset_t none, all;
		sigemptyset(&none);
		sigfillset(&all);
		::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
		::posix_spawnattr_setsigmask(&attr, &none);
		::posix_spawnattr_setsigdefault(&attr, &all);
		::posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
		::posix_spawn_file_actions_adddup2(&actions, out.get(), 1);
		::posix_spawn_file_actions_adddup2(&actions, err.get(), 2);
		::posix_spawn_file_actions_addclosefrom_np(&actions, 3);
		int rc = ::posix_spawnp(&pid, cargv[0], &actions, &attr, cargv.data(), environ);
		::posix_spawn_file_actions_destroy(&actions);
		::posix_spawnattr_destroy(&attr);
		INFO("starting " << argv[0]);
		REQUIRE(rc == 0);
	} else {
		// fork, not posix_spawn: the child changes credentials first. Only async-signal-safe
		// calls between fork and exec (this process has threads).
		uid_t uid = credentials->first;
		gid_t gid = credentials->second;
		int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
		REQUIRE(devnull >= 0);
		sigset_t none;
		sigemptyset(&none);
		pid = ::fork();
		if (pid == 0) {
			::sigprocmask(SIG_SETMASK, &none, nullptr);
			if (::dup2(devnull, 0) < 0 || ::dup2(out.get(), 1) < 0 || ::dup2(err.get(), 2) < 0)
				::_exit(125);
			if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) {
				static const char msg[] = "itest: cannot change credentials\n";
				(void)!::write(2, msg, sizeof(msg) - 1);
				::_exit(126);
			}
			::execve(cargv[0], cargv.data(), environ);
			::_exit(127);
		}
		::close(devnull);
		REQUIRE(pid > 0);
	}
	UniqueFd pidfd(pidfdOpen(pid));
	REQUIRE(pidfd);
	if (!waitExited(pidfd.get(), static_cast<int>(limit.count()))) {
		r.timedOut = true;
		::kill(pid, SIGKILL);
	}
	int status = reap(pid);
	if (!r.timedOut) {
		r.exited = WIFEXITED(status);
		r.code = r.exited ? WEXITSTATUS(status) : -1;
		r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	}
	r.out = readFd(out.get());
	r.err = readFd(err.get());
	return r;
}

std::string probeDeviceDaemon(const std::string &socketPath)
{
	auto c = client::Client::connect(socketPath);
	if (!c)
		return "connect " + socketPath + ": " + c.error().message;
	// A hung daemon must fail the probe, not hang it.
	timeval tv{ static_cast<time_t>(kWait.count() / 1000), 0 };
	::setsockopt(c->fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	::setsockopt(c->fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	auto n = c->negotiate();
	if (!n)
		return "VERSION: " + n.error().message;
	auto info = c->deviceInfo();
	if (!info)
		return "DEVICE_GET_INFO: " + info.error().message;
	if (info->numRegions == 0)
		return "DEVICE_GET_INFO: no regions";
	return "";
}

std::vector<pb::EventType> typesOf(const std::vector<pb::Event> &events)
{
	std::vector<pb::EventType> types;
	for (const auto &e : events)
		types.push_back(e.type());
	return types;
}

std::string describe(const std::vector<pb::Event> &events)
{
	std::string s;
	for (const auto &e : events)
		s += "  #" + std::to_string(e.sequence()) + " " + pb::EventType_Name(e.type()) + " " + e.device_id() +
		     " vm=" + e.vm() + " pid=" + std::to_string(e.daemon_pid()) + " \"" + e.message() + "\"\n";
	return s.empty() ? "  (none)\n" : s;
}

// ---- EventWatch

EventWatch::EventWatch(pb::BrokerService::Stub &stub, const std::string &deviceId, const std::string &vm)
{
	pb::WatchEventsRequest req;
	req.set_device_id(deviceId);
	req.set_vm(vm);
	// Bounded like everything else; a test never watches for longer.
	ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(2));
	reader_ = stub.WatchEvents(&ctx_, req);
	// The broker sends the headers once it has subscribed us.
	reader_->WaitForInitialMetadata();
	thread_ = std::thread([this] {
		pb::WatchEventsResponse resp;
		while (reader_->Read(&resp)) {
			std::lock_guard<std::mutex> lock(lock_);
			queue_.push_back(resp.event());
			cv_.notify_all();
		}
		grpc::Status s = reader_->Finish();
		std::lock_guard<std::mutex> lock(lock_);
		end_ = s;
		cv_.notify_all();
	});
}

EventWatch::~EventWatch()
{
	ctx_.TryCancel();
	if (thread_.joinable())
		thread_.join();
}

std::optional<pb::Event> EventWatch::next(milliseconds limit)
{
	std::unique_lock<std::mutex> lock(lock_);
	cv_.wait_for(lock, limit, [this] { return !queue_.empty() || end_.has_value(); });
	if (queue_.empty())
		return std::nullopt;
	pb::Event e = std::move(queue_.front());
	queue_.pop_front();
	return e;
}

std::vector<pb::Event> EventWatch::until(const std::function<bool(const pb::Event &)> &last, milliseconds limit)
{
	auto deadline = Clock::now() + limit;
	std::vector<pb::Event> out;
	for (;;) {
		auto e = next(milliseconds(msLeft(deadline)));
		if (!e)
			return out;
		out.push_back(*e);
		if (last(*e))
			return out;
	}
}

std::optional<grpc::Status> EventWatch::finished()
{
	std::lock_guard<std::mutex> lock(lock_);
	return end_;
}

// ---- The policy of the lab

const char kDefaultPolicy[] = R"(# The lab of broker_fixture.h: one rule per device, by address.
board: "integration-lab"
rules { name: "sim-edu" simulated: "sim:edu" }
rules { name: "nic-a" pci_address: "0000:01:00.0" }
rules { name: "nic-b" pci_address: "0000:02:00.0" }
rules { name: "nic-c" pci_address: "0000:03:00.0" }
rules { name: "pair-0" pci_address: "0000:04:00.0" }
rules { name: "pair-1" pci_address: "0000:04:00.1" }
rules { name: "host-pair-0" pci_address: "0000:05:00.0" }
rules { name: "host-pair-1" pci_address: "0000:05:00.1" }
rules { name: "gpu" pci_address: "0000:06:00.0" }
rules {
  name: "no-iommu"
  pci_address: "0000:07:00.0"
  allow_no_iommu: true
  allow_identity_mapping: true
}
rules { name: "noiommu-group" pci_address: "0000:08:00.0" allow_identity_mapping: true }
rules { name: "irq-a" pci_address: "0000:09:00.0" }
rules { name: "irq-b" pci_address: "0000:0a:00.0" }
rules { name: "mmio-a" pci_address: "0000:0b:00.0" allow_identity_mapping: true }
rules { name: "mmio-b" pci_address: "0000:0c:00.0" allow_identity_mapping: true }
rules { name: "web-only" pci_address: "0000:0e:00.0" allowed_vms: "web" }
rules { name: "quarantine" pci_address: "0000:0f:00.0" on_deassign: DEASSIGN_ACTION_QUARANTINE }
rules { name: "fail-on-exit" pci_address: "0000:10:00.0" on_daemon_exit: DAEMON_EXIT_ACTION_FAIL }
rules { name: "two-restarts" pci_address: "0000:11:00.0" max_restarts: 2 }
)";

// ---- BrokerFixture

BrokerFixture::BrokerFixture(BrokerOptions options) : options_(std::move(options))
{
	brokerd_ = requireEnv("VFIO_BROKERD");
	deviceDaemon_ = requireEnv("VFIO_BROKER_DEVICE");
	// Device daemons are setsid'ed and outlive a killed broker; as their subreaper we can reap
	// them (and a daemon killed while no broker runs does not linger as a zombie of init).
	::prctl(PR_SET_CHILD_SUBREAPER, 1);
	dir_ = sysfs_.base();
	buildLab();
	kernel_ = std::make_unique<testing::FakeKernel>(sysfs_);
	writeConfig(options_.extraConfig);
	writePolicy(options_.policy);
	{
		std::lock_guard<std::mutex> lock(gFixturesLock);
		gFixtures.insert(this);
	}
	if (options_.start) {
		try {
			start();
		} catch (...) {
			// No destructor runs for a half-constructed fixture.
			tearDown();
			throw;
		}
	}
}

BrokerFixture::~BrokerFixture()
{
	tearDown();
}

void BrokerFixture::tearDown()
{
	{
		std::lock_guard<std::mutex> lock(gFixturesLock);
		gFixtures.erase(this);
	}
	stub_.reset();
	channel_.reset();
	if (running())
		reapBroker(SIGTERM);
	killLeftovers();
	if (kernel_) {
		// A fake-kernel action that failed (a throwing handler, lost inotify events) would
		// otherwise show only as an RPC outcome the test might not look at.
		for (const std::string &line : kernel_->log())
			CHECK_FALSE(line.rfind("error:", 0) == 0);
	}
	kernel_.reset();
}

void BrokerFixture::buildLab()
{
	using testing::FakePciDevice;
	using testing::FakeResource;
	auto pci = [](const std::string &id, const std::string &driver, int group) {
		FakePciDevice d;
		d.bdf = bdfOf(id);
		d.driver = driver;
		d.group = group;
		d.interruptPin = 0; // no INTx unless a test device says so: no accidental sharing
		return d;
	};
	sysfs_.addPciDevice(pci(lab::kNicA, "e1000e", 1));
	sysfs_.addPciDevice(pci(lab::kNicB, "e1000e", 2));
	FakePciDevice nicC = pci(lab::kNicC, "igb", 3);
	nicC.device = 0x1533;
	sysfs_.addPciDevice(nicC);
	sysfs_.addPciDevice(pci(lab::kPair0, "", 4));
	sysfs_.addPciDevice(pci(lab::kPair1, "", 4));
	sysfs_.addPciDevice(pci(lab::kHostPair0, "e1000e", 5));
	sysfs_.addPciDevice(pci(lab::kHostPair1, "e1000e", 5));
	sysfs_.addNonViableGroup(6, "0000:06", "nouveau");
	sysfs_.addPciDevice(pci(lab::kNoIommu, "e1000e", -1));
	sysfs_.addPciDevice(pci(lab::kNoIommuGroup, "e1000e", 8));
	sysfs_.setNoIommuGroup(8);
	FakePciDevice irqA = pci(lab::kIrqA, "e1000e", 9);
	irqA.irq = 19;
	irqA.interruptPin = 1;
	sysfs_.addPciDevice(irqA);
	FakePciDevice irqB = pci(lab::kIrqB, "e1000e", 10);
	irqB.irq = 19;
	irqB.interruptPin = 1;
	sysfs_.addPciDevice(irqB);
	FakePciDevice mmioA = pci(lab::kMmioA, "e1000e", 11);
	mmioA.resources = { FakeResource{ 0xfe000000, 0xfe00ffff, testing::kFakeIoresourceMem } };
	sysfs_.addPciDevice(mmioA);
	FakePciDevice mmioB = pci(lab::kMmioB, "e1000e", 12);
	mmioB.resources = { FakeResource{ 0xfe008000, 0xfe017fff, testing::kFakeIoresourceMem } };
	sysfs_.addPciDevice(mmioB);
	FakePciDevice denied = pci(lab::kDenied, "virtio-pci", 13);
	denied.vendor = 0x1af4;
	denied.device = 0x1041;
	sysfs_.addPciDevice(denied);
	sysfs_.addPciDevice(pci(lab::kWebOnly, "e1000e", 14));
	sysfs_.addPciDevice(pci(lab::kQuarantine, "e1000e", 15));
	sysfs_.addPciDevice(pci(lab::kFailOnExit, "e1000e", 16));
	sysfs_.addPciDevice(pci(lab::kTwoRestarts, "e1000e", 17));
}

void BrokerFixture::writeConfig(const std::string &extraConfig)
{
	std::string text = "# Written by the integration fixture.\n"
			   "control_socket: \"" + controlSocket() + "\"\n"
			   "state_dir: \"" + stateDir() + "\"\n"
			   "runtime_dir: \"" + runtimeDir() + "\"\n"
			   "policy_file: \"" + policyPath() + "\"\n"
			   "device_daemon: \"" + deviceDaemon_ + "\"\n"
			   "sysfs_root: \"" + sysfs_.root() + "\"\n"
			   "simulated_devices: \"sim:edu\"\n"
			   "testing_device_override: \"sim:edu\"\n"
			   "daemon_ready_timeout_ms: 5000\n"
			   "bind_timeout_ms: " + std::to_string(options_.bindTimeoutMs) + "\n";
	if (!options_.adminGroup.empty())
		text += "admin_group: \"" + options_.adminGroup + "\"\n";
	text += extraConfig;
	writeWhole(configPath(), text);
}

void BrokerFixture::writePolicy(const std::string &policy)
{
	writeWhole(policyPath(), policy);
}

void BrokerFixture::start()
{
	REQUIRE(!running());
	// A fresh notify socket per start: nothing from an earlier broker can be mistaken for ours.
	std::string notifyPath = dir_ + "/notify.sock";
	::unlink(notifyPath.c_str());
	notify_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
	REQUIRE(notify_);
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	REQUIRE(notifyPath.size() < sizeof(addr.sun_path));
	std::memcpy(addr.sun_path, notifyPath.c_str(), notifyPath.size());
	REQUIRE(::bind(notify_.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0);
	int one = 1;
	REQUIRE(::setsockopt(notify_.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) == 0);

	std::vector<std::string> env;
	for (char **e = environ; *e; e++)
		if (std::strncmp(*e, "NOTIFY_SOCKET=", 14) != 0)
			env.push_back(*e);
	env.push_back("NOTIFY_SOCKET=" + notifyPath);
	std::vector<char *> cenv;
	for (auto &e : env)
		cenv.push_back(e.data());
	cenv.push_back(nullptr);
	std::vector<std::string> argv{ brokerd_, "--config", configPath() };
	std::vector<char *> cargv;
	for (auto &a : argv)
		cargv.push_back(a.data());
	cargv.push_back(nullptr);

	posix_spawn_file_actions_t actions;
	posix_spawnattr_t attr;
	::posix_spawn_file_actions_init(&actions);
	::posix_spawnattr_init(&attr);
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	::posix_spawnattr_setsigmask(&attr, &none);
	::posix_spawnattr_setsigdefault(&attr, &all);
	::posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
	::posix_spawn_file_actions_addopen(&actions, 1, logPath().c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
	::posix_spawn_file_actions_adddup2(&actions, 1, 2);
	::posix_spawn_file_actions_addclosefrom_np(&actions, 3);
	pid_t pid = -1;
	int rc = ::posix_spawn(&pid, cargv[0], &actions, &attr, cargv.data(), cenv.data());
	::posix_spawn_file_actions_destroy(&actions);
	::posix_spawnattr_destroy(&attr);
	INFO("starting " << brokerd_);
	REQUIRE(rc == 0);
	pid_ = pid;
	pidfd_.reset(pidfdOpen(pid));
	REQUIRE(pidfd_);

	auto deadline = Clock::now() + kWait;
	bool ready = false, exited = false;
	while (!ready && !exited && msLeft(deadline) > 0) {
		pollfd fds[2] = { { notify_.get(), POLLIN, 0 }, { pidfd_.get(), POLLIN, 0 } };
		int n = ::poll(fds, 2, msLeft(deadline));
		if (n < 0 && errno == EINTR)
			continue;
		REQUIRE(n >= 0);
		if (fds[0].revents & POLLIN) {
			char buf[512];
			alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
			iovec iov{ buf, sizeof(buf) - 1 };
			msghdr msg{};
			msg.msg_iov = &iov;
			msg.msg_iovlen = 1;
			msg.msg_control = control;
			msg.msg_controllen = sizeof(control);
			ssize_t got = ::recvmsg(notify_.get(), &msg, MSG_CMSG_CLOEXEC);
			if (got < 0)
				continue;
			const ucred *cred = nullptr;
			for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
				if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
					cred = reinterpret_cast<const ucred *>(CMSG_DATA(c));
			std::string text(buf, static_cast<size_t>(got));
			if (cred && cred->pid == pid_ && ("\n" + text + "\n").find("\nREADY=1\n") != std::string::npos)
				ready = true;
			continue;
		}
		if (fds[1].revents)
			exited = true;
	}
	// Nobody reads the socket from here on: close it, so the device daemons, which inherit
	// NOTIFY_SOCKET from the broker and report READY=1/STOPPING=1 there too, get an error
	// rather than block in sendto() once its queue is full.
	notify_.reset();
	::unlink(notifyPath.c_str());
	if (!ready) {
		if (!exited)
			reapBroker(SIGKILL);
		else
			reapBroker(0);
		INFO("vfio-brokerd " << (exited ? "exited" : "did not report READY=1 in time") << "; its log:\n" << log());
		FAIL("vfio-brokerd did not start");
	}
	connect();
}

void BrokerFixture::connect()
{
	channel_ = grpc::CreateChannel("unix:" + controlSocket(), grpc::InsecureChannelCredentials());
	stub_ = pb::BrokerService::NewStub(channel_);
}

void BrokerFixture::reapBroker(int sig)
{
	if (pid_ <= 0)
		return;
	if (sig)
		::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0u);
	if (!waitExited(pidfd_.get(), static_cast<int>(kWait.count())))
		::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0u);
	lastStatus_ = reap(pid_);
	pid_ = -1;
	pidfd_.reset();
}

void BrokerFixture::kill(int sig)
{
	REQUIRE(running());
	stub_.reset();
	channel_.reset();
	reapBroker(sig);
}

void BrokerFixture::restart()
{
	kill(SIGKILL);
	start();
}

std::string BrokerFixture::log() const
{
	return readWhole(logPath());
}

void BrokerFixture::dumpLogs()
{
	std::string all = log();
	if (all.size() > logShown_) {
		std::fprintf(stderr, "----- vfio-brokerd log (%s)%s -----\n%s----- end of log -----\n", logPath().c_str(),
			     logShown_ ? ", continued" : "", all.substr(logShown_).c_str());
		if (logShown_ == 0 && kernel_) {
			std::string klog;
			for (const auto &line : kernel_->log())
				klog += "  " + line + "\n";
			std::fprintf(stderr, "----- fake kernel log -----\n%s----- end -----\n", klog.c_str());
		}
		logShown_ = all.size();
	}
}

void BrokerFixture::killLeftovers()
{
	// Device daemons serve sockets under our runtime dir; stray brokers read our config.
	std::string run = runtimeDir() + "/";
	for (pid_t pid : allPids()) {
		if (pid == ::getpid())
			continue;
		auto args = cmdlineOf(pid);
		if (argUnder(args, "--socket", run) || argUnder(args, "--config", configPath()))
			killProcess(pid);
	}
	// Zombies of daemons orphaned to us (killed while no broker ran) have no cmdline left.
	int status;
	while (::waitpid(-1, &status, WNOHANG) > 0) {
	}
}

std::vector<pid_t> BrokerFixture::deviceDaemons() const
{
	std::vector<pid_t> out;
	std::string run = runtimeDir() + "/";
	for (pid_t pid : allPids())
		if (argUnder(cmdlineOf(pid), "--socket", run) && processAlive(pid))
			out.push_back(pid);
	std::sort(out.begin(), out.end());
	return out;
}

pb::BrokerState BrokerFixture::savedState() const
{
	pb::BrokerState state;
	std::string bytes = readWhole(stateDir() + "/state.pb");
	INFO("parsing " << stateDir() << "/state.pb");
	REQUIRE(state.ParseFromString(bytes));
	return state;
}

bool BrokerFixture::waitForState(const std::function<bool()> &condition, milliseconds limit)
{
	UniqueFd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
	REQUIRE(in);
	// Watch before the first look, so a change between the look and the wait is not lost.
	REQUIRE(::inotify_add_watch(in.get(), stateDir().c_str(), IN_MOVED_TO | IN_CLOSE_WRITE) >= 0);
	auto deadline = Clock::now() + limit;
	for (;;) {
		if (condition())
			return true;
		if (msLeft(deadline) == 0)
			return false;
		pollfd p{ in.get(), POLLIN, 0 };
		if (::poll(&p, 1, msLeft(deadline)) > 0) {
			char buf[4096];
			while (::read(in.get(), buf, sizeof(buf)) > 0) {
			}
		}
	}
}

// ---- RPCs

namespace {

void setDeadline(grpc::ClientContext &ctx)
{
	ctx.set_deadline(std::chrono::system_clock::now() + kWait);
}

} // namespace

Reply<pb::ListDevicesResponse> BrokerFixture::listDevices()
{
	REQUIRE(stub_);
	Reply<pb::ListDevicesResponse> r;
	grpc::ClientContext ctx;
	setDeadline(ctx);
	r.status = stub_->ListDevices(&ctx, pb::ListDevicesRequest(), &r.value);
	return r;
}

Reply<pb::GetDeviceResponse> BrokerFixture::getDevice(const std::string &id)
{
	REQUIRE(stub_);
	Reply<pb::GetDeviceResponse> r;
	grpc::ClientContext ctx;
	setDeadline(ctx);
	pb::GetDeviceRequest req;
	req.set_device_id(id);
	r.status = stub_->GetDevice(&ctx, req, &r.value);
	return r;
}

Reply<pb::CheckAssignmentResponse> BrokerFixture::check(const std::string &vm, const std::vector<std::string> &ids,
							const pb::AssignOptions &options)
{
	REQUIRE(stub_);
	Reply<pb::CheckAssignmentResponse> r;
	grpc::ClientContext ctx;
	setDeadline(ctx);
	pb::CheckAssignmentRequest req;
	req.set_vm(vm);
	for (const auto &id : ids)
		req.add_device_ids(id);
	*req.mutable_options() = options;
	r.status = stub_->CheckAssignment(&ctx, req, &r.value);
	return r;
}

AssignReply BrokerFixture::assign(const std::string &vm, const std::vector<std::string> &ids,
				  const pb::AssignOptions &options)
{
	REQUIRE(stub_);
	AssignReply r;
	grpc::ClientContext ctx;
	setDeadline(ctx);
	pb::AssignRequest req;
	req.set_vm(vm);
	for (const auto &id : ids)
		req.add_device_ids(id);
	*req.mutable_options() = options;
	r.status = stub_->Assign(&ctx, req, &r.value);
	const auto &trailers = ctx.GetServerTrailingMetadata();
	auto it = trailers.find("vfio-broker-conflicts-bin");
	if (it != trailers.end()) {
		pb::CheckAssignmentResponse c;
		if (c.ParseFromArray(it->second.data(), static_cast<int>(it->second.size())))
			r.conflicts = c;
	}
	return r;
}

Reply<pb::DeassignResponse> BrokerFixture::deassign(const std::string &id, const std::string &vm)
{
	REQUIRE(stub_);
	Reply<pb::DeassignResponse> r;
	grpc::ClientContext ctx;
	setDeadline(ctx);
	pb::DeassignRequest req;
	req.set_device_id(id);
	req.set_vm(vm);
	r.status = stub_->Deassign(&ctx, req, &r.value);
	return r;
}

Reply<pb::ReleaseResponse> BrokerFixture::release(const std::string &id)
{
	REQUIRE(stub_);
	Reply<pb::ReleaseResponse> r;
	grpc::ClientContext ctx;
	setDeadline(ctx);
	pb::ReleaseRequest req;
	req.set_device_id(id);
	r.status = stub_->Release(&ctx, req, &r.value);
	return r;
}

Reply<pb::ListAssignmentsResponse> BrokerFixture::listAssignments(const std::string &vm)
{
	REQUIRE(stub_);
	Reply<pb::ListAssignmentsResponse> r;
	grpc::ClientContext ctx;
	setDeadline(ctx);
	pb::ListAssignmentsRequest req;
	req.set_vm(vm);
	r.status = stub_->ListAssignments(&ctx, req, &r.value);
	return r;
}

std::unique_ptr<EventWatch> BrokerFixture::watch(const std::string &deviceId, const std::string &vm)
{
	REQUIRE(stub_);
	return std::make_unique<EventWatch>(*stub_, deviceId, vm);
}

std::vector<pb::Assignment> BrokerFixture::assignOk(const std::string &vm, const std::vector<std::string> &ids,
						    const pb::AssignOptions &options)
{
	AssignReply r = assign(vm, ids, options);
	INFO("Assign to " << vm << ": " << describe(r.status));
	REQUIRE(r.ok());
	REQUIRE(r.value.assignments_size() == static_cast<int>(ids.size()));
	return { r.value.assignments().begin(), r.value.assignments().end() };
}

pb::Device BrokerFixture::device(const std::string &id)
{
	auto r = getDevice(id);
	INFO("GetDevice " << id << ": " << describe(r.status));
	REQUIRE(r.ok());
	return r.value.device();
}

std::vector<pb::Assignment> BrokerFixture::assignments(const std::string &vm)
{
	auto r = listAssignments(vm);
	INFO("ListAssignments: " << describe(r.status));
	REQUIRE(r.ok());
	return { r.value.assignments().begin(), r.value.assignments().end() };
}

} // namespace vfio_broker::itest
