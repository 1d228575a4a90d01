// SPDX-License-Identifier: Apache-2.0
// A client of crosvm's control socket (`crosvm run -s PATH`): one request per SOCK_SEQPACKET datagram, fds in SCM_RIGHTS, bounded waits.
#pragma once

// crosvm's side (src/crosvm/sys/linux.rs, run_control): the listener accepts each connection
// into its own Tube and answers every VmRequest it can deserialize with one VmResponse on that
// connection, in order. A request it cannot deserialize is logged and gets no answer at all, so
// every receive here has a deadline.

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "crosvm/wire.h"

namespace vfio_broker::crosvm {

struct ControlLimits {
	int timeoutMs = 10000;                   // per send and per answer
	size_t maxResponseBytes = kMaxResponseBytes;
	size_t maxResponseFds = 1;               // more make the datagram fail (and are closed)
};

// One datagram as it came off the socket; its fds are owned from the moment recvmsg returned.
struct Datagram {
	std::string bytes;
	std::vector<UniqueFd> fds;
};

class ControlSocket
{
public:
	// Connect to crosvm's control socket at `path`.
	static Result<ControlSocket> connect(const std::string &path, const ControlLimits &limits = {});
	// Use an already connected SOCK_SEQPACKET socket (tests, an inherited fd).
	explicit ControlSocket(UniqueFd fd, const ControlLimits &limits = {});

	int fd() const { return fd_.get(); }
	const ControlLimits &limits() const { return limits_; }

	// Send one datagram. ETIMEDOUT when crosvm does not take it in time; EPIPE when it is gone.
	Status send(std::string_view bytes, std::span<const int> fds = {});
	// Receive one datagram within timeoutMs (kLimit: limits().timeoutMs; -1: no limit). ECONNRESET
	// when crosvm hung up; ETIMEDOUT when nothing came; EMSGSIZE/EPROTO when the datagram or
	// its control data was cut or carried more fds than allowed (all of them closed).
	static constexpr int kLimit = -2;
	Result<Datagram> receive(int timeoutMs = kLimit);

	// The requests attach mode sends, each sent and answered in turn.
	Result<VmDescriptor> getVmDescriptor();
	Result<uint64_t> registerMemory(int fd, const RegisterMemoryRequest &request); // region id
	Status unregisterMemory(uint64_t regionId);

private:
	Result<Datagram> call(std::string_view request, std::span<const int> fds, size_t maxFds);

	UniqueFd fd_;
	ControlLimits limits_;
};

} // namespace vfio_broker::crosvm
