// SPDX-License-Identifier: Apache-2.0
// vfio-broker-device: serve one passthrough device to one VMM over vfio-user.
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>

#include "common/log.h"
#include "common/sd_notify.h"
#include "crosvm/attach.h"
#include "device/open_device.h"
#include "device/vfio_group.h"
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

void announceReady(const server::DaemonOptions &opts, const std::string &status)
{
	if (opts.readyFd >= 0) {
		if (Status s = notifyReadyFd(opts.readyFd); !s)
			LOG_WARN("%s", s.error().message.c_str());
	}
	if (Status s = sdNotify("READY=1\nSTATUS=" + status); !s)
		LOG_WARN("%s", s.error().message.c_str());
}

// Attach mode: the device goes into a running crosvm through its control socket; there is no
// vfio-user socket. Runs until crosvm hangs up (it is gone: nothing to unregister) or SIGTERM/
// SIGINT (crosvm is asked to unregister the regions), then everything is undone.
int runAttach(const server::DaemonOptions &opts, device::Device &dev)
{
	// Signals arrive on a signalfd, so the whole wait is one poll with crosvm's socket.
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (::sigprocmask(SIG_BLOCK, &set, nullptr) < 0)
		return fail(errnoError("sigprocmask"));
	UniqueFd signals(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
	if (!signals)
		return fail(errnoError("signalfd"));

	// The placement is checked against the device before crosvm is contacted at all.
	if (auto plan = crosvm::planMemory(dev, opts.attach, device::hostPageSize()); !plan)
		return fail(plan.error());
	if (Status s = crosvm::checkIrqs(dev, opts.attach); !s)
		return fail(s.error());

	crosvm::ControlLimits limits;
	limits.timeoutMs = opts.crosvmTimeoutMs;
	auto socket = crosvm::ControlSocket::connect(opts.crosvmSocket, limits);
	if (!socket)
		return fail(socket.error());
	auto attached = crosvm::Attachment::attach(dev, *socket, opts.attach);
	if (!attached)
		return fail(withContext(attached.takeError(), "attaching " + dev.name() + " to crosvm at " +
								      opts.crosvmSocket));
	crosvm::Attachment &a = **attached;
	LOG_INFO("attached %s to crosvm at %s: %s", dev.name().c_str(), opts.crosvmSocket.c_str(),
		 a.summary().c_str());
	announceReady(opts, "attached " + dev.name() + " to crosvm");

	auto event = a.run(signals.get());
	if (!event)
		LOG_ERROR("%s", event.error().message.c_str());
	else if (*event == crosvm::Attachment::Event::PeerHangup)
		LOG_INFO("crosvm closed its control socket; detaching");
	else
		LOG_INFO("stopping; detaching from crosvm");
	(void)sdNotify("STOPPING=1");
	// Unless crosvm hung up, it still maps our regions: ask it to let go (also after an error).
	bool crosvmThere = !(event && *event == crosvm::Attachment::Event::PeerHangup);
	if (Status s = a.detach(crosvmThere); !s)
		return fail(withContext(s.takeError(), "detaching from crosvm"));
	return event ? 0 : 1;
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
	if (!opts.crosvmSocket.empty())
		return runAttach(opts, **dev);

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
		announceReady(opts, "serving " + (*dev)->name());
	});
	(void)sdNotify("STOPPING=1");
	if (!opts.socketPath.empty())
		::unlink(opts.socketPath.c_str());
	if (!result)
		return fail(result.error());
	LOG_INFO("exiting after %u client(s)", srv.clientsServed());
	return 0;
}
