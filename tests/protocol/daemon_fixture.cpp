// SPDX-License-Identifier: Apache-2.0
// The protocol tier's harness: spawning and reaping the daemon with bounded waits, clients
// with timeouts, raw framing, and the fd helpers the message tests share.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include "daemon_fixture.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace vfio_broker::test {

namespace {

using Clock = std::chrono::steady_clock;

// Writing to a socket the daemon has closed must fail the test, not kill it.
const bool kSigpipeIgnored = [] {
	::signal(SIGPIPE, SIG_IGN);
	return true;
}();

// Set by the listener below when an assertion fails, so the daemon's log is printed.
std::atomic<bool> gFailureSeen{ false };

class FailureListener : public Catch::TestEventListenerBase
{
public:
	using TestEventListenerBase::TestEventListenerBase;
	void testCaseStarting(Catch::TestCaseInfo const &info) override
	{
		gFailureSeen = false;
		TestEventListenerBase::testCaseStarting(info);
	}
	bool assertionEnded(Catch::AssertionStats const &stats) override
	{
		if (!stats.assertionResult.isOk())
			gFailureSeen = true;
		return true;
	}
};

int msLeft(Clock::time_point deadline)
{
	auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
	return left > 0 ? static_cast<int>(left) : 0;
}

std::string readFile(const std::string &path)
{
	std::ifstream in(path, std::ios::binary);
	std::ostringstream out;
	out << in.rdbuf();
	return out.str();
}

ExitStatus fromWaitStatus(int st)
{
	ExitStatus s;
	if (WIFEXITED(st)) {
		s.exited = true;
		s.code = WEXITSTATUS(st);
	} else if (WIFSIGNALED(st)) {
		s.signal = WTERMSIG(st);
	}
	return s;
}

} // namespace

CATCH_REGISTER_LISTENER(FailureListener)

// --- TempDir ---

TempDir::TempDir()
{
	const char *base = std::getenv("TMPDIR");
	std::string tmpl = std::string(base && *base ? base : "/tmp") + "/vfio-broker-proto.XXXXXX";
	// sun_path holds 107 bytes; a long $TMPDIR would make every socket path fail.
	if (tmpl.size() > 80)
		tmpl = "/tmp/vfio-broker-proto.XXXXXX";
	std::vector<char> buf(tmpl.begin(), tmpl.end());
	buf.push_back('\0');
	if (!::mkdtemp(buf.data()))
		FAIL("mkdtemp " << tmpl << ": " << std::strerror(errno));
	path_ = buf.data();
}

TempDir::~TempDir()
{
	std::error_code ec;
	std::filesystem::remove_all(path_, ec);
}

// --- ExitStatus / ChildProcess ---

std::string ExitStatus::describe() const
{
	if (timedOut)
		return "did not exit within " + std::to_string(kWaitMs) + " ms";
	if (exited)
		return "exited " + std::to_string(code);
	if (signal) {
		const char *name = ::sigabbrev_np(signal);
		return std::string("killed by SIG") + (name ? name : std::to_string(signal).c_str());
	}
	return "still running";
}

ChildProcess ChildProcess::spawn(const std::vector<std::string> &argv,
				 const std::vector<std::pair<int, int>> &fds)
{
	// Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
	std::vector<char *> cargv;
	for (const auto &a : argv)
		cargv.push_back(const_cast<char *>(a.c_str()));
	cargv.push_back(nullptr);
	int base = 3, maxTarget = 2;
	for (const auto &[from, to] : fds) {
		base = std::max({ base, from + 1, to + 1 });
		maxTarget = std::max(maxTarget, to);
	}

	pid_t pid = ::fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, nullptr);
		struct sigaction dfl {};
		dfl.sa_handler = SIG_DFL;
		for (int s = 1; s < NSIG; s++)
			(void)sigaction(s, &dfl, nullptr);
		// Two steps, so a source that is also another mapping's target is not clobbered.
		for (size_t i = 0; i < fds.size(); i++)
			if (::dup2(fds[i].first, base + static_cast<int>(i)) < 0)
				::_exit(127);
		for (size_t i = 0; i < fds.size(); i++)
			if (::dup2(base + static_cast<int>(i), fds[i].second) < 0)
				::_exit(127);
		::close_range(maxTarget + 1, ~0u, 0);
		::execv(cargv[0], cargv.data());
		::_exit(127);
	}
	return adopt(pid);
}

ChildProcess ChildProcess::adopt(pid_t pid)
{
	ChildProcess p;
	p.pid_ = pid;
	p.pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
	if (!p.pidfd_) {
		int err = errno;
		p.kill(SIGKILL);
		FAIL("pidfd_open: " << std::strerror(err) << " (the protocol tier needs Linux 5.3 or later)");
	}
	return p;
}

ChildProcess::~ChildProcess()
{
	if (pid_ > 0 && !reaped_) {
		kill(SIGKILL);
		(void)wait();
	}
}

ChildProcess::ChildProcess(ChildProcess &&other) noexcept
	: pid_(std::exchange(other.pid_, -1)), pidfd_(std::move(other.pidfd_)),
	  reaped_(other.reaped_), status_(other.status_)
{
}

ChildProcess &ChildProcess::operator=(ChildProcess &&other) noexcept
{
	if (this != &other) {
		if (pid_ > 0 && !reaped_) {
			kill(SIGKILL);
			(void)wait();
		}
		pid_ = std::exchange(other.pid_, -1);
		pidfd_ = std::move(other.pidfd_);
		reaped_ = other.reaped_;
		status_ = other.status_;
	}
	return *this;
}

bool ChildProcess::running()
{
	if (pid_ <= 0 || reaped_)
		return false;
	int st = 0;
	pid_t r = ::waitpid(pid_, &st, WNOHANG);
	if (r == pid_) {
		reaped_ = true;
		status_ = fromWaitStatus(st);
	}
	return !reaped_;
}

ExitStatus ChildProcess::wait(int timeoutMs)
{
	if (pid_ <= 0 || reaped_)
		return status_;
	auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
	for (;;) {
		pollfd p{ pidfd_.get(), POLLIN, 0 };
		int n = ::poll(&p, 1, msLeft(deadline));
		if (n > 0)
			break;
		if (n == 0) {
			ExitStatus s;
			s.timedOut = true;
			return s;
		}
		if (errno != EINTR)
			break; // fall back to a blocking waitpid rather than lose the child
	}
	int st = 0;
	pid_t r;
	do {
		r = ::waitpid(pid_, &st, 0);
	} while (r < 0 && errno == EINTR);
	reaped_ = true;
	status_ = r == pid_ ? fromWaitStatus(st) : ExitStatus{};
	return status_;
}

void ChildProcess::kill(int sig)
{
	if (pid_ > 0 && !reaped_)
		(void)::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0);
}

// --- Daemon ---

Daemon::Daemon(const DaemonConfig &config)
{
	const char *bin = std::getenv("VFIO_BROKER_DEVICE");
	if (!bin || !*bin)
		FAIL("VFIO_BROKER_DEVICE is not set: it must name the vfio-broker-device binary to test "
		     "(meson test sets it)");
	if (::access(bin, X_OK) != 0)
		FAIL("VFIO_BROKER_DEVICE=" << bin << " is not executable: " << std::strerror(errno));

	socketPath_ = dir_.file("dev.sock");
	logPath_ = dir_.file("daemon.log");
	UniqueFd logFd(::open(logPath_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600));
	UniqueFd devNull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
	REQUIRE(logFd);
	REQUIRE(devNull);

	std::vector<std::string> argv{ bin };
	if (config.device)
		argv.insert(argv.end(), { "--device", "sim:edu" });
	if (config.socket)
		argv.insert(argv.end(), { "--socket", socketPath_ });
	if (config.readyFd)
		argv.insert(argv.end(), { "--ready-fd", "3" });
	argv.insert(argv.end(), config.args.begin(), config.args.end());

	std::vector<std::pair<int, int>> fds{ { devNull.get(), 0 }, { logFd.get(), 1 }, { logFd.get(), 2 } };
	UniqueFd readyWrite;
	if (config.readyFd) {
		int p[2];
		REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
		readyPipe_.reset(p[0]);
		readyWrite.reset(p[1]);
		fds.push_back({ readyWrite.get(), 3 });
	}
	for (const auto &f : config.inherit)
		fds.push_back(f);

	process_ = ChildProcess::spawn(argv, fds);
	readyWrite.reset(); // only the daemon holds the write end now: its exit is our EOF

	if (config.readyFd && config.waitReady) {
		collectReady(kWaitMs, false);
		if (readyText_.find("READY=1\n") == std::string::npos) {
			ExitStatus st = process_.running() ? ExitStatus{} : process_.status();
			INFO("daemon log:\n" << log());
			FAIL("the daemon did not report READY=1 within " << kWaitMs << " ms (got \""
			     << readyText_ << "\"; " << st.describe() << ")");
		}
	}
}

Daemon::~Daemon()
{
	bool clean = true;
	std::string what;
	if (!process_.reaped()) {
		ExitStatus st = stop();
		clean = st.clean();
		what = st.describe();
		// A crash or a hang at shutdown fails the test that ran it.
		CHECK(what == "exited 0");
	}
	if (!clean || gFailureSeen) {
		std::string text = log();
		std::fprintf(stderr, "----- vfio-broker-device log (pid %d, %s) -----\n%s"
			     "----- end of log -----\n", process_.pid(),
			     what.empty() ? process_.status().describe().c_str() : what.c_str(), text.c_str());
	}
}

void Daemon::collectReady(int timeoutMs, bool untilEof)
{
	if (!readyPipe_)
		return;
	auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
	for (;;) {
		if (!untilEof && readyText_.find("READY=1\n") != std::string::npos)
			return;
		pollfd p{ readyPipe_.get(), POLLIN, 0 };
		int n = ::poll(&p, 1, msLeft(deadline));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		char buf[256];
		ssize_t got = ::read(readyPipe_.get(), buf, sizeof(buf));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			readyPipe_.reset(); // EOF: the daemon closed it or exited
			return;
		}
		readyText_.append(buf, got);
	}
}

std::string Daemon::log() const
{
	return readFile(logPath_);
}

ExitStatus Daemon::stop()
{
	if (process_.reaped())
		return process_.status();
	process_.kill(SIGTERM);
	ExitStatus st = process_.wait(kWaitMs);
	if (st.timedOut) {
		process_.kill(SIGKILL);
		(void)process_.wait(kWaitMs);
	}
	return st;
}

ExitStatus Daemon::waitExit(int timeoutMs)
{
	ExitStatus st = process_.wait(timeoutMs);
	if (!st.timedOut)
		collectReady(0, true); // whatever it wrote before it exited is in the pipe
	return st;
}

Client Daemon::connect()
{
	return connectTo(socketPath_);
}

Client Daemon::connectNegotiated()
{
	Client c = connect();
	auto v = c.negotiate();
	INFO("daemon log:\n" << log());
	REQUIRE(outcome(v) == "ok");
	return c;
}

size_t Daemon::openFds() const
{
	std::string path = "/proc/" + std::to_string(pid()) + "/fd";
	DIR *d = ::opendir(path.c_str());
	REQUIRE(d);
	size_t n = 0;
	while (dirent *e = ::readdir(d))
		if (e->d_name[0] != '.')
			n++;
	::closedir(d);
	return n;
}

bool Daemon::mapsFile(const std::string &needle) const
{
	return readFile("/proc/" + std::to_string(pid()) + "/maps").find(needle) != std::string::npos;
}

// --- clients ---

void setTimeouts(int fd, int timeoutMs)
{
	timeval tv{ timeoutMs / 1000, (timeoutMs % 1000) * 1000 };
	REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0);
	REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == 0);
}

Client connectTo(const std::string &path)
{
	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	REQUIRE(fd);
	// Set before connect(): a full backlog then blocks connect() no longer than the bound.
	setTimeouts(fd.get());
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	REQUIRE(path.size() < sizeof(addr.sun_path));
	std::memcpy(addr.sun_path, path.c_str(), path.size());
	int rc = ::connect(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr));
	INFO("connect " << path << ": " << (rc == 0 ? "ok" : std::strerror(errno)));
	REQUIRE(rc == 0);
	auto c = Client::adopt(std::move(fd));
	REQUIRE(c);
	return std::move(*c);
}

Client adoptClient(UniqueFd socket)
{
	setTimeouts(socket.get());
	auto c = Client::adopt(std::move(socket));
	REQUIRE(c);
	return std::move(*c);
}

// --- raw messages ---

std::vector<uint8_t> frame(uint16_t msgId, uint16_t command, std::span<const uint8_t> payload,
			   uint32_t flags, int64_t msgSize)
{
	vfio_user::Header h{};
	h.msgId = msgId;
	h.command = command;
	h.msgSize = msgSize < 0 ? static_cast<uint32_t>(sizeof(h) + payload.size())
				: static_cast<uint32_t>(msgSize);
	h.flags = flags;
	return bytesOf(h, payload);
}

Reply receiveReply(Client &c)
{
	auto m = c.receive();
	INFO("receiving from the daemon: " << (m ? "ok" : m.error().message));
	REQUIRE(m);
	Reply r;
	r.header = m->header;
	r.payload = std::move(m->payload);
	r.fds = std::move(m->fds);
	return r;
}

Reply exchange(Client &c, uint16_t command, std::span<const uint8_t> payload, std::span<const int> fds)
{
	static uint16_t nextId = 0x4000;
	uint16_t id = nextId++;
	std::vector<uint8_t> bytes = frame(id, command, payload);
	Status sent = c.sendRaw(bytes, fds);
	INFO("sending " << vfio_user::commandName(command) << ": " << (sent ? "ok" : sent.error().message));
	REQUIRE(sent);
	Reply r = receiveReply(c);
	REQUIRE((r.header.flags & vfio_user::kFlagTypeMask) == vfio_user::kFlagTypeReply);
	REQUIRE(r.header.msgId == id);
	REQUIRE(r.header.command == command);
	return r;
}

std::string errnoName(int code)
{
	if (code == 0)
		return "0 (no errno)";
	if (code == ENOTSUP)
		return "ENOTSUP"; // glibc names the shared value EOPNOTSUPP; the daemon means ENOTSUP
	const char *name = ::strerrorname_np(code);
	return name ? name : "errno " + std::to_string(code);
}

std::string outcome(const Reply &reply)
{
	if (!reply.isError())
		return "ok";
	CHECK(reply.header.msgSize == sizeof(vfio_user::Header));
	CHECK(reply.payload.empty());
	CHECK(reply.fds.empty());
	return errnoName(static_cast<int>(reply.header.error));
}

std::string outcome(const Error &error)
{
	// The client library words an error reply "server refused ..."; anything else is ours.
	if (error.message.rfind("server refused", 0) == 0)
		return errnoName(error.code);
	return errnoName(error.code) + ": " + error.message;
}

void requireServes(Client &c)
{
	auto info = c.deviceInfo();
	REQUIRE(outcome(info) == "ok");
	REQUIRE(info->numRegions == VFIO_PCI_NUM_REGIONS);
}

void requireClosedByDaemon(Client &c)
{
	auto m = c.receive();
	if (m)
		FAIL("the daemon sent another message (command " << m->header.command << ", flags 0x"
		     << std::hex << m->header.flags << ") instead of closing the connection");
	INFO(m.error().message);
	REQUIRE(m.error().code == ECONNRESET);
}

void requireFreshClientWorks(Daemon &d)
{
	REQUIRE(d.alive());
	Client c = d.connectNegotiated();
	requireServes(c);
}

// --- fds ---

UniqueFd makeEventfd()
{
	UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	REQUIRE(fd);
	return fd;
}

uint64_t takeEventfd(int fd)
{
	uint64_t v = 0;
	if (::read(fd, &v, sizeof(v)) != sizeof(v))
		return 0;
	return v;
}

bool waitEventfd(int fd, int timeoutMs)
{
	pollfd p{ fd, POLLIN, 0 };
	auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
	int n;
	do {
		n = ::poll(&p, 1, msLeft(deadline));
	} while (n < 0 && errno == EINTR);
	return n == 1 && takeEventfd(fd) != 0;
}

Pipe makePipe()
{
	int p[2];
	REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
	return { UniqueFd(p[0]), UniqueFd(p[1]) };
}

GuestMemory::GuestMemory(size_t size, const std::string &name) : size_(size)
{
	static std::atomic<unsigned> counter{ 0 };
	std::string unique = name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
	fd_.reset(::memfd_create(unique.c_str(), MFD_CLOEXEC));
	REQUIRE(fd_);
	REQUIRE(::ftruncate(fd_.get(), static_cast<off_t>(size)) == 0);
	void *p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
	REQUIRE(p != MAP_FAILED);
	data_ = static_cast<uint8_t *>(p);
	mapsName_ = "/memfd:" + unique + " (deleted)";
}

GuestMemory::~GuestMemory()
{
	if (data_)
		::munmap(data_, size_);
}

// --- edu ---

uint32_t read32(Client &c, uint32_t region, uint64_t offset)
{
	uint32_t v = 0;
	REQUIRE(outcome(c.regionRead(region, offset, &v, sizeof(v))) == "ok");
	return v;
}

uint64_t read64(Client &c, uint32_t region, uint64_t offset)
{
	uint64_t v = 0;
	REQUIRE(outcome(c.regionRead(region, offset, &v, sizeof(v))) == "ok");
	return v;
}

uint16_t read16(Client &c, uint32_t region, uint64_t offset)
{
	uint16_t v = 0;
	REQUIRE(outcome(c.regionRead(region, offset, &v, sizeof(v))) == "ok");
	return v;
}

void write32(Client &c, uint32_t region, uint64_t offset, uint32_t value)
{
	REQUIRE(outcome(c.regionWrite(region, offset, &value, sizeof(value))) == "ok");
}

void write64(Client &c, uint32_t region, uint64_t offset, uint64_t value)
{
	REQUIRE(outcome(c.regionWrite(region, offset, &value, sizeof(value))) == "ok");
}

void write16(Client &c, uint32_t region, uint64_t offset, uint16_t value)
{
	REQUIRE(outcome(c.regionWrite(region, offset, &value, sizeof(value))) == "ok");
}

void enableBusMaster(Client &c)
{
	uint16_t cmd = read16(c, kConfig, 0x04);
	write16(c, kConfig, 0x04, cmd | kPciCommandMemory | kPciCommandMaster);
}

void runDma(Client &c, uint64_t src, uint64_t dst, uint32_t count, uint32_t cmd)
{
	write64(c, kBar0, edu::kRegDmaSrc, src);
	write64(c, kBar0, edu::kRegDmaDst, dst);
	write64(c, kBar0, edu::kRegDmaCount, count);
	write32(c, kBar0, edu::kRegDmaCmd, cmd | edu::kDmaStart);
	// The device clears the start bit when it is done (sim:edu before it answers the write).
	auto deadline = Clock::now() + std::chrono::milliseconds(kWaitMs);
	while (read32(c, kBar0, edu::kRegDmaCmd) & edu::kDmaStart)
		if (Clock::now() > deadline)
			FAIL("the edu DMA did not finish within " << kWaitMs << " ms");
}

void dmaToDevice(Client &c, uint64_t iova, uint32_t count)
{
	runDma(c, iova, edu::kDmaBuffer, count, 0);
}

void dmaFromDevice(Client &c, uint64_t iova, uint32_t count)
{
	runDma(c, edu::kDmaBuffer, iova, count, edu::kDmaToRam);
}

void sendFds(int sock, std::span<const int> fds)
{
	char byte = 'F';
	iovec iov{ &byte, 1 };
	alignas(cmsghdr) char control[CMSG_SPACE(16 * sizeof(int))];
	REQUIRE(fds.size() <= 16);
	msghdr msg{};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control;
	msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
	cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
	std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
	REQUIRE(::sendmsg(sock, &msg, MSG_NOSIGNAL) == 1);
}

std::vector<UniqueFd> receiveFds(int sock, size_t max)
{
	char byte;
	iovec iov{ &byte, 1 };
	alignas(cmsghdr) char control[CMSG_SPACE(16 * sizeof(int))];
	msghdr msg{};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control;
	msg.msg_controllen = CMSG_SPACE(std::min<size_t>(max, 16) * sizeof(int));
	pollfd p{ sock, POLLIN, 0 };
	REQUIRE(::poll(&p, 1, kWaitMs) == 1);
	REQUIRE(::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) == 1);
	std::vector<UniqueFd> out;
	for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;
			std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			out.emplace_back(fd);
		}
	}
	return out;
}

} // namespace vfio_broker::test
