// SPDX-License-Identifier: Apache-2.0
// vfio-broker-client: print a vfio-user device's info, access its regions, or run the edu walk-through.
#include <linux/vfio.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "client/edu_sequence.h"
#include "client/sim_platform_sequence.h"
#include "client/soc_sequence.h"
#include "client/vfio_user_client.h"

using namespace vfio_broker;
using namespace vfio_broker::client;

namespace {

const char kUsage[] =
	"Usage: vfio-broker-client COMMAND --socket PATH [options]\n"
	"\n"
	"Commands:\n"
	"  info                      negotiate and print the device, its regions and IRQs\n"
	"  edu                       run the edu walk-through (identify, liveness, factorial,\n"
	"                            INTx, MSI, DMA, blocked DMA, RAM BAR, reset), one line a step\n"
	"  msix-e1000e               MSI-X on QEMU's e1000e: three vectors, IVAR routing\n"
	"  sim-platform              run the sim:platform walk-through (IDs through mmap, trapped\n"
	"                            registers, level IRQ: automask, unmask, unmask eventfd, DMA refused)\n"
	"  pl031                     the PL031 RTC through vfio-amba: PrimeCell IDs (mmap and trapped),\n"
	"                            the level match interrupt with automask and unmask, DMA refused\n"
	"  virtio-mmio               a virtio-mmio transport through vfio-platform: its sub-page region\n"
	"                            read trapped, an interrupt loopback, DMA refused\n"
	"  read REGION OFFSET [N]    read N bytes (default 4) with REGION_READ, print hex\n"
	"  write REGION OFFSET VALUE [N]  write a little-endian VALUE of N bytes (default 4)\n"
	"\n"
	"Options:\n"
	"  --socket PATH             the device daemon's socket (required)\n"
	"  --require-mmap            edu: BAR0 must be mmap-able (real hardware); pl031: its register page\n"
	"  --abort-after STEP        edu, pl031: exit abruptly after STEP, leaving IRQs (and DMA) set up\n"
	"  -h, --help                this help\n"
	"\n"
	"Step lines are \"PASS|FAIL|SKIP <step> <what happened>\", then \"RESULT: PASS n FAIL n\n"
	"SKIP n\". Exit status: 0 when nothing failed, 1 on a failed step, 2 on bad usage.\n";

int usage(const char *why)
{
	std::fprintf(stderr, "vfio-broker-client: %s\n\n%s", why, kUsage);
	return 2;
}

bool parseU64(const char *s, uint64_t *out)
{
	char *end = nullptr;
	errno = 0;
	*out = std::strtoull(s, &end, 0);
	return !errno && end && !*end && *s && *s != '-';
}

void printStep(const StepReport &s)
{
	static const char *tags[] = { "PASS", "FAIL", "SKIP" };
	std::printf("%s %-22s %s\n", tags[static_cast<int>(s.outcome)], s.step.c_str(), s.detail.c_str());
	std::fflush(stdout);
}

int printSummary(const EduSummary &s)
{
	std::printf("RESULT: PASS %u FAIL %u SKIP %u\n", s.passed, s.failed, s.skipped);
	return s.failed ? 1 : 0;
}

int cmdInfo(Client &c)
{
	auto v = c.negotiate();
	if (!v) {
		std::fprintf(stderr, "vfio-broker-client: %s\n", v.error().message.c_str());
		return 1;
	}
	std::printf("vfio-user %u.%u, server capabilities %s\n", v->major, v->minor, v->json.c_str());
	auto info = c.deviceInfo();
	if (!info) {
		std::fprintf(stderr, "vfio-broker-client: %s\n", info.error().message.c_str());
		return 1;
	}
	std::printf("device: flags 0x%x (%s%s), %u regions, %u IRQ types\n", info->flags,
		    info->flags & VFIO_DEVICE_FLAGS_PCI ? "pci"
		    : info->flags & VFIO_DEVICE_FLAGS_PLATFORM ? "platform"
		    : info->flags & VFIO_DEVICE_FLAGS_AMBA ? "amba" : "other",
		    info->flags & VFIO_DEVICE_FLAGS_RESET ? ", reset" : "", info->numRegions, info->numIrqs);
	for (uint32_t i = 0; i < info->numRegions; i++) {
		auto r = c.regionInfo(i);
		if (!r) {
			std::printf("  region %u: %s\n", i, r.error().message.c_str());
			continue;
		}
		if (!r->size)
			continue;
		std::printf("  region %u: size 0x%llx flags 0x%x%s%s%s%s%s\n", i, (unsigned long long)r->size,
			    r->flags, r->flags & VFIO_REGION_INFO_FLAG_READ ? " read" : "",
			    r->flags & VFIO_REGION_INFO_FLAG_WRITE ? " write" : "",
			    r->flags & VFIO_REGION_INFO_FLAG_MMAP ? " mmap" : "",
			    r->fd ? " (fd received)" : "", r->msixMappable ? " msix-mappable" : "");
		for (const auto &a : r->sparse)
			std::printf("    sparse mmap area 0x%llx+0x%llx\n", (unsigned long long)a.offset,
				    (unsigned long long)a.size);
	}
	for (uint32_t i = 0; i < info->numIrqs; i++) {
		auto q = c.irqInfo(i);
		if (q && q->count)
			std::printf("  irq index %u: count %u flags 0x%x%s%s\n", i, q->count, q->flags,
				    q->flags & VFIO_IRQ_INFO_MASKABLE ? " maskable" : "",
				    q->flags & VFIO_IRQ_INFO_AUTOMASKED ? " automasked" : "");
	}
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	std::string command, socket, abortAfter;
	bool requireMmap = false;
	std::vector<std::string> positional;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		if (a == "-h" || a == "--help") {
			std::fputs(kUsage, stdout);
			return 0;
		} else if (a == "--socket" && i + 1 < argc) {
			socket = argv[++i];
		} else if (a == "--abort-after" && i + 1 < argc) {
			abortAfter = argv[++i];
		} else if (a == "--require-mmap") {
			requireMmap = true;
		} else if (a.rfind("--", 0) == 0) {
			return usage(("unknown or incomplete option " + a).c_str());
		} else if (command.empty()) {
			command = a;
		} else {
			positional.push_back(a);
		}
	}
	if (command.empty())
		return usage("no command");
	if (socket.empty())
		return usage("--socket is required");

	auto client = Client::connect(socket);
	if (!client) {
		std::fprintf(stderr, "vfio-broker-client: %s\n", client.error().message.c_str());
		return 1;
	}
	EduOptions opts;
	opts.requireMmap = requireMmap;
	opts.abortAfter = abortAfter;
	opts.report = printStep;

	if (command == "info")
		return cmdInfo(*client);
	if (command == "edu")
		return printSummary(runEduSequence(*client, opts));
	if (command == "msix-e1000e")
		return printSummary(runE1000eMsix(*client, opts));
	if (command == "sim-platform") {
		SimPlatformOptions sim;
		sim.report = printStep;
		return printSummary(runSimPlatformSequence(*client, sim));
	}
	if (command == "pl031" || command == "virtio-mmio") {
		SocOptions soc;
		soc.requireMmap = requireMmap;
		soc.abortAfter = abortAfter;
		soc.report = printStep;
		return printSummary(command == "pl031" ? runPl031Sequence(*client, soc)
						       : runVirtioMmioSequence(*client, soc));
	}
	if (command == "read" || command == "write") {
		uint64_t region, offset, value = 0, size = 4;
		bool isWrite = command == "write";
		size_t need = isWrite ? 3 : 2;
		if (positional.size() < need || positional.size() > need + 1 ||
		    !parseU64(positional[0].c_str(), &region) || !parseU64(positional[1].c_str(), &offset) ||
		    (isWrite && !parseU64(positional[2].c_str(), &value)) ||
		    (positional.size() == need + 1 && !parseU64(positional[need].c_str(), &size)))
			return usage("read REGION OFFSET [N] / write REGION OFFSET VALUE [N]");
		if (size == 0 || size > (isWrite ? 8u : 1u << 20))
			return usage("N is 1..8 for write, 1..1048576 for read");
		if (auto v = client->negotiate(); !v) {
			std::fprintf(stderr, "vfio-broker-client: %s\n", v.error().message.c_str());
			return 1;
		}
		Status s;
		std::vector<uint8_t> buf(size);
		if (isWrite) {
			std::memcpy(buf.data(), &value, size);
			s = client->regionWrite(region, offset, buf.data(), size);
		} else {
			s = client->regionRead(region, offset, buf.data(), size);
		}
		if (!s) {
			std::fprintf(stderr, "vfio-broker-client: %s\n", s.error().message.c_str());
			return 1;
		}
		if (!isWrite) {
			for (size_t i = 0; i < size; i++)
				std::printf("%02x%s", buf[i], (i + 1) % 16 == 0 || i + 1 == size ? "\n" : " ");
		}
		return 0;
	}
	return usage(("unknown command " + command).c_str());
}
