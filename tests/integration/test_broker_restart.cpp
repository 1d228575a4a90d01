// SPDX-License-Identifier: Apache-2.0
// Crashes and restarts: assignments survive SIGKILL of the broker, dead device daemons are
// restarted or marked failed, an interrupted Assign is rolled back, one broker per state dir.
#include "broker_fixture.h"

#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <thread>

using namespace vfio_broker;
using namespace vfio_broker::itest;
using Catch::Matchers::Contains;

namespace {

std::string snapshot(const std::vector<pb::Assignment> &assignments)
{
	std::string s;
	for (const auto &a : assignments)
		s += a.ShortDebugString() + "\n";
	return s;
}

// SIGKILL a device daemon and wait until it is gone.
void killDaemon(pid_t pid)
{
	INFO("killing device daemon " << pid);
	REQUIRE(killProcess(pid));
	REQUIRE_FALSE(processAlive(pid));
}

ino_t inodeOf(const std::string &path)
{
	struct stat st;
	REQUIRE(::lstat(path.c_str(), &st) == 0);
	return st.st_ino;
}

pb::Assignment only(BrokerFixture &fx, const std::string &id)
{
	for (const auto &a : fx.assignments())
		if (a.device_id() == id)
			return a;
	FAIL("no assignment of " << id);
	return {};
}

// Block (bounded) until a file named `name` is closed after writing in the inotify fd's directory.
bool waitForWrite(int inotifyFd, const std::string &name)
{
	auto deadline = std::chrono::steady_clock::now() + kWait;
	for (;;) {
		alignas(inotify_event) char buf[4096];
		ssize_t n;
		while ((n = ::read(inotifyFd, buf, sizeof(buf))) > 0) {
			for (char *p = buf; p < buf + n;) {
				auto *ev = reinterpret_cast<inotify_event *>(p);
				if (ev->len && name == ev->name)
					return true;
				p += sizeof(inotify_event) + ev->len;
			}
		}
		auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
										   std::chrono::steady_clock::now());
		if (left.count() <= 0)
			return false;
		pollfd p{ inotifyFd, POLLIN, 0 };
		::poll(&p, 1, static_cast<int>(left.count()));
	}
}

bool isType(const pb::Event &e, pb::EventType t)
{
	return e.type() == t;
}

} // namespace

TEST_CASE("sigkill_withSeveralAssignments_readoptsEveryDeviceDaemon", "[broker_restart]")
{
	BrokerFixture fx;
	fx.assignOk("vm1", { lab::kNicA, lab::kNicB });
	fx.assignOk("vm2", { lab::kSim, lab::kNicC });
	fx.assignOk("vm2", { lab::kQuarantine });
	REQUIRE(fx.deassign(lab::kQuarantine).ok());
	auto before = fx.assignments();
	REQUIRE(before.size() == 4);

	fx.kill(SIGKILL);
	// The device daemons serve on without their broker.
	for (const auto &a : before) {
		INFO(a.device_id());
		CHECK(processAlive(a.daemon_pid()));
		CHECK(probeDeviceDaemon(a.socket_path()) == "");
	}

	fx.start();
	auto after = fx.assignments();
	CHECK(snapshot(after) == snapshot(before));
	std::string log = fx.log();
	for (const auto &a : after) {
		INFO(a.device_id());
		CHECK(a.daemon_state() == pb::DAEMON_STATE_RUNNING);
		CHECK(a.restarts() == 0);
		CHECK(probeDeviceDaemon(a.socket_path()) == "");
		// The ADOPTED event is published while the broker recovers, before its socket
		// exists, so no watcher can see it; the log line beside it is the evidence.
		CHECK_THAT(log, Contains(a.device_id() + ": re-adopted the device daemon (pid " +
					 std::to_string(a.daemon_pid()) + ")"));
	}
	pb::Device q = fx.device(lab::kQuarantine);
	CHECK(q.state() == pb::DEVICE_STATE_QUARANTINED);
	CHECK(q.original_driver() == "e1000e");

	// The new broker owns them: Deassign stops the adopted daemon and restores the driver.
	REQUIRE(fx.deassign(lab::kNicC).ok());
	CHECK_FALSE(processAlive(before[2].daemon_pid()));
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kNicC)) == "igb");
	REQUIRE(fx.release(lab::kQuarantine).ok());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kQuarantine)) == "e1000e");
}

TEST_CASE("restart_publishesOneAdoptedEventPerLiveDaemon_beforeItServes", "[broker_restart]")
{
	BrokerFixture fx;
	fx.assignOk("vm1", { lab::kNicA, lab::kSim });
	fx.assignOk("vm2", { lab::kNicB });
	fx.restart();
	// ADOPTED events go out during recovery, before the control socket exists, so no watcher
	// receives them; sequence numbers count every event of the process, so the first one a
	// watcher sees tells how many came before: one ADOPTED per re-adopted daemon.
	auto events = fx.watch();
	fx.assignOk("vm2", { lab::kNicC });
	auto first = events->next();
	REQUIRE(first);
	CHECK(first->type() == pb::EVENT_TYPE_ASSIGNING);
	CHECK(first->sequence() == 4);
	CHECK(fx.assignments().size() == 4);
}

TEST_CASE("sigterm_stopsTheBrokerCleanly_andDeviceDaemonsServeOn", "[broker_restart]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { lab::kNicA });
	fx.stop();
	CHECK(WIFEXITED(fx.lastExitStatus()));
	CHECK(WEXITSTATUS(fx.lastExitStatus()) == 0);
	struct stat st;
	CHECK(::lstat(fx.controlSocket().c_str(), &st) != 0); // removed on a clean stop
	CHECK(probeDeviceDaemon(a[0].socket_path()) == "");

	fx.start();
	CHECK(snapshot(fx.assignments()) == snapshot(a));
}

TEST_CASE("daemonKilledWhileTheBrokerIsDown_isRestartedOnceTheBrokerIsBack", "[broker_restart]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { lab::kNicA });
	pid_t old = a[0].daemon_pid();
	fx.kill(SIGKILL);
	killDaemon(old);

	fx.start();
	pb::Assignment now;
	bool restarted = fx.waitForState([&] {
		now = only(fx, lab::kNicA);
		return now.restarts() == 1 && now.daemon_state() == pb::DAEMON_STATE_RUNNING;
	});
	INFO(now.ShortDebugString());
	REQUIRE(restarted);
	CHECK(now.daemon_pid() != old);
	CHECK(now.vm() == "vm1");
	CHECK(now.socket_path() == a[0].socket_path());
	CHECK(probeDeviceDaemon(now.socket_path()) == "");
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kNicA)) == "vfio-pci");
}

TEST_CASE("daemonKilledWhileTheBrokerIsDown_underFailPolicy_isMarkedFailed", "[broker_restart]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { lab::kFailOnExit });
	fx.kill(SIGKILL);
	killDaemon(a[0].daemon_pid());

	fx.start();
	REQUIRE(fx.waitForState([&] { return only(fx, lab::kFailOnExit).daemon_state() == pb::DAEMON_STATE_FAILED; }));
	CHECK(fx.device(lab::kFailOnExit).state() == pb::DEVICE_STATE_FAILED);
	// Failed, not forgotten: still on VFIO, and Deassign gives it back to its driver.
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kFailOnExit)) == "vfio-pci");
	REQUIRE(fx.deassign(lab::kFailOnExit).ok());
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kFailOnExit)) == "e1000e");
	CHECK(fx.assignments().empty());
}

TEST_CASE("daemonKilledWhileTheBrokerRuns_isRestarted", "[broker_restart]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { lab::kNicA });
	auto events = fx.watch(lab::kNicA);
	pid_t old = a[0].daemon_pid();
	killDaemon(old);

	auto seen = events->until([](const pb::Event &e) {
		return isType(e, pb::EVENT_TYPE_DAEMON_RESTARTED) || isType(e, pb::EVENT_TYPE_FAILED);
	});
	INFO(describe(seen));
	REQUIRE(typesOf(seen) == std::vector<pb::EventType>{ pb::EVENT_TYPE_DAEMON_EXITED, pb::EVENT_TYPE_DAEMON_RESTARTED });
	CHECK(seen[0].daemon_pid() == old);
	CHECK_THAT(seen[0].message(), Contains("signal 9"));
	pid_t fresh = seen[1].daemon_pid();
	CHECK(fresh != old);

	pb::Assignment now = only(fx, lab::kNicA);
	CHECK(now.daemon_pid() == fresh);
	CHECK(now.restarts() == 1);
	CHECK(now.daemon_state() == pb::DAEMON_STATE_RUNNING);
	CHECK(probeDeviceDaemon(now.socket_path()) == "");
}

TEST_CASE("daemonThatKeepsDying_isMarkedFailedAfterMaxRestarts", "[broker_restart]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { lab::kTwoRestarts }); // max_restarts: 2
	auto events = fx.watch(lab::kTwoRestarts);
	pid_t pid = a[0].daemon_pid();
	for (int restart = 1; restart <= 2; restart++) {
		killDaemon(pid);
		auto seen = events->until([](const pb::Event &e) {
			return isType(e, pb::EVENT_TYPE_DAEMON_RESTARTED) || isType(e, pb::EVENT_TYPE_FAILED);
		});
		INFO("restart " << restart << ":\n" << describe(seen));
		REQUIRE(typesOf(seen) ==
			std::vector<pb::EventType>{ pb::EVENT_TYPE_DAEMON_EXITED, pb::EVENT_TYPE_DAEMON_RESTARTED });
		pid = seen[1].daemon_pid();
		CHECK(only(fx, lab::kTwoRestarts).restarts() == static_cast<uint32_t>(restart));
	}
	killDaemon(pid);
	auto seen = events->until([](const pb::Event &e) {
		return isType(e, pb::EVENT_TYPE_DAEMON_RESTARTED) || isType(e, pb::EVENT_TYPE_FAILED);
	});
	INFO(describe(seen));
	REQUIRE(typesOf(seen) == std::vector<pb::EventType>{ pb::EVENT_TYPE_DAEMON_EXITED, pb::EVENT_TYPE_FAILED });

	pb::Assignment now = only(fx, lab::kTwoRestarts);
	CHECK(now.daemon_state() == pb::DAEMON_STATE_FAILED);
	CHECK(now.restarts() == 2);
	CHECK(fx.device(lab::kTwoRestarts).state() == pb::DEVICE_STATE_FAILED);
	CHECK(fx.deviceDaemons().empty());
	// A failed device is not handed out again until it is deassigned.
	auto again = fx.assign("vm1", { lab::kTwoRestarts });
	CHECK(again.code() == grpc::StatusCode::FAILED_PRECONDITION);
	REQUIRE(again.conflicts);
	CHECK(again.conflicts->conflicts(0).reason() == pb::CONFLICT_REASON_DEVICE_BUSY);
	REQUIRE(fx.deassign(lab::kTwoRestarts).ok());
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kTwoRestarts)) == "e1000e");
}

TEST_CASE("daemonKilledWhileTheBrokerRuns_underFailPolicy_isMarkedFailed", "[broker_restart]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { lab::kFailOnExit });
	auto events = fx.watch(lab::kFailOnExit);
	killDaemon(a[0].daemon_pid());
	auto seen = events->until([](const pb::Event &e) {
		return isType(e, pb::EVENT_TYPE_DAEMON_RESTARTED) || isType(e, pb::EVENT_TYPE_FAILED);
	});
	INFO(describe(seen));
	REQUIRE(typesOf(seen) == std::vector<pb::EventType>{ pb::EVENT_TYPE_DAEMON_EXITED, pb::EVENT_TYPE_FAILED });
	CHECK(only(fx, lab::kFailOnExit).daemon_state() == pb::DAEMON_STATE_FAILED);
	CHECK(only(fx, lab::kFailOnExit).restarts() == 0);
}

TEST_CASE("brokerKilledInTheMiddleOfAnAssign_rollsTheDeviceBackOnRestart", "[broker_restart]")
{
	// A long bind timeout holds the broker inside the bind (vfio-pci refuses the device) long
	// enough to kill it there; the pending record then proves it died mid-Assign.
	BrokerOptions options;
	options.bindTimeoutMs = 20000;
	BrokerFixture fx(options);
	fx.kernel().refuse("vfio-pci", bdfOf(lab::kNicC));
	auto events = fx.watch(lab::kNicC);
	// drivers_probe is the binder's last write before it waits for the driver link.
	UniqueFd probes(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
	REQUIRE(probes);
	REQUIRE(::inotify_add_watch(probes.get(), (fx.sysfs().root() + "/bus/pci").c_str(), IN_CLOSE_WRITE) >= 0);
	grpc::Status assignStatus;
	// Its own channel: the fixture drops its stub when it kills the broker.
	auto stub = pb::BrokerService::NewStub(
		grpc::CreateChannel("unix:" + fx.controlSocket(), grpc::InsecureChannelCredentials()));
	std::thread assigner([&] {
		grpc::ClientContext ctx;
		ctx.set_deadline(std::chrono::system_clock::now() + kWait);
		pb::AssignRequest req;
		req.set_vm("vm1");
		req.add_device_ids(lab::kNicC);
		pb::AssignResponse resp;
		assignStatus = stub->Assign(&ctx, req, &resp);
	});
	auto assigning = events->next();
	bool pending = assigning && fx.waitForState([&] {
		auto state = fx.savedState();
		return state.devices_size() == 1 && state.devices(0).pending();
	});
	bool probed = pending && waitForWrite(probes.get(), "drivers_probe");
	// The fake kernel has acted on every write: igb unbound, vfio-pci refused. Half moved.
	bool settled = probed && fx.kernel().settle();
	std::string driverThen = fx.sysfs().driverOf(bdfOf(lab::kNicC));
	std::string overrideThen = fx.kernel().overrideOf(bdfOf(lab::kNicC));
	fx.kill(SIGKILL);
	assigner.join();
	REQUIRE(assigning);
	CHECK(assigning->type() == pb::EVENT_TYPE_ASSIGNING);
	REQUIRE(pending);
	REQUIRE(probed);
	REQUIRE(settled);
	REQUIRE(driverThen.empty());
	REQUIRE(overrideThen == "vfio-pci");
	CHECK_FALSE(assignStatus.ok());
	REQUIRE(fx.savedState().devices(0).original_driver() == "igb");

	fx.start();
	CHECK(fx.assignments().empty());
	CHECK(fx.savedState().devices_size() == 0);
	CHECK_THAT(fx.log(), Contains("was interrupted; rolling it back"));
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kNicC)) == "igb");
	CHECK(fx.kernel().overrideOf(bdfOf(lab::kNicC)).empty());
	CHECK(fx.device(lab::kNicC).state() == pb::DEVICE_STATE_AVAILABLE);
}

TEST_CASE("secondBroker_onTheSameStateDir_refusesToStartAndLeavesTheSocketAlone", "[broker_restart]")
{
	BrokerFixture fx;
	fx.assignOk("vm1", { lab::kSim });
	ino_t socket = inodeOf(fx.controlSocket());

	auto second = runProcess({ fx.brokerd(), "--config", fx.configPath() });
	INFO(second.describe());
	REQUIRE(second.exited);
	CHECK(second.code != 0);
	CHECK_THAT(second.err, Contains("another vfio-brokerd"));
	CHECK_THAT(second.err, Contains(std::to_string(fx.pid())));

	CHECK(inodeOf(fx.controlSocket()) == socket);
	auto r = fx.listAssignments();
	INFO(describe(r.status));
	REQUIRE(r.ok());
	CHECK(r.value.assignments_size() == 1);
}

TEST_CASE("secondBroker_onAnotherStateDir_doesNotTakeALiveControlSocket", "[broker_restart]")
{
	BrokerFixture fx;
	ino_t socket = inodeOf(fx.controlSocket());
	// Same control socket, its own state and runtime directories: no lock stops this one.
	std::string other = fx.dir() + "/other.conf";
	{
		std::string conf = "control_socket: \"" + fx.controlSocket() + "\"\n" + "state_dir: \"" + fx.dir() +
				   "/state2\"\n" + "runtime_dir: \"" + fx.dir() + "/run2\"\n" + "policy_file: \"" +
				   fx.policyPath() + "\"\n" + "sysfs_root: \"" + fx.sysfs().root() + "\"\n";
		FILE *f = std::fopen(other.c_str(), "w");
		REQUIRE(f);
		std::fputs(conf.c_str(), f);
		std::fclose(f);
	}
	auto second = runProcess({ fx.brokerd(), "--config", other }, std::chrono::milliseconds(3000));
	INFO(second.describe());
	CHECK(second.exited);
	CHECK(second.code != 0);
	CHECK_THAT(second.err, Contains(fx.controlSocket()));
	CHECK(inodeOf(fx.controlSocket()) == socket);
	auto r = fx.listDevices();
	INFO(describe(r.status));
	CHECK(r.ok());
}
