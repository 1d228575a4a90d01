// SPDX-License-Identifier: Apache-2.0
// Message framing with fd passing; every fd is owned by a UniqueFd the moment recvmsg returns.
#include "vfio_user/message_io.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace vfio_broker::vfio_user {

namespace {
// Room for the kernel's per-message maximum (SCM_MAX_FD), so fds are never silently dropped
// before we can count them against our own limit.
constexpr size_t kMaxFdsPerRecv = 253;
constexpr size_t kReadChunk = 64 * 1024;
} // namespace

MessageReader::MessageReader(int fd, const ReaderLimits &limits)
	: fd_(fd), limits_(limits)
{
	// Grown on demand up to maxMsgSize: most messages are tiny.
	buf_.resize(2 * kReadChunk);
}

Status MessageReader::fill()
{
	// Make room: keep the unconsumed bytes, move them to the front when the tail is short.
	if (buf_.size() - end_ < kReadChunk && begin_ > 0) {
		std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
		end_ -= begin_;
		begin_ = 0;
	}
	iovec iov{ buf_.data() + end_, buf_.size() - end_ };
	alignas(cmsghdr) char control[CMSG_SPACE(kMaxFdsPerRecv * sizeof(int))];
	msghdr msg{};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control;
	msg.msg_controllen = sizeof(control);

	ssize_t n;
	do {
		n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errnoError(errno, "recvmsg");

	std::vector<UniqueFd> fds;
	for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		const unsigned char *data = CMSG_DATA(c);
		for (size_t i = 0; i < count; i++) {
			int raw;
			std::memcpy(&raw, data + i * sizeof(int), sizeof(int));
			fds.emplace_back(raw);
		}
	}
	bool truncated = msg.msg_flags & MSG_CTRUNC;

	if (n == 0 && fds.empty()) {
		eof_ = true;
		return {};
	}
	end_ += n;
	if (!fds.empty() || truncated) {
		pendingCount_ += fds.size();
		pending_.push_back({ bytesReceived(), std::move(fds), truncated });
	}
	return {};
}

void MessageReader::claimFds(uint64_t messageEnd, ReceivedMessage &out)
{
	while (!pending_.empty() && pending_.front().chunkEnd <= messageEnd) {
		PendingFds &p = pending_.front();
		out.fdsTruncated |= p.truncated;
		pendingCount_ -= p.fds.size();
		for (auto &fd : p.fds) {
			if (out.fds.size() < limits_.maxFds)
				out.fds.push_back(std::move(fd));
			else
				out.fdsOverLimit = true; // dropped here: the UniqueFd closes it
		}
		pending_.pop_front();
	}
	if (out.fdsOverLimit)
		out.fds.clear();
}

Result<bool> MessageReader::read(ReceivedMessage &out)
{
	out.fds.clear();
	out.fdsOverLimit = false;
	out.fdsTruncated = false;
	out.payload = {};

	for (;;) {
		size_t avail = end_ - begin_;
		if (avail >= sizeof(Header)) {
			std::memcpy(&out.header, buf_.data() + begin_, sizeof(Header));
			uint32_t size = out.header.msgSize;
			if (size < sizeof(Header))
				return makeError(EINVAL, "message size %u is smaller than the %zu-byte header",
						 size, sizeof(Header));
			if (size > limits_.maxMsgSize)
				return makeError(E2BIG, "message size %u exceeds the limit of %u bytes",
						 size, limits_.maxMsgSize);
			if (begin_ + size > buf_.size()) {
				// Room for the whole message: compact, then grow if it is still short.
				std::memmove(buf_.data(), buf_.data() + begin_, avail);
				begin_ = 0;
				end_ = avail;
				if (size + kReadChunk > buf_.size())
					buf_.resize(size + kReadChunk);
			}
			if (avail >= size) {
				uint64_t messageEnd = streamPos_ + size;
				claimFds(messageEnd, out);
				out.payload = std::span<uint8_t>(buf_.data() + begin_ + sizeof(Header),
								 size - sizeof(Header));
				begin_ += size;
				streamPos_ += size;
				if (begin_ == end_)
					begin_ = end_ = 0; // cheap reset keeps the hot path at the buffer start
				return true;
			}
		}
		if (eof_) {
			if (avail == 0 && pending_.empty())
				return false;
			return makeError(EPROTO, "peer closed the connection in the middle of a message "
					 "(%zu bytes pending)", avail);
		}
		// Bound fds that arrive without a message to carry them (a peer spraying fds).
		if (pendingCount_ > 4 * static_cast<size_t>(limits_.maxFds) + kMaxFdsPerRecv)
			return makeError(EMFILE, "too many file descriptors received without a message");
		if (Status s = fill(); !s)
			return s.takeError();
	}
}

size_t iovLength(std::span<const iovec> iov)
{
	size_t total = 0;
	for (const auto &v : iov)
		total += v.iov_len;
	return total;
}

void attachFds(msghdr &msg, void *control, std::span<const int> fds)
{
	if (fds.empty())
		return;
	const size_t space = CMSG_SPACE(fds.size() * sizeof(int));
	std::memset(control, 0, space);
	msg.msg_control = control;
	msg.msg_controllen = space;
	cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
	std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
}

Status sendMessage(int fd, const Header &header, std::span<const iovec> payload,
		   std::span<const int> fds)
{
	constexpr size_t kMaxIov = 8;
	if (payload.size() + 1 > kMaxIov)
		return makeError(EINVAL, "too many payload parts");
	iovec iov[kMaxIov];
	iov[0] = { const_cast<Header *>(&header), sizeof(Header) };
	size_t count = 1;
	for (const auto &p : payload)
		iov[count++] = p;

	alignas(cmsghdr) char control[CMSG_SPACE(kMaxFdsPerRecv * sizeof(int))];
	if (fds.size() > kMaxFdsPerRecv)
		return makeError(EINVAL, "cannot send %zu fds in one message", fds.size());

	size_t remaining = sizeof(Header) + iovLength(payload);
	iovec *cur = iov;
	bool first = true;
	while (remaining > 0) {
		msghdr msg{};
		msg.msg_iov = cur;
		msg.msg_iovlen = count - (cur - iov);
		if (first)
			attachFds(msg, control, fds);
		ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errnoError(errno, "sendmsg");
		}
		first = false;
		remaining -= n;
		// Advance over what was written.
		size_t done = n;
		while (done > 0 && done >= cur->iov_len) {
			done -= cur->iov_len;
			cur++;
		}
		if (done > 0) {
			cur->iov_base = static_cast<char *>(cur->iov_base) + done;
			cur->iov_len -= done;
		}
	}
	return {};
}

} // namespace vfio_broker::vfio_user
