// SPDX-License-Identifier: Apache-2.0
// Lifecycle events fanned out to WatchEvents subscribers through bounded queues.
#include "control/events.h"

#include <algorithm>

namespace vfio_broker::control {

namespace {

void stampNow(google::protobuf::Timestamp *ts)
{
	// Wall-clock time: clients compare it with their own logs, not with each other's events
	// (the sequence number orders events).
	auto now = std::chrono::system_clock::now().time_since_epoch();
	auto secs = std::chrono::floor<std::chrono::seconds>(now);
	ts->set_seconds(secs.count());
	ts->set_nanos(static_cast<int32_t>(
		std::chrono::duration_cast<std::chrono::nanoseconds>(now - secs).count()));
}

} // namespace

// --- Subscription ---

std::optional<pb::Event> Subscription::next(std::chrono::milliseconds timeout)
{
	std::unique_lock guard(lock_);
	cv_.wait_for(guard, timeout, [this] { return closed_ || overflowed_ || !queue_.empty(); });
	if (closed_ || overflowed_ || queue_.empty())
		return std::nullopt;
	pb::Event e = std::move(queue_.front());
	queue_.pop_front();
	return e;
}

void Subscription::close()
{
	{
		std::lock_guard guard(lock_);
		closed_ = true;
		queue_.clear();
	}
	cv_.notify_all();
}

bool Subscription::overflowed() const
{
	std::lock_guard guard(lock_);
	return overflowed_;
}

bool Subscription::closed() const
{
	std::lock_guard guard(lock_);
	return closed_;
}

bool Subscription::matches(const pb::Event &e) const
{
	// The filters are set before the subscription is published to the bus and never change.
	return (deviceFilter_.empty() || deviceFilter_ == e.device_id()) &&
	       (vmFilter_.empty() || vmFilter_ == e.vm());
}

// --- EventBus ---

pb::Event EventBus::publish(pb::EventType type, const std::string &deviceId, const std::string &vm,
			    const std::string &message, int pid)
{
	pb::Event e;
	e.set_type(type);
	e.set_device_id(deviceId);
	e.set_vm(vm);
	e.set_message(message);
	e.set_daemon_pid(pid);

	// Stamping and delivering under one lock: every subscriber sees events in sequence order,
	// even when several threads publish at once.
	std::lock_guard guard(lock_);
	e.set_sequence(++sequence_);
	stampNow(e.mutable_time());
	history_.push_back(e);
	if (history_.size() > kHistory)
		history_.pop_front();
	std::erase_if(subscribers_, [&](const std::weak_ptr<Subscription> &weak) {
		std::shared_ptr<Subscription> sub = weak.lock();
		if (!sub)
			return true;
		{
			std::lock_guard subGuard(sub->lock_);
			if (sub->closed_ || sub->overflowed_)
				return true;
			if (!sub->matches(e))
				return false;
			if (sub->queue_.size() >= sub->limit_) {
				// Cut off: a stream with gaps would mislead the client more than one that
				// ends and makes it resynchronise from ListDevices.
				sub->overflowed_ = true;
				sub->queue_.clear();
			} else {
				sub->queue_.push_back(e);
			}
		}
		sub->cv_.notify_all();
		return false;
	});
	return e;
}

std::shared_ptr<Subscription> EventBus::subscribe(const std::string &deviceId, const std::string &vm,
						 bool replay)
{
	std::lock_guard guard(lock_);
	std::erase_if(subscribers_, [](const std::weak_ptr<Subscription> &weak) {
		std::shared_ptr<Subscription> sub = weak.lock();
		return !sub || sub->closed() || sub->overflowed();
	});
	if (subscribers_.size() >= maxSubscribers_)
		return nullptr;
	auto sub = std::make_shared<Subscription>();
	sub->deviceFilter_ = deviceId;
	sub->vmFilter_ = vm;
	sub->limit_ = std::max<size_t>(queueLimit_, 1); // 0 would cut everyone off at once
	if (replay) {
		// Under the bus lock: no event can slip between the history and the live stream.
		for (const auto &e : history_)
			if (sub->matches(e) && sub->queue_.size() < sub->limit_)
				sub->queue_.push_back(e);
	}
	subscribers_.push_back(sub);
	return sub;
}

void EventBus::closeAll()
{
	std::lock_guard guard(lock_);
	for (const auto &weak : subscribers_)
		if (std::shared_ptr<Subscription> sub = weak.lock())
			sub->close();
	subscribers_.clear();
}

} // namespace vfio_broker::control
