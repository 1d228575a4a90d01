// SPDX-License-Identifier: Apache-2.0
// vfio-broker-dt: inspect a host device tree's passthrough devices and write guest overlays plus
// the crosvm arguments that go with them (launch mode), a thin main over libvb_platform.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "platform/guest_overlay.h"
#include "platform/host_dt.h"
#include "platform/sim_platform_dt.h"

using namespace vfio_broker;
using namespace vfio_broker::platform;

namespace {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

void usage(FILE *out)
{
	std::fprintf(out,
		     "usage: vfio-broker-dt show (--dtb FILE | --sim-platform) [--json] [PATH]\n"
		     "       vfio-broker-dt passthrough (--dtb FILE | --sim-platform) [--json]\n"
		     "       vfio-broker-dt overlay (--dtb FILE | --sim-platform) --device PATH[:identity][:no-dma][:label=L][:sysfs=S]...\n"
		     "                      [--mmio-base ADDR --mmio-size SIZE] [--first-spi N] [--dma-pool ADDR,SIZE]\n"
		     "                      [--gic-label LABEL] [--copy PROP[,PROP...]] -o OUT.dtbo [--crosvm-args]\n"
		     "\n"
		     "show         decode one node (reg translated to host physical, interrupts, iommus, references)\n"
		     "passthrough  list the nodes marked \"vfio-broker,passthrough\" or \"xen,passthrough\"\n"
		     "overlay      write a guest DT overlay for the devices (relocated into the MMIO window unless\n"
		     "             :identity), print each placement as a '#' line and, with --crosvm-args, the\n"
		     "             crosvm arguments, one per line. --sim-platform without --device uses sim:platform.\n");
}

struct Args {
	std::string command;
	std::string dtb;
	bool simPlatform = false;
	bool json = false;
	bool crosvmArgs = false;
	std::string output;
	std::string gicLabel = "intc";
	std::vector<std::string> devices;
	std::vector<std::string> positional;
	OverlayOptions options;
};

Result<uint64_t> parseNumber(const std::string &text, const char *what)
{
	if (text.empty() || text[0] == '-' || text[0] == '+')
		return makeError(EINVAL, "%s: \"%s\" is not a number", what, text.c_str());
	errno = 0;
	char *end = nullptr;
	unsigned long long v = std::strtoull(text.c_str(), &end, 0);
	if (errno != 0 || !end || *end != '\0')
		return makeError(EINVAL, "%s: \"%s\" is not a number", what, text.c_str());
	return static_cast<uint64_t>(v);
}

std::vector<std::string> split(const std::string &text, char sep)
{
	std::vector<std::string> out;
	size_t start = 0;
	for (;;) {
		size_t pos = text.find(sep, start);
		out.push_back(text.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
		if (pos == std::string::npos)
			return out;
		start = pos + 1;
	}
}

// Returns the exit code on failure, or -1 to continue.
int parseArgs(int argc, char **argv, Args *args)
{
	if (argc < 2) {
		usage(stderr);
		return kExitUsage;
	}
	args->command = argv[1];
	if (args->command == "--help" || args->command == "-h" || args->command == "help") {
		usage(stdout);
		return 0;
	}
	if (args->command != "show" && args->command != "passthrough" && args->command != "overlay") {
		std::fprintf(stderr, "vfio-broker-dt: unknown command \"%s\"\n", args->command.c_str());
		usage(stderr);
		return kExitUsage;
	}
	for (int i = 2; i < argc; i++) {
		std::string a = argv[i];
		auto value = [&](const char *name) -> const char * {
			if (i + 1 >= argc) {
				std::fprintf(stderr, "vfio-broker-dt: %s needs a value\n", name);
				return nullptr;
			}
			return argv[++i];
		};
		auto number = [&](const char *name, uint64_t *out) -> bool {
			const char *v = value(name);
			if (!v)
				return false;
			auto n = parseNumber(v, name);
			if (!n) {
				std::fprintf(stderr, "vfio-broker-dt: %s\n", n.error().message.c_str());
				return false;
			}
			*out = *n;
			return true;
		};
		if (a == "--dtb") {
			const char *v = value("--dtb");
			if (!v)
				return kExitUsage;
			args->dtb = v;
		} else if (a == "--sim-platform") {
			args->simPlatform = true;
		} else if (a == "--json") {
			args->json = true;
		} else if (a == "--crosvm-args") {
			args->crosvmArgs = true;
		} else if (a == "-o" || a == "--output") {
			const char *v = value("-o");
			if (!v)
				return kExitUsage;
			args->output = v;
		} else if (a == "--device") {
			const char *v = value("--device");
			if (!v)
				return kExitUsage;
			args->devices.push_back(v);
		} else if (a == "--gic-label") {
			const char *v = value("--gic-label");
			if (!v)
				return kExitUsage;
			args->gicLabel = v;
		} else if (a == "--copy") {
			const char *v = value("--copy");
			if (!v)
				return kExitUsage;
			for (auto &p : split(v, ','))
				if (!p.empty())
					args->options.copyProperties.push_back(p);
		} else if (a == "--mmio-base") {
			if (!number("--mmio-base", &args->options.guestMmioBase))
				return kExitUsage;
		} else if (a == "--mmio-size") {
			if (!number("--mmio-size", &args->options.guestMmioSize))
				return kExitUsage;
		} else if (a == "--first-spi") {
			uint64_t spi = 0;
			if (!number("--first-spi", &spi))
				return kExitUsage;
			if (spi > UINT32_MAX) {
				std::fprintf(stderr, "vfio-broker-dt: --first-spi %" PRIu64 " is out of range\n", spi);
				return kExitUsage;
			}
			args->options.firstGuestSpi = static_cast<uint32_t>(spi);
		} else if (a == "--dma-pool") {
			const char *v = value("--dma-pool");
			if (!v)
				return kExitUsage;
			auto parts = split(v, ',');
			if (parts.size() != 2) {
				std::fprintf(stderr, "vfio-broker-dt: --dma-pool takes ADDR,SIZE\n");
				return kExitUsage;
			}
			auto base = parseNumber(parts[0], "--dma-pool address");
			auto size = parseNumber(parts[1], "--dma-pool size");
			if (!base || !size || *size == 0) {
				std::fprintf(stderr, "vfio-broker-dt: --dma-pool: bad ADDR,SIZE \"%s\"\n", v);
				return kExitUsage;
			}
			args->options.dmaPoolBase = *base;
			args->options.dmaPoolSize = *size;
		} else if (a == "-h" || a == "--help") {
			usage(stdout);
			return 0;
		} else if (!a.empty() && a[0] == '-') {
			std::fprintf(stderr, "vfio-broker-dt: unknown option %s\n", a.c_str());
			usage(stderr);
			return kExitUsage;
		} else {
			args->positional.push_back(a);
		}
	}
	if (args->dtb.empty() == !args->simPlatform) {
		std::fprintf(stderr, "vfio-broker-dt: give exactly one of --dtb FILE and --sim-platform\n");
		return kExitUsage;
	}
	return -1;
}

std::string jsonString(const std::string &s)
{
	std::string out = "\"";
	for (unsigned char c : s) {
		if (c == '"' || c == '\\') {
			out.push_back('\\');
			out.push_back(static_cast<char>(c));
		} else if (c < 0x20 || c >= 0x7f) {
			out += strFormat("\\u%04x", c);
		} else {
			out.push_back(static_cast<char>(c));
		}
	}
	return out + "\"";
}

std::string jsonCells(const std::vector<uint32_t> &cells)
{
	std::string out = "[";
	for (size_t i = 0; i < cells.size(); i++)
		out += strFormat("%s%u", i ? "," : "", cells[i]);
	return out + "]";
}

const char *triggerName(uint32_t flags)
{
	switch (flags & 0xf) {
	case 1:
		return "edge-rising";
	case 2:
		return "edge-falling";
	case 3:
		return "edge-both";
	case 4:
		return "level-high";
	case 8:
		return "level-low";
	default:
		return "trigger-unspecified";
	}
}

std::string cellsText(const std::vector<uint32_t> &cells)
{
	std::string out = "<";
	for (size_t i = 0; i < cells.size(); i++)
		out += strFormat("%s0x%x", i ? " " : "", cells[i]);
	return out + ">";
}

std::string nodeJson(const DtNode &n)
{
	std::string out = "{\"path\":" + jsonString(n.path) + ",\"label\":" + jsonString(n.label) + ",\"compatible\":[";
	for (size_t i = 0; i < n.compatible.size(); i++)
		out += (i ? "," : "") + jsonString(n.compatible[i]);
	out += "],\"status\":" + jsonString(n.status) + ",\"passthrough\":" + (n.passthrough ? "true" : "false");
	out += ",\"reg\":[";
	for (size_t i = 0; i < n.reg.size(); i++)
		out += strFormat("%s{\"address\":%" PRIu64 ",\"size\":%" PRIu64 "}", i ? "," : "", n.reg[i].address,
				 n.reg[i].size);
	out += "],\"interrupts\":[";
	for (size_t i = 0; i < n.interrupts.size(); i++)
		out += std::string(i ? "," : "") + "{\"controller\":" + jsonString(n.interrupts[i].controller) +
		       ",\"specifier\":" + jsonCells(n.interrupts[i].specifier) + "}";
	out += "],\"iommus\":[";
	for (size_t i = 0; i < n.iommus.size(); i++)
		out += std::string(i ? "," : "") + "{\"iommu\":" + jsonString(n.iommus[i].iommu) +
		       ",\"specifier\":" + jsonCells(n.iommus[i].specifier) + "}";
	auto refs = [&](const char *name, const std::vector<DtReference> &list) {
		out += std::string("],\"") + name + "\":[";
		for (size_t i = 0; i < list.size(); i++)
			out += std::string(i ? "," : "") + "{\"provider\":" + jsonString(list[i].provider) +
			       ",\"args\":" + jsonCells(list[i].args) + "}";
	};
	refs("clocks", n.clocks);
	refs("resets", n.resets);
	refs("power_domains", n.powerDomains);
	out += std::string("],\"dma_coherent\":") + (n.dmaCoherent ? "true" : "false") + ",\"properties\":[";
	bool first = true;
	for (const auto &[name, value] : n.properties) {
		out += (first ? "" : ",") + jsonString(name);
		first = false;
	}
	return out + "]}";
}

void printNode(const DtNode &n)
{
	std::printf("%s\n", n.path.c_str());
	if (!n.label.empty())
		std::printf("  label:        %s\n", n.label.c_str());
	std::printf("  compatible:  ");
	for (const auto &c : n.compatible)
		std::printf(" \"%s\"", c.c_str());
	std::printf("\n  status:       %s\n", n.status.c_str());
	std::printf("  passthrough:  %s\n", n.passthrough ? "yes" : "no");
	for (const auto &r : n.reg)
		std::printf("  reg:          0x%" PRIx64 " size 0x%" PRIx64 " (host physical)\n", r.address, r.size);
	for (const auto &irq : n.interrupts) {
		std::printf("  interrupt:    %s %s", irq.controller.c_str(), cellsText(irq.specifier).c_str());
		if (irq.specifier.size() == 3 && irq.specifier[0] <= 1)
			std::printf(" (%s %u, %s)", irq.specifier[0] == 0 ? "SPI" : "PPI", irq.specifier[1],
				    triggerName(irq.specifier[2]));
		std::printf("\n");
	}
	if (n.interrupts.empty())
		std::printf("  interrupts:   none\n");
	for (const auto &m : n.iommus)
		std::printf("  iommu:        %s %s\n", m.iommu.c_str(), cellsText(m.specifier).c_str());
	if (n.iommus.empty())
		std::printf("  iommus:       none\n");
	for (const auto &c : n.clocks)
		std::printf("  clock:        %s\n", c.toString().c_str());
	for (const auto &r : n.resets)
		std::printf("  reset:        %s\n", r.toString().c_str());
	for (const auto &p : n.powerDomains)
		std::printf("  power-domain: %s\n", p.toString().c_str());
	std::printf("  dma-coherent: %s\n", n.dmaCoherent ? "yes" : "no");
	std::printf("  properties:  ");
	for (const auto &[name, value] : n.properties)
		std::printf(" %s", name.c_str());
	std::printf("\n");
}

Result<HostDeviceTree> loadTree(const Args &args)
{
	if (args.simPlatform)
		return simPlatformHostTree();
	return HostDeviceTree::load(args.dtb);
}

int fail(const Error &e)
{
	// errnoError() messages already end with the errno text; makeError() ones get it here.
	std::string reason = std::strerror(e.code);
	bool hasReason = e.message.size() >= reason.size() &&
			 e.message.compare(e.message.size() - reason.size(), reason.size(), reason) == 0;
	if (hasReason)
		std::fprintf(stderr, "vfio-broker-dt: %s\n", e.message.c_str());
	else
		std::fprintf(stderr, "vfio-broker-dt: %s (%s)\n", e.message.c_str(), reason.c_str());
	return kExitError;
}

Status writeFile(const std::string &path, const std::vector<uint8_t> &data)
{
	UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
	if (!fd.isValid())
		return errnoError(errno, "cannot create " + path);
	size_t done = 0;
	while (done < data.size()) {
		ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errnoError(errno, "cannot write " + path);
		}
		done += static_cast<size_t>(n);
	}
	if (::fsync(fd.get()) != 0 && errno != EINVAL)
		return errnoError(errno, "cannot sync " + path);
	return {};
}

// "PATH[:identity][:no-dma][:label=L][:sysfs=S]"
Result<GuestDeviceRequest> parseDevice(const HostDeviceTree &tree, const std::string &spec)
{
	auto parts = split(spec, ':');
	auto node = tree.node(parts[0]);
	if (!node)
		return node.takeError();
	GuestDeviceRequest req;
	req.host = std::move(*node);
	for (size_t i = 1; i < parts.size(); i++) {
		const std::string &p = parts[i];
		if (p == "identity")
			req.identity = true;
		else if (p == "no-dma")
			req.dma = false;
		else if (p.rfind("label=", 0) == 0)
			req.label = p.substr(6);
		else if (p.rfind("sysfs=", 0) == 0)
			req.sysfsPath = p.substr(6);
		else
			return makeError(EINVAL, "--device %s: unknown flag \"%s\" (identity, no-dma, label=L, sysfs=S)",
					 spec.c_str(), p.c_str());
	}
	if (req.host.status != "okay" && req.host.status != "ok")
		std::fprintf(stderr, "vfio-broker-dt: note: %s has status \"%s\" on the host\n", req.host.path.c_str(),
			     req.host.status.c_str());
	return req;
}

int runOverlay(const Args &args, const HostDeviceTree &tree)
{
	if (args.output.empty()) {
		std::fprintf(stderr, "vfio-broker-dt: overlay needs -o OUT.dtbo\n");
		return kExitUsage;
	}
	std::vector<std::string> specs = args.devices;
	if (specs.empty()) {
		if (!args.simPlatform) {
			std::fprintf(stderr, "vfio-broker-dt: overlay needs at least one --device PATH\n");
			return kExitUsage;
		}
		specs.push_back(simPlatformDtPath());
	}
	std::vector<GuestDeviceRequest> requests;
	for (const auto &spec : specs) {
		auto req = parseDevice(tree, spec);
		if (!req)
			return fail(req.error());
		requests.push_back(std::move(*req));
	}
	auto overlay = buildOverlay(requests, args.options, args.gicLabel);
	if (!overlay)
		return fail(overlay.error());
	if (auto st = writeFile(args.output, overlay->dtbo); !st)
		return fail(st.error());
	for (const auto &p : overlay->placements) {
		std::printf("# %s: /%s", p.label.c_str(), p.nodeName.c_str());
		for (const auto &r : p.guestReg)
			std::printf(" reg 0x%" PRIx64 "+0x%" PRIx64, r.address, r.size);
		for (size_t i = 0; i < p.guestSpis.size(); i++)
			std::printf(" spi %u %s", p.guestSpis[i], triggerName(p.guestIrqFlags[i]));
		std::printf("\n");
	}
	if (args.crosvmArgs) {
		for (const auto &req : requests) {
			std::string sysfs = req.sysfsPath.empty() ? platformSysfsPath(req.host) : req.sysfsPath;
			// crosvm's VfioDevice (devices/src/vfio.rs) accepts VFIO_DEVICE_FLAGS_PCI or _PLATFORM
			// devices only; vfio-amba reports VFIO_DEVICE_FLAGS_AMBA.
			if (sysfs.find("/bus/amba/") != std::string::npos)
				std::fprintf(stderr,
					     "vfio-broker-dt: note: %s is an amba device; crosvm refuses vfio-amba devices "
					     "(no VFIO_DEVICE_FLAGS_PLATFORM), use attach mode for it\n",
					     req.host.path.c_str());
		}
		for (const auto &a : crosvmArguments(requests, args.output))
			std::printf("%s\n", a.c_str());
	}
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	Args args;
	if (int rc = parseArgs(argc, argv, &args); rc >= 0)
		return rc;
	auto tree = loadTree(args);
	if (!tree)
		return fail(tree.error());

	if (args.command == "show") {
		std::string path = args.positional.empty() ? (args.simPlatform ? simPlatformDtPath() : "") : args.positional[0];
		if (path.empty() || args.positional.size() > 1) {
			std::fprintf(stderr, "vfio-broker-dt: show takes one node PATH\n");
			return kExitUsage;
		}
		auto node = tree->node(path);
		if (!node)
			return fail(node.error());
		if (args.json)
			std::printf("%s\n", nodeJson(*node).c_str());
		else
			printNode(*node);
		return 0;
	}
	if (args.command == "passthrough") {
		auto nodes = tree->passthroughNodes();
		if (!nodes)
			return fail(nodes.error());
		if (args.json) {
			std::printf("[");
			for (size_t i = 0; i < nodes->size(); i++)
				std::printf("%s%s", i ? "," : "", nodeJson((*nodes)[i]).c_str());
			std::printf("]\n");
		} else {
			for (const auto &n : *nodes)
				printNode(n);
		}
		return 0;
	}
	return runOverlay(args, *tree);
}
