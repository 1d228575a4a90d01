// SPDX-License-Identifier: Apache-2.0
// BrokerService handlers (synchronous API: Assign may take seconds while binding and starting
// daemons, so each call has its own server thread; the server caps the thread count).
#include "control/service.h"

#include "common/log.h"

namespace vfio_broker::control {

grpc::Status toGrpcStatus(const Error &err)
{
	grpc::StatusCode code;
	switch (err.code) {
	case EINVAL:
	case ENAMETOOLONG:
	case ERANGE:
		code = grpc::StatusCode::INVALID_ARGUMENT;
		break;
	case ENOENT:
	case ENODEV:
		code = grpc::StatusCode::NOT_FOUND;
		break;
	case EBUSY:
	case EEXIST:
	case EADDRINUSE:
		code = grpc::StatusCode::FAILED_PRECONDITION;
		break;
	case EPERM:
	case EACCES:
		code = grpc::StatusCode::PERMISSION_DENIED;
		break;
	case ETIMEDOUT:
		code = grpc::StatusCode::DEADLINE_EXCEEDED;
		break;
	case ENOSPC:
	case EMFILE:
	case EAGAIN:
	case ENOMEM:
		code = grpc::StatusCode::RESOURCE_EXHAUSTED;
		break;
	case ENOTSUP:
	case ENOSYS:
		code = grpc::StatusCode::UNIMPLEMENTED;
		break;
	default:
		code = grpc::StatusCode::INTERNAL;
		break;
	}
	return grpc::Status(code, err.message);
}

BrokerServiceImpl::BrokerServiceImpl(Broker &broker, CallerLookup callerOf)
	: broker_(broker), callerOf_(std::move(callerOf))
{
}

grpc::Status BrokerServiceImpl::ListDevices(grpc::ServerContext *, const pb::ListDevicesRequest *,
					    pb::ListDevicesResponse *resp)
{
	auto devices = broker_.listDevices();
	if (!devices)
		return toGrpcStatus(devices.error());
	for (auto &d : *devices)
		*resp->add_devices() = std::move(d);
	return grpc::Status::OK;
}

grpc::Status BrokerServiceImpl::GetDevice(grpc::ServerContext *, const pb::GetDeviceRequest *req,
					  pb::GetDeviceResponse *resp)
{
	auto device = broker_.getDevice(req->device_id());
	if (!device)
		return toGrpcStatus(device.error());
	*resp->mutable_device() = std::move(*device);
	return grpc::Status::OK;
}

grpc::Status BrokerServiceImpl::CheckAssignment(grpc::ServerContext *, const pb::CheckAssignmentRequest *req,
						pb::CheckAssignmentResponse *resp)
{
	auto r = broker_.check(*req);
	if (!r)
		return toGrpcStatus(r.error());
	*resp = std::move(*r);
	return grpc::Status::OK;
}

grpc::Status BrokerServiceImpl::Assign(grpc::ServerContext *ctx, const pb::AssignRequest *req,
				       pb::AssignResponse *resp)
{
	AssignRefusal refusal;
	auto r = broker_.assign(*req, callerOf_(*ctx), &refusal);
	if (!r) {
		if (!refusal.conflicts.empty()) {
			pb::CheckAssignmentResponse detail;
			for (const auto &c : refusal.conflicts)
				*detail.add_conflicts() = c;
			ctx->AddTrailingMetadata(kConflictsTrailer, detail.SerializeAsString());
		}
		return toGrpcStatus(r.error());
	}
	*resp = std::move(*r);
	return grpc::Status::OK;
}

grpc::Status BrokerServiceImpl::Deassign(grpc::ServerContext *ctx, const pb::DeassignRequest *req,
					 pb::DeassignResponse *resp)
{
	auto r = broker_.deassign(*req, callerOf_(*ctx));
	if (!r)
		return toGrpcStatus(r.error());
	*resp = std::move(*r);
	return grpc::Status::OK;
}

grpc::Status BrokerServiceImpl::Release(grpc::ServerContext *ctx, const pb::ReleaseRequest *req,
					pb::ReleaseResponse *resp)
{
	auto r = broker_.release(*req, callerOf_(*ctx));
	if (!r)
		return toGrpcStatus(r.error());
	*resp = std::move(*r);
	return grpc::Status::OK;
}

grpc::Status BrokerServiceImpl::ListAssignments(grpc::ServerContext *, const pb::ListAssignmentsRequest *req,
						pb::ListAssignmentsResponse *resp)
{
	if (!req->vm().empty())
		if (Status s = Broker::validateVmName(req->vm()); !s)
			return toGrpcStatus(s.error());
	*resp = broker_.listAssignments(*req);
	return grpc::Status::OK;
}

grpc::Status BrokerServiceImpl::GetLaunchConfig(grpc::ServerContext *, const pb::GetLaunchConfigRequest *req,
						pb::GetLaunchConfigResponse *resp)
{
	auto r = broker_.launchConfig(*req);
	if (!r)
		return toGrpcStatus(r.error());
	*resp = std::move(*r);
	return grpc::Status::OK;
}

grpc::Status BrokerServiceImpl::WatchEvents(grpc::ServerContext *ctx, const pb::WatchEventsRequest *req,
					    grpc::ServerWriter<pb::WatchEventsResponse> *writer)
{
	if (req->device_id().size() > kMaxIdLength || req->vm().size() > kMaxVmNameLength)
		return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "filter too long");
	// A slot for the stream's whole life, given back however it ends.
	struct Slot {
		std::atomic<int> &open;
		~Slot() { open--; }
	} slot{ watchStreams_ };
	if (++watchStreams_ > kMaxWatchStreams)
		return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "too many WatchEvents streams are open");
	auto sub = broker_.events().subscribe(req->device_id(), req->vm(), req->replay());
	if (!sub)
		return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "too many WatchEvents streams are open");
	// Headers go out now, so a watcher knows it is subscribed before it acts.
	writer->SendInitialMetadata();
	while (!ctx->IsCancelled()) {
		auto event = sub->next(std::chrono::milliseconds(250));
		if (event) {
			pb::WatchEventsResponse resp;
			*resp.mutable_event() = std::move(*event);
			if (!writer->Write(resp))
				break;
			continue;
		}
		if (sub->overflowed())
			return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
					    "this stream fell too far behind and was cut off; watch again");
		if (sub->closed())
			return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the broker is shutting down");
	}
	sub->close();
	return grpc::Status::OK;
}

} // namespace vfio_broker::control
