// SPDX-License-Identifier: Apache-2.0
// DeviceServer: the device daemon's lifecycle on Boost.Asio — socket, signals, one client at a time.
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include "device/device.h"
#include "server/session.h"

namespace vfio_broker::server {

struct SocketOptions {
	mode_t mode = 0600;
	std::optional<uid_t> uid;
	std::optional<gid_t> gid;
};

// Create a listening Unix socket at path with the given mode and owner. A stale socket (no
// one accepting) is replaced; a live one, or any other file, is an error.
Result<UniqueFd> createListeningSocket(const std::string &path, const SocketOptions &opts);

class DeviceServer
{
public:
	DeviceServer(device::Device &device, const ServerLimits &limits);
	~DeviceServer();

	// Serve on a listening socket; clients are taken one at a time, the next waits in the
	// backlog until the previous one is cleaned up.
	Status serveListening(UniqueFd listenFd);
	// Serve an already connected client; run() returns when it disconnects.
	Status serveConnected(UniqueFd connFd);
	void setExitOnDisconnect(bool exit) { exitOnDisconnect_ = exit; }

	// Run until SIGTERM/SIGINT, or the end of the only client. onReady runs once the
	// socket is being served.
	Status run(const std::function<void()> &onReady);

	unsigned clientsServed() const { return clientsServed_; }

private:
	void waitForClient();
	void startSession(UniqueFd conn);
	void onSessionEnded(Status result);
	void shutdown();

	device::Device &device_;
	ServerLimits limits_;
	boost::asio::io_context io_;
	boost::asio::signal_set signals_;
	std::optional<boost::asio::posix::stream_descriptor> listener_;
	UniqueFd pendingConn_;
	std::unique_ptr<Session> session_;
	std::thread worker_;
	bool exitOnDisconnect_ = false;
	bool stopping_ = false;
	unsigned clientsServed_ = 0;
	Status result_;
};

} // namespace vfio_broker::server
