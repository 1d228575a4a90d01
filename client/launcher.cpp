// SPDX-License-Identifier: Apache-2.0
// Launcher helper over the BrokerService gRPC API on the control Unix socket.
#include "client/launcher.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

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
	req.mutable_options()->set_bind_only(request.bindOnly);
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

Result<CrosvmLaunch> crosvmLaunchConfig(const CrosvmLaunchRequest &request)
{
	auto stub = stubFor(request.controlSocket);
	pb::GetLaunchConfigRequest req;
	req.set_vm(request.vm);
	req.set_vmm(pb::VMM_CROSVM);
	req.set_guest_mmio_base(request.guestMmioBase);
	req.set_guest_mmio_size(request.guestMmioSize);
	req.set_first_guest_spi(request.firstGuestSpi);
	req.set_dma_pool_base(request.dmaPoolBase);
	req.set_dma_pool_size(request.dmaPoolSize);
	req.set_overlay_path(request.overlayPath);
	for (const auto &d : request.devices)
		req.add_device_ids(d);
	pb::GetLaunchConfigResponse resp;
	grpc::ClientContext ctx;
	setDeadline(ctx, request.timeoutMs);
	grpc::Status s = stub->GetLaunchConfig(&ctx, req, &resp);
	if (!s.ok())
		return fromGrpc(s, "launch configuration of " + request.vm);
	CrosvmLaunch out;
	out.args.assign(resp.args().begin(), resp.args().end());
	out.overlay.assign(resp.overlay().begin(), resp.overlay().end());
	out.overlayPath = resp.overlay_path();
	out.skipped.assign(resp.skipped().begin(), resp.skipped().end());
	return out;
}

Status writeFileAtomically(const std::string &path, const std::vector<uint8_t> &bytes)
{
	std::string tmp = path + ".tmp." + std::to_string(::getpid());
	UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
	if (!fd)
		return errnoError(errno, "creating " + tmp);
	size_t done = 0;
	while (done < bytes.size()) {
		ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			Error err = errnoError(n < 0 ? errno : EIO, "writing " + tmp);
			::unlink(tmp.c_str());
			return err;
		}
		done += static_cast<size_t>(n);
	}
	if (::fchmod(fd.get(), 0644) < 0 || ::fsync(fd.get()) < 0 || ::close(fd.release()) < 0) {
		Error err = errnoError(errno, "writing " + tmp);
		::unlink(tmp.c_str());
		return err;
	}
	if (::rename(tmp.c_str(), path.c_str()) < 0) {
		Error err = errnoError(errno, "renaming " + tmp + " to " + path);
		::unlink(tmp.c_str());
		return err;
	}
	return {};
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
