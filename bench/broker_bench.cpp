// SPDX-License-Identifier: Apache-2.0
// broker-bench: control-plane latencies of a real vfio-brokerd over its gRPC socket — Assign
// until the device daemon's socket answers, Deassign, CheckAssignment and ListDevices with
// thousands of PCI devices in a generated sysfs tree. A benchmark, not a test: it asserts
// nothing about speed; it fails only when the broker refuses or garbles a request.
//
// Every Assign forks a device daemon, so its floor is not a socket round trip but the start of
// vfio-broker-device itself: the bench measures that too, interleaved with the Assigns (spawn
// with --ready-fd, wait for READY=1, connect, SIGTERM, reap); a trivial RPC is the floor of
// the other calls. The fake tree is laid out as the kernel lays out /sys (bus links, driver links, IOMMU
// group links, attribute files), so the broker reads it exactly as it reads a real host.
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ftw.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "vfio_broker/v1/broker.grpc.pb.h"

extern char **environ;

#ifndef BROKER_BENCH_BROKERD
#define BROKER_BENCH_BROKERD "vfio-brokerd"
#endif
#ifndef BROKER_BENCH_DEVICE_DAEMON
#define BROKER_BENCH_DEVICE_DAEMON "vfio-broker-device"
#endif

namespace vfio_broker::bench {

namespace {

namespace pb = ::vfio_broker::v1;

constexpr int kReadyTimeoutMs = 30000;
constexpr int kRpcTimeoutMs = 60000;
// Endpoints per generated bus: 32 slots of 4 functions; the 4 functions of a slot share one
// IOMMU group, as a multi-function device without ACS does.
constexpr unsigned kFunctionsPerSlot = 4;
constexpr unsigned kSlotsPerBus = 32;
constexpr unsigned kEndpointsPerBus = kSlotsPerBus * kFunctionsPerSlot;
// The fake devices' PCI id; the policy allows it for any VM.
constexpr unsigned kVendor = 0x1b36, kDevice = 0x0010;

struct Options {
	std::string brokerdPath;
	std::string daemonPath;
	std::string stateDir; // where the temporary directory for the broker's state goes
	std::string runDir;   // where the one for the sysfs tree, sockets and config files goes
	unsigned devices = 10000;
	unsigned held = 8;
	unsigned assigns = 100;
	unsigned checks = 2000;
	unsigned lists = 10;
	unsigned warmup = 5;
	bool keep = false;
};

uint64_t nowNs()
{
	timespec ts;
	::clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + ts.tv_nsec;
}

// ---------------------------------------------------------------- statistics

struct Stats {
	std::vector<double> us; // one sample per call, microseconds

	void add(uint64_t ns) { us.push_back(static_cast<double>(ns) / 1000.0); }

	double percentile(double p) const
	{
		if (us.empty())
			return 0;
		std::vector<double> v = us;
		size_t k = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * v.size()));
		std::nth_element(v.begin(), v.begin() + k, v.end());
		return v[k];
	}
	double mean() const
	{
		double sum = 0;
		for (double v : us)
			sum += v;
		return us.empty() ? 0 : sum / us.size();
	}
	double min() const { return us.empty() ? 0 : *std::min_element(us.begin(), us.end()); }
	double max() const { return us.empty() ? 0 : *std::max_element(us.begin(), us.end()); }
};

// "1234 us" below 10 ms, "12.3 ms" above.
std::string human(double us)
{
	return us < 10000 ? strFormat("%.0f us", us) : strFormat("%.1f ms", us / 1000.0);
}

void printStats(const char *label, const Stats &s)
{
	std::printf("  %-28s n=%-5zu p50 %-9s p99 %-9s mean %-9s min %-9s max %s\n", label, s.us.size(),
		    human(s.percentile(50)).c_str(), human(s.percentile(99)).c_str(), human(s.mean()).c_str(),
		    human(s.min()).c_str(), human(s.max()).c_str());
}

// ---------------------------------------------------------------- files

Status writeFile(const std::string &path, const std::string &data)
{
	UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
	if (!fd)
		return errnoError(errno, "creating " + path);
	if (::write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size()))
		return errnoError(errno, "writing " + path);
	return {};
}

Status makeDir(const std::string &path)
{
	if (::mkdir(path.c_str(), 0755) < 0 && errno != EEXIST)
		return errnoError(errno, "mkdir " + path);
	return {};
}

Status makeLink(const std::string &target, const std::string &path)
{
	if (::symlink(target.c_str(), path.c_str()) < 0)
		return errnoError(errno, "symlink " + path + " -> " + target);
	return {};
}

Status removeTree(const std::string &path)
{
	int rc = ::nftw(path.c_str(), [](const char *p, const struct stat *, int, FTW *) { return ::remove(p); }, 64,
			FTW_DEPTH | FTW_PHYS);
	if (rc != 0 && errno != ENOENT)
		return errnoError(errno, "removing " + path);
	return {};
}

// ---------------------------------------------------------------- the fake sysfs tree

// One PCI function in the tree.
struct FakeDevice {
	std::string bdf;
	std::string parent; // directory below <root>/devices holding it ("pci0000:00/0000:00:01.0")
	std::string driver; // "" = unbound
	unsigned group;
	unsigned irq; // 0 = none
	unsigned vendor, device;
	bool bridge;
};

// A kernel-style attribute set for one device: what inventory.cpp and vfio_sysfs.cpp read.
Status writeDevice(const std::string &root, const FakeDevice &d)
{
	const std::string rel = "devices/" + d.parent + "/" + d.bdf;
	const std::string dir = root + "/" + rel;
	if (Status s = makeDir(dir); !s)
		return s;
	// Levels from the device directory back up to the root ("devices/<parent...>/<bdf>").
	std::string up;
	for (char c : rel)
		if (c == '/')
			up += "../";
	up += "../";
	struct Attr {
		const char *name;
		std::string value;
	};
	// 6 BARs, the ROM, 4 bridge windows and 6 IOV BARs: 17 lines as Linux 6.1 prints them,
	// BAR0 a 16 KiB 64-bit memory BAR (flags IORESOURCE_MEM | MEM_64 | SIZEALIGN).
	std::string resource;
	uint64_t bar0 = 0xfe000000ull + (static_cast<uint64_t>(std::hash<std::string>{}(d.bdf) % 0x1000000) & ~0x3fffull);
	for (int i = 0; i < 17; i++) {
		if (i == 0 && !d.bridge)
			resource += strFormat("0x%016" PRIx64 " 0x%016" PRIx64 " 0x%016" PRIx64 "\n", bar0,
					      bar0 + 0x3fff, static_cast<uint64_t>(0x140204));
		else
			resource += "0x0000000000000000 0x0000000000000000 0x0000000000000000\n";
	}
	// The first 64 bytes of config space, as unprivileged readers get them: ids, class,
	// header type, interrupt pin (0x3d) = INTA when the device has a legacy interrupt.
	std::string config(64, '\0');
	config[0] = static_cast<char>(d.vendor & 0xff);
	config[1] = static_cast<char>(d.vendor >> 8);
	config[2] = static_cast<char>(d.device & 0xff);
	config[3] = static_cast<char>(d.device >> 8);
	config[0x0b] = d.bridge ? 0x06 : 0x01; // bridge, or mass storage
	config[0x0e] = d.bridge ? 0x01 : 0x00;
	config[0x3d] = d.irq ? 1 : 0;
	const Attr attrs[] = {
		{ "vendor", strFormat("0x%04x\n", d.vendor) },
		{ "device", strFormat("0x%04x\n", d.device) },
		{ "class", d.bridge ? "0x060400\n" : "0x010802\n" },
		{ "resource", resource },
		{ "irq", strFormat("%u\n", d.irq) },
		{ "config", config },
		{ "reset", "" },
		{ "reset_method", d.bridge ? "pm\n" : "flr bus\n" },
		{ "driver_override", "(null)\n" },
	};
	for (const Attr &a : attrs)
		if (Status s = writeFile(dir + "/" + a.name, a.value); !s)
			return s;
	if (!d.driver.empty())
		if (Status s = makeLink(up + "bus/pci/drivers/" + d.driver, dir + "/driver"); !s)
			return s;
	const std::string group = std::to_string(d.group);
	if (Status s = makeLink(up + "kernel/iommu_groups/" + group, dir + "/iommu_group"); !s)
		return s;
	if (Status s = makeLink("../../../" + rel, root + "/bus/pci/devices/" + d.bdf); !s)
		return s;
	const std::string groupDir = root + "/kernel/iommu_groups/" + group;
	if (Status s = makeDir(groupDir); !s)
		return s;
	if (Status s = makeDir(groupDir + "/devices"); !s)
		return s;
	if (Status s = writeFile(groupDir + "/type", "DMA\n"); !s)
		return s;
	return makeLink("../../../../" + rel, groupDir + "/devices/" + d.bdf);
}

struct Tree {
	std::string root;
	unsigned endpoints = 0;
	unsigned total = 0;           // endpoints + bridges + host bridge
	std::vector<std::string> held; // fake devices bound to vfio-pci for held assignments
	std::string checkOk;           // a device whose CheckAssignment passes
	std::string checkRefused;      // one that conflicts: shared INTx with held devices, group not viable
};

// The tree: a host bridge 0000:00:00.0, one root port per bus (0000:00:SS.F, driver pcieport,
// each its own group) and kEndpointsPerBus endpoints below each (driver nvme, groups of 4,
// INTx 16-23). Bus 1 is special: its slot 0 is on vfio-pci and free (the CheckAssignment that
// passes), slots 1..held are on vfio-pci for the held assignments, with INTx lines of their own
// (100 + slot) so they do not conflict with each other. The refused device shares line 101
// with held-1 and sits in a group whose other functions are on nvme.
Result<Tree> generateTree(const std::string &root, unsigned endpoints, unsigned held)
{
	Tree t;
	t.root = root;
	t.endpoints = endpoints;
	for (const char *dir : { "", "/devices", "/devices/pci0000:00", "/bus", "/bus/pci", "/bus/pci/devices",
				 "/bus/pci/drivers", "/kernel", "/kernel/iommu_groups" })
		if (Status s = makeDir(root + dir); !s)
			return s.takeError();
	for (const char *drv : { "nvme", "pcieport", "vfio-pci", "pci-stub" }) {
		std::string dir = root + "/bus/pci/drivers/" + drv;
		if (Status s = makeDir(dir); !s)
			return s.takeError();
		for (const char *f : { "bind", "unbind", "new_id" })
			if (Status s = writeFile(dir + "/" + f, ""); !s)
				return s.takeError();
	}
	if (Status s = writeFile(root + "/bus/pci/drivers_probe", ""); !s)
		return s.takeError();

	unsigned group = 0;
	FakeDevice host{ "0000:00:00.0", "pci0000:00", "", group++, 0, 0x8086, 0x29c0, true };
	if (Status s = writeDevice(root, host); !s)
		return s.takeError();
	t.total = 1;
	unsigned buses = (endpoints + kEndpointsPerBus - 1) / kEndpointsPerBus;
	if (buses > 255 || (buses > 0 && held + 1 > kSlotsPerBus))
		return makeError(EINVAL, "%u devices or %u held assignments do not fit the generated layout",
				 endpoints, held);
	// Bus 2 slot 1; on a one-bus tree bus 1's last slot.
	const unsigned refusedBus = buses >= 2 ? 2 : 1;
	const unsigned refusedSlot = buses >= 2 ? 1 : kSlotsPerBus - 1;
	for (unsigned bus = 1; bus <= buses; bus++) {
		unsigned port = bus - 1;
		FakeDevice rp{ strFormat("0000:00:%02x.%x", 1 + port / 8, port % 8), "pci0000:00", "pcieport", group++,
			       0, 0x8086, 0x7c09, true };
		if (Status s = writeDevice(root, rp); !s)
			return s.takeError();
		t.total++;
		const std::string parent = "pci0000:00/" + rp.bdf;
		for (unsigned i = 0; i < kEndpointsPerBus && (bus - 1) * kEndpointsPerBus + i < endpoints; i++) {
			unsigned slot = i / kFunctionsPerSlot, fn = i % kFunctionsPerSlot;
			if (fn == 0)
				group++;
			FakeDevice d{ strFormat("0000:%02x:%02x.%x", bus, slot, fn), parent, "nvme", group - 1,
				      16 + slot % 8, kVendor, kDevice, false };
			if (bus == 1 && slot <= held) {
				d.driver = "vfio-pci";
				d.irq = slot == 0 ? 11 : 100 + slot;
			}
			if (bus == refusedBus && slot == refusedSlot)
				d.irq = 101;
			if (Status s = writeDevice(root, d); !s)
				return s.takeError();
			t.total++;
			if (bus == 1 && slot == 0 && fn == 0)
				t.checkOk = "pci:" + d.bdf;
			else if (bus == 1 && fn == 0 && slot >= 1 && slot <= held)
				t.held.push_back("pci:" + d.bdf);
			else if (bus == refusedBus && slot == refusedSlot && fn == 0 && held > 0)
				t.checkRefused = "pci:" + d.bdf;
		}
	}
	return t;
}

// ---------------------------------------------------------------- processes

// Start argv with `readyWrite` as fd 3 (everything else of ours is CLOEXEC) in a new session,
// with posix_spawn as the broker's supervisor does: the bench holds gRPC threads and a large
// heap, which a fork() would copy page tables of, and the floor must not pay more than Assign.
Result<pid_t> spawnWithReadyFd(const std::vector<std::string> &args, int readyWrite, const char *what)
{
	std::vector<char *> argv;
	for (const auto &a : args)
		argv.push_back(const_cast<char *>(a.c_str()));
	argv.push_back(nullptr);
	// dup2 onto itself would keep CLOEXEC: move the fd above 3 first.
	UniqueFd high(::fcntl(readyWrite, F_DUPFD_CLOEXEC, 4));
	if (!high)
		return errnoError("F_DUPFD_CLOEXEC");
	posix_spawnattr_t attr;
	posix_spawn_file_actions_t actions;
	::posix_spawnattr_init(&attr);
	::posix_spawn_file_actions_init(&actions);
	int rc = ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
	if (!rc)
		rc = ::posix_spawn_file_actions_adddup2(&actions, high.get(), 3);
	pid_t pid = -1;
	if (!rc)
		rc = ::posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), environ);
	::posix_spawn_file_actions_destroy(&actions);
	::posix_spawnattr_destroy(&attr);
	if (rc)
		return errnoError(rc, std::string("starting ") + argv[0] + " (" + what + ")");
	return pid;
}

// Block until "READY=1\n" arrives on fd (and EOF), as a launcher does.
Status waitReady(int fd, pid_t pid, const char *what)
{
	std::string got;
	for (;;) {
		pollfd pfd{ fd, POLLIN, 0 };
		int rc = ::poll(&pfd, 1, kReadyTimeoutMs);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			return makeError(ETIMEDOUT, "%s (pid %d) did not report readiness in %d ms", what, pid,
					 kReadyTimeoutMs);
		char buf[64];
		ssize_t n = ::read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got.append(buf, n);
	}
	if (got != "READY=1\n")
		return makeError(EIO, "%s (pid %d) closed its ready fd without READY=1 (see its log above)", what,
				 pid);
	return {};
}

int stopProcess(pid_t pid)
{
	::kill(pid, SIGTERM);
	int status = 0;
	while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	return status;
}

bool socketAnswers(const std::string &path)
{
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (path.size() >= sizeof(addr.sun_path))
		return false;
	std::memcpy(addr.sun_path, path.c_str(), path.size());
	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	return fd && ::connect(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0;
}

// The floor of an Assign: start vfio-broker-device on sim:edu the way the broker's supervisor
// does (ready pipe on fd 3, wait for READY=1, then check that the socket accepts), and stop it
// the way Deassign does (SIGTERM, reap). Returns the start and stop times.
Status spawnFloor(const Options &opts, const std::string &socket, uint64_t *startNs, uint64_t *stopNs)
{
	uint64_t t0 = nowNs();
	int p[2];
	if (::pipe2(p, O_CLOEXEC) < 0)
		return errnoError("pipe2");
	UniqueFd readEnd(p[0]), writeEnd(p[1]);
	auto pid = spawnWithReadyFd({ opts.daemonPath, "--device", "sim:edu", "--socket", socket, "--ready-fd", "3",
				      "--log-level", "warning" },
				    writeEnd.get(), "device daemon");
	if (!pid)
		return pid.takeError();
	writeEnd.reset();
	Status ready = waitReady(readEnd.get(), *pid, "vfio-broker-device");
	if (ready && !socketAnswers(socket))
		ready = makeError(ECONNREFUSED, "%s does not accept connections after READY=1", socket.c_str());
	uint64_t t1 = nowNs();
	int status = stopProcess(*pid);
	uint64_t t2 = nowNs();
	if (!ready)
		return ready;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return makeError(EIO, "vfio-broker-device ended with wait status 0x%x", status);
	*startNs = t1 - t0;
	*stopNs = t2 - t1;
	return {};
}

// ---------------------------------------------------------------- the broker

class Broker
{
public:
	~Broker() { stop(); }

	// The state (fsync'ed on every change) in stateDir, as /var/lib/vfio-broker on a disk;
	// sockets and configuration in runDir, as /run and /etc.
	Status start(const Options &opts, const std::string &stateDir, const std::string &runDir, const Tree &tree)
	{
		const std::string &dir = runDir;
		control_ = dir + "/run/control.sock";
		std::string adminGroup;
		if (::geteuid() != 0) {
			// Only root and the admin group may call the API: name our own group.
			if (struct group *gr = ::getgrgid(::getegid()))
				adminGroup = gr->gr_name;
		}
		std::string conf = strFormat(
			"# broker-bench\n"
			"control_socket: \"%s\"\n"
			"state_dir: \"%s/state\"\n"
			"runtime_dir: \"%s/run\"\n"
			"policy_file: \"%s/policy.conf\"\n"
			"device_daemon: \"%s\"\n"
			"sysfs_root: \"%s\"\n"
			"simulated_devices: \"sim:edu\"\n"
			"testing_device_override: \"sim:edu\"\n"
			"device_daemon_args: \"--log-level=warning\"\n"
			"daemon_ready_timeout_ms: %d\n",
			control_.c_str(), stateDir.c_str(), dir.c_str(), dir.c_str(), opts.daemonPath.c_str(),
			tree.root.c_str(), kReadyTimeoutMs);
		if (!adminGroup.empty())
			conf += "admin_group: \"" + adminGroup + "\"\n";
		std::string policy = strFormat("board: \"broker-bench\"\n"
					       "rules { name: \"sim-edu\" simulated: \"sim:edu\" }\n"
					       "rules { name: \"bench-nvme\" vendor_device: \"%04x:%04x\" }\n",
					       kVendor, kDevice);
		if (Status s = writeFile(dir + "/brokerd.conf", conf); !s)
			return s;
		if (Status s = writeFile(dir + "/policy.conf", policy); !s)
			return s;

		int p[2];
		if (::pipe2(p, O_CLOEXEC) < 0)
			return errnoError("pipe2");
		UniqueFd readEnd(p[0]), writeEnd(p[1]);
		auto pid = spawnWithReadyFd({ opts.brokerdPath, "--config", dir + "/brokerd.conf", "--ready-fd", "3",
					      "--log-level", "warning" },
					    writeEnd.get(), "vfio-brokerd");
		if (!pid)
			return pid.takeError();
		pid_ = *pid;
		writeEnd.reset();
		uint64_t t0 = nowNs();
		if (Status s = waitReady(readEnd.get(), pid_, "vfio-brokerd"); !s) {
			stopProcess(pid_);
			pid_ = -1;
			return s;
		}
		readyUs_ = static_cast<double>(nowNs() - t0) / 1000.0;

		grpc::ChannelArguments args;
		args.SetMaxReceiveMessageSize(-1); // ListDevices of 10,000 devices is several MB
		auto channel = grpc::CreateCustomChannel("unix:" + control_, grpc::InsecureChannelCredentials(), args);
		if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)))
			return makeError(ECONNREFUSED, "cannot connect to %s", control_.c_str());
		stub_ = pb::BrokerService::NewStub(channel);
		return {};
	}

	// Deassign whatever is still assigned (device daemons outlive the broker by design), then
	// SIGTERM the broker. Best effort: this also runs on error paths.
	void stop()
	{
		if (pid_ <= 0)
			return;
		if (stub_) {
			pb::ListAssignmentsResponse list;
			if (call("ListAssignments", pb::ListAssignmentsRequest(), &list,
				 &pb::BrokerService::Stub::ListAssignments)) {
				for (const auto &a : list.assignments()) {
					pb::DeassignRequest req;
					req.set_device_id(a.device_id());
					pb::DeassignResponse resp;
					(void)call("Deassign", req, &resp, &pb::BrokerService::Stub::Deassign);
				}
			}
		}
		int status = stopProcess(pid_);
		pid_ = -1;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			std::fprintf(stderr, "broker-bench: vfio-brokerd ended with wait status 0x%x\n", status);
	}

	template<typename Req, typename Resp, typename Method>
	Status call(const char *what, const Req &req, Resp *resp, Method method)
	{
		grpc::ClientContext ctx;
		ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(kRpcTimeoutMs));
		grpc::Status s = ((*stub_).*method)(&ctx, req, resp);
		if (!s.ok())
			return makeError(EIO, "%s: %s (gRPC code %d)", what, s.error_message().c_str(),
					 static_cast<int>(s.error_code()));
		return {};
	}

	// Assign and return its socket, checking that the broker says what the bench expects.
	Result<std::string> assign(const std::string &vm, const std::string &device)
	{
		pb::AssignRequest req;
		req.set_vm(vm);
		req.add_device_ids(device);
		pb::AssignResponse resp;
		if (Status s = call("Assign", req, &resp, &pb::BrokerService::Stub::Assign); !s)
			return withContext(s.takeError(), device + " to " + vm);
		if (resp.assignments_size() != 1 || resp.assignments(0).socket_path().empty())
			return makeError(EPROTO, "Assign of %s returned %d assignments", device.c_str(),
					 resp.assignments_size());
		return resp.assignments(0).socket_path();
	}

	Status deassign(const std::string &vm, const std::string &device)
	{
		pb::DeassignRequest req;
		req.set_vm(vm);
		req.set_device_id(device);
		pb::DeassignResponse resp;
		if (Status s = call("Deassign", req, &resp, &pb::BrokerService::Stub::Deassign); !s)
			return withContext(s.takeError(), device + " from " + vm);
		if (!resp.was_assigned())
			return makeError(EPROTO, "Deassign of %s: it was not assigned", device.c_str());
		return {};
	}

	Result<pb::CheckAssignmentResponse> check(const std::string &vm, const std::string &device)
	{
		pb::CheckAssignmentRequest req;
		req.set_vm(vm);
		req.add_device_ids(device);
		pb::CheckAssignmentResponse resp;
		if (Status s = call("CheckAssignment", req, &resp, &pb::BrokerService::Stub::CheckAssignment); !s)
			return s.takeError();
		return resp;
	}

	Result<pb::ListDevicesResponse> listDevices()
	{
		pb::ListDevicesResponse resp;
		if (Status s = call("ListDevices", pb::ListDevicesRequest(), &resp,
				    &pb::BrokerService::Stub::ListDevices); !s)
			return s.takeError();
		return resp;
	}

	// The gRPC floor: a call that does next to nothing in the broker.
	Status trivial()
	{
		pb::ListAssignmentsRequest req;
		req.set_vm("nobody");
		pb::ListAssignmentsResponse resp;
		return call("ListAssignments", req, &resp, &pb::BrokerService::Stub::ListAssignments);
	}

	double readyUs() const { return readyUs_; }

	// CPU time the broker has used so far (all threads, the exited ones included), in
	// microseconds; USER_HZ resolution, so only differences over many calls mean much. On a
	// shared machine it tells the broker's own work from time spent waiting for a CPU.
	Result<double> cpuUs() const
	{
		std::string path = "/proc/" + std::to_string(pid_) + "/stat";
		UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
		char buf[1024];
		ssize_t n = fd ? ::read(fd.get(), buf, sizeof(buf) - 1) : -1;
		if (n <= 0)
			return errnoError(errno, "reading " + path);
		buf[n] = '\0';
		// Fields resume after the command's closing parenthesis: 3 is the state, 14 utime, 15 stime.
		const char *p = std::strrchr(buf, ')');
		unsigned long long utime = 0, stime = 0;
		if (!p || std::sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
				      &stime) != 2)
			return makeError(EPROTO, "%s: unexpected format", path.c_str());
		return static_cast<double>(utime + stime) * 1e6 / static_cast<double>(::sysconf(_SC_CLK_TCK));
	}

private:
	std::string control_;
	pid_t pid_ = -1;
	double readyUs_ = 0;
	std::unique_ptr<pb::BrokerService::Stub> stub_;
};

// Time one call into `stats`.
template<typename F>
Status timed(Stats *stats, F f)
{
	uint64_t t0 = nowNs();
	Status s = f();
	if (stats)
		stats->add(nowNs() - t0);
	return s;
}

// ---------------------------------------------------------------- options

const char *usage()
{
	return "Usage: broker-bench [options]\n"
	       "\n"
	       "Control-plane latencies of a real vfio-brokerd over gRPC, on a generated sysfs tree:\n"
	       "Assign (until the device daemon answers) and Deassign of sim:edu, next to a bare\n"
	       "vfio-broker-device start; CheckAssignment and ListDevices with --devices PCI devices\n"
	       "and --held assignments standing.\n"
	       "\n"
	       "  --brokerd PATH   vfio-brokerd (default $VFIO_BROKERD, else the build's)\n"
	       "  --daemon PATH    vfio-broker-device (default $VFIO_BROKER_DEVICE, else the build's)\n"
	       "  --dir DIR        where the broker's state directory goes (default $TMPDIR, else\n"
	       "                   /tmp), as /var/lib/vfio-broker: its state file is fsync'ed on\n"
	       "                   every Assign and Deassign\n"
	       "  --run-dir DIR    where the fake sysfs tree, the sockets and the configuration go\n"
	       "                   (default /dev/shm when writable, else --dir), as /sys and /run\n"
	       "                   are in memory. 10,000 devices are ~150,000 files: on a disk,\n"
	       "                   creating and removing them takes minutes\n"
	       "  --devices N      PCI endpoints in the fake tree (default 10000; plus a root port\n"
	       "                   per 128 and the host bridge)\n"
	       "  --held N         fake PCI devices assigned (to VMs held-1..N, each with a sim:edu\n"
	       "                   daemon) while CheckAssignment and ListDevices are timed (default 8)\n"
	       "  --assigns N      timed Assign+Deassign rounds of sim:edu (default 100)\n"
	       "  --checks N       timed CheckAssignment calls per case (default 2000)\n"
	       "  --lists N        timed ListDevices calls (default 10)\n"
	       "  --warmup N       untimed rounds first (default 5; checks: 20x that)\n"
	       "  --keep           keep the temporary directory\n"
	       "  -h, --help       this help\n"
	       "\n"
	       "The last line is machine-readable:\n"
	       "  broker: assign_p50_us=... assign_p99_us=... ... list_devices_ms=... devices=...\n";
}

Result<unsigned> parseCount(const char *opt, const char *text, unsigned min, unsigned max)
{
	char *end = nullptr;
	errno = 0;
	unsigned long v = std::strtoul(text, &end, 10);
	if (errno || !*text || *end || text[0] == '-' || v < min || v > max)
		return makeError(EINVAL, "%s: \"%s\" is not a number from %u to %u", opt, text, min, max);
	return static_cast<unsigned>(v);
}

Result<Options> parseOptions(int argc, char **argv)
{
	enum { kBrokerd = 1000, kDaemon, kDir, kRunDir, kDevices, kHeld, kAssigns, kChecks, kLists, kWarmup,
	       kKeep };
	static const option longOptions[] = {
		{ "brokerd", required_argument, nullptr, kBrokerd },
		{ "daemon", required_argument, nullptr, kDaemon },
		{ "dir", required_argument, nullptr, kDir },
		{ "run-dir", required_argument, nullptr, kRunDir },
		{ "devices", required_argument, nullptr, kDevices },
		{ "held", required_argument, nullptr, kHeld },
		{ "assigns", required_argument, nullptr, kAssigns },
		{ "checks", required_argument, nullptr, kChecks },
		{ "lists", required_argument, nullptr, kLists },
		{ "warmup", required_argument, nullptr, kWarmup },
		{ "keep", no_argument, nullptr, kKeep },
		{ "help", no_argument, nullptr, 'h' },
		{ nullptr, 0, nullptr, 0 },
	};
	Options o;
	const char *env = std::getenv("VFIO_BROKERD");
	o.brokerdPath = env && *env ? env : BROKER_BENCH_BROKERD;
	env = std::getenv("VFIO_BROKER_DEVICE");
	o.daemonPath = env && *env ? env : BROKER_BENCH_DEVICE_DAEMON;
	env = std::getenv("TMPDIR");
	o.stateDir = env && *env ? env : "/tmp";
	optind = 1;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":h", longOptions, nullptr)) != -1) {
		Result<unsigned> n = 0u;
		switch (c) {
		case kBrokerd: o.brokerdPath = optarg; break;
		case kDaemon: o.daemonPath = optarg; break;
		case kDir: o.stateDir = optarg; break;
		case kRunDir: o.runDir = optarg; break;
		case kDevices: if ((n = parseCount("--devices", optarg, 0, 255 * kEndpointsPerBus))) o.devices = *n; break;
		case kHeld: if ((n = parseCount("--held", optarg, 0, kSlotsPerBus - 1))) o.held = *n; break;
		case kAssigns: if ((n = parseCount("--assigns", optarg, 1, 1000000))) o.assigns = *n; break;
		case kChecks: if ((n = parseCount("--checks", optarg, 1, 10000000))) o.checks = *n; break;
		case kLists: if ((n = parseCount("--lists", optarg, 1, 100000))) o.lists = *n; break;
		case kWarmup: if ((n = parseCount("--warmup", optarg, 0, 100000))) o.warmup = *n; break;
		case kKeep: o.keep = true; break;
		case 'h':
			std::fputs(usage(), stdout);
			std::exit(0);
		case ':': return makeError(EINVAL, "%s needs an argument", argv[optind - 1]);
		default: return makeError(EINVAL, "unknown option \"%s\" (see --help)", argv[optind - 1]);
		}
		if (!n)
			return n.takeError();
	}
	if (optind < argc)
		return makeError(EINVAL, "unexpected argument \"%s\"", argv[optind]);
	if (o.runDir.empty())
		o.runDir = ::access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : o.stateDir;
	if (o.held > 0 && o.devices < kEndpointsPerBus)
		return makeError(EINVAL, "--held needs at least %u --devices (one generated bus)", kEndpointsPerBus);
	return o;
}

// ---------------------------------------------------------------- the run

Status run(const Options &opts, const std::string &stateDir, const std::string &dir)
{
	// (0) The tree.
	uint64_t t0 = nowNs();
	auto tree = generateTree(dir + "/sys", opts.devices, opts.held);
	if (!tree)
		return tree.takeError();
	std::printf("fake sysfs: %u PCI devices (%u endpoints) in %s, generated in %.1f s\n", tree->total,
		    tree->endpoints, tree->root.c_str(), static_cast<double>(nowNs() - t0) / 1e9);

	Broker broker;
	if (Status s = broker.start(opts, stateDir, dir, *tree); !s)
		return withContext(s.takeError(), "starting " + opts.brokerdPath);
	std::printf("vfio-brokerd ready %.1f ms after exec (READY=1 on --ready-fd)\n", broker.readyUs() / 1000.0);

	// (a) Assign -> socket answers -> Deassign of sim:edu, interleaved with a bare daemon start.
	Stats assignS, deassignS, spawnS, stopS;
	const std::string floorSocket = dir + "/floor.sock";
	std::printf("(a) %u rounds of Assign + Deassign of sim:edu to VM bench, each followed by a bare "
		    "vfio-broker-device start/stop (%u untimed rounds first)\n",
		    opts.assigns, opts.warmup);
	for (unsigned i = 0; i < opts.warmup + opts.assigns; i++) {
		bool timedRound = i >= opts.warmup;
		std::string socket;
		Status s = timed(timedRound ? &assignS : nullptr, [&]() -> Status {
			auto r = broker.assign("bench", "sim:edu");
			if (!r)
				return r.takeError();
			socket = *r;
			return {};
		});
		if (!s)
			return s;
		// Assign returned, so the socket must answer now.
		if (!socketAnswers(socket))
			return makeError(ECONNREFUSED, "Assign returned %s, which does not accept connections",
					 socket.c_str());
		if (Status d = timed(timedRound ? &deassignS : nullptr, [&] { return broker.deassign("bench", "sim:edu"); });
		    !d)
			return d;
		uint64_t startNs = 0, stopNs = 0;
		if (Status f = spawnFloor(opts, floorSocket, &startNs, &stopNs); !f)
			return withContext(f.takeError(), "bare daemon start");
		if (timedRound) {
			spawnS.add(startNs);
			stopS.add(stopNs);
		}
	}
	printStats("Assign sim:edu", assignS);
	printStats("bare daemon start (floor)", spawnS);
	printStats("Deassign sim:edu", deassignS);
	printStats("bare daemon stop (floor)", stopS);

	// (b) Held assignments of fake PCI devices (each a real sim:edu daemon), then
	// CheckAssignment and ListDevices over the whole tree.
	t0 = nowNs();
	for (size_t i = 0; i < tree->held.size(); i++) {
		auto r = broker.assign("held-" + std::to_string(i + 1), tree->held[i]);
		if (!r)
			return r.takeError();
	}
	std::printf("(b) %zu held assignments (%s..., one VM each) made in %.0f ms\n", tree->held.size(),
		    tree->held.empty() ? "none" : tree->held.front().c_str(), static_cast<double>(nowNs() - t0) / 1e6);

	struct CheckCase {
		const char *label;
		std::string device;
		bool wantOk;
		Stats stats;
		int conflicts = 0;
	};
	std::vector<CheckCase> cases;
	if (!tree->checkOk.empty())
		cases.push_back({ "CheckAssignment ok", tree->checkOk, true, {} });
	if (!tree->checkRefused.empty())
		cases.push_back({ "CheckAssignment refused", tree->checkRefused, false, {} });
	cases.push_back({ "CheckAssignment sim:edu", "sim:edu", true, {} });
	// The floor of these calls: gRPC and the broker's lock, back to back like the checks.
	unsigned checkWarmup = opts.warmup * 20;
	Stats rpcS;
	double rpcCpu0 = 0;
	for (unsigned i = 0; i < checkWarmup + opts.checks; i++) {
		if (i == checkWarmup) {
			auto cpu = broker.cpuUs();
			if (!cpu)
				return cpu.takeError();
			rpcCpu0 = *cpu;
		}
		if (Status r = timed(i >= checkWarmup ? &rpcS : nullptr, [&] { return broker.trivial(); }); !r)
			return r;
	}
	auto rpcCpu1 = broker.cpuUs();
	if (!rpcCpu1)
		return rpcCpu1.takeError();
	double rpcCpuUs = (*rpcCpu1 - rpcCpu0) / opts.checks;
	printStats("trivial RPC (floor)", rpcS);
	std::printf("  %-28s (ListAssignments of a VM without any)\n", "");
	std::printf("  %-28s %.0f us per call\n", "broker CPU", rpcCpuUs);

	double checkCpu0 = 0;
	for (unsigned i = 0; i < checkWarmup + opts.checks; i++) {
		if (i == checkWarmup) {
			auto cpu = broker.cpuUs();
			if (!cpu)
				return cpu.takeError();
			checkCpu0 = *cpu;
		}
		// Interleaved, so drift on a shared machine hits every case alike.
		for (CheckCase &c : cases) {
			Result<pb::CheckAssignmentResponse> r = pb::CheckAssignmentResponse();
			Status s = timed(i >= checkWarmup ? &c.stats : nullptr, [&]() -> Status {
				r = broker.check("bench", c.device);
				return r ? Status() : Status(r.error());
			});
			if (!s)
				return withContext(s.takeError(), c.device);
			if (r->ok() != c.wantOk)
				return makeError(EPROTO, "CheckAssignment of %s: ok=%d, expected %d (%s)", c.device.c_str(),
						 r->ok(), c.wantOk,
						 r->conflicts_size() ? r->conflicts(0).message().c_str() : "no conflicts");
			c.conflicts = r->conflicts_size();
		}
	}
	auto checkCpu1 = broker.cpuUs();
	if (!checkCpu1)
		return checkCpu1.takeError();
	for (const CheckCase &c : cases) {
		printStats(c.label, c.stats);
		std::printf("  %-28s (%s, %d conflict(s))\n", "", c.device.c_str(), c.conflicts);
	}
	double checkCpuUs = (*checkCpu1 - checkCpu0) / (static_cast<double>(opts.checks) * cases.size());
	std::printf("  %-28s %.0f us per call, the %zu cases together\n", "broker CPU", checkCpuUs, cases.size());

	Stats listS;
	size_t listed = 0, bytes = 0;
	double listCpu0 = 0;
	for (unsigned i = 0; i < 1 + opts.lists; i++) { // one untimed call first
		if (i == 1) {
			auto cpu = broker.cpuUs();
			if (!cpu)
				return cpu.takeError();
			listCpu0 = *cpu;
		}
		pb::ListDevicesResponse resp;
		Status s = timed(i ? &listS : nullptr, [&]() -> Status {
			auto r = broker.listDevices();
			if (!r)
				return r.takeError();
			resp = std::move(*r);
			return {};
		});
		if (!s)
			return s;
		listed = resp.devices_size();
		bytes = resp.ByteSizeLong();
	}
	if (listed != tree->total + 1) // + sim:edu
		return makeError(EPROTO, "ListDevices returned %zu devices, the tree has %u (+ sim:edu)", listed,
				 tree->total);
	auto listCpu1 = broker.cpuUs();
	if (!listCpu1)
		return listCpu1.takeError();
	double listCpuUs = (*listCpu1 - listCpu0) / opts.lists;
	printStats("ListDevices", listS);
	std::printf("  %-28s (%zu devices, %.1f MB response, %.1f us per device at the median)\n", "", listed,
		    static_cast<double>(bytes) / 1e6, listS.percentile(50) / static_cast<double>(listed));
	std::printf("  %-28s %s per call, %.1f us per device\n", "broker CPU", human(listCpuUs).c_str(),
		    listCpuUs / static_cast<double>(listed));

	for (size_t i = 0; i < tree->held.size(); i++)
		if (Status s = broker.deassign("held-" + std::to_string(i + 1), tree->held[i]); !s)
			return s;
	broker.stop();

	auto caseOf = [&](bool ok) -> const CheckCase * {
		for (const CheckCase &c : cases)
			if (c.wantOk == ok && c.device != "sim:edu")
				return &c;
		return nullptr;
	};
	std::string line = strFormat("broker: assign_p50_us=%.0f assign_p99_us=%.0f assign_mean_us=%.0f "
				     "spawn_p50_us=%.0f deassign_p50_us=%.0f deassign_p99_us=%.0f "
				     "deassign_mean_us=%.0f rpc_p50_us=%.0f rpc_cpu_us=%.0f",
				     assignS.percentile(50), assignS.percentile(99), assignS.mean(),
				     spawnS.percentile(50), deassignS.percentile(50), deassignS.percentile(99),
				     deassignS.mean(), rpcS.percentile(50), rpcCpuUs);
	if (const CheckCase *c = caseOf(true))
		line += strFormat(" check_ok_p50_us=%.0f check_ok_p99_us=%.0f", c->stats.percentile(50),
				  c->stats.percentile(99));
	if (const CheckCase *c = caseOf(false))
		line += strFormat(" check_refused_p50_us=%.0f check_refused_p99_us=%.0f", c->stats.percentile(50),
				  c->stats.percentile(99));
	line += strFormat(" check_cpu_us=%.0f list_devices_ms=%.1f list_devices_cpu_ms=%.1f devices=%zu held=%zu",
			  checkCpuUs, listS.percentile(50) / 1000.0, listCpuUs / 1000.0, listed, tree->held.size());
	std::printf("%s\n", line.c_str());
	return {};
}

} // namespace

} // namespace vfio_broker::bench

int main(int argc, char **argv)
{
	using namespace vfio_broker;
	::signal(SIGPIPE, SIG_IGN);
	std::setvbuf(stdout, nullptr, _IOLBF, 0);
	auto opts = bench::parseOptions(argc, argv);
	if (!opts) {
		std::fprintf(stderr, "broker-bench: %s\n%s", opts.error().message.c_str(), bench::usage());
		return 2;
	}
	// Private temporary directories; the broker's configuration takes absolute paths only.
	std::vector<std::string> dirs;
	for (const std::string &base : { opts->stateDir, opts->runDir }) {
		std::string templ = base + "/broker-bench.XXXXXX";
		char *abs = nullptr;
		if (!::mkdtemp(templ.data()) || !(abs = ::realpath(templ.c_str(), nullptr))) {
			std::fprintf(stderr, "broker-bench: mkdtemp %s: %s\n", templ.c_str(), std::strerror(errno));
			for (const std::string &d : dirs)
				(void)bench::removeTree(d);
			return 1;
		}
		dirs.push_back(abs);
		std::free(abs);
	}
	Status s = bench::run(*opts, dirs[0], dirs[1]);
	if (!s)
		std::fprintf(stderr, "broker-bench: %s\n", s.error().message.c_str());
	for (const std::string &d : dirs) {
		if (opts->keep)
			std::printf("kept %s\n", d.c_str());
		else if (Status r = bench::removeTree(d); !r)
			std::fprintf(stderr, "broker-bench: %s\n", r.error().message.c_str());
	}
	return s ? 0 : 1;
}
