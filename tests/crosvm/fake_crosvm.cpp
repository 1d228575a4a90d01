// SPDX-License-Identifier: Apache-2.0
// FakeCrosvm: the test-side control-socket peer, datagram by datagram with SCM_RIGHTS, every wait bounded.
#include "fake_crosvm.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "protocol/daemon_fixture.h"

namespace vfio_broker::test {

FakeCrosvm FakeCrosvm::listenAt(const std::string &path)
{
	FakeCrosvm f;
	f.listen_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
	REQUIRE(f.listen_);
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	REQUIRE(path.size() < sizeof(addr.sun_path));
	std::memcpy(addr.sun_path, path.c_str(), path.size());
	REQUIRE(::bind(f.listen_.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0);
	REQUIRE(::listen(f.listen_.get(), 4) == 0);
	return f;
}

std::pair<FakeCrosvm, UniqueFd> FakeCrosvm::connectedPair()
{
	int sv[2];
	REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
	FakeCrosvm f;
	f.conn_.reset(sv[0]);
	return { std::move(f), UniqueFd(sv[1]) };
}

void FakeCrosvm::accept()
{
	pollfd p{ listen_.get(), POLLIN, 0 };
	REQUIRE(::poll(&p, 1, kWaitMs) == 1);
	conn_.reset(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
	REQUIRE(conn_);
}

bool FakeCrosvm::hasPendingConnection() const
{
	pollfd p{ listen_.get(), POLLIN, 0 };
	return ::poll(&p, 1, 0) == 1;
}

PeerMessage FakeCrosvm::receive()
{
	pollfd p{ conn_.get(), POLLIN, 0 };
	REQUIRE(::poll(&p, 1, kWaitMs) == 1);
	PeerMessage m;
	std::vector<char> buf(1 << 20);
	alignas(cmsghdr) char control[CMSG_SPACE(253 * sizeof(int))];
	iovec iov{ buf.data(), buf.size() };
	msghdr msg{};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control;
	msg.msg_controllen = sizeof(control);
	ssize_t n = ::recvmsg(conn_.get(), &msg, MSG_CMSG_CLOEXEC);
	REQUIRE(n >= 0);
	for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int fd;
			std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			m.fds.emplace_back(fd);
		}
	}
	REQUIRE_FALSE(msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC));
	INFO("a 0-byte read is the client hanging up, not a request");
	REQUIRE(n > 0);
	m.json.assign(buf.data(), static_cast<size_t>(n));
	return m;
}

bool FakeCrosvm::waitHangup()
{
	pollfd p{ conn_.get(), POLLIN, 0 };
	if (::poll(&p, 1, kWaitMs) != 1)
		return false;
	char byte;
	ssize_t n = ::recv(conn_.get(), &byte, 1, MSG_DONTWAIT);
	if (n > 0)
		FAIL("expected the client to hang up, but it sent another request");
	return n == 0 || (n < 0 && errno == ECONNRESET);
}

void FakeCrosvm::send(const std::string &json, std::span<const int> fds)
{
	iovec iov{ const_cast<char *>(json.data()), json.size() };
	msghdr msg{};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	std::vector<char> control(CMSG_SPACE(fds.size() * sizeof(int)) + 1);
	if (!fds.empty()) {
		msg.msg_control = control.data();
		msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
		cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
		std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
	}
	REQUIRE(::sendmsg(conn_.get(), &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(json.size()));
}

UniqueFd makeMemfd(size_t size, const std::string &name)
{
	UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC));
	REQUIRE(fd);
	REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
	return fd;
}

ino_t inodeOf(int fd)
{
	struct stat st {};
	REQUIRE(::fstat(fd, &st) == 0);
	return st.st_ino;
}

bool processMapsInode(pid_t pid, int fd)
{
	struct stat st {};
	REQUIRE(::fstat(fd, &st) == 0);
	std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
	std::string line;
	while (std::getline(maps, line)) {
		// address perms offset dev inode path
		std::istringstream in(line);
		std::string addr, perms, offset, dev;
		unsigned long long inode = 0;
		if (!(in >> addr >> perms >> offset >> dev >> inode))
			continue;
		unsigned maj = 0, min = 0;
		if (std::sscanf(dev.c_str(), "%x:%x", &maj, &min) != 2)
			continue;
		if (inode == st.st_ino && maj == major(st.st_dev) && min == minor(st.st_dev))
			return true;
	}
	return false;
}

bool fdIsOpen(int fd)
{
	return ::fcntl(fd, F_GETFD) >= 0;
}

} // namespace vfio_broker::test
