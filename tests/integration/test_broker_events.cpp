// SPDX-License-Identifier: Apache-2.0
// WatchEvents: the documented order of each operation's events, filters, sequence numbers,
// and the end of a stream when the broker stops.
#include "broker_fixture.h"

#include <algorithm>

using namespace vfio_broker;
using namespace vfio_broker::itest;
using Catch::Matchers::Contains;
using Types = std::vector<pb::EventType>;

namespace {

std::function<bool(const pb::Event &)> is(pb::EventType type, const std::string &device = "")
{
	return [type, device](const pb::Event &e) {
		return e.type() == type && (device.empty() || e.device_id() == device);
	};
}

std::vector<pb::Event> of(const std::vector<pb::Event> &events, const std::string &device)
{
	std::vector<pb::Event> out;
	for (const auto &e : events)
		if (e.device_id() == device)
			out.push_back(e);
	return out;
}

} // namespace

TEST_CASE("events_assign_emitsAssigningBoundDaemonStartedAssigned", "[broker_events]")
{
	BrokerFixture fx;
	auto events = fx.watch();
	auto a = fx.assignOk("vm1", { lab::kNicA });
	auto seen = events->until(is(pb::EVENT_TYPE_ASSIGNED));
	INFO(describe(seen));
	REQUIRE(typesOf(seen) == Types{ pb::EVENT_TYPE_ASSIGNING, pb::EVENT_TYPE_BOUND, pb::EVENT_TYPE_DAEMON_STARTED,
					pb::EVENT_TYPE_ASSIGNED });
	for (const auto &e : seen) {
		CHECK(e.device_id() == lab::kNicA);
		CHECK(e.vm() == "vm1");
		CHECK_FALSE(e.message().empty());
		CHECK(e.time().seconds() > 0);
	}
	CHECK_THAT(seen[1].message(), Contains("vfio-pci"));
	CHECK(seen[2].daemon_pid() == a[0].daemon_pid());
	CHECK(seen[3].daemon_pid() == a[0].daemon_pid());
}

TEST_CASE("events_assignOfSeveralDevices_keepsTheOrderPerDevice", "[broker_events]")
{
	BrokerFixture fx;
	auto events = fx.watch();
	fx.assignOk("vm1", { lab::kNicA, lab::kSim, lab::kNicB });
	auto seen = events->until(is(pb::EVENT_TYPE_ASSIGNED, lab::kNicB));
	INFO(describe(seen));
	for (const auto &id : { lab::kNicA, lab::kSim, lab::kNicB }) {
		INFO(id);
		CHECK(typesOf(of(seen, id)) == Types{ pb::EVENT_TYPE_ASSIGNING, pb::EVENT_TYPE_BOUND,
						       pb::EVENT_TYPE_DAEMON_STARTED, pb::EVENT_TYPE_ASSIGNED });
	}
	// ASSIGNED only once every device serves: all or nothing.
	size_t firstAssigned = 0;
	while (firstAssigned < seen.size() && seen[firstAssigned].type() != pb::EVENT_TYPE_ASSIGNED)
		firstAssigned++;
	CHECK(firstAssigned == 9);
}

TEST_CASE("events_deassign_emitsDeassigningDaemonStoppedDriverRestoredDeassigned", "[broker_events]")
{
	BrokerFixture fx;
	fx.assignOk("vm1", { lab::kNicC });
	auto events = fx.watch();
	REQUIRE(fx.deassign(lab::kNicC).ok());
	auto seen = events->until(is(pb::EVENT_TYPE_DEASSIGNED));
	INFO(describe(seen));
	REQUIRE(typesOf(seen) == Types{ pb::EVENT_TYPE_DEASSIGNING, pb::EVENT_TYPE_DAEMON_STOPPED,
					pb::EVENT_TYPE_DRIVER_RESTORED, pb::EVENT_TYPE_DEASSIGNED });
	CHECK_THAT(seen[2].message(), Contains("igb"));
	for (const auto &e : seen)
		CHECK(e.vm() == "vm1");
}

TEST_CASE("events_deassignUnderQuarantine_emitsQuarantined_andReleaseRestores", "[broker_events]")
{
	BrokerFixture fx;
	fx.assignOk("vm1", { lab::kQuarantine });
	auto events = fx.watch();
	REQUIRE(fx.deassign(lab::kQuarantine).ok());
	auto seen = events->until(is(pb::EVENT_TYPE_DEASSIGNED));
	INFO(describe(seen));
	REQUIRE(typesOf(seen) == Types{ pb::EVENT_TYPE_DEASSIGNING, pb::EVENT_TYPE_DAEMON_STOPPED,
					pb::EVENT_TYPE_QUARANTINED, pb::EVENT_TYPE_DEASSIGNED });

	REQUIRE(fx.release(lab::kQuarantine).ok());
	auto released = events->until(is(pb::EVENT_TYPE_RELEASED));
	INFO(describe(released));
	REQUIRE(typesOf(released) == Types{ pb::EVENT_TYPE_DRIVER_RESTORED, pb::EVENT_TYPE_RELEASED });
	CHECK_THAT(released[0].message(), Contains("e1000e"));
}

TEST_CASE("events_failedAssign_emitsAssignFailedAfterTheStepsItUndid", "[broker_events]")
{
	BrokerFixture fx;
	fx.kernel().refuse("vfio-pci", bdfOf(lab::kNicC));
	auto events = fx.watch();
	REQUIRE_FALSE(fx.assign("vm1", { lab::kNicA, lab::kNicC }).ok());
	auto seen = events->until(is(pb::EVENT_TYPE_ASSIGN_FAILED));
	INFO(describe(seen));
	REQUIRE(typesOf(seen) == Types{ pb::EVENT_TYPE_ASSIGNING, pb::EVENT_TYPE_BOUND, pb::EVENT_TYPE_DAEMON_STARTED,
					pb::EVENT_TYPE_ASSIGNING, pb::EVENT_TYPE_ASSIGN_FAILED });
	CHECK(seen[4].device_id() == lab::kNicC);
	CHECK_THAT(seen[4].message(), Contains(lab::kNicC));
}

TEST_CASE("events_refusedAssign_emitsNothing", "[broker_events]")
{
	BrokerFixture fx;
	auto events = fx.watch();
	REQUIRE(fx.assign("vm1", { lab::kDenied }).code() == grpc::StatusCode::FAILED_PRECONDITION);
	REQUIRE(fx.check("vm1", { lab::kNicA }).ok());
	fx.assignOk("vm1", { lab::kSim });
	// The first event is the successful Assign's: neither the refusal nor the dry run published any.
	auto first = events->next();
	REQUIRE(first);
	CHECK(first->type() == pb::EVENT_TYPE_ASSIGNING);
	CHECK(first->device_id() == lab::kSim);
}

TEST_CASE("events_filteredByDevice_deliverOnlyThatDevice", "[broker_events]")
{
	BrokerFixture fx;
	auto events = fx.watch(lab::kNicB);
	fx.assignOk("vm1", { lab::kNicA });
	fx.assignOk("vm2", { lab::kNicB });
	REQUIRE(fx.deassign(lab::kNicA).ok());
	REQUIRE(fx.deassign(lab::kNicB).ok());
	auto seen = events->until(is(pb::EVENT_TYPE_DEASSIGNED));
	INFO(describe(seen));
	REQUIRE(seen.size() == 8);
	for (const auto &e : seen)
		CHECK(e.device_id() == lab::kNicB);
}

TEST_CASE("events_filteredByVm_deliverOnlyThatVm", "[broker_events]")
{
	BrokerFixture fx;
	auto events = fx.watch("", "vm2");
	fx.assignOk("vm1", { lab::kNicA });
	fx.assignOk("vm2", { lab::kNicB, lab::kSim });
	fx.assignOk("vm1", { lab::kNicC });
	REQUIRE(fx.deassign(lab::kSim).ok());
	auto seen = events->until(is(pb::EVENT_TYPE_DEASSIGNED));
	INFO(describe(seen));
	REQUIRE(seen.size() == 12);
	for (const auto &e : seen)
		CHECK(e.vm() == "vm2");
	CHECK(seen.back().device_id() == lab::kSim);
}

TEST_CASE("events_sequenceNumbers_increaseByOnePerEvent", "[broker_events]")
{
	BrokerFixture fx;
	auto all = fx.watch();
	auto some = fx.watch(lab::kNicB);
	fx.assignOk("vm1", { lab::kNicA, lab::kNicB });
	REQUIRE(fx.deassign(lab::kNicA).ok());
	REQUIRE(fx.deassign(lab::kNicB).ok());
	auto seen = all->until(is(pb::EVENT_TYPE_DEASSIGNED, lab::kNicB));
	INFO(describe(seen));
	REQUIRE(seen.size() == 16);
	for (size_t i = 1; i < seen.size(); i++)
		CHECK(seen[i].sequence() == seen[i - 1].sequence() + 1);
	// A filtered watcher sees the same numbers, with gaps where others' events were.
	auto filtered = some->until(is(pb::EVENT_TYPE_DEASSIGNED, lab::kNicB));
	INFO(describe(filtered));
	REQUIRE(filtered.size() == 8);
	for (size_t i = 1; i < filtered.size(); i++)
		CHECK(filtered[i].sequence() > filtered[i - 1].sequence());
	for (const auto &e : filtered) {
		auto same = std::find_if(seen.begin(), seen.end(),
					 [&](const pb::Event &s) { return s.sequence() == e.sequence(); });
		REQUIRE(same != seen.end());
		CHECK(same->type() == e.type());
		CHECK(same->device_id() == e.device_id());
	}
}

TEST_CASE("events_streamEndsWithUnavailable_whenTheBrokerStops", "[broker_events]")
{
	BrokerFixture fx;
	auto events = fx.watch();
	fx.stop();
	// Stopping publishes no event: next() returns once the stream has ended.
	CHECK_FALSE(events->next());
	auto end = events->finished();
	REQUIRE(end);
	INFO(describe(*end));
	CHECK(end->error_code() == grpc::StatusCode::UNAVAILABLE);
}

TEST_CASE("events_watchersBeyondTheLimit_areRefused_andTheApiStaysUsable", "[broker_events]")
{
	BrokerFixture fx;
	// Each stream holds a server thread while it lasts: without a cap below the thread
	// budget (32), idle watchers would starve Assign and Deassign (RESOURCE_EXHAUSTED for all).
	std::vector<std::unique_ptr<EventWatch>> watches;
	for (int i = 0; i < 40; i++)
		watches.push_back(fx.watch());
	fx.assignOk("vm1", { lab::kSim });
	REQUIRE(fx.deassign(lab::kSim).ok());

	// An admitted watcher has the Assign's first event; a refused one has ended at once.
	int admitted = 0, refused = 0;
	for (auto &w : watches) {
		auto e = w->next();
		if (e) {
			admitted++;
			CHECK(e->type() == pb::EVENT_TYPE_ASSIGNING);
			continue;
		}
		refused++;
		auto end = w->finished();
		REQUIRE(end);
		INFO(describe(*end));
		CHECK(end->error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
	}
	CHECK(admitted == 16);
	CHECK(refused == 24);
}
