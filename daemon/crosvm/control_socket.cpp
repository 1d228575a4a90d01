// SPDX-License-Identifier: Apache-2.0
// crosvm control-socket client: datagram framing with SCM_RIGHTS, deadlines on every wait, fds owned at the recvmsg boundary.
#include "crosvm/control_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <cstring>

#include "vfio_user/message_io.h"

namespace vfio_broker::crosvm {

namespace {

// The kernel's per-message cap (SCM_MAX_FD): room for all of them, so a peer sending more than
// we accept cannot get any dropped uncounted; they are received, owned and closed.
constexpr size_t kScmMaxFd = 253;

using Clock = std::chrono::steady_clock;

int msLeft(Clock::time_point deadline)
{
	auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
	return left > 0 ? static_cast<int>(left) : 0;
}

// Wait for `events` on fd until the deadline; EINTR restarts with the time that is left.
Result<short> waitFor(int fd, short events, Clock::time_point deadline, bool forever)
{
	for (;;) {
		pollfd p{ fd, events, 0 };
		int n = ::poll(&p, 1, forever ? -1 : msLeft(deadline));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errnoError("poll on crosvm's control socket");
		if (n == 0)
			return short(0);
		return p.revents;
	}
}

} // namespace

Result<ControlSocket> ControlSocket::connect(const std::string &path, const ControlLimits &limits)
{
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (path.empty() || path.size() >= sizeof(addr.sun_path))
		return makeError(ENAMETOOLONG, "crosvm control socket path \"%s\" is empty or longer than %zu bytes",
				 path.c_str(), sizeof(addr.sun_path) - 1);
	std::memcpy(addr.sun_path, path.c_str(), path.size());
	UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
	if (!fd)
		return errnoError("socket(AF_UNIX, SOCK_SEQPACKET)");
	if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) < 0) {
		int err = errno;
		if (err == EPROTOTYPE)
			return makeError(err, "%s is not a SOCK_SEQPACKET socket (crosvm's control socket is)",
					 path.c_str());
		if (err == ECONNREFUSED || err == ENOENT)
			return makeError(err, "nothing listens at %s (is crosvm running with -s %s?): %s",
					 path.c_str(), path.c_str(), std::strerror(err));
		return errnoError(err, "connect to crosvm's control socket " + path);
	}
	return ControlSocket(std::move(fd), limits);
}

ControlSocket::ControlSocket(UniqueFd fd, const ControlLimits &limits)
	: fd_(std::move(fd)), limits_(limits)
{
	if (limits_.maxResponseFds > kScmMaxFd)
		limits_.maxResponseFds = kScmMaxFd;
}

Status ControlSocket::send(std::string_view bytes, std::span<const int> fds)
{
	if (fds.size() > kScmMaxFd)
		return makeError(EINVAL, "%zu fds in one message; the kernel passes at most %zu", fds.size(), kScmMaxFd);
	alignas(cmsghdr) char control[CMSG_SPACE(kScmMaxFd * sizeof(int))];
	iovec iov{ const_cast<char *>(bytes.data()), bytes.size() };
	msghdr msg{};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	vfio_user::attachFds(msg, control, fds);
	auto deadline = Clock::now() + std::chrono::milliseconds(limits_.timeoutMs);
	for (;;) {
		// A datagram goes whole or not at all: EAGAIN means "not yet", never "half".
		ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0)
			return {};
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return errnoError(errno, "send to crosvm's control socket");
		auto ready = waitFor(fd_.get(), POLLOUT, deadline, limits_.timeoutMs < 0);
		if (!ready)
			return ready.takeError();
		if (*ready == 0)
			return makeError(ETIMEDOUT, "crosvm did not take a request within %d ms", limits_.timeoutMs);
	}
}

Result<Datagram> ControlSocket::receive(int timeoutMs)
{
	if (timeoutMs == kLimit)
		timeoutMs = limits_.timeoutMs;
	auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs < 0 ? 0 : timeoutMs);
	auto ready = waitFor(fd_.get(), POLLIN, deadline, timeoutMs < 0);
	if (!ready)
		return ready.takeError();
	if (*ready == 0)
		return makeError(ETIMEDOUT, "crosvm did not answer within %d ms", timeoutMs);

	Datagram out;
	// One byte more than allowed, so "exactly the limit" and "over it" differ without MSG_TRUNC
	// tricks; MSG_TRUNC in msg_flags still catches anything longer.
	out.bytes.resize(limits_.maxResponseBytes + 1);
	alignas(cmsghdr) char control[CMSG_SPACE(kScmMaxFd * sizeof(int))];
	iovec iov{ out.bytes.data(), out.bytes.size() };
	msghdr msg{};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control;
	msg.msg_controllen = sizeof(control);
	ssize_t n;
	do {
		n = ::recvmsg(fd_.get(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == ECONNRESET)
			return makeError(ECONNRESET, "crosvm closed its control socket");
		return errnoError(errno, "receive from crosvm's control socket");
	}
	// Own every fd first, so each refusal below closes them.
	for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int fd;
			std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			out.fds.emplace_back(fd);
		}
	}
	if (msg.msg_flags & MSG_CTRUNC)
		return makeError(EPROTO, "crosvm sent more fds than the kernel could hand over (control data truncated)");
	if ((msg.msg_flags & MSG_TRUNC) || static_cast<size_t>(n) > limits_.maxResponseBytes)
		return makeError(EMSGSIZE, "crosvm sent a message larger than %zu bytes", limits_.maxResponseBytes);
	// Tube::recv treats a 0-byte datagram as the peer's hang-up, and so do we.
	if (n == 0)
		return makeError(ECONNRESET, "crosvm closed its control socket");
	if (out.fds.size() > limits_.maxResponseFds)
		return makeError(EPROTO, "crosvm sent %zu fds with one message; at most %zu expected",
				 out.fds.size(), limits_.maxResponseFds);
	out.bytes.resize(static_cast<size_t>(n));
	return out;
}

Result<Datagram> ControlSocket::call(std::string_view request, std::span<const int> fds, size_t maxFds)
{
	if (Status s = send(request, fds); !s)
		return s.takeError();
	size_t saved = limits_.maxResponseFds;
	limits_.maxResponseFds = maxFds;
	auto d = receive();
	limits_.maxResponseFds = saved;
	return d;
}

Result<VmDescriptor> ControlSocket::getVmDescriptor()
{
	auto d = call(encodeGetVmDescriptor(), {}, 1);
	if (!d)
		return withContext(d.takeError(), "GetVmDescriptor");
	return decodeVmDescriptor(d->bytes, std::move(d->fds));
}

Result<uint64_t> ControlSocket::registerMemory(int fd, const RegisterMemoryRequest &request)
{
	int fds[] = { fd };
	auto d = call(encodeRegisterMemory(request), fds, 0);
	if (!d)
		return withContext(d.takeError(), "RegisterMemory");
	return decodeRegisterMemory(d->bytes, std::move(d->fds));
}

Status ControlSocket::unregisterMemory(uint64_t regionId)
{
	auto d = call(encodeUnregisterMemory(regionId), {}, 0);
	if (!d)
		return withContext(d.takeError(), "UnregisterMemory");
	return decodeUnregisterMemory(d->bytes, std::move(d->fds));
}

} // namespace vfio_broker::crosvm
