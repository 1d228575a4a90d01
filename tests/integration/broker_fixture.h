// SPDX-License-Identifier: Apache-2.0
// The integration tier's harness: the real vfio-brokerd on a fake sysfs tree with a fake kernel,
// real device daemons (sim:edu), driven over its control socket through gRPC.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "support/fake_sysfs.h"
#include "common/unique_fd.h"
#include "vfio_broker/v1/broker.grpc.pb.h"
#include "vfio_broker/v1/state.pb.h"

namespace vfio_broker::itest {

namespace pb = ::vfio_broker::v1;

// Upper bound of every blocking wait in this tier (broker readiness and exit, RPCs, events,
// helper processes). A hung broker fails a test after this long instead of hanging CI.
constexpr std::chrono::milliseconds kWait{ 10000 };

// The fake host. Every PCI device is 8086:10d3 unless said otherwise; ids as the broker names them.
namespace lab {
inline const std::string kNicA = "pci:0000:01:00.0";      // e1000e, group 1
inline const std::string kNicB = "pci:0000:02:00.0";      // e1000e, group 2
inline const std::string kNicC = "pci:0000:03:00.0";      // igb (8086:1533), group 3
inline const std::string kPair0 = "pci:0000:04:00.0";     // unbound, group 4 with kPair1
inline const std::string kPair1 = "pci:0000:04:00.1";     // unbound, group 4 with kPair0
inline const std::string kHostPair0 = "pci:0000:05:00.0"; // e1000e, group 5 with kHostPair1
inline const std::string kHostPair1 = "pci:0000:05:00.1"; // e1000e, group 5 with kHostPair0
inline const std::string kGpu = "pci:0000:06:00.0";       // nouveau, group 6 with kGpuAudio
inline const std::string kGpuAudio = "pci:0000:06:00.1";  // snd_hda_intel, no rule: never movable
inline const std::string kNoIommu = "pci:0000:07:00.0";   // e1000e, no IOMMU group at all
inline const std::string kNoIommuGroup = "pci:0000:08:00.0"; // e1000e, vfio-noiommu group 8
inline const std::string kIrqA = "pci:0000:09:00.0";      // e1000e, group 9, INTx irq 19
inline const std::string kIrqB = "pci:0000:0a:00.0";      // e1000e, group 10, INTx irq 19 too
inline const std::string kMmioA = "pci:0000:0b:00.0";     // group 11, BAR at 0xfe000000
inline const std::string kMmioB = "pci:0000:0c:00.0";     // group 12, BAR overlapping kMmioA's
inline const std::string kDenied = "pci:0000:0d:00.0";    // virtio-net (1af4:1041), no rule
inline const std::string kWebOnly = "pci:0000:0e:00.0";   // e1000e, group 14, rule: vm "web" only
inline const std::string kQuarantine = "pci:0000:0f:00.0"; // e1000e, group 15, quarantined on deassign
inline const std::string kFailOnExit = "pci:0000:10:00.0"; // e1000e, group 16, daemon exit = FAIL
inline const std::string kTwoRestarts = "pci:0000:11:00.0"; // e1000e, group 17, max_restarts 2
inline const std::string kSim = "sim:edu";
} // namespace lab

// "0000:01:00.0" of "pci:0000:01:00.0".
std::string bdfOf(const std::string &id);

// The policy the lab is built for: a rule per device above (see broker_fixture.cpp).
extern const char kDefaultPolicy[];

struct BrokerOptions {
	std::string policy = kDefaultPolicy; // policy.conf text
	std::string adminGroup;              // admin_group; empty: root only
	std::string extraConfig;             // more brokerd.conf lines
	uint32_t bindTimeoutMs = 1000;       // bind_timeout_ms: how long a refused bind takes to fail
	bool start = true;                   // start the broker in the constructor
	std::string runtimeSubdir = "run";   // runtime_dir, below the fixture's directory
};

// How a helper process ended, with what it wrote.
struct ProcessResult {
	bool exited = false;   // exited normally with `code`
	int code = -1;
	int signal = 0;
	bool timedOut = false; // still running at the bound, then killed
	std::string out, err;
	std::string describe() const;
};

// Run argv to completion (bounded; killed at the bound), stdin from /dev/null. With `uid`,
// the child drops to that uid and `gid` (no supplementary groups) before exec.
ProcessResult runProcess(const std::vector<std::string> &argv, std::chrono::milliseconds limit = kWait,
			 std::optional<std::pair<uid_t, gid_t>> credentials = std::nullopt);

// A required environment variable (the meson test sets them); fails the test when unset.
std::string requireEnv(const char *name);

// Connect to a device daemon's vfio-user socket, negotiate, DEVICE_GET_INFO: "" when the
// daemon serves, else what went wrong.
std::string probeDeviceDaemon(const std::string &socketPath);

// "NOT_FOUND: no device ..." for messages.
std::string describe(const grpc::Status &status);

// Whether `pid` is a live process (not a zombie).
bool processAlive(pid_t pid);

// SIGKILL `pid` through a pidfd (a recycled pid is never hit) and wait (bounded) until it has
// exited; reap it when it is our child (orphaned device daemons are: the fixture makes this
// process their subreaper). False when it was already gone or outlived the bound.
bool killProcess(pid_t pid);

// Mark the running test case as skipped, with the reason. When every test case of a run is
// skipped, the process exits 77, so meson reports SKIP. Use through SKIP_TEST.
void markSkipped(const std::string &reason);
#define SKIP_TEST(reason)                                                        \
	do {                                                                     \
		::vfio_broker::itest::markSkipped(reason);                       \
		WARN("SKIP: " << (reason));                                      \
		return;                                                          \
	} while (0)

template<typename T>
struct Reply {
	grpc::Status status;
	T value;
	bool ok() const { return status.ok(); }
	grpc::StatusCode code() const { return status.error_code(); }
};

struct AssignReply {
	grpc::Status status;
	pb::AssignResponse value;
	// The refusal's conflicts from the "vfio-broker-conflicts-bin" trailer, when present.
	std::optional<pb::CheckAssignmentResponse> conflicts;
	bool ok() const { return status.ok(); }
	grpc::StatusCode code() const { return status.error_code(); }
};

// One WatchEvents stream, read by its own thread into a queue, so reads have a bound.
// Constructed subscribed: the broker sends a stream's headers once it has subscribed it, and
// the constructor waits for them, so every event published after it returns is delivered (a
// refused stream has ended by then: next() says so at once, finished() says why).
class EventWatch
{
public:
	EventWatch(pb::BrokerService::Stub &stub, const std::string &deviceId, const std::string &vm);
	~EventWatch();
	EventWatch(const EventWatch &) = delete;
	EventWatch &operator=(const EventWatch &) = delete;

	// The next event, or nullopt after `limit` or when the stream ended.
	std::optional<pb::Event> next(std::chrono::milliseconds limit = kWait);
	// Events up to and including the first that satisfies `last`; stops early (without it)
	// at the bound or when the stream ends.
	std::vector<pb::Event> until(const std::function<bool(const pb::Event &)> &last,
				     std::chrono::milliseconds limit = kWait);
	// The stream's status once it ended (nullopt while it runs).
	std::optional<grpc::Status> finished();

private:
	grpc::ClientContext ctx_;
	std::unique_ptr<grpc::ClientReader<pb::WatchEventsResponse>> reader_;
	std::thread thread_;
	std::mutex lock_;
	std::condition_variable cv_;
	std::deque<pb::Event> queue_;
	std::optional<grpc::Status> end_;
};

// Event types of a list, for comparisons.
std::vector<pb::EventType> typesOf(const std::vector<pb::Event> &events);
std::string describe(const std::vector<pb::Event> &events);

class BrokerFixture
{
public:
	explicit BrokerFixture(BrokerOptions options = {});
	~BrokerFixture();
	BrokerFixture(const BrokerFixture &) = delete;
	BrokerFixture &operator=(const BrokerFixture &) = delete;

	testing::FakeSysfs &sysfs() { return sysfs_; }
	testing::FakeKernel &kernel() { return *kernel_; }

	const std::string &dir() const { return dir_; } // everything lives here
	std::string controlSocket() const { return dir_ + "/ctl/control.sock"; }
	std::string stateDir() const { return dir_ + "/state"; }
	std::string runtimeDir() const { return dir_ + "/" + options_.runtimeSubdir; }
	std::string configPath() const { return dir_ + "/brokerd.conf"; }
	std::string policyPath() const { return dir_ + "/policy.conf"; }
	std::string logPath() const { return dir_ + "/brokerd.log"; }
	const std::string &brokerd() const { return brokerd_; }

	// (Re)write brokerd.conf and policy.conf; the next start reads them.
	void writeConfig(const std::string &extraConfig = "");
	void writePolicy(const std::string &policy);

	// Start vfio-brokerd and wait (bounded) for READY=1 on our NOTIFY_SOCKET, from the broker's
	// own pid (its device daemons inherit the variable and report there too). Fails the test
	// with the broker's log when it exits or stays silent instead.
	void start();
	// Signal the broker and reap it (bounded; SIGKILL at the bound). Its device daemons live on.
	void kill(int sig = SIGKILL);
	// SIGTERM, as systemd stops it.
	void stop() { kill(SIGTERM); }
	// SIGKILL, then start again on the same directories.
	void restart();
	bool running() const { return pid_ > 0; }
	pid_t pid() const { return pid_; }
	// The wait status of the last broker that ended.
	int lastExitStatus() const { return lastStatus_; }

	// Everything the broker (and its device daemons) wrote to stderr so far.
	std::string log() const;

	pb::BrokerService::Stub &stub() { return *stub_; }
	Reply<pb::ListDevicesResponse> listDevices();
	Reply<pb::GetDeviceResponse> getDevice(const std::string &id);
	Reply<pb::CheckAssignmentResponse> check(const std::string &vm, const std::vector<std::string> &ids,
						 const pb::AssignOptions &options = {});
	AssignReply assign(const std::string &vm, const std::vector<std::string> &ids,
			   const pb::AssignOptions &options = {});
	Reply<pb::DeassignResponse> deassign(const std::string &id, const std::string &vm = "");
	Reply<pb::ReleaseResponse> release(const std::string &id);
	Reply<pb::ListAssignmentsResponse> listAssignments(const std::string &vm = "");
	std::unique_ptr<EventWatch> watch(const std::string &deviceId = "", const std::string &vm = "");

	// Assign that must succeed (the test fails with the status otherwise); its assignments.
	std::vector<pb::Assignment> assignOk(const std::string &vm, const std::vector<std::string> &ids,
					     const pb::AssignOptions &options = {});
	// GetDevice that must succeed.
	pb::Device device(const std::string &id);
	// ListAssignments that must succeed.
	std::vector<pb::Assignment> assignments(const std::string &vm = "");

	// Re-evaluate `condition` each time the broker rewrites its state file (inotify on the
	// state directory), until it holds or the bound passes. The broker persists every change
	// it makes on its own (daemon restarts, failures), so no polling interval is needed.
	bool waitForState(const std::function<bool()> &condition, std::chrono::milliseconds limit = kWait);

	// The persisted state, read from <state_dir>/state.pb.
	pb::BrokerState savedState() const;

	// Live device daemons serving a socket under runtimeDir(), from /proc.
	std::vector<pid_t> deviceDaemons() const;

	// Print the broker's log (what is new since the last print) and the fake kernel's log;
	// called when an assertion fails while this fixture lives.
	void dumpLogs();

private:
	void buildLab();
	void connect();
	void reapBroker(int sig);
	void killLeftovers();
	void tearDown(); // stop the broker, kill what it left, stop the fake kernel

	BrokerOptions options_;
	testing::FakeSysfs sysfs_;
	std::unique_ptr<testing::FakeKernel> kernel_;
	std::string dir_;
	std::string brokerd_, deviceDaemon_;
	UniqueFd notify_; // the NOTIFY_SOCKET we listen on
	pid_t pid_ = -1;
	UniqueFd pidfd_;
	int lastStatus_ = -1;
	std::shared_ptr<grpc::Channel> channel_;
	std::unique_ptr<pb::BrokerService::Stub> stub_;
	size_t logShown_ = 0;
};

} // namespace vfio_broker::itest
