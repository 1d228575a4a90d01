// SPDX-License-Identifier: Apache-2.0
// Command line of vfio-broker-device.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "common/log.h"
#include "common/result.h"
#include "crosvm/attach.h"
#include "server/session.h"

namespace vfio_broker::server {

struct DaemonOptions {
	std::string device;       // --device: PCI address, sysfs path, or sim:NAME
	std::string socketPath;   // --socket
	int fd = -1;              // --fd: inherited listening or connected socket
	mode_t socketMode = 0600; // --socket-mode
	std::optional<uid_t> socketUid;
	std::optional<gid_t> socketGid;
	int readyFd = -1;         // --ready-fd
	bool exitOnDisconnect = false;
	std::string sysfsRoot = "/sys";
	std::string devRoot = "/dev";
	ServerLimits limits;
	log::Level logLevel = log::Level::Info;
	// Attach mode (--crosvm-socket): hand the device to a running crosvm through its control
	// socket instead of serving vfio-user; placement from --guest-region/--guest-irq/--dma-pool.
	std::string crosvmSocket;
	crosvm::AttachConfig attach;
	int crosvmTimeoutMs = 10000; // --crosvm-timeout: per request to crosvm
	bool help = false;
	bool version = false;
};

// Parse argv. Errors name the offending option.
Result<DaemonOptions> parseOptions(int argc, char **argv);
const char *usageText();

} // namespace vfio_broker::server
