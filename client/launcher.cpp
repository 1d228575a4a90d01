// SPDX-License-Identifier: Apache-2.0
// Launcher helper over the BrokerService gRPC API on the control Unix socket.
#include "client/launcher.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <cstring>

#include <grpcpp/grpcpp.h>

#include "vfio_broker/v1/broker.grpc.pb.h"

namespace vfio_broker::client {

namespace pb = ::vfio_broker::v1;

namespace {

std::unique_ptr<pb::BrokerService::Stub> stubFor(const std::string &controlSocket)
{
	auto channel = grpc::CreateChannel("unix:" + controlSocket, grpc::InsecureChannelCredentials());
	return pb::BrokerService::NewStub(channel);
}

void setDeadline(grpc::ClientContext &ctx, int timeoutMs)
{
	ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeoutMs));
}

Error fromGrpc(const grpc::Status &s, const std::string &what)
{
	int code = EIO;
	switch (s.error_code()) {
	case grpc::StatusCode::INVALID_ARGUMENT: code = EINVAL; break;
	case grpc::StatusCode::NOT_FOUND: code = ENOENT; break;
	case grpc::StatusCode::FAILED_PRECONDITION: code = EBUSY; break;
	case grpc::StatusCode::PERMISSION_DENIED: code = EACCES; break;
	case grpc::StatusCode::DEADLINE_EXCEEDED: code = ETIMEDOUT; break;
	case grpc::StatusCode::UNAVAILABLE: code = ECONNREFUSED; break;
	case grpc::StatusCode::RESOURCE_EXHAUSTED: code = ENOSPC; break;
	default: break;
	}
	return makeError(code, "%s: %s", what.c_str(), s.error_message().c_str());
}

} // namespace

Result<std::vector<AssignedDevice>> assignForVm(const LaunchRequest &request)
{
	auto stub = stubFor(request.controlSocket);
	pb::AssignRequest req;
	req.set_vm(request.vm);
	for (const auto &d : request.devices)
		req.add_device_ids(d);
	req.mutable_options()->set_identity_mapping(request.identityMapping);
	if (request.socketUid)
		req.mutable_options()->set_socket_uid(*request.socketUid);
	if (request.socketGid)
		req.mutable_options()->set_socket_gid(*request.socketGid);
	pb::AssignResponse resp;
	grpc::ClientContext ctx;
	setDeadline(ctx, request.timeoutMs);
	grpc::Status s = stub->Assign(&ctx, req, &resp);
	if (!s.ok())
		return fromGrpc(s, "assigning to " + request.vm);
	std::vector<AssignedDevice> out;
	for (const auto &a : resp.assignments())
		out.push_back({ a.device_id(), a.socket_path(), a.daemon_pid() });
	return out;
}

Status deassignFromVm(const std::string &controlSocket, const std::string &vm,
		      const std::vector<std::string> &devices, int timeoutMs)
{
	auto stub = stubFor(controlSocket);
	Status first;
	for (const auto &d : devices) {
		pb::DeassignRequest req;
		req.set_device_id(d);
		req.set_vm(vm);
		pb::DeassignResponse resp;
		grpc::ClientContext ctx;
		setDeadline(ctx, timeoutMs);
		grpc::Status s = stub->Deassign(&ctx, req, &resp);
		if (!s.ok() && first)
			first = fromGrpc(s, "deassigning " + d);
	}
	return first;
}

Result<UniqueFd> connectDeviceSocket(const std::string &socketPath)
{
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (socketPath.size() >= sizeof(addr.sun_path))
		return makeError(ENAMETOOLONG, "socket path too long: %s", socketPath.c_str());
	std::memcpy(addr.sun_path, socketPath.c_str(), socketPath.size());
	// Inherited by the VMM: no CLOEXEC on this one.
	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
	if (!fd)
		return errnoError("socket");
	if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) < 0)
		return errnoError(errno, "connect " + socketPath);
	return fd;
}

} // namespace vfio_broker::client
