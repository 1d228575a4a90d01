// SPDX-License-Identifier: Apache-2.0
// Conflicting Assigns released together, round after round: exactly one wins, the others are
// refused with the conflict the winner causes.
#include "broker_fixture.h"

#include <barrier>
#include <thread>

using namespace vfio_broker;
using namespace vfio_broker::itest;

namespace {

constexpr int kRounds = 100;

struct Attempt {
	std::string vm;
	std::string device;
	grpc::Status status;
	std::optional<pb::CheckAssignmentResponse> conflicts;
};

// Catch2's assertions are not thread-safe: the racing threads only call the stub.
void attempt(pb::BrokerService::Stub &stub, Attempt &a)
{
	grpc::ClientContext ctx;
	ctx.set_deadline(std::chrono::system_clock::now() + kWait);
	pb::AssignRequest req;
	req.set_vm(a.vm);
	req.add_device_ids(a.device);
	pb::AssignResponse resp;
	a.status = stub.Assign(&ctx, req, &resp);
	const auto &trailers = ctx.GetServerTrailingMetadata();
	if (auto it = trailers.find("vfio-broker-conflicts-bin"); it != trailers.end()) {
		pb::CheckAssignmentResponse c;
		if (c.ParseFromArray(it->second.data(), static_cast<int>(it->second.size())))
			a.conflicts = c;
	}
}

// Each contender on its own channel (its own connection), all released by one barrier.
void race(std::vector<std::unique_ptr<pb::BrokerService::Stub>> &stubs, std::vector<Attempt> &attempts)
{
	std::barrier start(static_cast<std::ptrdiff_t>(attempts.size()));
	std::vector<std::thread> threads;
	for (size_t i = 0; i < attempts.size(); i++)
		threads.emplace_back([&, i] {
			start.arrive_and_wait();
			attempt(*stubs[i], attempts[i]);
		});
	for (auto &t : threads)
		t.join();
}

std::vector<std::unique_ptr<pb::BrokerService::Stub>> stubsFor(BrokerFixture &fx, size_t n)
{
	std::vector<std::unique_ptr<pb::BrokerService::Stub>> stubs;
	for (size_t i = 0; i < n; i++) {
		grpc::ChannelArguments args;
		args.SetInt("vfio-itest-contender", static_cast<int>(i)); // distinct args: no shared subchannel
		stubs.push_back(pb::BrokerService::NewStub(
			grpc::CreateCustomChannel("unix:" + fx.controlSocket(), grpc::InsecureChannelCredentials(), args)));
	}
	return stubs;
}

std::string describe(const std::vector<Attempt> &attempts)
{
	std::string s;
	for (const auto &a : attempts)
		s += "  " + a.device + " -> " + a.vm + ": " + itest::describe(a.status) + "\n";
	return s;
}

// One winner; every loser refused with `reason` naming the winner's VM.
void requireOneWinner(BrokerFixture &fx, int round, const std::vector<Attempt> &attempts, pb::ConflictReason reason)
{
	INFO("round " << round << ":\n" << describe(attempts));
	const Attempt *winner = nullptr;
	for (const auto &a : attempts) {
		if (a.status.ok()) {
			REQUIRE(!winner);
			winner = &a;
		}
	}
	REQUIRE(winner);
	for (const auto &a : attempts) {
		if (&a == winner)
			continue;
		REQUIRE(a.status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
		REQUIRE(a.conflicts);
		REQUIRE(a.conflicts->conflicts_size() >= 1);
		CHECK(a.conflicts->conflicts(0).reason() == reason);
		CHECK(a.conflicts->conflicts(0).other_vm() == winner->vm);
	}
	auto held = fx.assignments();
	REQUIRE(held.size() == 1);
	CHECK(held[0].device_id() == winner->device);
	CHECK(held[0].vm() == winner->vm);
	auto r = fx.deassign(winner->device, winner->vm);
	INFO(itest::describe(r.status));
	REQUIRE(r.ok());
	REQUIRE(r.value.was_assigned());
}

} // namespace

TEST_CASE("race_oneDeviceToThreeVms_hasExactlyOneWinnerPerRound", "[broker_race]")
{
	BrokerFixture fx;
	auto stubs = stubsFor(fx, 3);
	for (int round = 0; round < kRounds; round++) {
		std::vector<Attempt> attempts{ { "vm1", lab::kNicA, {}, {} },
					       { "vm2", lab::kNicA, {}, {} },
					       { "vm3", lab::kNicA, {}, {} } };
		race(stubs, attempts);
		requireOneWinner(fx, round, attempts, pb::CONFLICT_REASON_ASSIGNED_TO_OTHER_VM);
	}
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kNicA)) == "e1000e");
	CHECK(fx.kernel().overrideOf(bdfOf(lab::kNicA)).empty());
	CHECK(fx.deviceDaemons().empty());
}

TEST_CASE("race_twoMembersOfOneIommuGroupToTwoVms_hasExactlyOneWinnerPerRound", "[broker_race]")
{
	BrokerFixture fx;
	auto stubs = stubsFor(fx, 2);
	for (int round = 0; round < kRounds; round++) {
		// Alternate who is listed first, so neither contender is favoured by thread start order.
		std::vector<Attempt> attempts{ { "vm1", lab::kPair0, {}, {} }, { "vm2", lab::kPair1, {}, {} } };
		if (round % 2)
			std::swap(attempts[0], attempts[1]);
		race(stubs, attempts);
		requireOneWinner(fx, round, attempts, pb::CONFLICT_REASON_IOMMU_GROUP_SPLIT);
	}
	REQUIRE(fx.kernel().settle());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kPair0)).empty());
	CHECK(fx.sysfs().driverOf(bdfOf(lab::kPair1)).empty());
	CHECK(fx.deviceDaemons().empty());
}
