// SPDX-License-Identifier: Apache-2.0
// Broker: the control plane's core. Every decision (conflicts, policy, binding, daemons, state)
// is taken here, serialised by one lock, so concurrent conflicting requests have one winner.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "control/binder.h"
#include "control/events.h"
#include "control/inventory.h"
#include "control/policy.h"
#include "control/state_store.h"
#include "control/supervisor.h"
#include "vfio_broker/v1/broker.pb.h"
#include "vfio_broker/v1/config.pb.h"
#include "vfio_broker/v1/state.pb.h"

namespace vfio_broker::control {

namespace pb = ::vfio_broker::v1;

// Who asked (for the audit log): from SO_PEERCRED on the control socket.
struct Caller {
	pid_t pid = 0;
	uid_t uid = 0;
	gid_t gid = 0;
	std::string describe() const;
};

// Request limits: every size a caller controls is bounded.
constexpr size_t kMaxDevicesPerRequest = 64;
constexpr size_t kMaxIdLength = 256;
constexpr size_t kMaxVmNameLength = 64;

// A refused Assign: the conflicts, and an errno-style code (EBUSY) for the service layer.
struct AssignRefusal {
	std::vector<pb::Conflict> conflicts;
};

class Broker
{
public:
	struct Parts {
		pb::DaemonConfig config;
		Policy policy;
		std::unique_ptr<Binder> binder;
		std::unique_ptr<StateStore> store;
	};

	// The Supervisor is created inside (its exit callback points back at the broker).
	explicit Broker(Parts parts);
	~Broker();

	// Load the state file and reconcile it with the world: pending assigns are rolled back,
	// live device daemons re-adopted, dead ones restarted or marked failed per policy.
	Status recover();

	Result<std::vector<pb::Device>> listDevices();
	Result<pb::Device> getDevice(const std::string &id);
	Result<pb::CheckAssignmentResponse> check(const pb::CheckAssignmentRequest &request);
	// EBUSY with the conflicts in `refusal` when the assignment conflicts.
	Result<pb::AssignResponse> assign(const pb::AssignRequest &request, const Caller &caller,
					  AssignRefusal *refusal = nullptr);
	Result<pb::DeassignResponse> deassign(const pb::DeassignRequest &request, const Caller &caller);
	Result<pb::ReleaseResponse> release(const pb::ReleaseRequest &request, const Caller &caller);
	pb::ListAssignmentsResponse listAssignments(const pb::ListAssignmentsRequest &request);
	// Launch mode: crosvm arguments and guest overlay for the device-tree devices the VM holds
	// (ASSIGNED; quarantined and failed ones are not the VM's to use), each placed per the
	// options it was assigned with. Changes nothing. See buildLaunchConfig.
	Result<pb::GetLaunchConfigResponse> launchConfig(const pb::GetLaunchConfigRequest &request);

	EventBus &events() { return events_; }
	const pb::DaemonConfig &config() const { return config_; }

	// Validation shared with the service layer.
	static Status validateVmName(const std::string &vm);

private:
	struct Held {
		pb::DeviceRecord record;
		pb::Device device; // as scanned when assigned (interrupts, stream IDs, MMIO)
	};

	Result<std::vector<std::string>> resolveIds(const google::protobuf::RepeatedPtrField<std::string> &ids,
						    std::vector<pb::Conflict> &unknown);
	// What an Assign of these devices would do: resolved ids, the devices as scanned now, and
	// every conflict (CheckAssignment answers from exactly this, so it agrees with Assign).
	struct Plan {
		std::vector<std::string> ids;
		std::map<std::string, pb::Device> scanned;
		std::vector<pb::Conflict> conflicts;
	};
	Result<Plan> plan(const std::string &vm, const google::protobuf::RepeatedPtrField<std::string> &deviceIds,
			  const pb::AssignOptions &options);
	Result<std::vector<pb::Conflict>> conflictsFor(const std::string &vm,
						       const std::vector<std::string> &ids,
						       const pb::AssignOptions &options,
						       std::map<std::string, pb::Device> &scanned);
	Status persist();
	std::string socketPathFor(const std::string &id) const;
	DaemonSpec specFor(const std::string &id, const pb::AssignOptions &options) const;
	Status rollBack(const std::string &id, bool stopDaemon);
	Status restoreDriver(const pb::DeviceRecord &record, const pb::Device &device);
	void decorate(pb::Device &device) const;
	pb::Assignment assignmentOf(const Held &held) const;
	const pb::DeviceRule *ruleOf(const pb::Device &device) const;

	void onDaemonExit(const std::string &id, const DaemonHandle &handle, int status);
	void handleDaemonExit(const std::string &id, pid_t pid, const std::string &why);
	void reaperLoop();

	pb::DaemonConfig config_;
	InventoryOptions inventory_;
	Policy policy_;
	std::unique_ptr<Binder> binder_;
	std::unique_ptr<StateStore> store_;
	EventBus events_;

	std::mutex mutex_; // serialises every operation on held_ and the world
	std::map<std::string, Held> held_;

	// Daemon exits arrive on the supervisor's thread; they are handled here, in order.
	std::mutex reaperLock_;
	std::condition_variable reaperCv_;
	std::deque<std::function<void()>> reaperQueue_;
	bool reaperStop_ = false;
	std::thread reaper_;

	std::unique_ptr<Supervisor> supervisor_; // last: its thread calls back into us
};

} // namespace vfio_broker::control
