// SPDX-License-Identifier: Apache-2.0
// Lifecycle events fanned out to WatchEvents subscribers through bounded queues.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "vfio_broker/v1/broker.pb.h"

namespace vfio_broker::control {

namespace pb = ::vfio_broker::v1;

class EventBus;

// One WatchEvents stream. A subscriber that falls more than the queue limit behind is cut off
// (overflowed() then says so) rather than letting the broker's memory grow.
class Subscription
{
public:
	// Next event, waiting up to timeout; nullopt on timeout, close or overflow.
	std::optional<pb::Event> next(std::chrono::milliseconds timeout);
	void close();
	bool overflowed() const;
	bool closed() const;

private:
	friend class EventBus;
	bool matches(const pb::Event &e) const;

	std::string deviceFilter_, vmFilter_;
	size_t limit_ = 0;
	mutable std::mutex lock_;
	std::condition_variable cv_;
	std::deque<pb::Event> queue_;
	bool closed_ = false, overflowed_ = false;
};

class EventBus
{
public:
	explicit EventBus(size_t queueLimit = 1024, size_t maxSubscribers = 64)
		: queueLimit_(queueLimit), maxSubscribers_(maxSubscribers) {}

	// Stamps sequence and time, delivers to every matching subscriber, returns the event.
	pb::Event publish(pb::EventType type, const std::string &deviceId, const std::string &vm,
			  const std::string &message, int pid = 0);

	// nullptr when maxSubscribers streams are open already.
	// replay: queue the retained history (the last kHistory events) that matches first.
	std::shared_ptr<Subscription> subscribe(const std::string &deviceId, const std::string &vm,
					       bool replay = false);
	static constexpr size_t kHistory = 256;
	void closeAll();

private:
	std::mutex lock_;
	uint64_t sequence_ = 0;
	size_t queueLimit_, maxSubscribers_;
	std::vector<std::weak_ptr<Subscription>> subscribers_;
	std::deque<pb::Event> history_; // the last kHistory events, for replay
};

} // namespace vfio_broker::control
