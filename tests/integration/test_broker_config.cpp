// SPDX-License-Identifier: Apache-2.0
// Bad configuration files stop vfio-brokerd before it touches anything, naming file, line and
// field (and --check-config says the same); bad requests are refused while it keeps serving.
#include "broker_fixture.h"

#include <sys/stat.h>

using namespace vfio_broker;
using namespace vfio_broker::itest;
using Catch::Matchers::Contains;

namespace {

bool pathExists(const std::string &path)
{
	struct stat st;
	return ::lstat(path.c_str(), &st) == 0;
}

// Both a start and --check-config fail with exit status 2 and exactly `message` (one line,
// after the program name) on stderr; the start never creates the control socket.
void requireRejected(BrokerFixture &fx, const std::string &message)
{
	INFO("expected: " << message);
	auto start = runProcess({ fx.brokerd(), "--config", fx.configPath() });
	INFO("start: " << start.describe());
	REQUIRE(start.exited);
	CHECK(start.code == 2);
	CHECK(start.err == "vfio-brokerd: " + message + "\n");
	CHECK_FALSE(pathExists(fx.controlSocket()));
	CHECK_FALSE(pathExists(fx.stateDir()));

	auto check = runProcess({ fx.brokerd(), "--config", fx.configPath(), "--check-config" });
	INFO("--check-config: " << check.describe());
	REQUIRE(check.exited);
	CHECK(check.code == 2);
	CHECK(check.err == start.err);
}

BrokerOptions stopped()
{
	BrokerOptions o;
	o.start = false;
	return o;
}

std::vector<std::string> manySims(size_t n)
{
	return std::vector<std::string>(n, lab::kSim);
}

// The broker still serves after whatever a test sent it.
void requireServing(BrokerFixture &fx)
{
	auto r = fx.listDevices();
	INFO(describe(r.status));
	REQUIRE(r.ok());
	CHECK(r.value.devices_size() == 21);
	REQUIRE(processAlive(fx.pid()));
}

} // namespace

TEST_CASE("config_goodFiles_passCheckConfig", "[broker_config]")
{
	BrokerFixture fx(stopped());
	auto r = runProcess({ fx.brokerd(), "--config", fx.configPath(), "--check-config" });
	INFO(r.describe());
	REQUIRE(r.exited);
	CHECK(r.code == 0);
	CHECK(r.out == fx.configPath() + ": OK\n" + fx.policyPath() + ": OK, 19 rule(s)\n");
	CHECK_FALSE(pathExists(fx.controlSocket()));
}

TEST_CASE("config_syntaxError_isReportedWithLineAndColumn", "[broker_config]")
{
	BrokerFixture fx(stopped());
	fx.writeConfig("admin_group \"kvm\"\n"); // line 12: the colon is missing
	requireRejected(fx, fx.configPath() + ":12:13: Expected \":\", found \"\"kvm\"\".");
}

TEST_CASE("config_unknownField_isReportedByName", "[broker_config]")
{
	BrokerFixture fx(stopped());
	fx.writeConfig("# a typo follows\n  contol_socket: \"/run/x.sock\"\n");
	requireRejected(fx, fx.configPath() + ":13:3: unknown field \"contol_socket\" (DaemonConfig has no such field)");
}

TEST_CASE("config_badValue_namesTheLineAndField", "[broker_config]")
{
	BrokerFixture fx(stopped());
	fx.writeConfig("device_daemon_args: \"--socket=/tmp/x.sock\"\n");
	requireRejected(fx, fx.configPath() + ":12: device_daemon_args[0]: \"--socket=/tmp/x.sock\" is set by the "
					      "broker for every device daemon and may not be given here");
}

TEST_CASE("config_badPolicyRule_namesThePolicyFileLineAndField", "[broker_config]")
{
	BrokerFixture fx(stopped());
	fx.writePolicy("board: \"x\"\nrules {\n  name: \"nic\"\n  pci_address: \"01:00.0\"\n}\n");
	requireRejected(fx, fx.policyPath() + ":4: rules[0] (\"nic\").pci_address: \"01:00.0\" is not a PCI address like "
					      "0000:01:00.0");
}

TEST_CASE("config_unknownFieldInAPolicyRule_isReportedWithLineAndColumn", "[broker_config]")
{
	BrokerFixture fx(stopped());
	fx.writePolicy("rules { name: \"nic\" pci_adress: \"0000:01:00.0\" }\n");
	requireRejected(fx, fx.policyPath() + ":1:21: unknown field \"pci_adress\" (DeviceRule has no such field)");
}

TEST_CASE("config_policyRuleAllowingNoIommuWithoutIdentity_isRejected", "[broker_config]")
{
	BrokerFixture fx(stopped());
	fx.writePolicy("rules {\n  name: \"rtc\"\n  pci_address: \"0000:07:00.0\"\n  allow_no_iommu: true\n}\n");
	requireRejected(fx, fx.policyPath() + ":4: rules[0] (\"rtc\").allow_no_iommu: needs allow_identity_mapping: true "
					      "(a device without an IOMMU is only assigned identity-mapped)");
}

TEST_CASE("config_missingFile_isNamed", "[broker_config]")
{
	BrokerFixture fx(stopped());
	auto r = runProcess({ fx.brokerd(), "--config", fx.dir() + "/absent.conf" });
	INFO(r.describe());
	REQUIRE(r.exited);
	CHECK(r.code == 2);
	CHECK_THAT(r.err, Contains(fx.dir() + "/absent.conf"));
	CHECK_THAT(r.err, Contains("No such file"));
}

TEST_CASE("request_withoutVm_isInvalidArgument", "[broker_config]")
{
	BrokerFixture fx;
	CHECK(fx.assign("", { lab::kSim }).code() == grpc::StatusCode::INVALID_ARGUMENT);
	CHECK(fx.check("", { lab::kSim }).code() == grpc::StatusCode::INVALID_ARGUMENT);
	requireServing(fx);
}

TEST_CASE("request_withABadVmName_isInvalidArgument", "[broker_config]")
{
	BrokerFixture fx;
	for (const std::string &vm : std::vector<std::string>{ "vm 1", "../etc", "vm;reboot", "vm\n1", std::string(65, 'v') }) {
		INFO("vm \"" << vm << "\"");
		auto r = fx.assign(vm, { lab::kSim });
		CHECK(r.code() == grpc::StatusCode::INVALID_ARGUMENT);
		CHECK(fx.check(vm, { lab::kSim }).code() == grpc::StatusCode::INVALID_ARGUMENT);
		CHECK(fx.listAssignments(vm).code() == grpc::StatusCode::INVALID_ARGUMENT);
		CHECK(fx.deassign(lab::kSim, vm).code() == grpc::StatusCode::INVALID_ARGUMENT);
	}
	// The longest name allowed is fine.
	fx.assignOk(std::string(64, 'v'), { lab::kSim });
	requireServing(fx);
}

TEST_CASE("request_withTooManyDevices_isInvalidArgument", "[broker_config]")
{
	BrokerFixture fx;
	auto r = fx.assign("vm1", manySims(65));
	INFO(describe(r.status));
	CHECK(r.code() == grpc::StatusCode::INVALID_ARGUMENT);
	CHECK_THAT(r.status.error_message(), Contains("64"));
	CHECK(fx.check("vm1", manySims(65)).code() == grpc::StatusCode::INVALID_ARGUMENT);
	CHECK(fx.assign("vm1", {}).code() == grpc::StatusCode::INVALID_ARGUMENT);
	// 64 is within the limit: refused only as duplicates.
	CHECK(fx.assign("vm1", manySims(64)).code() == grpc::StatusCode::FAILED_PRECONDITION);
	CHECK(fx.assignments().empty());
	requireServing(fx);
}

TEST_CASE("request_withHugeIds_isInvalidArgument", "[broker_config]")
{
	BrokerFixture fx;
	const std::string huge = "pci:" + std::string(300, '0');
	CHECK(fx.assign("vm1", { huge }).code() == grpc::StatusCode::INVALID_ARGUMENT);
	CHECK(fx.check("vm1", { huge }).code() == grpc::StatusCode::INVALID_ARGUMENT);
	CHECK(fx.getDevice(huge).code() == grpc::StatusCode::INVALID_ARGUMENT);
	CHECK(fx.deassign(huge).code() == grpc::StatusCode::INVALID_ARGUMENT);
	CHECK(fx.release(huge).code() == grpc::StatusCode::INVALID_ARGUMENT);
	CHECK(fx.getDevice("").code() == grpc::StatusCode::INVALID_ARGUMENT);
	// A request larger than the server takes at all (1 MiB).
	CHECK(fx.assign("vm1", { std::string(2 << 20, 'x') }).code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
	requireServing(fx);
}

TEST_CASE("request_forAnUnknownDevice_isNotFoundOrAConflict", "[broker_config]")
{
	BrokerFixture fx;
	const std::string ghost = "pci:0000:99:00.0";
	CHECK(fx.getDevice(ghost).code() == grpc::StatusCode::NOT_FOUND);
	CHECK(fx.getDevice("sim:nothing").code() == grpc::StatusCode::NOT_FOUND);
	CHECK(fx.deassign(ghost).code() == grpc::StatusCode::NOT_FOUND);
	CHECK(fx.release(ghost).code() == grpc::StatusCode::NOT_FOUND);
	auto a = fx.assign("vm1", { ghost });
	CHECK(a.code() == grpc::StatusCode::FAILED_PRECONDITION);
	REQUIRE(a.conflicts);
	CHECK(a.conflicts->conflicts(0).reason() == pb::CONFLICT_REASON_UNKNOWN_DEVICE);
	// Not a device id, a PCI address or a sysfs path: still only a refusal, never a crash.
	for (const std::string odd : { "../../../etc/passwd", "/sys/../../etc", "pci:zz:zz.z", "\x01\x02" }) {
		INFO("id \"" << odd << "\"");
		auto r = fx.assign("vm1", { odd });
		CHECK_FALSE(r.ok());
		CHECK(r.code() != grpc::StatusCode::INTERNAL);
		CHECK(r.code() != grpc::StatusCode::UNAVAILABLE);
	}
	requireServing(fx);
}

TEST_CASE("request_watchFilterTooLong_isInvalidArgument", "[broker_config]")
{
	BrokerFixture fx;
	grpc::ClientContext ctx;
	ctx.set_deadline(std::chrono::system_clock::now() + kWait);
	pb::WatchEventsRequest req;
	req.set_vm(std::string(100, 'v'));
	auto reader = fx.stub().WatchEvents(&ctx, req);
	pb::WatchEventsResponse resp;
	CHECK_FALSE(reader->Read(&resp));
	CHECK(reader->Finish().error_code() == grpc::StatusCode::INVALID_ARGUMENT);
	requireServing(fx);
}
