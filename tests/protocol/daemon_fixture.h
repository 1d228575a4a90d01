// SPDX-License-Identifier: Apache-2.0
// The protocol tier's harness: runs the real vfio-broker-device on sim:edu and gives tests
// time-bounded clients, raw message framing, and eventfd/memfd/edu helpers.
#pragma once

#include <linux/vfio.h>
#include <sys/types.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "client/vfio_user_client.h"
#include "common/unique_fd.h"
#include "vfio_user/protocol.h"

namespace vfio_broker::test {

using client::Client;
using vfio_user::Command;

// Upper bound on every blocking wait in this tier (daemon start and exit, replies, interrupts).
// A hung daemon fails the test after this long instead of hanging CI.
constexpr int kWaitMs = 10000;

// QEMU's edu device (docs/specs/edu.rst), written down here from the spec rather than taken
// from the simulation, so a wrong constant in sim:edu cannot agree with itself.
namespace edu {
constexpr uint32_t kId = 0x010000ed;
constexpr uint32_t kRegId = 0x00, kRegLiveness = 0x04, kRegFactorial = 0x08, kRegStatus = 0x20;
constexpr uint32_t kRegIrqStatus = 0x24, kRegIrqRaise = 0x60, kRegIrqAck = 0x64;
constexpr uint32_t kRegDmaSrc = 0x80, kRegDmaDst = 0x88, kRegDmaCount = 0x90, kRegDmaCmd = 0x98;
constexpr uint32_t kStatusIrqOnFactorial = 0x80;
constexpr uint32_t kDmaStart = 0x1, kDmaToRam = 0x2, kDmaIrq = 0x4;
constexpr uint32_t kIrqDma = 0x100;
constexpr uint64_t kDmaBuffer = 0x40000; // the device's internal 4 KiB buffer
constexpr uint64_t kBar0Size = 1 << 20;
// sim:edu's RAM-like BAR: 64 KiB of shared memory whose last page stays trapped.
constexpr uint32_t kRamBar = VFIO_PCI_BAR2_REGION_INDEX;
constexpr uint64_t kRamBarSize = 64 * 1024;
constexpr uint64_t kRamBarMmapSize = 0xf000;
} // namespace edu

constexpr uint32_t kBar0 = VFIO_PCI_BAR0_REGION_INDEX;
constexpr uint32_t kConfig = VFIO_PCI_CONFIG_REGION_INDEX;
constexpr uint32_t kIntx = VFIO_PCI_INTX_IRQ_INDEX;
constexpr uint32_t kMsi = VFIO_PCI_MSI_IRQ_INDEX;
constexpr uint16_t kPciCommandMemory = 1u << 1, kPciCommandMaster = 1u << 2;
constexpr uint16_t kPciCommandIntxDisable = 1u << 10;
constexpr uint32_t kDmaRw = vfio_user::kDmaMapFlagRead | vfio_user::kDmaMapFlagWrite;
constexpr uint64_t kPage = 4096;

// A private directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir
{
public:
	TempDir();
	~TempDir();
	TempDir(const TempDir &) = delete;
	TempDir &operator=(const TempDir &) = delete;

	const std::string &path() const { return path_; }
	std::string file(const std::string &name) const { return path_ + "/" + name; }

private:
	std::string path_;
};

struct ExitStatus {
	bool exited = false;   // exited normally, with `code`
	int code = -1;
	int signal = 0;        // killed by this signal
	bool timedOut = false; // still running at the bound (then killed with SIGKILL)

	bool clean() const { return exited && code == 0; }
	// "exited 0", "exited 2", "killed by SIGSEGV", "did not exit within 10000 ms"
	std::string describe() const;
};

// A child process with a pidfd, so every wait for it has an upper bound.
class ChildProcess
{
public:
	ChildProcess() = default;
	// Fork and exec argv[0] with exactly the given fds: each (fd here, number in the child);
	// everything else is closed. Signal dispositions and mask are reset to the defaults.
	static ChildProcess spawn(const std::vector<std::string> &argv,
				  const std::vector<std::pair<int, int>> &fds);
	// Take over a child forked by the caller.
	static ChildProcess adopt(pid_t pid);
	~ChildProcess(); // SIGKILL and reap when still running: a failed test leaves nothing behind
	ChildProcess(ChildProcess &&other) noexcept;
	ChildProcess &operator=(ChildProcess &&other) noexcept;

	pid_t pid() const { return pid_; }
	bool running(); // waitpid(WNOHANG); reaps the child when it has exited
	bool reaped() const { return reaped_; }
	const ExitStatus &status() const { return status_; }
	// Wait up to timeoutMs for the exit; returns the status (timedOut when still running).
	ExitStatus wait(int timeoutMs = kWaitMs);
	void kill(int sig);

private:
	pid_t pid_ = -1;
	UniqueFd pidfd_;
	bool reaped_ = false;
	ExitStatus status_;
};

struct DaemonConfig {
	DaemonConfig(std::initializer_list<std::string> extra = {}) : args(extra) {}

	std::vector<std::string> args;             // appended after the standard arguments
	bool device = true;                        // --device sim:edu
	bool socket = true;                        // --socket <dir>/dev.sock
	bool readyFd = true;                       // --ready-fd 3
	bool waitReady = true;                     // block until READY=1 (else: the test waits for exit)
	std::vector<std::pair<int, int>> inherit;  // (fd here, number in the daemon), numbers >= 4
};

// vfio-broker-device from $VFIO_BROKER_DEVICE, started on sim:edu and ready to serve. The
// destructor stops it with SIGTERM and requires a clean exit (status 0, no signal); when the
// test failed, the daemon's log is printed.
class Daemon
{
public:
	explicit Daemon(const DaemonConfig &config = {});
	~Daemon();
	Daemon(const Daemon &) = delete;
	Daemon &operator=(const Daemon &) = delete;

	const std::string &socketPath() const { return socketPath_; }
	const TempDir &dir() const { return dir_; }
	pid_t pid() const { return process_.pid(); }
	std::string log() const; // everything it wrote to stdout and stderr so far

	bool alive() { return process_.running(); }
	// SIGTERM, then a bounded wait. Afterwards the destructor checks nothing more.
	ExitStatus stop();
	// Wait for the daemon to exit by itself (bad invocations, --exit-on-disconnect, --fd peers).
	ExitStatus waitExit(int timeoutMs = kWaitMs);
	// After exit: what the daemon wrote to --ready-fd (empty when it never got ready).
	std::string readyText() const { return readyText_; }

	// A connected client with send/receive timeouts; not yet negotiated.
	Client connect();
	// Connected, VERSION negotiated with the client library's default capabilities.
	Client connectNegotiated();

	// Inspecting the daemon from outside: open fds, and whether its address space maps a file.
	size_t openFds() const;
	bool mapsFile(const std::string &needle) const;

private:
	void collectReady(int timeoutMs, bool untilEof);

	TempDir dir_;
	std::string socketPath_;
	std::string logPath_;
	UniqueFd readyPipe_;
	std::string readyText_;
	ChildProcess process_;
};

// Connect to a Unix socket with send/receive timeouts set (REQUIREs success).
Client connectTo(const std::string &path);
// Wrap a connected socket, with send/receive timeouts set.
Client adoptClient(UniqueFd socket);
void setTimeouts(int fd, int timeoutMs = kWaitMs);

// --- raw messages ---

template<typename T>
std::vector<uint8_t> bytesOf(const T &value, std::span<const uint8_t> tail = {})
{
	std::vector<uint8_t> out(sizeof(T) + tail.size());
	std::memcpy(out.data(), &value, sizeof(T));
	if (!tail.empty())
		std::memcpy(out.data() + sizeof(T), tail.data(), tail.size());
	return out;
}

inline std::vector<uint8_t> bytesOf(const std::string &text)
{
	return std::vector<uint8_t>(text.begin(), text.end());
}

// Header + payload. msgSize is the true size unless given.
std::vector<uint8_t> frame(uint16_t msgId, uint16_t command, std::span<const uint8_t> payload,
			   uint32_t flags = vfio_user::kFlagTypeCommand, int64_t msgSize = -1);
inline std::vector<uint8_t> frame(uint16_t msgId, Command command, std::span<const uint8_t> payload,
				  uint32_t flags = vfio_user::kFlagTypeCommand, int64_t msgSize = -1)
{
	return frame(msgId, static_cast<uint16_t>(command), payload, flags, msgSize);
}

struct Reply {
	vfio_user::Header header{};
	std::vector<uint8_t> payload;
	std::vector<UniqueFd> fds;

	bool isError() const { return header.flags & vfio_user::kFlagError; }
	template<typename T>
	T as() const
	{
		T v{};
		REQUIRE(payload.size() >= sizeof(T));
		std::memcpy(&v, payload.data(), sizeof(T));
		return v;
	}
};

// Send one command as raw bytes (any payload, any fds) and return its reply, REQUIRing that a
// reply with the same message id and command arrives in time.
Reply exchange(Client &c, uint16_t command, std::span<const uint8_t> payload,
	       std::span<const int> fds = {});
inline Reply exchange(Client &c, Command command, std::span<const uint8_t> payload,
		      std::span<const int> fds = {})
{
	return exchange(c, static_cast<uint16_t>(command), payload, fds);
}
// The next message from the daemon, REQUIREd to arrive in time.
Reply receiveReply(Client &c);

// "ok", or the errno's name ("EINVAL") of an error reply; an error reply is also CHECKed to
// carry nothing but the header, as the spec demands.
std::string outcome(const Reply &reply);
// "ok", or the errno's name of the server's refusal; a transport failure reads
// "ECONNRESET: <what happened>" so it cannot pass for a refusal.
std::string outcome(const Error &error);
inline std::string outcome(const Status &s)
{
	return s ? "ok" : outcome(s.error());
}
template<typename T>
std::string outcome(const Result<T> &r)
{
	return r ? "ok" : outcome(r.error());
}
std::string errnoName(int code);

// The connection still answers a valid request correctly.
void requireServes(Client &c);
// The daemon hung up on this connection (EOF or reset), within the bound.
void requireClosedByDaemon(Client &c);
// The daemon is alive and a new connection negotiates and works.
void requireFreshClientWorks(Daemon &d);

// --- fds of every kind ---

UniqueFd makeEventfd();
// Non-blocking: the eventfd's counter (consumed), 0 when it was not signalled. sim:edu
// signals before it sends the reply to the request that raised the interrupt, so after that
// reply this tells "signalled" from "not signalled" without any waiting.
uint64_t takeEventfd(int fd);
// Wait (bounded) for a signal; true when one came.
bool waitEventfd(int fd, int timeoutMs = kWaitMs);

struct Pipe {
	UniqueFd readEnd, writeEnd;
};
Pipe makePipe();

// "Guest memory": a named memfd of `size` bytes, mapped here.
class GuestMemory
{
public:
	explicit GuestMemory(size_t size, const std::string &name = "proto-guest");
	~GuestMemory();
	GuestMemory(const GuestMemory &) = delete;
	GuestMemory &operator=(const GuestMemory &) = delete;

	int fd() const { return fd_.get(); }
	uint8_t *data() const { return data_; }
	size_t size() const { return size_; }
	// The name /proc/<pid>/maps shows for mappings of this memfd (unique per object).
	const std::string &mapsName() const { return mapsName_; }

private:
	UniqueFd fd_;
	uint8_t *data_ = nullptr;
	size_t size_ = 0;
	std::string mapsName_;
};

// --- edu through the client library, REQUIRing success ---

uint32_t read32(Client &c, uint32_t region, uint64_t offset);
uint64_t read64(Client &c, uint32_t region, uint64_t offset);
uint16_t read16(Client &c, uint32_t region, uint64_t offset);
void write32(Client &c, uint32_t region, uint64_t offset, uint32_t value);
void write64(Client &c, uint32_t region, uint64_t offset, uint64_t value);
void write16(Client &c, uint32_t region, uint64_t offset, uint16_t value);
// Memory decoding and bus mastering on, as a driver's probe does.
void enableBusMaster(Client &c);
// Program one edu DMA and wait (bounded) for the device to finish it.
void runDma(Client &c, uint64_t src, uint64_t dst, uint32_t count, uint32_t cmd);
// Copy `count` bytes: guest IOVA -> device buffer, then device buffer -> guest IOVA.
void dmaToDevice(Client &c, uint64_t iova, uint32_t count);
void dmaFromDevice(Client &c, uint64_t iova, uint32_t count);

// Send fds over a Unix socket with one byte of data, and receive them (tests that hand fds
// between processes).
void sendFds(int sock, std::span<const int> fds);
std::vector<UniqueFd> receiveFds(int sock, size_t max);

} // namespace vfio_broker::test
