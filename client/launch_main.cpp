// SPDX-License-Identifier: Apache-2.0
// vfio-broker-launch: assign devices to a VM through vfio-brokerd, then run the VMM with their
// vfio-user sockets, and deassign when it exits.
#include <sys/wait.h>
#include <unistd.h>

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
	"  --deassign       deassign the devices from VM and exit\n"
	"  -h, --help       this help\n";

int usage(const std::string &why)
{
	std::fprintf(stderr, "vfio-broker-launch: %s\n\n%s", why.c_str(), kUsage);
	return 2;
}

} // namespace

int main(int argc, char **argv)
{
	LaunchRequest req;
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
		} else if (a == "--deassign") {
			deassign = true;
		} else {
			return usage("unknown or incomplete argument " + a);
		}
	}
	if (req.vm.empty() || req.devices.empty())
		return usage("--vm and at least one --device are required");

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
	if (vmm.empty()) {
		for (const auto &d : *assigned)
			std::printf("%s %s\n", d.deviceId.c_str(), d.socketPath.c_str());
		return 0;
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
