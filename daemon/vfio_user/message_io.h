// SPDX-License-Identifier: Apache-2.0
// Framing of vfio-user messages on a stream socket: a buffered reader that attaches SCM_RIGHTS
// fds to the message they were sent with, and a sender. Used by the server and the client.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "vfio_user/protocol.h"

namespace vfio_broker::vfio_user {

struct ReaderLimits {
	uint32_t maxMsgSize = sizeof(Header) + sizeof(RegionAccessPayload) + (1u << 20);
	uint32_t maxFds = 16; // per message; more makes the message fail with fdsOverLimit
};

struct ReceivedMessage {
	Header header{};
	std::span<uint8_t> payload;     // valid until the next read()
	std::vector<UniqueFd> fds;      // owned; closed when dropped
	bool fdsOverLimit = false;      // more fds than allowed arrived (they were closed)
	bool fdsTruncated = false;      // the kernel truncated the control data (MSG_CTRUNC)
};

// Reads whole messages from a connected AF_UNIX stream socket (blocking or not).
//
// Fds travel with the sendmsg() that carries the start of a message. The kernel returns
// from recvmsg() right after a segment that carries fds, so every received chunk ends
// inside (or at the end of) the message its fds belong to: a message claims the fds of
// every chunk that ended within it.
class MessageReader
{
public:
	MessageReader(int fd, const ReaderLimits &limits);

	// Next message. Returns true with `out` filled, false on orderly EOF between messages.
	// Errors: EAGAIN (non-blocking socket, no whole message yet), EPROTO (peer closed in
	// the middle of a message), EINVAL/E2BIG (msgSize below the header size or above the
	// limit: framing is lost, `out.header` holds the offending header), EMFILE (fds
	// arrive with no message to carry them), or a socket errno.
	Result<bool> read(ReceivedMessage &out);

	uint64_t bytesReceived() const { return streamPos_ + (end_ - begin_); }

private:
	Status fill();
	void claimFds(uint64_t messageEnd, ReceivedMessage &out);

	struct PendingFds {
		uint64_t chunkEnd; // stream offset just past the chunk the fds came with
		std::vector<UniqueFd> fds;
		bool truncated;
	};

	int fd_;
	ReaderLimits limits_;
	std::vector<uint8_t> buf_;
	size_t begin_ = 0, end_ = 0;
	uint64_t streamPos_ = 0; // stream offset of buf_[begin_]
	std::deque<PendingFds> pending_;
	size_t pendingCount_ = 0;
	bool eof_ = false;
};

// Send one message: header + payload iovecs in one sendmsg() with the fds attached.
// Loops over partial writes (fds go with the first). MSG_NOSIGNAL: a dead peer is EPIPE.
// The socket must be blocking: EAGAIN half-way through would tear the frame.
Status sendMessage(int fd, const Header &header, std::span<const iovec> payload,
		   std::span<const int> fds = {});

// Total payload length of a set of iovecs.
size_t iovLength(std::span<const iovec> iov);

// Attach fds to msg as one SCM_RIGHTS message in control, which must hold
// CMSG_SPACE(fds.size() * sizeof(int)) bytes and be cmsghdr-aligned. No fds: no control data.
void attachFds(msghdr &msg, void *control, std::span<const int> fds);

} // namespace vfio_broker::vfio_user
