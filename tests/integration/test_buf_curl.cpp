// SPDX-License-Identifier: Apache-2.0
// The running broker as an operator drives it: `buf curl` over the Unix socket, with the schema
// from server reflection only (no .proto files), JSON in and out.
#include "broker_fixture.h"

#include <google/protobuf/util/json_util.h>

using namespace vfio_broker;
using namespace vfio_broker::itest;
using Catch::Matchers::Contains;

namespace {

std::string bufScript()
{
	return requireEnv("VFIO_BROKER_SOURCE_ROOT") + "/scripts/buf.sh";
}

// Why buf cannot run here ("" when it can): scripts/buf.sh exits 77 with the reason.
std::string whyNoBuf()
{
	auto r = runProcess({ bufScript(), "--version" });
	if (r.exited && r.code == 77) {
		std::string why = r.out + r.err;
		if (why.rfind("SKIP: ", 0) == 0)
			why.erase(0, 6);
		while (!why.empty() && why.back() == '\n')
			why.pop_back();
		return why;
	}
	// Only scripts/buf.sh's "cannot run here" (77) skips; a broken buf is a failure.
	if (!r.exited || r.code != 0)
		FAIL("buf --version failed: " << r.describe());
	return "";
}

// buf curl against the fixture's control socket: gRPC over HTTP/2 without TLS, schema by
// reflection (no --reflect-protocol: buf tries v1, then the v1alpha gRPC 1.51 serves).
ProcessResult curl(BrokerFixture &fx, std::vector<std::string> args)
{
	std::vector<std::string> argv{ bufScript(), "curl", "--unix-socket", fx.controlSocket(), "--protocol", "grpc",
				       "--http2-prior-knowledge" };
	argv.insert(argv.end(), args.begin(), args.end());
	return runProcess(argv);
}

ProcessResult call(BrokerFixture &fx, const std::string &method, const std::string &json)
{
	return curl(fx, { "-d", json, "http://localhost/" + method });
}

template<typename Message>
Message fromJson(const std::string &json)
{
	Message m;
	auto s = google::protobuf::util::JsonStringToMessage(json, &m);
	INFO("JSON: " << json);
	INFO("parse: " << s.ToString());
	REQUIRE(s.ok());
	return m;
}

} // namespace

TEST_CASE("bufCurl_listServices_showsTheBrokerHealthAndReflection", "[buf_curl]")
{
	if (std::string why = whyNoBuf(); !why.empty())
		SKIP_TEST(why);
	BrokerFixture fx;
	auto r = curl(fx, { "--list-services", "http://localhost" });
	INFO(r.describe());
	REQUIRE(r.exited);
	REQUIRE(r.code == 0);
	CHECK_THAT(r.out, Contains("vfio_broker.v1.BrokerService\n"));
	CHECK_THAT(r.out, Contains("grpc.health.v1.Health\n"));
	CHECK_THAT(r.out, Contains("grpc.reflection.v1alpha.ServerReflection\n"));
}

TEST_CASE("bufCurl_healthCheck_isServing", "[buf_curl]")
{
	if (std::string why = whyNoBuf(); !why.empty())
		SKIP_TEST(why);
	BrokerFixture fx;
	for (const std::string service : { "vfio_broker.v1.BrokerService", "" }) {
		INFO("service \"" << service << "\"");
		auto r = call(fx, "grpc.health.v1.Health/Check", "{\"service\":\"" + service + "\"}");
		INFO(r.describe());
		REQUIRE(r.exited);
		REQUIRE(r.code == 0);
		CHECK_THAT(r.out, Contains("\"status\": \"SERVING\""));
	}
	// An unknown service is NOT_FOUND: exit status = gRPC code (5) x 8.
	auto unknown = call(fx, "grpc.health.v1.Health/Check", "{\"service\":\"no.such.Service\"}");
	INFO(unknown.describe());
	CHECK(unknown.code == 40);
}

TEST_CASE("bufCurl_listDevices_answersTheLabAsJson", "[buf_curl]")
{
	if (std::string why = whyNoBuf(); !why.empty())
		SKIP_TEST(why);
	BrokerFixture fx;
	auto r = call(fx, "vfio_broker.v1.BrokerService/ListDevices", "{}");
	INFO(r.describe());
	REQUIRE(r.exited);
	REQUIRE(r.code == 0);
	auto list = fromJson<pb::ListDevicesResponse>(r.out);
	REQUIRE(list.devices_size() == 21);
	const pb::Device &nic = list.devices(0);
	CHECK(nic.id() == lab::kNicA);
	CHECK(nic.driver() == "e1000e");
	CHECK(nic.kind() == pb::DEVICE_KIND_PCI);
	CHECK(nic.iommu_group().number() == 1);
	CHECK(nic.policy().allowed());
	CHECK(nic.policy().rule() == "nic-a");
	CHECK(nic.state() == pb::DEVICE_STATE_AVAILABLE);
	CHECK(list.devices(20).id() == lab::kSim);
	// Enums travel by name, as a person reads them.
	CHECK_THAT(r.out, Contains("\"DEVICE_KIND_PCI\""));
}

TEST_CASE("bufCurl_assignThenDeassign_withJsonBodies", "[buf_curl]")
{
	if (std::string why = whyNoBuf(); !why.empty())
		SKIP_TEST(why);
	BrokerFixture fx;
	auto a = call(fx, "vfio_broker.v1.BrokerService/Assign",
		      "{\"vm\": \"vm1\", \"deviceIds\": [\"0000:01:00.0\", \"sim:edu\"]}");
	INFO(a.describe());
	REQUIRE(a.exited);
	REQUIRE(a.code == 0);
	auto assigned = fromJson<pb::AssignResponse>(a.out);
	REQUIRE(assigned.assignments_size() == 2);
	CHECK(assigned.assignments(0).device_id() == lab::kNicA);
	CHECK(assigned.assignments(0).original_driver() == "e1000e");
	CHECK(assigned.assignments(0).daemon_state() == pb::DAEMON_STATE_RUNNING);
	CHECK(probeDeviceDaemon(assigned.assignments(0).socket_path()) == "");
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kNicA)) == "vfio-pci");

	auto l = call(fx, "vfio_broker.v1.BrokerService/ListAssignments", "{\"vm\": \"vm1\"}");
	INFO(l.describe());
	REQUIRE(l.code == 0);
	CHECK(fromJson<pb::ListAssignmentsResponse>(l.out).assignments_size() == 2);

	auto d = call(fx, "vfio_broker.v1.BrokerService/Deassign", "{\"deviceId\": \"pci:0000:01:00.0\", \"vm\": \"vm1\"}");
	INFO(d.describe());
	REQUIRE(d.exited);
	REQUIRE(d.code == 0);
	auto back = fromJson<pb::DeassignResponse>(d.out);
	CHECK(back.was_assigned());
	CHECK(back.state() == pb::DEVICE_STATE_AVAILABLE);
	CHECK(back.driver() == "e1000e");
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kNicA)) == "e1000e");
	CHECK(fx.assignments().size() == 1);
}

TEST_CASE("bufCurl_refusedAssign_exitsWithTheFailedPreconditionCode", "[buf_curl]")
{
	if (std::string why = whyNoBuf(); !why.empty())
		SKIP_TEST(why);
	BrokerFixture fx;
	auto r = call(fx, "vfio_broker.v1.BrokerService/Assign", "{\"vm\": \"vm1\", \"deviceIds\": [\"0000:0d:00.0\"]}");
	INFO(r.describe());
	REQUIRE(r.exited);
	CHECK(r.code == 9 * 8);
	CHECK_THAT(r.err, Contains("failed_precondition"));
	CHECK_THAT(r.err, Contains("0000:0d:00.0"));
	CHECK(fx.assignments().empty());
}

TEST_CASE("bufCurl_getLaunchConfig_answersCrosvmArgsAndTheOverlayAsBase64", "[buf_curl]")
{
	if (std::string why = whyNoBuf(); !why.empty())
		SKIP_TEST(why);
	BrokerOptions options;
	options.policy = std::string(kDefaultPolicy) + "rules { name: \"sim-platform\" simulated: \"sim:platform\" }\n";
	options.extraConfig = "simulated_devices: \"sim:platform\"\n";
	BrokerFixture fx(options);
	auto a = call(fx, "vfio_broker.v1.BrokerService/Assign", "{\"vm\": \"vm1\", \"deviceIds\": [\"sim:platform\"]}");
	INFO(a.describe());
	REQUIRE(a.code == 0);
	auto r = call(fx, "vfio_broker.v1.BrokerService/GetLaunchConfig",
		      "{\"vm\": \"vm1\", \"vmm\": \"VMM_CROSVM\", \"guestMmioBase\": \"268435456\", "
		      "\"guestMmioSize\": \"1048576\", \"firstGuestSpi\": 32, \"overlayPath\": \"/run/vm1.dtbo\"}");
	INFO(r.describe());
	REQUIRE(r.exited);
	REQUIRE(r.code == 0);
	auto config = fromJson<pb::GetLaunchConfigResponse>(r.out);
	REQUIRE(config.args_size() == 4);
	CHECK(config.args(0) == "--vfio");
	CHECK_THAT(config.args(1), Catch::StartsWith("/sys/bus/platform/devices/9100000.sim-platform,dt-symbol="));
	CHECK(config.args(3) == "/run/vm1.dtbo,filter");
	REQUIRE(config.placements_size() == 1);
	CHECK(config.placements(0).guest_spis(0) == 32);
	// bytes travel as base64 in JSON; the decoded overlay is a device tree (magic d00dfeed).
	REQUIRE(config.overlay().size() > 4);
	CHECK(static_cast<uint8_t>(config.overlay()[0]) == 0xd0);
	CHECK(static_cast<uint8_t>(config.overlay()[1]) == 0x0d);
}
