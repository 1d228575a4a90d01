// SPDX-License-Identifier: Apache-2.0
// vfio-broker-launch: assign devices to a VM through vfio-brokerd, then run the VMM with their
// vfio-user sockets, and deassign when it exits.
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "client/launcher.h"

using namespace vfio_broker;
using namespace vfio_broker::client;

namespace {

const char kUsage[] =
	"Usage: vfio-broker-launch --vm VM --device DEV [--device DEV ...] [options] [-- VMM ARGS...]\n"
	"\n"
	"Assign the devices to VM through vfio-brokerd and print one line per device:\n"
	"  <device id> <vfio-user socket path>\n"
	"With a VMM command after --, run it instead: every \"{socket}\" in its arguments becomes\n"
	"the next device's socket path, \"{fd}\" a connected socket inherited by the VMM, and the\n"
	"devices are deassigned when it exits (its exit status is ours).\n"
	"\n"
	"  --control PATH   the broker's control socket (default /run/vfio-broker/control.sock)\n"
	"  --vm VM          the VM the devices are for\n"
	"  --device DEV     a device id (pci:0000:01:00.0, 0000:01:00.0, sim:edu); repeatable\n"
	"  --owner U:G      numeric owner of the device sockets: the VMM's user\n"
	"  --identity       identity MMIO mapping (platform devices)\n"
	"  --bind-only      bind to VFIO but start no device daemon: the VMM opens the device\n"
	"                   itself (crosvm launch mode: --vfio <sysfs path>)\n"
	"  --deassign       deassign the devices from VM and exit\n"
	"\n"
	"crosvm launch mode (the VM's platform devices in a guest device-tree overlay):\n"
	"  --crosvm-overlay OUT.dtbo  write the overlay there and print the crosvm arguments\n"
	"                   (\"crosvm args: ...\"); with a VMM command, an argument \"{crosvm-args}\"\n"
	"                   becomes those arguments. Without --device: for the devices the VM holds\n"
	"  --guest-mmio BASE:SIZE     guest window for devices that are not identity-mapped\n"
	"  --first-spi N    first guest GIC SPI (default 0)\n"
	"  --dma-pool BASE:SIZE       a restricted-DMA pool for the DMA-capable devices\n"
	"  -h, --help       this help\n";

int usage(const std::string &why)
{
	std::fprintf(stderr, "vfio-broker-launch: %s\n\n%s", why.c_str(), kUsage);
	return 2;
}

// "BASE:SIZE", each decimal or 0x hex.
bool parseRange(const char *text, uint64_t *base, uint64_t *size)
{
	char *end = nullptr;
	errno = 0;
	*base = std::strtoull(text, &end, 0);
	if (errno || end == text || *end != ':')
		return false;
	const char *rest = end + 1;
	*size = std::strtoull(rest, &end, 0);
	return !errno && end != rest && *end == '\0';
}

// An argument as a shell reads it back: quoted when it holds anything special.
std::string shellQuote(const std::string &arg)
{
	bool plain = !arg.empty();
	for (char c : arg)
		plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || std::strchr("/._-,=:@+%", c));
	if (plain)
		return arg;
	std::string out = "'";
	for (char c : arg)
		out += c == '\'' ? std::string("'\\''") : std::string(1, c);
	return out + "'";
}

} // namespace

int main(int argc, char **argv)
{
	LaunchRequest req;
	CrosvmLaunchRequest crosvm;
	std::string overlayOut;
	bool deassign = false;
	std::vector<std::string> vmm;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		if (a == "-h" || a == "--help") {
			std::fputs(kUsage, stdout);
			return 0;
		} else if (a == "--") {
			vmm.assign(argv + i + 1, argv + argc);
			break;
		} else if (a == "--control" && i + 1 < argc) {
			req.controlSocket = argv[++i];
		} else if (a == "--vm" && i + 1 < argc) {
			req.vm = argv[++i];
		} else if (a == "--device" && i + 1 < argc) {
			req.devices.push_back(argv[++i]);
		} else if (a == "--owner" && i + 1 < argc) {
			unsigned uid, gid;
			if (std::sscanf(argv[++i], "%u:%u", &uid, &gid) != 2)
				return usage("--owner takes numeric UID:GID");
			req.socketUid = uid;
			req.socketGid = gid;
		} else if (a == "--identity") {
			req.identityMapping = true;
		} else if (a == "--bind-only") {
			req.bindOnly = true;
		} else if (a == "--crosvm-overlay" && i + 1 < argc) {
			overlayOut = argv[++i];
		} else if (a == "--guest-mmio" && i + 1 < argc) {
			if (!parseRange(argv[++i], &crosvm.guestMmioBase, &crosvm.guestMmioSize))
				return usage("--guest-mmio takes BASE:SIZE");
		} else if (a == "--dma-pool" && i + 1 < argc) {
			if (!parseRange(argv[++i], &crosvm.dmaPoolBase, &crosvm.dmaPoolSize))
				return usage("--dma-pool takes BASE:SIZE");
		} else if (a == "--first-spi" && i + 1 < argc) {
			char *end = nullptr;
			errno = 0;
			unsigned long spi = std::strtoul(argv[++i], &end, 0);
			if (errno || *end != '\0' || spi > UINT32_MAX)
				return usage("--first-spi takes a number");
			crosvm.firstGuestSpi = static_cast<uint32_t>(spi);
		} else if (a == "--deassign") {
			deassign = true;
		} else {
			return usage("unknown or incomplete argument " + a);
		}
	}
	if (req.vm.empty() || (req.devices.empty() && overlayOut.empty()))
		return usage("--vm and at least one --device (or --crosvm-overlay) are required");
	crosvm.controlSocket = req.controlSocket;
	crosvm.vm = req.vm;
	crosvm.devices = req.devices;
	crosvm.overlayPath = overlayOut;
	// Launch mode without devices: the configuration of what the VM holds, nothing assigned.
	if (req.devices.empty() && !deassign) {
		auto launch = crosvmLaunchConfig(crosvm);
		if (!launch) {
			std::fprintf(stderr, "vfio-broker-launch: %s\n", launch.error().message.c_str());
			return 1;
		}
		if (Status st = writeFileAtomically(overlayOut, launch->overlay); !st) {
			std::fprintf(stderr, "vfio-broker-launch: %s\n", st.error().message.c_str());
			return 1;
		}
		std::string line = "crosvm args:";
		for (const auto &arg : launch->args)
			line += " " + shellQuote(arg);
		std::printf("%s\n", line.c_str());
		return vmm.empty() ? 0 : usage("a VMM command needs --device (its devices are deassigned when it exits)");
	}

	if (deassign) {
		Status s = deassignFromVm(req.controlSocket, req.vm, req.devices);
		if (!s) {
			std::fprintf(stderr, "vfio-broker-launch: %s\n", s.error().message.c_str());
			return 1;
		}
		return 0;
	}

	auto assigned = assignForVm(req);
	if (!assigned) {
		std::fprintf(stderr, "vfio-broker-launch: %s\n", assigned.error().message.c_str());
		return 1;
	}
	std::vector<std::string> crosvmArgs;
	if (!overlayOut.empty()) {
		auto launch = crosvmLaunchConfig(crosvm);
		Status written = launch ? writeFileAtomically(overlayOut, launch->overlay) : Status(launch.error());
		if (!written) {
			std::fprintf(stderr, "vfio-broker-launch: %s\n", written.error().message.c_str());
			(void)deassignFromVm(req.controlSocket, req.vm, req.devices);
			return 1;
		}
		crosvmArgs = launch->args;
		for (const auto &why : launch->skipped)
			std::fprintf(stderr, "vfio-broker-launch: not in the overlay: %s\n", why.c_str());
	}
	if (vmm.empty()) {
		for (const auto &d : *assigned)
			std::printf("%s %s\n", d.deviceId.c_str(), d.socketPath.empty() ? "-" : d.socketPath.c_str());
		if (!overlayOut.empty()) {
			std::string line = "crosvm args:";
			for (const auto &arg : crosvmArgs)
				line += " " + shellQuote(arg);
			std::printf("%s\n", line.c_str());
		}
		return 0;
	}
	// "{crosvm-args}" stands for the whole argument list.
	{
		std::vector<std::string> expanded;
		for (auto &arg : vmm) {
			if (arg == "{crosvm-args}")
				expanded.insert(expanded.end(), crosvmArgs.begin(), crosvmArgs.end());
			else
				expanded.push_back(std::move(arg));
		}
		vmm = std::move(expanded);
	}

	// Substitute placeholders, connecting sockets for {fd}.
	std::vector<UniqueFd> inherited;
	size_t next = 0;
	for (auto &arg : vmm) {
		for (const char *ph : { "{socket}", "{fd}" }) {
			size_t pos;
			while ((pos = arg.find(ph)) != std::string::npos) {
				if (next >= assigned->size()) {
					std::fprintf(stderr, "vfio-broker-launch: more placeholders than devices\n");
					(void)deassignFromVm(req.controlSocket, req.vm, req.devices);
					return 2;
				}
				std::string value = (*assigned)[next].socketPath;
				if (std::string(ph) == "{fd}") {
					auto fd = connectDeviceSocket(value);
					if (!fd) {
						std::fprintf(stderr, "vfio-broker-launch: %s\n", fd.error().message.c_str());
						(void)deassignFromVm(req.controlSocket, req.vm, req.devices);
						return 1;
					}
					value = std::to_string(fd->get());
					inherited.push_back(std::move(*fd));
				}
				arg.replace(pos, std::string(ph).size(), value);
				next++;
			}
		}
	}
	pid_t pid = ::fork();
	if (pid == 0) {
		std::vector<char *> args;
		for (auto &a : vmm)
			args.push_back(a.data());
		args.push_back(nullptr);
		::execvp(args[0], args.data());
		std::fprintf(stderr, "vfio-broker-launch: cannot run %s: %s\n", args[0], strerror(errno));
		::_exit(127);
	}
	inherited.clear(); // the VMM holds them now
	int status = 0;
	while (pid > 0 && ::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	if (Status s = deassignFromVm(req.controlSocket, req.vm, req.devices); !s)
		std::fprintf(stderr, "vfio-broker-launch: %s\n", s.error().message.c_str());
	if (pid < 0)
		return 1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
