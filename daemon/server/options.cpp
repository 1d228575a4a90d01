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
	       "       vfio-broker-device --device DEV --crosvm-socket PATH [placement] [options]\n"
	       "\n"
	       "Serve one passthrough device to one VMM at a time over vfio-user.\n"
	       "\n"
	       "  --device DEV          the device: a PCI address (0000:01:00.0), platform:NAME,\n"
	       "                        amba:NAME, a PCI/platform/AMBA sysfs device path, or\n"
	       "                        sim:edu / sim:platform (simulated devices)\n"
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
	       "\n"
	       "Attach mode (docs/crosvm-attach.md): put the device into a running crosvm\n"
	       "through its control socket (crosvm run -s PATH) instead of serving vfio-user.\n"
	       "  --crosvm-socket PATH  crosvm's control socket\n"
	       "  --guest-region I=ADDR map the mmap-able parts of region I at guest physical\n"
	       "                        ADDR (repeatable; page-aligned, no overlaps)\n"
	       "  --guest-irq I=GSI     wire IRQ index I to the guest's GSI (arm64: the SPI\n"
	       "                        number) with KVM_IRQFD (repeatable)\n"
	       "  --dma-pool FILE,ADDR,SIZE\n"
	       "                        DMA-map FILE (tmpfs/hugetlbfs) at IOVA = guest ADDR;\n"
	       "                        crosvm maps the same file there (--file-backed-mapping)\n"
	       "  --crosvm-timeout MS   bound on each answer from crosvm (default 10000)\n"
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

// "I=VALUE" of --guest-region and --guest-irq.
Result<std::pair<uint32_t, uint64_t>> parseAssignment(const char *opt, const char *text, uint64_t maxValue)
{
	std::string s(text);
	size_t eq = s.find('=');
	if (eq == std::string::npos)
		return makeError(EINVAL, "%s: \"%s\" is not INDEX=VALUE", opt, text);
	auto index = parseNumber(opt, s.substr(0, eq).c_str(), 0, UINT32_MAX, 0);
	if (!index)
		return index.takeError();
	auto value = parseNumber(opt, s.substr(eq + 1).c_str(), 0, maxValue, 0);
	if (!value)
		return value.takeError();
	return std::pair<uint32_t, uint64_t>(static_cast<uint32_t>(*index), *value);
}

// "FILE,ADDR,SIZE"; FILE may itself contain commas, the last two separate the numbers.
Result<crosvm::DmaPool> parseDmaPool(const char *text)
{
	std::string s(text);
	size_t second = s.rfind(',');
	size_t first = second == std::string::npos || second == 0 ? std::string::npos : s.rfind(',', second - 1);
	if (first == std::string::npos || first == 0)
		return makeError(EINVAL, "--dma-pool: \"%s\" is not FILE,ADDR,SIZE", text);
	auto addr = parseNumber("--dma-pool", s.substr(first + 1, second - first - 1).c_str(), 0, UINT64_MAX, 0);
	if (!addr)
		return addr.takeError();
	auto size = parseNumber("--dma-pool", s.substr(second + 1).c_str(), 1, UINT64_MAX, 0);
	if (!size)
		return size.takeError();
	return crosvm::DmaPool{ s.substr(0, first), *addr, *size };
}

} // namespace

Result<DaemonOptions> parseOptions(int argc, char **argv)
{
	enum {
		kDevice = 1000, kSocket, kFd, kSocketMode, kSocketOwner, kReadyFd, kExitOnDisconnect,
		kNoMmap, kMaxDmaMaps, kMaxDataXfer, kMaxMsgFds, kSysfsRoot, kDevRoot, kLogLevel,
		kVersion, kCrosvmSocket, kGuestRegion, kGuestIrq, kDmaPool, kCrosvmTimeout,
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
		{ "crosvm-socket", required_argument, nullptr, kCrosvmSocket },
		{ "guest-region", required_argument, nullptr, kGuestRegion },
		{ "guest-irq", required_argument, nullptr, kGuestIrq },
		{ "dma-pool", required_argument, nullptr, kDmaPool },
		{ "crosvm-timeout", required_argument, nullptr, kCrosvmTimeout },
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
		case kCrosvmSocket: o.crosvmSocket = optarg; break;
		case kGuestRegion: {
			auto a = parseAssignment("--guest-region", optarg, UINT64_MAX);
			if (!a)
				return a.takeError();
			o.attach.regions.push_back({ a->first, a->second });
			break;
		}
		case kGuestIrq: {
			// KVM routes at most KVM_MAX_IRQ_ROUTES (4096) GSIs.
			auto a = parseAssignment("--guest-irq", optarg, 4095);
			if (!a)
				return a.takeError();
			o.attach.irqs.push_back({ a->first, static_cast<uint32_t>(a->second) });
			break;
		}
		case kDmaPool: {
			if (o.attach.dmaPool)
				return makeError(EINVAL, "--dma-pool given twice; one pool per device");
			auto p = parseDmaPool(optarg);
			if (!p)
				return p.takeError();
			o.attach.dmaPool = std::move(*p);
			break;
		}
		case kCrosvmTimeout:
			if (!(n = parseNumber("--crosvm-timeout", optarg, 1, 600000, 10)))
				return n.takeError();
			o.crosvmTimeoutMs = static_cast<int>(*n);
			break;
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
	bool placed = !o.attach.regions.empty() || !o.attach.irqs.empty() || o.attach.dmaPool;
	if (!o.crosvmSocket.empty()) {
		if (!o.socketPath.empty() || o.fd >= 0)
			return makeError(EINVAL, "--crosvm-socket (attach mode) excludes --socket and --fd");
		if (!placed)
			return makeError(EINVAL, "--crosvm-socket needs at least one --guest-region, --guest-irq or --dma-pool");
	} else if (placed) {
		return makeError(EINVAL, "--guest-region, --guest-irq and --dma-pool need --crosvm-socket");
	} else if (o.socketPath.empty() == (o.fd < 0)) {
		return makeError(EINVAL, "give exactly one of --socket and --fd");
	}
	if (o.fd >= 0 && o.fd <= 2)
		return makeError(EINVAL, "--fd %d is a standard stream", o.fd);
	if (o.readyFd >= 0 && (o.readyFd <= 2 || o.readyFd == o.fd))
		return makeError(EINVAL, "--ready-fd %d must be another, non-standard fd", o.readyFd);
	return o;
}

} // namespace vfio_broker::server
