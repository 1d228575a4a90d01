// SPDX-License-Identifier: Apache-2.0
// Accepting, signals and session hand-off run on an Asio io_context. A session runs on its own
// thread with blocking I/O: the per-request hot path is then exactly one recvmsg() and one
// sendmsg(), with no reactor round trip (bench/ measures the difference).
#include "server/listener.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cstring>

#include "common/log.h"

namespace vfio_broker::server {

namespace asio = boost::asio;

namespace {

Result<sockaddr_un> unixAddress(const std::string &path)
{
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (path.empty() || path.size() >= sizeof(addr.sun_path))
		return makeError(ENAMETOOLONG, "socket path \"%s\" is empty or longer than %zu bytes",
				 path.c_str(), sizeof(addr.sun_path) - 1);
	std::memcpy(addr.sun_path, path.c_str(), path.size());
	return addr;
}

} // namespace

Result<UniqueFd> createListeningSocket(const std::string &path, const SocketOptions &opts)
{
	auto addr = unixAddress(path);
	if (!addr)
		return addr.takeError();

	struct stat st;
	if (::lstat(path.c_str(), &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return makeError(EEXIST, "%s exists and is not a socket", path.c_str());
		UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
		if (probe && ::connect(probe.get(), reinterpret_cast<sockaddr *>(&*addr), sizeof(*addr)) == 0)
			return makeError(EADDRINUSE, "%s is served by another process", path.c_str());
		if (::unlink(path.c_str()) < 0 && errno != ENOENT)
			return errnoError(errno, "removing stale socket " + path);
	}

	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
	if (!fd)
		return errnoError("socket");
	// Created with no access for anyone but us; the final mode is set below.
	mode_t old = ::umask(0177);
	int rc = ::bind(fd.get(), reinterpret_cast<sockaddr *>(&*addr), sizeof(*addr));
	int err = errno;
	::umask(old);
	if (rc < 0)
		return errnoError(err, "bind " + path);
	if ((opts.uid || opts.gid) &&
	    ::chown(path.c_str(), opts.uid.value_or(-1), opts.gid.value_or(-1)) < 0)
		return errnoError(errno, "chown " + path);
	if (::chmod(path.c_str(), opts.mode) < 0)
		return errnoError(errno, "chmod " + path);
	// A small backlog: one client is served, a reconnecting one may wait.
	if (::listen(fd.get(), 4) < 0)
		return errnoError(errno, "listen " + path);
	return fd;
}

DeviceServer::DeviceServer(device::Device &device, const ServerLimits &limits)
	: device_(device), limits_(limits), signals_(io_, SIGTERM, SIGINT)
{
}

DeviceServer::~DeviceServer()
{
	if (session_)
		session_->stop();
	if (worker_.joinable())
		worker_.join();
}

Status DeviceServer::serveListening(UniqueFd listenFd)
{
	int flags = ::fcntl(listenFd.get(), F_GETFL);
	if (flags < 0 || ::fcntl(listenFd.get(), F_SETFL, flags | O_NONBLOCK) < 0)
		return errnoError("making the listening socket non-blocking");
	::fcntl(listenFd.get(), F_SETFD, FD_CLOEXEC);
	boost::system::error_code ec;
	listener_.emplace(io_);
	listener_->assign(listenFd.release(), ec);
	if (ec)
		return makeError(EINVAL, "listening socket: %s", ec.message().c_str());
	return {};
}

Status DeviceServer::serveConnected(UniqueFd connFd)
{
	::fcntl(connFd.get(), F_SETFD, FD_CLOEXEC);
	pendingConn_ = std::move(connFd);
	exitOnDisconnect_ = true;
	return {};
}

Status DeviceServer::run(const std::function<void()> &onReady)
{
	signals_.async_wait([this](const boost::system::error_code &ec, int sig) {
		if (ec)
			return;
		LOG_INFO("%s: %s received, shutting down", device_.name().c_str(), strsignal(sig));
		shutdown();
	});
	if (pendingConn_)
		startSession(std::move(pendingConn_));
	else
		waitForClient();
	if (onReady)
		onReady();
	io_.run();
	return result_;
}

void DeviceServer::waitForClient()
{
	listener_->async_wait(asio::posix::stream_descriptor::wait_read,
			      [this](const boost::system::error_code &ec) {
		if (ec || stopping_)
			return;
		int fd = ::accept4(listener_->native_handle(), nullptr, nullptr, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				LOG_WARN("%s: accept: %s", device_.name().c_str(), strerror(errno));
			waitForClient();
			return;
		}
		startSession(UniqueFd(fd));
	});
}

void DeviceServer::startSession(UniqueFd conn)
{
	// Blocking I/O on the session's own thread.
	int flags = ::fcntl(conn.get(), F_GETFL);
	if (flags >= 0)
		::fcntl(conn.get(), F_SETFL, flags & ~O_NONBLOCK);
	ucred cred{};
	socklen_t len = sizeof(cred);
	if (::getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
		LOG_INFO("%s: client connected (pid %d uid %u gid %u)", device_.name().c_str(),
			 cred.pid, cred.uid, cred.gid);
	clientsServed_++;
	session_ = std::make_unique<Session>(device_, std::move(conn), limits_);
	worker_ = std::thread([this] {
		Status s = session_->run();
		asio::post(io_, [this, s]() mutable { onSessionEnded(std::move(s)); });
	});
}

void DeviceServer::onSessionEnded(Status result)
{
	worker_.join();
	session_.reset();
	if (!result)
		LOG_WARN("%s: %s", device_.name().c_str(), result.error().message.c_str());
	if (stopping_ || exitOnDisconnect_ || !listener_) {
		stopping_ = true;
		signals_.cancel();
		if (listener_)
			listener_->close();
		io_.stop();
		return;
	}
	waitForClient();
}

void DeviceServer::shutdown()
{
	stopping_ = true;
	if (session_) {
		session_->stop(); // onSessionEnded finishes the shutdown
		return;
	}
	if (listener_)
		listener_->close();
	io_.stop();
}

} // namespace vfio_broker::server
