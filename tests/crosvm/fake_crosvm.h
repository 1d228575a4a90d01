// SPDX-License-Identifier: Apache-2.0
// FakeCrosvm: crosvm's end of its control socket for tests (SOCK_SEQPACKET, one message per datagram, fds in SCM_RIGHTS), with bounded waits.
#pragma once

#include <sys/types.h>

#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/unique_fd.h"

namespace vfio_broker::test {

struct PeerMessage {
	std::string json;
	std::vector<UniqueFd> fds;
};

// Plays the part of src/crosvm/sys/linux.rs's control server: accepts a connection, reads the
// VmRequest datagrams sent to it and answers with whatever the test scripts, fds included.
// Every wait REQUIREs success within kWaitMs (tests/protocol/daemon_fixture.h).
class FakeCrosvm
{
public:
	// Listening at `path`, like `crosvm run -s path`.
	static FakeCrosvm listenAt(const std::string &path);
	// Already connected: returns the fake and the client's end of a SOCK_SEQPACKET socketpair.
	static std::pair<FakeCrosvm, UniqueFd> connectedPair();

	void accept();
	// A connection waits in the listen backlog (no wait).
	bool hasPendingConnection() const;
	// The next datagram, REQUIREd to arrive in time.
	PeerMessage receive();
	// True when the client closed its end (EOF) within the wait; a datagram instead is a FAIL.
	bool waitHangup();
	// Send a datagram (any bytes, any fds), as crosvm's Tube::send does.
	void send(const std::string &json, std::span<const int> fds = {});
	void hangUp() { conn_.reset(); }
	int connection() const { return conn_.get(); }

private:
	UniqueFd listen_;
	UniqueFd conn_;
};

// Pieces the crosvm tests share.
UniqueFd makeMemfd(size_t size, const std::string &name = "crosvm-test");
ino_t inodeOf(int fd);
// Does /proc/<pid>/maps show a mapping of this inode (on this device)?
bool processMapsInode(pid_t pid, int fd);
bool fdIsOpen(int fd);

} // namespace vfio_broker::test
