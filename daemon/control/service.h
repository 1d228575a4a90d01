// SPDX-License-Identifier: Apache-2.0
// The gRPC BrokerService: requests to Broker calls; the one place errors become gRPC statuses.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "control/broker.h"
#include "vfio_broker/v1/broker.grpc.pb.h"

namespace vfio_broker::control {

// errno-style error -> gRPC status code (EINVAL invalid argument, ENOENT not found, EBUSY
// failed precondition, EPERM permission denied, ETIMEDOUT deadline exceeded, ...).
grpc::Status toGrpcStatus(const Error &err);

// Trailing metadata key carrying a refused Assign's conflicts (a serialised
// CheckAssignmentResponse), for callers that want them machine-readable.
constexpr char kConflictsTrailer[] = "vfio-broker-conflicts-bin";

class BrokerServiceImpl final : public pb::BrokerService::Service
{
public:
	using CallerLookup = std::function<Caller(const grpc::ServerContext &)>;
	BrokerServiceImpl(Broker &broker, CallerLookup callerOf);

	grpc::Status ListDevices(grpc::ServerContext *ctx, const pb::ListDevicesRequest *req,
				 pb::ListDevicesResponse *resp) override;
	grpc::Status GetDevice(grpc::ServerContext *ctx, const pb::GetDeviceRequest *req,
			       pb::GetDeviceResponse *resp) override;
	grpc::Status CheckAssignment(grpc::ServerContext *ctx, const pb::CheckAssignmentRequest *req,
				     pb::CheckAssignmentResponse *resp) override;
	grpc::Status Assign(grpc::ServerContext *ctx, const pb::AssignRequest *req,
			    pb::AssignResponse *resp) override;
	grpc::Status Deassign(grpc::ServerContext *ctx, const pb::DeassignRequest *req,
			      pb::DeassignResponse *resp) override;
	grpc::Status Release(grpc::ServerContext *ctx, const pb::ReleaseRequest *req,
			     pb::ReleaseResponse *resp) override;
	grpc::Status ListAssignments(grpc::ServerContext *ctx, const pb::ListAssignmentsRequest *req,
				     pb::ListAssignmentsResponse *resp) override;
	grpc::Status WatchEvents(grpc::ServerContext *ctx, const pb::WatchEventsRequest *req,
				 grpc::ServerWriter<pb::WatchEventsResponse> *writer) override;
	grpc::Status GetLaunchConfig(grpc::ServerContext *ctx, const pb::GetLaunchConfigRequest *req,
				     pb::GetLaunchConfigResponse *resp) override;

	// WatchEvents streams open at once. Each holds one of the server's RPC threads for its
	// whole life, so this stays well below ControlServer's thread cap (32): idle watchers must
	// never leave Assign and Deassign without a thread.
	static constexpr int kMaxWatchStreams = 16;

private:
	Broker &broker_;
	CallerLookup callerOf_;
	std::atomic<int> watchStreams_{ 0 };
};

} // namespace vfio_broker::control
