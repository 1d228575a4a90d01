// SPDX-License-Identifier: Apache-2.0
// vfio-brokerd: the control daemon — gRPC API, policy, conflicts, binding, state, device daemons.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/log.h"
#include "common/sd_notify.h"
#include "control/broker.h"
#include "control/config.h"
#include "control/control_server.h"

using namespace vfio_broker;
using namespace vfio_broker::control;

namespace {

const char kUsage[] =
	"Usage: vfio-brokerd [--config FILE] [--check-config] [--ready-fd N] [--log-level LEVEL]\n"
	"\n"
	"The vfio-broker control daemon: assigns passthrough devices to VMs over gRPC.\n"
	"\n"
	"  --config FILE      daemon configuration, protobuf text format\n"
	"                     (default /etc/vfio-broker/brokerd.conf; see configs/brokerd.conf)\n"
	"  --check-config     parse the configuration and the board policy, report, exit\n"
	"  --ready-fd N       write \"READY=1\\n\" to fd N and close it once the control socket\n"
	"                     serves (for launchers without $NOTIFY_SOCKET; both are honoured)\n"
	"  --log-level LEVEL  debug, info, warning or error (default info)\n"
	"  --version          print the version and exit\n"
	"  -h, --help         this help\n"
	"\n"
	"SIGTERM/SIGINT stop the daemon; device daemons keep serving their VMs and are re-adopted\n"
	"on the next start.\n";

int usage(const std::string &why)
{
	std::fprintf(stderr, "vfio-brokerd: %s\n\n%s", why.c_str(), kUsage);
	return 2;
}

// --ready-fd's value: a decimal fd above the standard streams.
bool parseReadyFd(const char *text, int *out)
{
	char *end = nullptr;
	errno = 0;
	long v = std::strtol(text, &end, 10);
	if (errno || end == text || *end || v <= 2 || v > INT_MAX)
		return false;
	*out = static_cast<int>(v);
	return true;
}

} // namespace

int main(int argc, char **argv)
{
	std::string configPath = "/etc/vfio-broker/brokerd.conf";
	bool checkOnly = false;
	int readyFd = -1;
	log::Level level = log::Level::Info;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		if (a == "-h" || a == "--help") {
			std::fputs(kUsage, stdout);
			return 0;
		} else if (a == "--version") {
			std::printf("vfio-brokerd %s\n", VFIO_BROKER_VERSION);
			return 0;
		} else if (a == "--config" && i + 1 < argc) {
			configPath = argv[++i];
		} else if (a == "--check-config") {
			checkOnly = true;
		} else if (a == "--ready-fd" && i + 1 < argc) {
			if (!parseReadyFd(argv[++i], &readyFd))
				return usage(std::string("--ready-fd ") + argv[i] + " is not a file descriptor above 2");
		} else if (a == "--log-level" && i + 1 < argc) {
			if (!log::parseLevel(argv[++i], &level))
				return usage(std::string("bad --log-level ") + argv[i]);
		} else {
			return usage("unknown or incomplete argument " + a);
		}
	}
	log::setLevel(level);
	log::setPrefix("vfio-brokerd");
	// The launcher's end of the readiness pipe must not leak into the device daemons we spawn
	// (the supervisor's allow-list already keeps it out; this also covers any other exec).
	if (readyFd >= 0 && ::fcntl(readyFd, F_SETFD, FD_CLOEXEC) < 0) {
		std::fprintf(stderr, "vfio-brokerd: --ready-fd %d: %s\n", readyFd, strerror(errno));
		return 2;
	}

	// A bad configuration stops us here, before anything is touched.
	auto config = loadDaemonConfig(configPath);
	if (!config) {
		std::fprintf(stderr, "vfio-brokerd: %s\n", config.error().message.c_str());
		return 2;
	}
	auto policy = loadPolicy(config->policy_file());
	if (!policy) {
		std::fprintf(stderr, "vfio-brokerd: %s\n", policy.error().message.c_str());
		return 2;
	}
	if (checkOnly) {
		std::printf("%s: OK\n%s: OK, %d rule(s)\n", configPath.c_str(), config->policy_file().c_str(),
			    policy->rules_size());
		return 0;
	}

	// Signals are taken synchronously by this thread; block them before any thread exists.
	sigset_t signals;
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	pthread_sigmask(SIG_BLOCK, &signals, nullptr);
	::signal(SIGPIPE, SIG_IGN);

	if (::mkdir(config->state_dir().c_str(), 0700) < 0 && errno != EEXIST) {
		LOG_ERROR("creating the state directory %s: %s", config->state_dir().c_str(), strerror(errno));
		return 1;
	}
	auto store = std::make_unique<StateStore>(config->state_dir());
	auto lock = store->lock();
	if (!lock) {
		LOG_ERROR("%s", lock.error().message.c_str());
		return 1;
	}

	Broker::Parts parts;
	parts.config = *config;
	parts.policy = Policy(*policy);
	parts.binder = std::make_unique<Binder>(config->sysfs_root(),
						std::chrono::milliseconds(config->bind_timeout_ms()));
	parts.store = std::move(store);
	Broker broker(std::move(parts));
	if (Status s = broker.recover(); !s) {
		LOG_ERROR("%s", s.error().message.c_str());
		return 1;
	}

	ControlServer server(broker);
	if (Status s = server.start(); !s) {
		LOG_ERROR("%s", s.error().message.c_str());
		return 1;
	}
	LOG_INFO("serving the control API on %s (%d policy rule(s))", config->control_socket().c_str(),
		 policy->rules_size());
	if (readyFd >= 0) {
		if (Status s = notifyReadyFd(readyFd); !s)
			LOG_WARN("%s", s.error().message.c_str());
	}
	if (Status s = sdNotify("READY=1\nSTATUS=serving " + config->control_socket()); !s)
		LOG_WARN("%s", s.error().message.c_str());

	int sig = 0;
	sigwait(&signals, &sig);
	LOG_INFO("%s received, stopping (device daemons keep running)", strsignal(sig));
	(void)sdNotify("STOPPING=1");
	server.shutdown(std::chrono::seconds(2));
	return 0;
}
