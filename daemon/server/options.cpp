// SPDX-License-Identifier: Apache-2.0
// getopt_long parsing of vfio-broker-device's command line, with range-checked numbers.
#include "server/options.h"

#include <getopt.h>
#include <grp.h>
#include <pwd.h>

#include <cctype>
#include <cstdlib>
#include <cstring>

namespace vfio_broker::server {

const char *usageText()
{
	return "Usage: vfio-broker-device --device DEV (--socket PATH | --fd N) [options]\n"
	       "\n"
	       "Serve one passthrough device to one VMM at a time over vfio-user.\n"
	       "\n"
	       "  --device DEV          the device: a PCI address (0000:01:00.0), a sysfs device\n"
	       "                        path, or sim:edu (a simulated QEMU edu device)\n"
	       "  --socket PATH         listen on a new Unix socket at PATH (a stale socket is\n"
	       "                        replaced; a live one is an error)\n"
	       "  --fd N                serve an inherited socket: listening, or already connected\n"
	       "                        to the VMM (launcher mode: exit when it disconnects)\n"
	       "  --socket-mode MODE    permissions of --socket, octal (default 0600)\n"
	       "  --socket-owner U[:G]  owner of --socket, numeric or by name\n"
	       "  --ready-fd N          write \"READY=1\\n\" to fd N and close it once serving\n"
	       "  --exit-on-disconnect  serve a single client, then exit\n"
	       "  --no-mmap             never hand region fds to the client: every access is\n"
	       "                        trapped (slower, but the VMM never holds the device fd)\n"
	       "  --max-dma-maps N      simultaneous DMA mappings per client (default 4096)\n"
	       "  --max-data-xfer N     bytes per REGION_READ/WRITE (default 1048576)\n"
	       "  --max-msg-fds N       file descriptors per message (default 16)\n"
	       "  --sysfs-root DIR      where sysfs is mounted (default /sys)\n"
	       "  --dev-root DIR        where /dev is (default /dev)\n"
	       "  --log-level LEVEL     debug, info, warning or error (default info)\n"
	       "  --version             print the version and exit\n"
	       "  -h, --help            print this help and exit\n"
	       "\n"
	       "Readiness is also reported to systemd when $NOTIFY_SOCKET is set.\n"
	       "SIGTERM or SIGINT: the client is disconnected, its DMA mappings are removed,\n"
	       "interrupts are disabled and the daemon exits.\n";
}

namespace {

Result<uint64_t> parseNumber(const char *opt, const char *text, uint64_t min, uint64_t max, int base = 0)
{
	char *end = nullptr;
	errno = 0;
	unsigned long long v = std::strtoull(text, &end, base);
	if (errno || !end || *end || !*text || text[0] == '-')
		return makeError(EINVAL, "%s: \"%s\" is not a number", opt, text);
	if (v < min || v > max)
		return makeError(ERANGE, "%s: %llu is outside %llu..%llu", opt, v,
				 (unsigned long long)min, (unsigned long long)max);
	return static_cast<uint64_t>(v);
}

Status parseOwner(const char *text, DaemonOptions &o)
{
	std::string s(text);
	std::string user = s.substr(0, s.find(':'));
	std::string group = s.find(':') == std::string::npos ? "" : s.substr(s.find(':') + 1);
	if (!user.empty()) {
		if (passwd *pw = ::getpwnam(user.c_str())) {
			o.socketUid = pw->pw_uid;
		} else {
			auto n = parseNumber("--socket-owner", user.c_str(), 0, UINT32_MAX - 1, 10);
			if (!n)
				return makeError(EINVAL, "--socket-owner: no user \"%s\"", user.c_str());
			o.socketUid = *n;
		}
	}
	if (!group.empty()) {
		if (::group *gr = ::getgrnam(group.c_str())) {
			o.socketGid = gr->gr_gid;
		} else {
			auto n = parseNumber("--socket-owner", group.c_str(), 0, UINT32_MAX - 1, 10);
			if (!n)
				return makeError(EINVAL, "--socket-owner: no group \"%s\"", group.c_str());
			o.socketGid = *n;
		}
	}
	return {};
}

} // namespace

Result<DaemonOptions> parseOptions(int argc, char **argv)
{
	enum {
		kDevice = 1000, kSocket, kFd, kSocketMode, kSocketOwner, kReadyFd, kExitOnDisconnect,
		kNoMmap, kMaxDmaMaps, kMaxDataXfer, kMaxMsgFds, kSysfsRoot, kDevRoot, kLogLevel,
		kVersion,
	};
	static const option longOptions[] = {
		{ "device", required_argument, nullptr, kDevice },
		{ "socket", required_argument, nullptr, kSocket },
		{ "fd", required_argument, nullptr, kFd },
		{ "socket-mode", required_argument, nullptr, kSocketMode },
		{ "socket-owner", required_argument, nullptr, kSocketOwner },
		{ "ready-fd", required_argument, nullptr, kReadyFd },
		{ "exit-on-disconnect", no_argument, nullptr, kExitOnDisconnect },
		{ "no-mmap", no_argument, nullptr, kNoMmap },
		{ "max-dma-maps", required_argument, nullptr, kMaxDmaMaps },
		{ "max-data-xfer", required_argument, nullptr, kMaxDataXfer },
		{ "max-msg-fds", required_argument, nullptr, kMaxMsgFds },
		{ "sysfs-root", required_argument, nullptr, kSysfsRoot },
		{ "dev-root", required_argument, nullptr, kDevRoot },
		{ "log-level", required_argument, nullptr, kLogLevel },
		{ "version", no_argument, nullptr, kVersion },
		{ "help", no_argument, nullptr, 'h' },
		{ nullptr, 0, nullptr, 0 },
	};

	DaemonOptions o;
	optind = 0; // 0, not 1: glibc then also forgets a half-parsed group of short options
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":h", longOptions, nullptr)) != -1) {
		Result<uint64_t> n = uint64_t(0);
		switch (c) {
		case kDevice: o.device = optarg; break;
		case kSocket: o.socketPath = optarg; break;
		case kFd:
			if (!(n = parseNumber("--fd", optarg, 0, INT32_MAX, 10)))
				return n.takeError();
			o.fd = static_cast<int>(*n);
			break;
		case kSocketMode:
			if (!(n = parseNumber("--socket-mode", optarg, 0, 0777, 8)))
				return n.takeError();
			o.socketMode = static_cast<mode_t>(*n);
			break;
		case kSocketOwner:
			if (Status s = parseOwner(optarg, o); !s)
				return s.takeError();
			break;
		case kReadyFd:
			if (!(n = parseNumber("--ready-fd", optarg, 0, INT32_MAX, 10)))
				return n.takeError();
			o.readyFd = static_cast<int>(*n);
			break;
		case kExitOnDisconnect: o.exitOnDisconnect = true; break;
		case kNoMmap: o.limits.allowMmap = false; break;
		case kMaxDmaMaps:
			if (!(n = parseNumber("--max-dma-maps", optarg, 1, 65535)))
				return n.takeError();
			o.limits.maxDmaMaps = static_cast<uint32_t>(*n);
			break;
		case kMaxDataXfer:
			if (!(n = parseNumber("--max-data-xfer", optarg, 8, 16u << 20)))
				return n.takeError();
			o.limits.maxDataXfer = static_cast<uint32_t>(*n);
			break;
		case kMaxMsgFds:
			if (!(n = parseNumber("--max-msg-fds", optarg, 1, 253)))
				return n.takeError();
			o.limits.maxMsgFds = static_cast<uint32_t>(*n);
			break;
		case kSysfsRoot: o.sysfsRoot = optarg; break;
		case kDevRoot: o.devRoot = optarg; break;
		case kLogLevel:
			if (!log::parseLevel(optarg, &o.logLevel))
				return makeError(EINVAL, "--log-level: \"%s\" is not debug, info, warning or error", optarg);
			break;
		case kVersion: o.version = true; break;
		case 'h': o.help = true; break;
		case ':':
			return makeError(EINVAL, "%s needs an argument", argv[optind - 1]);
		default:
			// A bad short option is only in optopt (argv may hold a whole group like -Zh);
			// for long options optopt is 0 or the option's value, and argv names it.
			if (optopt > 0 && optopt < 128 && std::isalnum(optopt))
				return makeError(EINVAL, "unknown option \"-%c\" (see --help)", optopt);
			return makeError(EINVAL, "unknown option \"%s\" (see --help)", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return makeError(EINVAL, "unexpected argument \"%s\" (see --help)", argv[optind]);
	if (o.help || o.version)
		return o;
	if (o.device.empty())
		return makeError(EINVAL, "--device is required (see --help)");
	if (o.socketPath.empty() == (o.fd < 0))
		return makeError(EINVAL, "give exactly one of --socket and --fd");
	if (o.fd >= 0 && o.fd <= 2)
		return makeError(EINVAL, "--fd %d is a standard stream", o.fd);
	if (o.readyFd >= 0 && (o.readyFd <= 2 || o.readyFd == o.fd))
		return makeError(EINVAL, "--ready-fd %d must be another, non-standard fd", o.readyFd);
	return o;
}

} // namespace vfio_broker::server
