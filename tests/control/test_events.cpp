// SPDX-License-Identifier: Apache-2.0
// EventBus and Subscription: ordering, sequence and time stamps, filters, overflow, subscriber limit, close.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "control/events.h"

using namespace std::chrono_literals;
using vfio_broker::control::EventBus;
using vfio_broker::control::Subscription;
namespace pb = vfio_broker::v1;

namespace {

// How long next() may wait for an event that has already been published: a failure bound only.
constexpr auto kWait = 5000ms;

std::vector<pb::Event> drain(Subscription &sub)
{
	std::vector<pb::Event> got;
	while (auto e = sub.next(0ms))
		got.push_back(*e);
	return got;
}

} // namespace

TEST_CASE("publish_stampsSequenceNumbersIncreasingByOne", "[events]")
{
	EventBus bus;
	auto a = bus.publish(pb::EVENT_TYPE_ASSIGNING, "sim:edu", "vm1", "assigning");
	auto b = bus.publish(pb::EVENT_TYPE_BOUND, "sim:edu", "vm1", "bound");
	auto c = bus.publish(pb::EVENT_TYPE_ASSIGNED, "other", "vm2", "assigned");
	CHECK(a.sequence() == 1);
	CHECK(b.sequence() == 2);
	CHECK(c.sequence() == 3);
}

TEST_CASE("publish_stampsWallClockTime", "[events]")
{
	EventBus bus;
	auto before = std::chrono::system_clock::now();
	auto e = bus.publish(pb::EVENT_TYPE_ASSIGNING, "sim:edu", "vm1", "");
	auto after = std::chrono::system_clock::now();
	auto sinceEpoch =
		std::chrono::seconds(e.time().seconds()) + std::chrono::nanoseconds(e.time().nanos());
	auto stamped = std::chrono::system_clock::time_point(
		std::chrono::duration_cast<std::chrono::system_clock::duration>(sinceEpoch));
	CHECK(e.has_time());
	CHECK(e.time().nanos() >= 0);
	CHECK(e.time().nanos() < 1000000000);
	CHECK(stamped >= std::chrono::floor<std::chrono::microseconds>(before));
	CHECK(stamped <= after);
}

TEST_CASE("publish_carriesTypeDeviceVmMessageAndPid", "[events]")
{
	EventBus bus;
	auto sub = bus.subscribe("", "");
	REQUIRE(sub);
	bus.publish(pb::EVENT_TYPE_DAEMON_STARTED, "sim:edu", "vm1", "daemon started", 4242);
	auto e = sub->next(kWait);
	REQUIRE(e);
	CHECK(e->type() == pb::EVENT_TYPE_DAEMON_STARTED);
	CHECK(e->device_id() == "sim:edu");
	CHECK(e->vm() == "vm1");
	CHECK(e->message() == "daemon started");
	CHECK(e->daemon_pid() == 4242);
	CHECK(e->sequence() == 1);
}

TEST_CASE("subscription_receivesEventsInPublishOrder", "[events]")
{
	EventBus bus;
	auto sub = bus.subscribe("", "");
	REQUIRE(sub);
	const std::vector<pb::EventType> order = { pb::EVENT_TYPE_ASSIGNING, pb::EVENT_TYPE_BOUND,
						   pb::EVENT_TYPE_DAEMON_STARTED, pb::EVENT_TYPE_ASSIGNED };
	for (auto t : order)
		bus.publish(t, "sim:edu", "vm1", "");
	auto got = drain(*sub);
	REQUIRE(got.size() == order.size());
	for (size_t i = 0; i < order.size(); i++) {
		CHECK(got[i].type() == order[i]);
		CHECK(got[i].sequence() == i + 1);
	}
}

TEST_CASE("subscription_seesOnlyEventsPublishedAfterSubscribing", "[events]")
{
	EventBus bus;
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "sim:edu", "vm1", "");
	auto sub = bus.subscribe("", "");
	REQUIRE(sub);
	bus.publish(pb::EVENT_TYPE_BOUND, "sim:edu", "vm1", "");
	auto got = drain(*sub);
	REQUIRE(got.size() == 1);
	CHECK(got[0].type() == pb::EVENT_TYPE_BOUND);
	CHECK(got[0].sequence() == 2);
}

TEST_CASE("subscription_deviceFilter_dropsOtherDevices", "[events]")
{
	EventBus bus;
	auto sub = bus.subscribe("sim:edu", "");
	REQUIRE(sub);
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "other", "vm1", "");
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "sim:edu", "vm1", "");
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "sim:edu", "vm2", "");
	auto got = drain(*sub);
	REQUIRE(got.size() == 2);
	CHECK(got[0].sequence() == 2);
	CHECK(got[1].sequence() == 3);
}

TEST_CASE("subscription_vmFilter_dropsOtherVms", "[events]")
{
	EventBus bus;
	auto sub = bus.subscribe("", "vm2");
	REQUIRE(sub);
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "a", "vm1", "");
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "b", "vm2", "");
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "c", "", "");
	auto got = drain(*sub);
	REQUIRE(got.size() == 1);
	CHECK(got[0].device_id() == "b");
}

TEST_CASE("subscription_deviceAndVmFilters_mustBothMatch", "[events]")
{
	EventBus bus;
	auto sub = bus.subscribe("sim:edu", "vm1");
	REQUIRE(sub);
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "sim:edu", "vm2", "");
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "other", "vm1", "");
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "sim:edu", "vm1", "");
	auto got = drain(*sub);
	REQUIRE(got.size() == 1);
	CHECK(got[0].sequence() == 3);
}

TEST_CASE("subscription_filteredOutEvents_stillConsumeSequenceNumbers", "[events]")
{
	// Gaps in a filtered stream are expected; the numbers are the broker's, not the stream's.
	EventBus bus;
	auto sub = bus.subscribe("b", "");
	REQUIRE(sub);
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "a", "", "");
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "b", "", "");
	auto e = sub->next(kWait);
	REQUIRE(e);
	CHECK(e->sequence() == 2);
}

TEST_CASE("next_nothingPublished_timesOutWithNothing", "[events]")
{
	EventBus bus;
	auto sub = bus.subscribe("", "");
	REQUIRE(sub);
	CHECK_FALSE(sub->next(10ms));
	CHECK_FALSE(sub->closed());
	CHECK_FALSE(sub->overflowed());
}

TEST_CASE("next_wakesWhenAnotherThreadPublishes", "[events]")
{
	EventBus bus;
	auto sub = bus.subscribe("", "");
	REQUIRE(sub);
	std::optional<pb::Event> got;
	std::thread waiter([&] { got = sub->next(kWait); });
	bus.publish(pb::EVENT_TYPE_ASSIGNED, "sim:edu", "vm1", "");
	waiter.join();
	REQUIRE(got);
	CHECK(got->type() == pb::EVENT_TYPE_ASSIGNED);
}

TEST_CASE("overflow_queueFullToTheLimit_isNotOverflow", "[events]")
{
	EventBus bus(3, 8);
	auto sub = bus.subscribe("", "");
	REQUIRE(sub);
	for (int i = 0; i < 3; i++)
		bus.publish(pb::EVENT_TYPE_ASSIGNING, "d", "", "");
	CHECK_FALSE(sub->overflowed());
	CHECK(drain(*sub).size() == 3);
}

TEST_CASE("overflow_slowSubscriber_isCutOffAndGetsNothingMore", "[events]")
{
	EventBus bus(3, 8);
	auto slow = bus.subscribe("", "");
	REQUIRE(slow);
	for (int i = 0; i < 4; i++)
		bus.publish(pb::EVENT_TYPE_ASSIGNING, "d", "", "");
	CHECK(slow->overflowed());
	CHECK_FALSE(slow->next(0ms)); // the queued events are dropped with it
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "d", "", "");
	CHECK_FALSE(slow->next(0ms));
	CHECK(slow->overflowed());
}

TEST_CASE("overflow_ofOneSubscriber_doesNotAffectAnother", "[events]")
{
	EventBus bus(3, 8);
	auto slow = bus.subscribe("", "");
	auto fast = bus.subscribe("", "");
	REQUIRE((slow && fast));
	std::vector<pb::Event> got;
	for (int i = 0; i < 10; i++) {
		bus.publish(pb::EVENT_TYPE_ASSIGNING, "d", "", "");
		auto e = fast->next(kWait);
		REQUIRE(e);
		got.push_back(*e);
	}
	CHECK(slow->overflowed());
	CHECK_FALSE(fast->overflowed());
	REQUIRE(got.size() == 10);
	CHECK(got.back().sequence() == 10);
}

TEST_CASE("overflow_onlyCountsEventsTheFilterLetsThrough", "[events]")
{
	EventBus bus(2, 8);
	auto sub = bus.subscribe("mine", "");
	REQUIRE(sub);
	for (int i = 0; i < 10; i++)
		bus.publish(pb::EVENT_TYPE_ASSIGNING, "other", "", "");
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "mine", "", "");
	CHECK_FALSE(sub->overflowed());
	CHECK(drain(*sub).size() == 1);
}

TEST_CASE("overflow_wakesAWaitingSubscriber", "[events]")
{
	EventBus bus(1, 8);
	auto sub = bus.subscribe("", "");
	REQUIRE(sub);
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "d", "", "");
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "d", "", ""); // overflows before anyone reads
	auto begin = std::chrono::steady_clock::now();
	CHECK_FALSE(sub->next(kWait));
	CHECK(std::chrono::steady_clock::now() - begin < kWait);
	CHECK(sub->overflowed());
}

TEST_CASE("subscribe_beyondMaxSubscribers_returnsNull", "[events]")
{
	EventBus bus(16, 2);
	auto a = bus.subscribe("", "");
	auto b = bus.subscribe("", "");
	REQUIRE((a && b));
	CHECK_FALSE(bus.subscribe("", ""));
}

TEST_CASE("subscribe_closedSubscriptionFreesItsSlot", "[events]")
{
	EventBus bus(16, 2);
	auto a = bus.subscribe("", "");
	auto b = bus.subscribe("", "");
	REQUIRE((a && b));
	a->close();
	CHECK(bus.subscribe("", ""));
}

TEST_CASE("subscribe_droppedSubscriptionFreesItsSlot", "[events]")
{
	EventBus bus(16, 2);
	auto a = bus.subscribe("", "");
	auto b = bus.subscribe("", "");
	REQUIRE((a && b));
	a.reset();
	CHECK(bus.subscribe("", ""));
}

TEST_CASE("subscribe_overflowedSubscriptionFreesItsSlot", "[events]")
{
	EventBus bus(1, 1);
	auto a = bus.subscribe("", "");
	REQUIRE(a);
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "d", "", "");
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "d", "", "");
	REQUIRE(a->overflowed());
	CHECK(bus.subscribe("", ""));
}

TEST_CASE("close_endsTheStreamAndDropsWhatIsQueued", "[events]")
{
	EventBus bus;
	auto sub = bus.subscribe("", "");
	REQUIRE(sub);
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "d", "", "");
	sub->close();
	CHECK(sub->closed());
	CHECK_FALSE(sub->overflowed());
	CHECK_FALSE(sub->next(0ms));
	bus.publish(pb::EVENT_TYPE_BOUND, "d", "", "");
	CHECK_FALSE(sub->next(0ms));
}

TEST_CASE("close_wakesAWaitingSubscriber", "[events]")
{
	EventBus bus;
	auto sub = bus.subscribe("", "");
	REQUIRE(sub);
	std::atomic<bool> returned{ false };
	std::optional<pb::Event> got;
	// The waiter blocks for up to a minute unless close() wakes it; join() returning is the test.
	std::thread waiter([&] {
		got = sub->next(60000ms);
		returned = true;
	});
	sub->close();
	waiter.join();
	CHECK(returned);
	CHECK_FALSE(got);
}

TEST_CASE("closeAll_closesEverySubscription", "[events]")
{
	EventBus bus;
	auto a = bus.subscribe("", "");
	auto b = bus.subscribe("sim:edu", "vm1");
	REQUIRE((a && b));
	bus.closeAll();
	CHECK(a->closed());
	CHECK(b->closed());
	CHECK_FALSE(a->next(0ms));
	bus.publish(pb::EVENT_TYPE_ASSIGNING, "sim:edu", "vm1", ""); // no one left: still fine
}

TEST_CASE("publish_concurrentPublishers_deliverInStrictSequenceOrder", "[events]")
{
	constexpr size_t kThreads = 4, kEach = 500;
	EventBus bus(kThreads * kEach, 4);
	auto sub = bus.subscribe("", "");
	REQUIRE(sub);
	std::vector<std::thread> publishers;
	publishers.reserve(kThreads);
	for (size_t t = 0; t < kThreads; t++)
		publishers.emplace_back([&bus, t] {
			for (size_t i = 0; i < kEach; i++)
				bus.publish(pb::EVENT_TYPE_ASSIGNING, "dev" + std::to_string(t), "", "");
		});
	for (auto &p : publishers)
		p.join();
	auto got = drain(*sub);
	REQUIRE(got.size() == kThreads * kEach);
	for (size_t i = 0; i < got.size(); i++)
		REQUIRE(got[i].sequence() == i + 1);
}

TEST_CASE("subscribe_withReplay_getsTheRetainedHistoryThenLiveEventsInOrder", "[events]")
{
	EventBus bus;
	bus.publish(pb::EVENT_TYPE_ADOPTED, "sim:edu", "vm1", "re-adopted", 42);
	bus.publish(pb::EVENT_TYPE_ADOPTED, "pci:0000:01:00.0", "vm2", "re-adopted", 43);
	auto replayed = bus.subscribe("", "vm1", true);
	auto live = bus.subscribe("", "vm1", false);
	REQUIRE(replayed);
	REQUIRE(live);
	bus.publish(pb::EVENT_TYPE_DEASSIGNING, "sim:edu", "vm1", "deassigning");

	auto first = replayed->next(std::chrono::milliseconds(1000));
	REQUIRE(first);
	CHECK(first->type() == pb::EVENT_TYPE_ADOPTED);
	CHECK(first->sequence() == 1);
	auto second = replayed->next(std::chrono::milliseconds(1000));
	REQUIRE(second);
	CHECK(second->type() == pb::EVENT_TYPE_DEASSIGNING);
	CHECK(second->sequence() == 3);

	auto onlyLive = live->next(std::chrono::milliseconds(1000));
	REQUIRE(onlyLive);
	CHECK(onlyLive->sequence() == 3);
}

TEST_CASE("history_keepsOnlyTheMostRecentEvents", "[events]")
{
	EventBus bus(4096);
	for (size_t i = 0; i < EventBus::kHistory + 10; i++)
		bus.publish(pb::EVENT_TYPE_ASSIGNING, "sim:edu", "vm1", "x");
	auto sub = bus.subscribe("", "", true);
	REQUIRE(sub);
	auto first = sub->next(std::chrono::milliseconds(1000));
	REQUIRE(first);
	CHECK(first->sequence() == 11);
}
