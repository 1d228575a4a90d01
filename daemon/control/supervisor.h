// SPDX-License-Identifier: Apache-2.0
// Device daemons: start (spawn or systemd), wait until their socket answers, stop, re-adopt, watch.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "vfio_broker/v1/config.pb.h"

namespace vfio_broker::control {

namespace pb = ::vfio_broker::v1;

struct DaemonSpec {
	std::string deviceId;     // for logs and callbacks
	std::string deviceArg;    // vfio-broker-device --device
	std::string socketPath;   // vfio-broker-device --socket
	std::optional<uint32_t> socketUid, socketGid;
	std::vector<std::string> extraArgs;
};

struct DaemonHandle {
	pid_t pid = 0;
	uint64_t startTime = 0; // /proc/<pid>/stat field 22: tells a recycled pid apart
	std::string unit;       // systemd mode
};

class Supervisor
{
public:
	// onExit(deviceId, handle, wait status or -1 when unknown) runs on the supervisor's
	// watcher thread when a daemon we did not stop ourselves dies.
	using ExitCallback = std::function<void(const std::string &, const DaemonHandle &, int)>;

	Supervisor(const pb::DaemonConfig &config, ExitCallback onExit);
	~Supervisor();

	// Spawn mode: fork/exec vfio-broker-device in its own session with only stdin/out/err
	// (to /dev/null or the log), the ready pipe as fd 3, CLOEXEC everything else, and wait for
	// READY=1 on the pipe, then for the socket to accept a connection. Systemd mode: write the
	// instance's env file, `systemctl start`, read MainPID, wait for the socket. ETIMEDOUT
	// when not ready in time (the daemon is stopped again).
	Result<DaemonHandle> start(const DaemonSpec &spec, std::chrono::milliseconds readyTimeout);

	// SIGTERM (systemd: systemctl stop), wait up to timeout, then SIGKILL. Not reported to
	// onExit. Unknown or already dead: success.
	Status stop(const std::string &deviceId, std::chrono::milliseconds timeout);

	// After a broker restart: is the daemon of this record still ours and alive (pid alive,
	// same start time, socket accepts)? Then watch it again and return true; false when it is
	// gone (the caller cleans up).
	Result<bool> adopt(const std::string &deviceId, const DaemonHandle &handle,
			   const std::string &socketPath);

	// Whether the socket accepts a connection now.
	static bool socketAnswers(const std::string &socketPath);

private:
	void watch();

	pb::DaemonConfig config_;
	ExitCallback onExit_;
	std::mutex lock_;
	struct Watched {
		DaemonHandle handle;
		UniqueFd pidfd;
		bool child; // spawned by this process: reap it
	};
	std::map<std::string, Watched> daemons_;
	UniqueFd wakeFd_; // eventfd: the watcher re-reads daemons_
	std::thread watcher_;
	bool stopping_ = false;
};

// The systemd instance name for a device id ("sim:edu" -> "sim:edu", paths escaped as
// systemd-escape would).
std::string systemdInstanceFor(const std::string &deviceId);

} // namespace vfio_broker::control
