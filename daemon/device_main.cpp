// SPDX-License-Identifier: Apache-2.0
// vfio-broker-device: serve one passthrough device to one VMM over vfio-user.
#include <signal.h>
#include <sys/socket.h>

#include <cstdio>

#include "common/log.h"
#include "common/sd_notify.h"
#include "device/open_device.h"
#include "server/listener.h"
#include "server/options.h"

using namespace vfio_broker;

namespace {

int fail(const Error &err)
{
	LOG_ERROR("%s", err.message.c_str());
	return 1;
}

// Launcher mode: is the inherited fd a listening socket, a connected one, or not a stream socket?
Result<bool> inheritedIsListening(int fd)
{
	int type = 0, domain = 0, listening = 0;
	socklen_t len = sizeof(int);
	if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return errnoError(errno, "--fd " + std::to_string(fd) + " is not a socket");
	len = sizeof(int);
	::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
	if (type != SOCK_STREAM || domain != AF_UNIX)
		return makeError(EINVAL, "--fd %d is not an AF_UNIX stream socket", fd);
	len = sizeof(int);
	if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
		return errnoError("SO_ACCEPTCONN");
	return listening != 0;
}

} // namespace

int main(int argc, char **argv)
{
	auto parsed = server::parseOptions(argc, argv);
	if (!parsed) {
		std::fprintf(stderr, "vfio-broker-device: %s\n", parsed.error().message.c_str());
		return 2;
	}
	const server::DaemonOptions &opts = *parsed;
	if (opts.help) {
		std::fputs(server::usageText(), stdout);
		return 0;
	}
	if (opts.version) {
		std::printf("vfio-broker-device %s (vfio-user %u.%u)\n", VFIO_BROKER_VERSION,
			    vfio_user::kVersionMajor, vfio_user::kVersionMinor);
		return 0;
	}
	log::setLevel(opts.logLevel);
	log::setPrefix("vfio-broker-device[" + opts.device + "]");
	// A client that vanishes mid-reply must cost us an EPIPE, not the process.
	::signal(SIGPIPE, SIG_IGN);

	device::OpenOptions dopts;
	dopts.sysfsRoot = opts.sysfsRoot;
	dopts.devRoot = opts.devRoot;
	dopts.allowMmap = opts.limits.allowMmap;
	auto dev = device::openDevice(opts.device, dopts);
	if (!dev)
		return fail(withContext(dev.takeError(), "opening " + opts.device));

	server::DeviceServer srv(**dev, opts.limits);
	srv.setExitOnDisconnect(opts.exitOnDisconnect);
	std::string where;
	if (!opts.socketPath.empty()) {
		server::SocketOptions sopts{ opts.socketMode, opts.socketUid, opts.socketGid };
		auto fd = server::createListeningSocket(opts.socketPath, sopts);
		if (!fd)
			return fail(fd.takeError());
		if (Status s = srv.serveListening(std::move(*fd)); !s)
			return fail(s.error());
		where = opts.socketPath;
	} else {
		auto listening = inheritedIsListening(opts.fd);
		if (!listening)
			return fail(listening.error());
		Status s = *listening ? srv.serveListening(UniqueFd(opts.fd))
				      : srv.serveConnected(UniqueFd(opts.fd));
		if (!s)
			return fail(s.error());
		where = "fd " + std::to_string(opts.fd) + (*listening ? " (listening)" : " (connected)");
	}

	Status result = srv.run([&] {
		LOG_INFO("serving %s on %s", (*dev)->name().c_str(), where.c_str());
		if (opts.readyFd >= 0) {
			if (Status s = notifyReadyFd(opts.readyFd); !s)
				LOG_WARN("%s", s.error().message.c_str());
		}
		if (Status s = sdNotify("READY=1\nSTATUS=serving " + (*dev)->name()); !s)
			LOG_WARN("%s", s.error().message.c_str());
	});
	(void)sdNotify("STOPPING=1");
	if (!opts.socketPath.empty())
		::unlink(opts.socketPath.c_str());
	if (!result)
		return fail(result.error());
	LOG_INFO("exiting after %u client(s)", srv.clientsServed());
	return 0;
}
