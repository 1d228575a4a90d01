// SPDX-License-Identifier: Apache-2.0
// Assign and Deassign end to end: vfio-pci binding on the fake kernel, live device daemons,
// original drivers restored, quarantine and Release, all-or-nothing failures, the launcher CLI.
#include "broker_fixture.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

using namespace vfio_broker;
using namespace vfio_broker::itest;
using Catch::Matchers::Contains;

namespace {

bool pathExists(const std::string &path)
{
	struct stat st;
	return ::lstat(path.c_str(), &st) == 0;
}

bool logHas(const std::vector<std::string> &log, const std::string &line)
{
	return std::find(log.begin(), log.end(), line) != log.end();
}

std::string readText(const std::string &path)
{
	std::ifstream in(path);
	std::stringstream ss;
	ss << in.rdbuf();
	return ss.str();
}

// The device is back where the lab put it: on `driver`, no override, not held by the broker.
void requireRestored(BrokerFixture &fx, const std::string &id, const std::string &driver)
{
	INFO(id);
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(id)) == driver);
	CHECK(fx.kernel().overrideOf(bdfOf(id)).empty());
	pb::Device d = fx.device(id);
	CHECK(d.state() == pb::DEVICE_STATE_AVAILABLE);
	CHECK(d.driver() == driver);
	CHECK(d.vm().empty());
	CHECK(d.original_driver().empty());
}

} // namespace

TEST_CASE("assign_bindsTheDeviceToVfioPciAndRecordsItsOriginalDriver", "[broker_assign]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { lab::kNicA });

	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kNicA)) == "vfio-pci");
	CHECK(fx.kernel().overrideOf(bdfOf(lab::kNicA)) == "vfio-pci");
	CHECK(a[0].device_id() == lab::kNicA);
	CHECK(a[0].vm() == "vm1");
	CHECK(a[0].original_driver() == "e1000e");
	CHECK(a[0].daemon_state() == pb::DAEMON_STATE_RUNNING);
	CHECK(a[0].assigned_at().seconds() > 0);

	pb::Device d = fx.device(lab::kNicA);
	CHECK(d.state() == pb::DEVICE_STATE_ASSIGNED);
	CHECK(d.vm() == "vm1");
	CHECK(d.driver() == "vfio-pci");
	CHECK(d.original_driver() == "e1000e");
}

TEST_CASE("assign_returnsTheSocketOfALiveVfioUserDeviceDaemon", "[broker_assign]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { lab::kNicC, lab::kSim });
	for (const auto &x : a) {
		INFO(x.device_id() << " at " << x.socket_path());
		CHECK(x.socket_path().rfind(fx.runtimeDir() + "/devices/", 0) == 0);
		CHECK(x.daemon_pid() > 0);
		CHECK(processAlive(x.daemon_pid()));
		CHECK(probeDeviceDaemon(x.socket_path()) == "");
	}
	// One daemon per device, each a different process.
	CHECK(a[0].daemon_pid() != a[1].daemon_pid());
	CHECK(fx.deviceDaemons().size() == 2);
}

TEST_CASE("assign_ofSeveralDevices_answersInRequestOrder", "[broker_assign]")
{
	BrokerFixture fx;
	std::vector<std::string> ids{ lab::kSim, lab::kNicB, lab::kNicA };
	auto a = fx.assignOk("vm1", ids);
	for (size_t i = 0; i < ids.size(); i++)
		CHECK(a[i].device_id() == ids[i]);
	// ListAssignments is sorted by id, and filters by VM.
	auto listed = fx.assignments("vm1");
	REQUIRE(listed.size() == 3);
	CHECK(listed[0].device_id() == lab::kNicA);
	CHECK(listed[1].device_id() == lab::kNicB);
	CHECK(listed[2].device_id() == lab::kSim);
	CHECK(fx.assignments("vm2").empty());
}

TEST_CASE("assignAndDeassign_acceptAPciAddressAndAnswerWithTheCanonicalId", "[broker_assign]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { bdfOf(lab::kNicA) });
	CHECK(a[0].device_id() == lab::kNicA);
	CHECK(fx.device(bdfOf(lab::kNicA)).state() == pb::DEVICE_STATE_ASSIGNED);
	auto r = fx.deassign(bdfOf(lab::kNicA), "vm1");
	INFO(describe(r.status));
	REQUIRE(r.ok());
	CHECK(r.value.was_assigned());
}

TEST_CASE("deassign_restoresTheOriginalDriverAndClearsTheOverride", "[broker_assign]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { lab::kNicC });
	pid_t daemon = a[0].daemon_pid();
	fx.kernel().clearLog();

	auto r = fx.deassign(lab::kNicC, "vm1");
	INFO(describe(r.status));
	REQUIRE(r.ok());
	CHECK(r.value.was_assigned());
	CHECK(r.value.state() == pb::DEVICE_STATE_AVAILABLE);
	CHECK(r.value.driver() == "igb");

	requireRestored(fx, lab::kNicC, "igb");
	auto log = fx.kernel().log();
	INFO("fake kernel:\n" << [&] {
		std::string s;
		for (auto &l : log)
			s += "  " + l + "\n";
		return s;
	}());
	CHECK(logHas(log, "unbind 0000:03:00.0 vfio-pci"));
	CHECK(logHas(log, "override 0000:03:00.0 cleared"));
	CHECK(logHas(log, "bind 0000:03:00.0 igb"));
	CHECK_FALSE(processAlive(daemon));
	CHECK_FALSE(pathExists(a[0].socket_path()));
	CHECK(fx.assignments().empty());
}

TEST_CASE("deassign_ofADeviceThatHadNoDriver_leavesItUnbound", "[broker_assign]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { lab::kPair0 });
	CHECK(a[0].original_driver().empty());
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kPair0)) == "vfio-pci");
	REQUIRE(fx.deassign(lab::kPair0).ok());
	requireRestored(fx, lab::kPair0, "");
}

TEST_CASE("deassign_isIdempotent", "[broker_assign]")
{
	BrokerFixture fx;
	fx.assignOk("vm1", { lab::kNicA });
	REQUIRE(fx.deassign(lab::kNicA).ok());

	auto again = fx.deassign(lab::kNicA, "vm1");
	INFO(describe(again.status));
	REQUIRE(again.ok());
	CHECK_FALSE(again.value.was_assigned());
	CHECK(again.value.state() == pb::DEVICE_STATE_AVAILABLE);
	CHECK(again.value.driver() == "e1000e");

	auto never = fx.deassign(lab::kNicB);
	REQUIRE(never.ok());
	CHECK_FALSE(never.value.was_assigned());
	requireRestored(fx, lab::kNicA, "e1000e");
	requireRestored(fx, lab::kNicB, "e1000e");
}

TEST_CASE("deassign_withTheWrongVm_keepsTheAssignment", "[broker_assign]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { lab::kNicA });
	auto r = fx.deassign(lab::kNicA, "vm2");
	INFO(describe(r.status));
	CHECK(r.code() == grpc::StatusCode::PERMISSION_DENIED);
	CHECK_THAT(r.status.error_message(), Contains("vm1"));
	REQUIRE(fx.assignments().size() == 1);
	CHECK(probeDeviceDaemon(a[0].socket_path()) == "");
}

TEST_CASE("deassign_underQuarantinePolicy_keepsVfioPciUntilRelease", "[broker_assign]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { lab::kQuarantine });
	const std::string bdf = bdfOf(lab::kQuarantine);

	auto r = fx.deassign(lab::kQuarantine);
	INFO(describe(r.status));
	REQUIRE(r.ok());
	CHECK(r.value.was_assigned());
	CHECK(r.value.state() == pb::DEVICE_STATE_QUARANTINED);
	CHECK(r.value.driver() == "vfio-pci");
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdf) == "vfio-pci");
	CHECK_FALSE(processAlive(a[0].daemon_pid()));
	pb::Device d = fx.device(lab::kQuarantine);
	CHECK(d.state() == pb::DEVICE_STATE_QUARANTINED);
	CHECK(d.vm() == "vm1");
	CHECK(d.original_driver() == "e1000e");
	// Not an assignment any more, and a second Deassign changes nothing.
	CHECK(fx.assignments().empty());
	auto again = fx.deassign(lab::kQuarantine);
	REQUIRE(again.ok());
	CHECK_FALSE(again.value.was_assigned());
	CHECK(again.value.state() == pb::DEVICE_STATE_QUARANTINED);
	CHECK(fx.sysfs().driverOf(bdf) == "vfio-pci");

	auto released = fx.release(lab::kQuarantine);
	INFO(describe(released.status));
	REQUIRE(released.ok());
	CHECK(released.value.driver() == "e1000e");
	requireRestored(fx, lab::kQuarantine, "e1000e");
}

TEST_CASE("quarantinedDevice_staysOutOfReachUntilReleased", "[broker_assign]")
{
	BrokerFixture fx;
	fx.assignOk("vm1", { lab::kQuarantine });
	REQUIRE(fx.deassign(lab::kQuarantine).ok());

	auto other = fx.assign("vm2", { lab::kQuarantine });
	CHECK(other.code() == grpc::StatusCode::FAILED_PRECONDITION);
	auto same = fx.assign("vm1", { lab::kQuarantine });
	CHECK(same.code() == grpc::StatusCode::FAILED_PRECONDITION);

	REQUIRE(fx.release(lab::kQuarantine).ok());
	fx.assignOk("vm2", { lab::kQuarantine });
}

TEST_CASE("release_ofADeviceThatIsNotQuarantined_isRefused", "[broker_assign]")
{
	BrokerFixture fx;
	auto idle = fx.release(lab::kNicA);
	CHECK_FALSE(idle.ok());
	fx.assignOk("vm1", { lab::kNicA });
	auto busy = fx.release(lab::kNicA);
	INFO(describe(busy.status));
	CHECK_FALSE(busy.ok());
	// Release did not take an assigned device away from its VM.
	CHECK(fx.assignments().size() == 1);
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kNicA)) == "vfio-pci");
}

TEST_CASE("assign_thatFailsToBindOneDevice_leavesNothingBehind", "[broker_assign]")
{
	BrokerFixture fx;
	// The kernel accepts every write for the third device, but vfio-pci never binds it.
	fx.kernel().refuse("vfio-pci", bdfOf(lab::kNicC));

	auto r = fx.assign("vm1", { lab::kNicA, lab::kNicB, lab::kNicC });
	INFO(describe(r.status));
	REQUIRE_FALSE(r.ok());
	CHECK_THAT(r.status.error_message(), Contains(lab::kNicC));

	requireRestored(fx, lab::kNicA, "e1000e");
	requireRestored(fx, lab::kNicB, "e1000e");
	requireRestored(fx, lab::kNicC, "igb");
	CHECK(fx.assignments().empty());
	CHECK(fx.savedState().devices_size() == 0);
	CHECK(fx.deviceDaemons().empty());
	for (const auto &id : { lab::kNicA, lab::kNicB, lab::kNicC })
		CHECK_FALSE(pathExists(fx.runtimeDir() + "/devices/" + id + ".sock"));

	// Nothing is stuck: once the kernel cooperates the same request succeeds.
	fx.kernel().allowAll();
	fx.assignOk("vm1", { lab::kNicA, lab::kNicB, lab::kNicC });
}

TEST_CASE("launcher_printsEachDeviceWithItsSocket_andDeassigns", "[broker_assign]")
{
	BrokerFixture fx;
	const std::string launch = requireEnv("VFIO_BROKER_LAUNCH");
	auto r = runProcess({ launch, "--control", fx.controlSocket(), "--vm", "vm1", "--device", bdfOf(lab::kNicB),
			      "--device", lab::kSim });
	INFO(r.describe());
	REQUIRE(r.exited);
	REQUIRE(r.code == 0);
	auto a = fx.assignments("vm1");
	REQUIRE(a.size() == 2);
	// "<id> <socket>" per device, in request order.
	CHECK(r.out == lab::kNicB + " " + a[0].socket_path() + "\n" + lab::kSim + " " + a[1].socket_path() + "\n");
	CHECK(probeDeviceDaemon(a[0].socket_path()) == "");

	auto d = runProcess({ launch, "--control", fx.controlSocket(), "--vm", "vm1", "--device", lab::kNicB,
			      "--device", lab::kSim, "--deassign" });
	INFO(d.describe());
	REQUIRE(d.exited);
	CHECK(d.code == 0);
	CHECK(fx.assignments().empty());
	requireRestored(fx, lab::kNicB, "e1000e");
}

TEST_CASE("launcher_runsTheVmmWithTheSocketsThenDeassigns", "[broker_assign]")
{
	BrokerFixture fx;
	const std::string launch = requireEnv("VFIO_BROKER_LAUNCH");
	const std::string seen = fx.dir() + "/vmm-saw";
	// The "VMM" checks its argument is a live socket while the device is assigned, records it,
	// and exits 7: the launcher passes that status on after deassigning.
	auto r = runProcess({ launch, "--control", fx.controlSocket(), "--vm", "vm1", "--device", lab::kNicA, "--",
			      "/bin/sh", "-c", "test -S \"$1\" && echo \"$1\" > \"$2\" && exit 7", "vmm", "{socket}",
			      seen });
	INFO(r.describe());
	REQUIRE(r.exited);
	CHECK(r.code == 7);
	CHECK(readText(seen) == fx.runtimeDir() + "/devices/" + lab::kNicA + ".sock\n");
	CHECK(fx.assignments().empty());
	requireRestored(fx, lab::kNicA, "e1000e");
	CHECK(fx.deviceDaemons().empty());
}

TEST_CASE("launcher_whenTheBrokerRefuses_exitsNonZeroWithTheReason", "[broker_assign]")
{
	BrokerFixture fx;
	auto r = runProcess({ requireEnv("VFIO_BROKER_LAUNCH"), "--control", fx.controlSocket(), "--vm", "vm1",
			      "--device", lab::kDenied, "--", "/bin/true" });
	INFO(r.describe());
	REQUIRE(r.exited);
	CHECK(r.code == 1);
	CHECK_THAT(r.err, Contains(lab::kDenied));
	CHECK(fx.assignments().empty());
}

// LAUNCH_METHOD_SYSTEMD with the real template unit (run by tests/support/fake-systemctl): the
// daemon's socket is %t/vfio-broker/devices/%i.sock, %i being the escaped --device argument,
// and the broker must hand out that path, not one named after the device id.
TEST_CASE("assign_inSystemdMode_answersTheSocketTheTemplateUnitListensOn", "[broker_assign]")
{
	BrokerOptions opts;
	opts.runtimeSubdir = "run/vfio-broker"; // = %t/vfio-broker, with %t = <dir>/run
	opts.start = false;
	BrokerFixture fx(opts);
	const std::string root = requireEnv("VFIO_BROKER_SOURCE_ROOT");
	::setenv("FAKE_SYSTEMCTL_UNIT_FILE", (root + "/systemd/vfio-broker-device@.service").c_str(), 1);
	::setenv("FAKE_SYSTEMCTL_RUNTIME_DIR", (fx.dir() + "/run").c_str(), 1);
	::setenv("FAKE_SYSTEMCTL_STATE_DIR", (fx.dir() + "/fake-systemd").c_str(), 1);
	::setenv("FAKE_SYSTEMCTL_EXEC", requireEnv("VFIO_BROKER_DEVICE").c_str(), 1);
	::setenv("FAKE_SYSTEMCTL_STOP_TIMEOUT", "5", 1);
	fx.writeConfig("launch_method: LAUNCH_METHOD_SYSTEMD\n"
		       "systemctl: \"" + root + "/tests/support/fake-systemctl\"\n");
	REQUIRE(::mkdir((fx.dir() + "/run").c_str(), 0755) == 0); // %t exists before systemd starts anything
	fx.start();

	// The testing override makes the device argument "sim:edu": the unit instance is "sim:edu".
	auto a = fx.assignOk("vm1", { lab::kNicA });
	REQUIRE(a.size() == 1);
	CHECK(a[0].socket_path() == fx.runtimeDir() + "/devices/sim:edu.sock");
	CHECK(probeDeviceDaemon(a[0].socket_path()) == "");
	auto d = fx.deassign(lab::kNicA, "vm1");
	CHECK(d.ok());
}
