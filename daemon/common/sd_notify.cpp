// SPDX-License-Identifier: Apache-2.0
// sd_notify without libsystemd: one datagram to the AF_UNIX socket named by $NOTIFY_SOCKET.
#include "common/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "common/unique_fd.h"

namespace vfio_broker {

Status sdNotify(const std::string &state)
{
	const char *path = std::getenv("NOTIFY_SOCKET");
	if (!path || !*path)
		return {};
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	size_t len = std::strlen(path);
	if (len >= sizeof(addr.sun_path) || (path[0] != '/' && path[0] != '@'))
		return makeError(EINVAL, "NOTIFY_SOCKET \"%s\" is not a socket path", path);
	std::memcpy(addr.sun_path, path, len);
	if (path[0] == '@')
		addr.sun_path[0] = '\0'; // abstract namespace
	UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
	if (!fd)
		return errnoError("socket for sd_notify");
	socklen_t alen = offsetof(sockaddr_un, sun_path) + len;
	if (::sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL,
		     reinterpret_cast<sockaddr *>(&addr), alen) < 0)
		return errnoError(errno, std::string("sd_notify to ") + path);
	return {};
}

Status notifyReadyFd(int fd)
{
	static const char msg[] = "READY=1\n";
	ssize_t n;
	do {
		n = ::write(fd, msg, sizeof(msg) - 1);
	} while (n < 0 && errno == EINTR);
	int err = errno;
	::close(fd);
	if (n != sizeof(msg) - 1)
		return errnoError(n < 0 ? err : EIO, "writing readiness to --ready-fd");
	return {};
}

} // namespace vfio_broker
