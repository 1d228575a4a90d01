// SPDX-License-Identifier: Apache-2.0
// The control socket: we accept Unix connections ourselves, check SO_PEERCRED against the admin
// group, and only then hand them to gRPC (which exposes no peer credentials); health and
// reflection beside the BrokerService; TCP only with TLS.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "common/result.h"
#include "common/unique_fd.h"
#include "control/broker.h"
#include "control/service.h"

namespace vfio_broker::control {

class ControlServer
{
public:
	explicit ControlServer(Broker &broker);
	~ControlServer();

	// Create the socket directory (0750) and socket (0660, group = admin group), build the
	// gRPC server, start accepting.
	Status start();
	// Stop accepting, end streams, shut gRPC down (in-flight calls get `grace` to finish).
	void shutdown(std::chrono::milliseconds grace);

	// Who is on the other end of a call (root with pid 0 for TCP callers, whose identity is
	// their TLS certificate).
	Caller callerOf(const grpc::ServerContext &ctx);

	// The authorisation rule, exposed for tests: root, the admin group as primary or
	// supplementary group of the caller's uid.
	static bool authorised(const ucred &cred, std::optional<gid_t> adminGid);

private:
	void acceptLoop();

	Broker &broker_;
	std::optional<gid_t> adminGid_;
	std::unique_ptr<BrokerServiceImpl> service_;
	std::unique_ptr<grpc::Server> server_;
	UniqueFd listenFd_, wakeFd_;
	std::thread acceptor_;
	std::mutex peersLock_;
	std::map<int, ucred> peers_; // by fd number, as gRPC names such peers "fd:N"
};

} // namespace vfio_broker::control
