// SPDX-License-Identifier: Apache-2.0
// The broker's operations. Assign is all-or-nothing and crash-safe: a device's record (with its
// original driver) is saved before the first sysfs write, so whatever dies half-way, the next
// start rolls it back. Every operation holds mutex_, so two conflicting requests cannot both pass
// the checks.
#include "control/broker.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <set>

#include "common/log.h"
#include "control/conflicts.h"
#include "control/launch_config.h"

namespace vfio_broker::control {

namespace {

int64_t nowUnix()
{
	return std::chrono::duration_cast<std::chrono::seconds>(
		       std::chrono::system_clock::now().time_since_epoch())
		.count();
}

std::string describeStatus(int status)
{
	if (status < 0)
		return "exited (status unknown)";
	if (WIFEXITED(status))
		return strFormat("exited with status %d", WEXITSTATUS(status));
	if (WIFSIGNALED(status))
		return strFormat("was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	return strFormat("ended (wait status 0x%x)", status);
}

std::string joinConflicts(const std::vector<pb::Conflict> &conflicts)
{
	std::string text;
	for (const auto &c : conflicts) {
		if (!text.empty())
			text += "; ";
		text += c.message();
	}
	return text;
}

} // namespace

std::string Caller::describe() const
{
	return strFormat("pid %d uid %u gid %u", pid, uid, gid);
}

Broker::Broker(Parts parts)
	: config_(std::move(parts.config)), policy_(std::move(parts.policy)),
	  binder_(std::move(parts.binder)), store_(std::move(parts.store))
{
	inventory_.sysfsRoot = config_.sysfs_root();
	inventory_.simulated.assign(config_.simulated_devices().begin(), config_.simulated_devices().end());
	reaper_ = std::thread([this] { reaperLoop(); });
	supervisor_ = std::make_unique<Supervisor>(
		config_, [this](const std::string &id, const DaemonHandle &h, int status) {
			onDaemonExit(id, h, status);
		});
}

Broker::~Broker()
{
	// Stop watching first (no more callbacks), then drain the reaper.
	supervisor_.reset();
	{
		std::lock_guard<std::mutex> lock(reaperLock_);
		reaperStop_ = true;
	}
	reaperCv_.notify_all();
	reaper_.join();
	events_.closeAll();
}

Status Broker::validateVmName(const std::string &vm)
{
	if (vm.empty())
		return makeError(EINVAL, "vm is required");
	if (vm.size() > kMaxVmNameLength)
		return makeError(EINVAL, "vm name is longer than %zu characters", kMaxVmNameLength);
	for (char c : vm)
		if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
			return makeError(EINVAL, "vm name \"%s\" may only hold letters, digits, '-', '_' and '.'",
					 vm.c_str());
	return {};
}

const pb::DeviceRule *Broker::ruleOf(const pb::Device &device) const
{
	return policy_.ruleFor(device);
}

std::string Broker::socketPathFor(const std::string &id) const
{
	return config_.runtime_dir() + "/devices/" + systemdInstanceFor(id) + ".sock";
}

DaemonSpec Broker::specFor(const std::string &id, const pb::AssignOptions &options) const
{
	DaemonSpec spec;
	spec.deviceId = id;
	// The testing override stands in for real devices only: a simulated device is itself.
	bool simulated = id.rfind("sim:", 0) == 0;
	spec.deviceArg = config_.testing_device_override().empty() || simulated
				 ? deviceDaemonArgument(id)
				 : config_.testing_device_override();
	// The systemd template names the instance, and so the socket, after the device argument it
	// passes as --device %I; a spawned daemon's socket is named after the device id, which stays
	// unique when several devices share one argument (testing_device_override).
	spec.socketPath = config_.launch_method() == pb::LAUNCH_METHOD_SYSTEMD
				  ? config_.runtime_dir() + "/devices/" + systemdInstanceFor(spec.deviceArg) + ".sock"
				  : socketPathFor(id);
	if (options.has_socket_uid())
		spec.socketUid = options.socket_uid();
	if (options.has_socket_gid())
		spec.socketGid = options.socket_gid();
	return spec;
}

Status Broker::persist()
{
	pb::BrokerState state;
	state.set_version(1);
	for (const auto &[id, held] : held_)
		*state.add_devices() = held.record;
	if (Status s = store_->save(state); !s)
		return withContext(s.takeError(), "saving the broker state");
	return {};
}

void Broker::decorate(pb::Device &device) const
{
	*device.mutable_policy() = policy_.evaluate(device);
	auto it = held_.find(device.id());
	if (it == held_.end()) {
		device.set_state(pb::DEVICE_STATE_AVAILABLE);
		return;
	}
	device.set_state(it->second.record.state());
	device.set_vm(it->second.record.vm());
	device.set_original_driver(it->second.record.original_driver());
}

pb::Assignment Broker::assignmentOf(const Held &held) const
{
	const pb::DeviceRecord &r = held.record;
	pb::Assignment a;
	a.set_device_id(r.device_id());
	a.set_vm(r.vm());
	a.set_socket_path(r.socket_path());
	*a.mutable_options() = r.options();
	a.set_daemon_pid(r.daemon_pid());
	a.set_unit(r.unit());
	a.set_original_driver(r.original_driver());
	a.mutable_assigned_at()->set_seconds(r.assigned_at_unix());
	a.set_restarts(r.restarts());
	switch (r.state()) {
	case pb::DEVICE_STATE_ASSIGNED:
		if (r.options().bind_only())
			a.set_daemon_state(r.pending() ? pb::DAEMON_STATE_STARTING : pb::DAEMON_STATE_STOPPED);
		else
			a.set_daemon_state(r.pending() ? pb::DAEMON_STATE_STARTING : pb::DAEMON_STATE_RUNNING);
		break;
	case pb::DEVICE_STATE_FAILED:
		a.set_daemon_state(pb::DAEMON_STATE_FAILED);
		break;
	default:
		a.set_daemon_state(pb::DAEMON_STATE_STOPPED);
		break;
	}
	return a;
}

Result<std::vector<pb::Device>> Broker::listDevices()
{
	auto devices = scanAll(inventory_);
	if (!devices)
		return devices.takeError();
	std::lock_guard<std::mutex> lock(mutex_);
	for (auto &d : *devices)
		decorate(d);
	return devices;
}

Result<pb::Device> Broker::getDevice(const std::string &input)
{
	if (input.empty() || input.size() > kMaxIdLength)
		return makeError(EINVAL, "device_id must be 1 to %zu characters", kMaxIdLength);
	auto id = resolveDeviceId(inventory_, input);
	if (!id)
		return id.takeError();
	auto device = scanDevice(inventory_, *id);
	if (!device)
		return device.takeError();
	std::lock_guard<std::mutex> lock(mutex_);
	decorate(*device);
	return device;
}

Result<std::vector<std::string>> Broker::resolveIds(const google::protobuf::RepeatedPtrField<std::string> &ids,
						    std::vector<pb::Conflict> &unknown)
{
	if (ids.empty())
		return makeError(EINVAL, "device_ids is empty");
	if (static_cast<size_t>(ids.size()) > kMaxDevicesPerRequest)
		return makeError(EINVAL, "at most %zu devices per request (%d given)", kMaxDevicesPerRequest,
				 ids.size());
	std::vector<std::string> out;
	for (const auto &input : ids) {
		if (input.empty() || input.size() > kMaxIdLength)
			return makeError(EINVAL, "a device id must be 1 to %zu characters", kMaxIdLength);
		auto id = resolveDeviceId(inventory_, input);
		if (!id) {
			pb::Conflict c;
			c.set_reason(pb::CONFLICT_REASON_UNKNOWN_DEVICE);
			c.set_device_id(input);
			c.set_message(strFormat("no device \"%s\": %s", input.c_str(), id.error().message.c_str()));
			unknown.push_back(std::move(c));
			continue;
		}
		out.push_back(*id);
	}
	return out;
}

Result<std::vector<pb::Conflict>> Broker::conflictsFor(const std::string &vm, const std::vector<std::string> &ids,
						       const pb::AssignOptions &options,
						       std::map<std::string, pb::Device> &scanned)
{
	ConflictInput in;
	in.vm = vm;
	in.deviceIds = ids;
	in.options = options;
	in.policy = &policy_;
	// The requested devices and every member of their IOMMU groups, read fresh.
	std::set<std::string> toScan(ids.begin(), ids.end());
	for (const auto &id : ids) {
		auto d = scanDevice(inventory_, id);
		if (!d)
			continue; // reported as UNKNOWN_DEVICE by the checks
		for (const auto &m : d->iommu_group().members())
			toScan.insert(m);
		scanned[id] = std::move(*d);
	}
	for (const auto &id : toScan) {
		if (scanned.count(id))
			continue;
		if (auto d = scanDevice(inventory_, id); d)
			scanned[id] = std::move(*d);
	}
	for (auto &[id, d] : scanned)
		decorate(d);
	in.devices = scanned;
	for (const auto &[id, h] : held_) {
		pb::Device d = h.device;
		d.set_state(h.record.state());
		d.set_vm(h.record.vm());
		in.held[id] = std::move(d);
		in.heldOptions[id] = h.record.options();
	}
	return checkAssignment(in);
}

Result<Broker::Plan> Broker::plan(const std::string &vm,
				  const google::protobuf::RepeatedPtrField<std::string> &deviceIds,
				  const pb::AssignOptions &options)
{
	if (Status s = validateVmName(vm); !s)
		return s.takeError();
	Plan p;
	auto ids = resolveIds(deviceIds, p.conflicts);
	if (!ids)
		return ids.takeError();
	p.ids = std::move(*ids);
	if (options.bind_only())
		for (const std::string &id : p.ids)
			if (id.rfind("sim:", 0) == 0)
				return makeError(EINVAL, "bind_only: %s exists only in its device daemon, so no VMM "
						 "can open it as a VFIO device", id.c_str());
	auto more = conflictsFor(vm, p.ids, options, p.scanned);
	if (!more)
		return more.takeError();
	p.conflicts.insert(p.conflicts.end(), more->begin(), more->end());
	return p;
}

Result<pb::CheckAssignmentResponse> Broker::check(const pb::CheckAssignmentRequest &req)
{
	std::lock_guard<std::mutex> lock(mutex_);
	auto p = plan(req.vm(), req.device_ids(), req.options());
	if (!p)
		return p.takeError();
	std::vector<pb::Conflict> &conflicts = p->conflicts;
	pb::CheckAssignmentResponse resp;
	resp.set_ok(conflicts.empty());
	for (auto &c : conflicts)
		*resp.add_conflicts() = std::move(c);
	return resp;
}

Result<pb::AssignResponse> Broker::assign(const pb::AssignRequest &req, const Caller &caller,
					  AssignRefusal *refusal)
{
	std::lock_guard<std::mutex> lock(mutex_);
	auto p = plan(req.vm(), req.device_ids(), req.options());
	if (!p)
		return p.takeError();
	std::vector<pb::Conflict> &conflicts = p->conflicts;
	const std::vector<std::string> *ids = &p->ids;
	std::map<std::string, pb::Device> &scanned = p->scanned;
	if (!conflicts.empty()) {
		LOG_INFO("assign of %zu device(s) to %s for %s refused: %s", ids->size(), req.vm().c_str(),
			 caller.describe().c_str(), joinConflicts(conflicts).c_str());
		Error err = makeError(EBUSY, "%s", joinConflicts(conflicts).c_str());
		if (refusal)
			refusal->conflicts = std::move(conflicts);
		return err;
	}

	LOG_INFO("assigning %zu device(s) to %s for %s", ids->size(), req.vm().c_str(), caller.describe().c_str());
	std::vector<std::string> done;
	auto fail = [&](const std::string &id, Error err) -> Error {
		// Undo this request entirely: the devices already assigned, then the failed one.
		for (auto it = done.rbegin(); it != done.rend(); ++it)
			(void)rollBack(*it, true);
		(void)rollBack(id, true);
		(void)persist();
		events_.publish(pb::EVENT_TYPE_ASSIGN_FAILED, id, req.vm(), err.message);
		LOG_WARN("assign to %s failed and was undone: %s", req.vm().c_str(), err.message.c_str());
		return err;
	};

	for (const auto &id : *ids) {
		const pb::Device &dev = scanned.at(id);
		events_.publish(pb::EVENT_TYPE_ASSIGNING, id, req.vm(), "assigning to " + req.vm());
		Held held;
		held.device = dev;
		pb::DeviceRecord &r = held.record;
		r.set_device_id(id);
		r.set_state(pb::DEVICE_STATE_ASSIGNED);
		r.set_vm(req.vm());
		*r.mutable_options() = req.options();
		r.set_original_driver(dev.driver());
		r.set_assigned_at_unix(nowUnix());
		r.set_pending(true);
		held_[id] = held;
		// Saved before the first sysfs write: a crash from here on is rolled back at start.
		if (Status s = persist(); !s)
			return fail(id, s.takeError());

		auto bound = binder_->bindToVfio(dev);
		if (!bound)
			return fail(id, bound.takeError());
		held_[id].record.set_original_driver(bound->originalDriver);
		held_[id].record.set_original_override(bound->originalOverride);
		if (Status s = persist(); !s)
			return fail(id, s.takeError());
		events_.publish(pb::EVENT_TYPE_BOUND, id, req.vm(), "bound to " + vfioDriverFor(dev));

		if (req.options().bind_only()) {
			// The VMM opens the VFIO device itself (launch mode); a daemon would hold the group.
			held_[id].record.set_pending(false);
			done.push_back(id);
			continue;
		}
		const DaemonSpec spec = specFor(id, req.options());
		auto started = supervisor_->start(spec, std::chrono::milliseconds(config_.daemon_ready_timeout_ms()));
		if (!started)
			return fail(id, started.takeError());
		pb::DeviceRecord &rec = held_[id].record;
		rec.set_daemon_pid(started->pid);
		rec.set_daemon_start_time(started->startTime);
		rec.set_unit(started->unit);
		rec.set_socket_path(spec.socketPath);
		// Saved before the next device: a broker that dies now must find this daemon on restart
		// (to stop it before restoring the driver), not a pending record without a pid.
		if (Status s = persist(); !s)
			return fail(id, s.takeError());
		rec.set_pending(false);
		events_.publish(pb::EVENT_TYPE_DAEMON_STARTED, id, req.vm(), "device daemon serving " + rec.socket_path(),
				started->pid);
		done.push_back(id);
	}
	if (Status s = persist(); !s)
		return fail(ids->back(), s.takeError());

	pb::AssignResponse resp;
	for (const auto &id : *ids) {
		*resp.add_assignments() = assignmentOf(held_.at(id));
		events_.publish(pb::EVENT_TYPE_ASSIGNED, id, req.vm(), "assigned to " + req.vm(),
				held_.at(id).record.daemon_pid());
	}
	return resp;
}

Status Broker::restoreDriver(const pb::DeviceRecord &record, const pb::Device &device)
{
	BindRecord br{ record.original_driver(), record.original_override() };
	return binder_->restore(device, br);
}

// Undo whatever part of an assignment exists for `id`: daemon, binding, record.
Status Broker::rollBack(const std::string &id, bool stopDaemon)
{
	auto it = held_.find(id);
	if (it == held_.end())
		return {};
	Status result;
	if (stopDaemon)
		(void)supervisor_->stop(id, std::chrono::seconds(5));
	if (Status s = restoreDriver(it->second.record, it->second.device); !s) {
		LOG_WARN("rolling back %s: %s", id.c_str(), s.error().message.c_str());
		result = s;
	}
	held_.erase(it);
	return result;
}

Result<pb::DeassignResponse> Broker::deassign(const pb::DeassignRequest &req, const Caller &caller)
{
	if (req.device_id().empty() || req.device_id().size() > kMaxIdLength)
		return makeError(EINVAL, "device_id must be 1 to %zu characters", kMaxIdLength);
	if (!req.vm().empty())
		if (Status s = validateVmName(req.vm()); !s)
			return s.takeError();
	std::lock_guard<std::mutex> lock(mutex_);
	auto id = resolveDeviceId(inventory_, req.device_id());
	if (!id)
		return id.takeError();
	pb::DeassignResponse resp;
	auto it = held_.find(*id);
	if (it == held_.end() || it->second.record.state() == pb::DEVICE_STATE_QUARANTINED) {
		// Idempotent: nothing (more) to take back.
		resp.set_was_assigned(false);
		resp.set_state(it == held_.end() ? pb::DEVICE_STATE_AVAILABLE : pb::DEVICE_STATE_QUARANTINED);
		if (auto d = scanDevice(inventory_, *id); d)
			resp.set_driver(d->driver());
		return resp;
	}
	Held &held = it->second;
	if (!req.vm().empty() && held.record.vm() != req.vm())
		return makeError(EPERM, "%s is assigned to %s, not %s", id->c_str(), held.record.vm().c_str(),
				 req.vm().c_str());
	std::string vm = held.record.vm();
	LOG_INFO("deassigning %s from %s for %s", id->c_str(), vm.c_str(), caller.describe().c_str());
	events_.publish(pb::EVENT_TYPE_DEASSIGNING, *id, vm, "deassigning from " + vm);
	if (Status s = supervisor_->stop(*id, std::chrono::seconds(10)); !s)
		return withContext(s.takeError(), "stopping the device daemon of " + *id);
	events_.publish(pb::EVENT_TYPE_DAEMON_STOPPED, *id, vm, "device daemon stopped");

	const pb::DeviceRule *rule = ruleOf(held.device);
	bool quarantine = rule && rule->on_deassign() == pb::DEASSIGN_ACTION_QUARANTINE;
	resp.set_was_assigned(true);
	if (quarantine) {
		held.record.set_state(pb::DEVICE_STATE_QUARANTINED);
		held.record.set_daemon_pid(0);
		held.record.set_daemon_start_time(0);
		held.record.set_socket_path("");
		if (Status s = persist(); !s)
			return s.takeError();
		events_.publish(pb::EVENT_TYPE_QUARANTINED, *id, vm, "kept on " + vfioDriverFor(held.device) +
									    " with no VMM until Release");
		resp.set_state(pb::DEVICE_STATE_QUARANTINED);
		resp.set_driver(vfioDriverFor(held.device));
	} else {
		pb::DeviceRecord record = held.record;
		pb::Device device = held.device;
		if (Status s = restoreDriver(record, device); !s) {
			// Keep the record: the original driver must not be forgotten. Deassign again retries.
			held.record.set_state(pb::DEVICE_STATE_FAILED);
			(void)persist();
			return withContext(s.takeError(), "restoring the driver of " + *id);
		}
		held_.erase(it);
		if (Status s = persist(); !s)
			return s.takeError();
		events_.publish(pb::EVENT_TYPE_DRIVER_RESTORED, *id, vm,
				record.original_driver().empty() ? "left without a driver, as it was"
								 : "back on " + record.original_driver());
		resp.set_state(pb::DEVICE_STATE_AVAILABLE);
		resp.set_driver(record.original_driver());
	}
	events_.publish(pb::EVENT_TYPE_DEASSIGNED, *id, vm, "deassigned from " + vm);
	return resp;
}

Result<pb::ReleaseResponse> Broker::release(const pb::ReleaseRequest &req, const Caller &caller)
{
	if (req.device_id().empty() || req.device_id().size() > kMaxIdLength)
		return makeError(EINVAL, "device_id must be 1 to %zu characters", kMaxIdLength);
	std::lock_guard<std::mutex> lock(mutex_);
	auto id = resolveDeviceId(inventory_, req.device_id());
	if (!id)
		return id.takeError();
	auto it = held_.find(*id);
	if (it == held_.end() || it->second.record.state() != pb::DEVICE_STATE_QUARANTINED)
		return makeError(EINVAL, "%s is not quarantined (Release gives back quarantined devices; "
				 "use Deassign for assigned ones)", id->c_str());
	pb::DeviceRecord record = it->second.record;
	LOG_INFO("releasing %s for %s", id->c_str(), caller.describe().c_str());
	if (Status s = restoreDriver(record, it->second.device); !s)
		return withContext(s.takeError(), "restoring the driver of " + *id);
	held_.erase(it);
	if (Status s = persist(); !s)
		return s.takeError();
	events_.publish(pb::EVENT_TYPE_DRIVER_RESTORED, *id, record.vm(),
			record.original_driver().empty() ? "left without a driver, as it was"
							 : "back on " + record.original_driver());
	events_.publish(pb::EVENT_TYPE_RELEASED, *id, record.vm(), "released from quarantine");
	pb::ReleaseResponse resp;
	resp.set_driver(record.original_driver());
	return resp;
}

pb::ListAssignmentsResponse Broker::listAssignments(const pb::ListAssignmentsRequest &req)
{
	std::lock_guard<std::mutex> lock(mutex_);
	pb::ListAssignmentsResponse resp;
	for (const auto &[id, held] : held_) {
		if (held.record.state() == pb::DEVICE_STATE_QUARANTINED)
			continue;
		if (!req.vm().empty() && held.record.vm() != req.vm())
			continue;
		*resp.add_assignments() = assignmentOf(held);
	}
	return resp;
}

Result<pb::GetLaunchConfigResponse> Broker::launchConfig(const pb::GetLaunchConfigRequest &req)
{
	if (Status s = validateVmName(req.vm()); !s)
		return s.takeError();
	if (static_cast<size_t>(req.device_ids_size()) > kMaxDevicesPerRequest)
		return makeError(EINVAL, "at most %zu devices per request (%d given)", kMaxDevicesPerRequest,
				 req.device_ids_size());
	std::lock_guard<std::mutex> lock(mutex_);
	std::set<std::string> wanted;
	for (const auto &input : req.device_ids()) {
		if (input.empty() || input.size() > kMaxIdLength)
			return makeError(EINVAL, "a device id must be 1 to %zu characters", kMaxIdLength);
		auto id = resolveDeviceId(inventory_, input);
		if (!id)
			return id.takeError();
		auto it = held_.find(*id);
		if (it == held_.end() || it->second.record.vm() != req.vm() ||
		    it->second.record.state() != pb::DEVICE_STATE_ASSIGNED)
			return makeError(EINVAL, "%s is not assigned to %s", id->c_str(), req.vm().c_str());
		wanted.insert(*id);
	}
	std::vector<LaunchDevice> devices;
	for (const auto &[id, held] : held_) { // by id: placements are stable
		if (held.record.vm() != req.vm() || held.record.state() != pb::DEVICE_STATE_ASSIGNED ||
		    held.record.pending())
			continue;
		if (!wanted.empty() && !wanted.count(id))
			continue;
		LaunchDevice d;
		d.device = held.device;
		d.options = held.record.options();
		d.noDma = policy_.evaluate(held.device).no_dma();
		devices.push_back(std::move(d));
	}
	if (devices.empty())
		return makeError(ENOENT, "no device is assigned to %s", req.vm().c_str());
	return buildLaunchConfig(inventory_, req, devices);
}

void Broker::onDaemonExit(const std::string &id, const DaemonHandle &handle, int status)
{
	// On the supervisor's thread: hand over to ours, so the watcher never waits for mutex_.
	std::string why = describeStatus(status);
	pid_t pid = handle.pid;
	{
		std::lock_guard<std::mutex> lock(reaperLock_);
		reaperQueue_.push_back([this, id, pid, why] { handleDaemonExit(id, pid, why); });
	}
	reaperCv_.notify_one();
}

void Broker::reaperLoop()
{
	for (;;) {
		std::function<void()> job;
		{
			std::unique_lock<std::mutex> lock(reaperLock_);
			reaperCv_.wait(lock, [this] { return reaperStop_ || !reaperQueue_.empty(); });
			if (reaperQueue_.empty())
				return;
			job = std::move(reaperQueue_.front());
			reaperQueue_.pop_front();
		}
		job();
	}
}

void Broker::handleDaemonExit(const std::string &id, pid_t pid, const std::string &why)
{
	std::lock_guard<std::mutex> lock(mutex_);
	auto it = held_.find(id);
	if (it == held_.end() || it->second.record.state() != pb::DEVICE_STATE_ASSIGNED ||
	    (pid && it->second.record.daemon_pid() != pid))
		return; // stale: the assignment changed since
	Held &held = it->second;
	std::string vm = held.record.vm();
	LOG_WARN("the device daemon of %s (pid %d, %s) %s", id.c_str(), pid, vm.c_str(), why.c_str());
	events_.publish(pb::EVENT_TYPE_DAEMON_EXITED, id, vm, "device daemon " + why, pid);

	const pb::DeviceRule *rule = ruleOf(held.device);
	bool restart = !rule || rule->on_daemon_exit() != pb::DAEMON_EXIT_ACTION_FAIL;
	uint32_t maxRestarts = rule && rule->max_restarts() ? rule->max_restarts() : 3;
	if (restart && held.record.restarts() < maxRestarts) {
		auto started = supervisor_->start(specFor(id, held.record.options()),
						  std::chrono::milliseconds(config_.daemon_ready_timeout_ms()));
		if (started) {
			held.record.set_daemon_pid(started->pid);
			held.record.set_daemon_start_time(started->startTime);
			held.record.set_unit(started->unit);
			held.record.set_restarts(held.record.restarts() + 1);
			(void)persist();
			events_.publish(pb::EVENT_TYPE_DAEMON_RESTARTED, id, vm,
					strFormat("device daemon restarted (%u of %u)", held.record.restarts(), maxRestarts),
					started->pid);
			return;
		}
		LOG_WARN("restarting the device daemon of %s failed: %s", id.c_str(), started.error().message.c_str());
	}
	held.record.set_state(pb::DEVICE_STATE_FAILED);
	held.record.set_daemon_pid(0);
	(void)persist();
	events_.publish(pb::EVENT_TYPE_FAILED, id, vm,
			restart ? strFormat("gave up after %u restarts; Deassign to take the device back",
					    held.record.restarts())
				: "the policy does not restart it; Deassign to take the device back");
}

Status Broker::recover()
{
	// Device sockets live here; VMM users must be able to reach their own socket (each one
	// is owned by its VMM and mode 0600), so the directory is searchable but not listable.
	for (const std::string &dir : { config_.runtime_dir(), config_.runtime_dir() + "/devices" }) {
		if (::mkdir(dir.c_str(), 0711) < 0 && errno != EEXIST)
			return errnoError(errno, "creating " + dir);
	}
	if (::chmod((config_.runtime_dir() + "/devices").c_str(), 0711) < 0)
		return errnoError(errno, "chmod " + config_.runtime_dir() + "/devices");
	auto state = store_->load();
	if (!state)
		return withContext(state.takeError(), "loading the broker state");
	std::lock_guard<std::mutex> lock(mutex_);
	std::vector<std::string> dead;
	for (const auto &r : state->devices()) {
		Held held;
		held.record = r;
		auto d = scanDevice(inventory_, r.device_id());
		if (d)
			held.device = *d;
		else
			held.device.set_id(r.device_id());
		held_[r.device_id()] = held;
	}
	for (auto it = held_.begin(); it != held_.end();) {
		const std::string id = it->first;
		pb::DeviceRecord &r = it->second.record;
		if (r.pending()) {
			LOG_WARN("%s: an assign to %s was interrupted; rolling it back", id.c_str(), r.vm().c_str());
			if (r.daemon_pid())
				(void)supervisor_->adopt(id, { r.daemon_pid(), r.daemon_start_time(), r.unit() },
							 r.socket_path());
			(void)supervisor_->stop(id, std::chrono::seconds(5));
			(void)restoreDriver(r, it->second.device);
			events_.publish(pb::EVENT_TYPE_ASSIGN_FAILED, id, r.vm(), "interrupted by a broker restart; undone");
			it = held_.erase(it);
			continue;
		}
		if (r.state() == pb::DEVICE_STATE_ASSIGNED && r.options().bind_only()) {
			LOG_INFO("%s: bound to VFIO for %s, which opens it itself (no device daemon)", id.c_str(),
				 r.vm().c_str());
		} else if (r.state() == pb::DEVICE_STATE_ASSIGNED) {
			auto alive = supervisor_->adopt(id, { r.daemon_pid(), r.daemon_start_time(), r.unit() },
							r.socket_path());
			if (alive && *alive) {
				LOG_INFO("%s: re-adopted the device daemon (pid %d) serving %s", id.c_str(),
					 r.daemon_pid(), r.vm().c_str());
				events_.publish(pb::EVENT_TYPE_ADOPTED, id, r.vm(), "device daemon re-adopted",
						r.daemon_pid());
			} else {
				dead.push_back(id);
			}
		}
		++it;
	}
	if (Status s = persist(); !s)
		return s;
	// Dead daemons are handled like any exit: restarted or marked failed, per policy.
	for (const auto &id : dead) {
		pid_t pid = held_.at(id).record.daemon_pid();
		std::lock_guard<std::mutex> rl(reaperLock_);
		reaperQueue_.push_back([this, id, pid] {
			handleDaemonExit(id, pid, "was gone when the broker restarted");
		});
	}
	reaperCv_.notify_one();
	return {};
}

} // namespace vfio_broker::control
