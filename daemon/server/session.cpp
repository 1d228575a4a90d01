// SPDX-License-Identifier: Apache-2.0
// The vfio-user request handlers. Each request is checked against the spec and our limits
// before the device sees it; every failure becomes an error reply with an errno here, in
// one place. The hot path (REGION_READ/WRITE) is one recvmsg and one sendmsg, no allocation.
#include "server/session.h"

#include <linux/vfio.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "common/log.h"
#include "vfio_user/json.h"

namespace vfio_broker::server {

using namespace vfio_user;

namespace {

template<typename T>
bool readStruct(const ReceivedMessage &msg, T *out)
{
	if (msg.payload.size() < sizeof(T))
		return false;
	std::memcpy(out, msg.payload.data(), sizeof(T));
	return true;
}

Error shortPayload(const ReceivedMessage &msg, size_t need)
{
	return makeError(EINVAL, "%s payload is %zu bytes, needs at least %zu",
			 commandName(msg.header.command), msg.payload.size(), need);
}

bool singleBit(uint32_t v)
{
	return v && !(v & (v - 1));
}

constexpr unsigned kMaxLoggedErrors = 32;

// Room for every request that is not a data transfer (VERSION with its JSON, DMA_MAP,
// SET_IRQS, ...), however small --max-data-xfer is.
constexpr uint32_t kMinMsgPayload = 4096;

} // namespace

Session::Session(device::Device &device, UniqueFd conn, const ServerLimits &limits)
	: device_(device), conn_(std::move(conn)), limits_(limits), dma_(device, limits.maxDmaMaps)
{
	info_ = device_.info();
	regions_.resize(info_.numRegions);
	for (uint32_t i = 0; i < info_.numRegions; i++) {
		auto r = device_.regionInfo(i);
		regions_[i] = r ? RegionShape{ r->flags, r->size } : RegionShape{ 0, 0 };
	}
	irqs_.resize(info_.numIrqs);
	for (uint32_t i = 0; i < info_.numIrqs; i++) {
		auto q = device_.irqInfo(i);
		irqs_[i] = q ? *q : device::IrqInfo{};
	}
	scratch_.resize(sizeof(RegionAccessPayload) + limits_.maxDataXfer + 4096);
}

Session::~Session() = default;

void Session::stop()
{
	stopping_ = true;
	::shutdown(conn_.get(), SHUT_RDWR);
}

Status Session::run()
{
	ReaderLimits rl;
	rl.maxMsgSize = sizeof(Header) +
			std::max<uint32_t>(sizeof(RegionAccessPayload) + limits_.maxDataXfer, kMinMsgPayload);
	rl.maxFds = limits_.maxMsgFds;
	MessageReader reader(conn_.get(), rl);
	ReceivedMessage msg;
	Status ended;

	while (!stopping_) {
		auto r = reader.read(msg);
		if (!r) {
			Error err = r.takeError();
			if (err.code == EINVAL || err.code == E2BIG) {
				// Framing is lost; answer the offending header, then hang up.
				(void)sendError(msg.header, err);
			}
			if (!stopping_)
				ended = withContext(std::move(err), "connection closed");
			break;
		}
		if (!*r)
			break; // orderly disconnect

		stats_.messages++;
		Reply reply;
		Status s = dispatch(msg, reply);
		// Fds the handler did not take (a refused request) are closed before the reply, not
		// held until the client sends its next message.
		msg.fds.clear();
		bool wantReply = !(msg.header.flags & kFlagNoReply);
		if (!s) {
			stats_.errors++;
			logError(msg.header, s.error());
			if (wantReply) {
				if (Status sent = sendError(msg.header, s.error()); !sent) {
					if (!stopping_)
						ended = withContext(sent.takeError(), "sending an error reply");
					break;
				}
			}
			if (s.error().code == ENOTSUP &&
			    msg.header.command == static_cast<uint16_t>(Command::Version))
				break; // incompatible major: the spec has the connection closed
			continue;
		}
		if (!wantReply)
			continue;
		Header h{};
		h.msgId = msg.header.msgId;
		h.command = msg.header.command;
		h.flags = kFlagTypeReply;
		h.msgSize = sizeof(Header) + iovLength({ reply.iov, reply.iovCount });
		int fds[1] = { reply.fd };
		Status sent = sendMessage(conn_.get(), h, { reply.iov, reply.iovCount },
					  reply.fd >= 0 ? std::span<const int>(fds, 1)
							: std::span<const int>());
		if (!sent) {
			if (!stopping_)
				ended = withContext(sent.takeError(), "sending a reply");
			break;
		}
	}
	cleanup();
	return ended;
}

void Session::cleanup()
{
	size_t mappings = dma_.count();
	if (Status s = dma_.unmapAll(); !s)
		LOG_WARN("%s: removing DMA mappings: %s", device_.name().c_str(), s.error().message.c_str());
	if (Status s = device_.quiesce(); !s)
		LOG_WARN("%s: quiescing the device: %s", device_.name().c_str(), s.error().message.c_str());
	LOG_INFO("%s: client gone after %llu messages (%llu errors); removed %zu DMA mappings, "
		 "interrupts disabled", device_.name().c_str(),
		 (unsigned long long)stats_.messages, (unsigned long long)stats_.errors, mappings);
}

void Session::logError(const Header &request, const Error &err)
{
	if (loggedErrors_ < kMaxLoggedErrors) {
		LOG_WARN("%s: %s (msg %u) refused: %s [%s]", device_.name().c_str(),
			 commandName(request.command), request.msgId, err.message.c_str(),
			 std::strerror(err.code));
	} else if (loggedErrors_ == kMaxLoggedErrors) {
		LOG_WARN("%s: further refused requests from this client are logged at debug level",
			 device_.name().c_str());
	} else {
		LOG_DEBUG("%s: %s refused: %s", device_.name().c_str(), commandName(request.command),
			  err.message.c_str());
	}
	loggedErrors_++;
}

Status Session::sendError(const Header &request, const Error &err)
{
	Header h{};
	h.msgId = request.msgId;
	h.command = request.command;
	h.msgSize = sizeof(Header);
	h.flags = kFlagTypeReply | kFlagError;
	h.error = err.code > 0 ? err.code : EIO;
	return sendMessage(conn_.get(), h, {});
}

Status Session::dispatch(ReceivedMessage &msg, Reply &reply)
{
	const Header &h = msg.header;
	if ((h.flags & kFlagTypeMask) != kFlagTypeCommand)
		return makeError(EINVAL, "message type %u is not a command (this server sends no "
				 "commands, so it expects no replies)", h.flags & kFlagTypeMask);
	if (msg.fdsTruncated)
		return makeError(EINVAL, "file descriptors were truncated in transit");
	if (msg.fdsOverLimit)
		return makeError(EINVAL, "more than %u file descriptors in one message",
				 limits_.maxMsgFds);

	Command cmd = static_cast<Command>(h.command);
	if (!negotiated_ && cmd != Command::Version)
		return makeError(EINVAL, "VERSION must be negotiated first");
	bool takesFds = cmd == Command::DmaMap || cmd == Command::DeviceSetIrqs;
	if (!takesFds && !msg.fds.empty())
		return makeError(EINVAL, "%s does not take file descriptors (%zu sent)",
				 commandName(h.command), msg.fds.size());

	switch (cmd) {
	case Command::Version: return handleVersion(msg, reply);
	case Command::DmaMap: return handleDmaMap(msg);
	case Command::DmaUnmap: return handleDmaUnmap(msg, reply);
	case Command::DeviceGetInfo: return handleGetInfo(msg, reply);
	case Command::DeviceGetRegionInfo: return handleGetRegionInfo(msg, reply);
	case Command::DeviceGetIrqInfo: return handleGetIrqInfo(msg, reply);
	case Command::DeviceSetIrqs: return handleSetIrqs(msg);
	case Command::RegionRead: return handleRegionRead(msg, reply);
	case Command::RegionWrite: return handleRegionWrite(msg, reply);
	case Command::DeviceReset:
		if (!(info_.flags & VFIO_DEVICE_FLAGS_RESET))
			return makeError(ENOTSUP, "%s offers no reset", device_.name().c_str());
		return device_.reset();
	case Command::DmaRead:
	case Command::DmaWrite:
		return makeError(EINVAL, "%s is a server-to-client command", commandName(h.command));
	case Command::DeviceGetRegionIoFds:
	case Command::RegionWriteMulti:
	case Command::DeviceFeature:
	case Command::MigDataRead:
	case Command::MigDataWrite:
		return makeError(ENOTSUP, "%s is not supported by this server", commandName(h.command));
	}
	return makeError(ENOSYS, "unknown command %u", h.command);
}

Status Session::handleVersion(ReceivedMessage &msg, Reply &reply)
{
	if (negotiated_)
		return makeError(EINVAL, "VERSION was already negotiated on this connection");
	VersionPayload v;
	if (!readStruct(msg, &v))
		return shortPayload(msg, sizeof(v));
	if (v.major != kVersionMajor)
		return makeError(ENOTSUP, "protocol major version %u is not supported (only %u)",
				 v.major, kVersionMajor);

	// Optional JSON, NUL-terminated by the spec; tolerate a missing terminator.
	std::string_view json(reinterpret_cast<const char *>(msg.payload.data()) + sizeof(v),
			      msg.payload.size() - sizeof(v));
	if (size_t nul = json.find('\0'); nul != std::string_view::npos)
		json = json.substr(0, nul);
	uint32_t clientMaxFds = kSpecDefaultMaxMsgFds;
	if (!json.empty()) {
		auto doc = parseJson(json);
		if (!doc)
			return withContext(doc.takeError(), "VERSION capabilities");
		if (!doc->isObject())
			return makeError(EINVAL, "VERSION data is not a JSON object");
		if (const JsonValue *caps = doc->find("capabilities")) {
			if (!caps->isObject())
				return makeError(EINVAL, "\"capabilities\" is not an object");
			for (const char *key : { "max_msg_fds", "max_data_xfer_size", "pgsizes", "max_dma_maps" }) {
				const JsonValue *val = caps->find(key);
				if (val && !val->asUint())
					return makeError(EINVAL, "capability \"%s\" is not a non-negative integer", key);
			}
			if (const JsonValue *fds = caps->find("max_msg_fds"))
				clientMaxFds = static_cast<uint32_t>(std::min<uint64_t>(*fds->asUint(), 253));
		}
	}
	clientMaxMsgFds_ = clientMaxFds;
	negotiated_ = true;

	auto *out = reinterpret_cast<VersionPayload *>(scratch_.data());
	out->major = kVersionMajor;
	out->minor = std::min(v.minor, kVersionMinor);
	int n = std::snprintf(reinterpret_cast<char *>(scratch_.data()) + sizeof(VersionPayload),
			      scratch_.size() - sizeof(VersionPayload),
			      "{\"capabilities\":{\"max_msg_fds\":%u,\"max_data_xfer_size\":%u,"
			      "\"max_dma_maps\":%u,\"pgsizes\":%llu}}",
			      limits_.maxMsgFds, limits_.maxDataXfer,
			      device_.iommuInfo().translates ? dma_.maxMappings() : 0u,
			      (unsigned long long)device_.iommuInfo().pgsizes);
	reply.add(scratch_.data(), sizeof(VersionPayload) + n + 1); // with the NUL
	return {};
}

Status Session::handleDmaMap(ReceivedMessage &msg)
{
	DmaMapPayload p;
	if (!readStruct(msg, &p))
		return shortPayload(msg, sizeof(p));
	if (p.argsz < sizeof(p))
		return makeError(EINVAL, "DMA_MAP argsz %u is below %zu", p.argsz, sizeof(p));
	if (msg.fds.size() > 1)
		return makeError(EINVAL, "DMA_MAP takes at most one fd (%zu sent)", msg.fds.size());
	// Refused before the client's fd is mapped: nothing behind this device translates DMA
	// (a non-DMA platform device, or VFIO no-IOMMU mode), so there is nothing to program.
	if (!device_.iommuInfo().translates)
		return makeError(ENOTSUP, "%s has no IOMMU translation: DMA_MAP is not supported",
				 device_.name().c_str());
	UniqueFd fd = msg.fds.empty() ? UniqueFd() : std::move(msg.fds[0]);
	uint64_t offset = fd ? p.offset : 0; // meaningless without an fd
	return dma_.map(p.address, p.size, p.flags, std::move(fd), offset);
}

Status Session::handleDmaUnmap(ReceivedMessage &msg, Reply &reply)
{
	DmaUnmapPayload p;
	if (!readStruct(msg, &p))
		return shortPayload(msg, sizeof(p));
	if (p.argsz < sizeof(p))
		return makeError(EINVAL, "DMA_UNMAP argsz %u is below %zu", p.argsz, sizeof(p));
	if (p.flags & kDmaUnmapFlagGetDirtyBitmap)
		return makeError(ENOTSUP, "DMA_UNMAP dirty page tracking is not supported");
	if (p.flags & ~kDmaUnmapFlagAll)
		return makeError(EINVAL, "DMA_UNMAP flags 0x%x are unknown", p.flags);
	if (p.flags & kDmaUnmapFlagAll) {
		if (p.address || p.size)
			return makeError(EINVAL, "DMA_UNMAP of all mappings takes address and size 0");
		if (Status s = dma_.unmapAll(); !s)
			return s;
	} else if (Status s = dma_.unmap(p.address, p.size); !s) {
		return s;
	}
	// The reply echoes the request's DMA entry.
	std::memcpy(scratch_.data(), &p, sizeof(p));
	reinterpret_cast<DmaUnmapPayload *>(scratch_.data())->argsz = sizeof(p);
	reply.add(scratch_.data(), sizeof(p));
	return {};
}

Status Session::handleGetInfo(ReceivedMessage &msg, Reply &reply)
{
	DeviceInfoPayload p;
	if (!readStruct(msg, &p))
		return shortPayload(msg, sizeof(p));
	if (p.argsz < sizeof(p))
		return makeError(EINVAL, "DEVICE_GET_INFO argsz %u is below %zu", p.argsz, sizeof(p));
	auto *out = reinterpret_cast<DeviceInfoPayload *>(scratch_.data());
	*out = { sizeof(p), info_.flags, info_.numRegions, info_.numIrqs };
	reply.add(out, sizeof(*out));
	return {};
}

Status Session::handleGetRegionInfo(ReceivedMessage &msg, Reply &reply)
{
	RegionInfoPayload p;
	if (!readStruct(msg, &p))
		return shortPayload(msg, sizeof(p));
	if (p.argsz < sizeof(p))
		return makeError(EINVAL, "DEVICE_GET_REGION_INFO argsz %u is below %zu", p.argsz, sizeof(p));
	if (p.index >= info_.numRegions)
		return makeError(EINVAL, "region %u does not exist (the device has %u)", p.index,
				 info_.numRegions);
	auto info = device_.regionInfo(p.index);
	if (!info)
		return info.takeError();

	uint32_t flags = info->flags & ~VFIO_REGION_INFO_FLAG_CAPS;
	// Without an fd the client cannot map anything: present the region as trapped only.
	bool giveFd = (flags & VFIO_REGION_INFO_FLAG_MMAP) && info->fd >= 0 &&
		      limits_.allowMmap && clientMaxMsgFds_ >= 1;
	std::span<const uint8_t> caps = info->caps;
	if (!giveFd) {
		flags &= ~VFIO_REGION_INFO_FLAG_MMAP;
		caps = {}; // sparse-mmap areas mean nothing without the fd
	}
	if (!caps.empty())
		flags |= VFIO_REGION_INFO_FLAG_CAPS;
	uint32_t full = sizeof(RegionInfoPayload) + caps.size();
	if (full > scratch_.size())
		return makeError(EIO, "region %u capability chain is too large", p.index);

	auto *out = reinterpret_cast<RegionInfoPayload *>(scratch_.data());
	*out = { full, flags, p.index, 0, info->size, info->mmapOffset };
	if (p.argsz < full) {
		// Probe: the client learns the size it needs; caps and fd come with the full reply.
		reply.add(out, sizeof(*out));
		return {};
	}
	if (!caps.empty()) {
		out->capOffset = sizeof(RegionInfoPayload);
		std::memcpy(scratch_.data() + sizeof(*out), caps.data(), caps.size());
	}
	reply.add(out, full);
	if (giveFd)
		reply.fd = info->fd;
	return {};
}

Status Session::handleGetIrqInfo(ReceivedMessage &msg, Reply &reply)
{
	IrqInfoPayload p;
	if (!readStruct(msg, &p))
		return shortPayload(msg, sizeof(p));
	if (p.argsz < sizeof(p))
		return makeError(EINVAL, "DEVICE_GET_IRQ_INFO argsz %u is below %zu", p.argsz, sizeof(p));
	if (p.index >= info_.numIrqs)
		return makeError(EINVAL, "IRQ index %u does not exist (the device has %u)", p.index,
				 info_.numIrqs);
	auto *out = reinterpret_cast<IrqInfoPayload *>(scratch_.data());
	*out = { sizeof(p), irqs_[p.index].flags, p.index, irqs_[p.index].count };
	reply.add(out, sizeof(*out));
	return {};
}

Status Session::handleSetIrqs(ReceivedMessage &msg)
{
	IrqSetPayload p;
	if (!readStruct(msg, &p))
		return shortPayload(msg, sizeof(p));
	if (p.argsz < sizeof(p))
		return makeError(EINVAL, "DEVICE_SET_IRQS argsz %u is below %zu", p.argsz, sizeof(p));
	uint32_t data = p.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
	uint32_t action = p.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
	if (!singleBit(data) || !singleBit(action) ||
	    (p.flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK)))
		return makeError(EINVAL, "DEVICE_SET_IRQS flags 0x%x: need exactly one DATA_ and one "
				 "ACTION_ flag", p.flags);
	if (p.index >= info_.numIrqs)
		return makeError(EINVAL, "IRQ index %u does not exist (the device has %u)", p.index,
				 info_.numIrqs);
	uint32_t available = irqs_[p.index].count;
	if (p.count == 0) {
		if (data != VFIO_IRQ_SET_DATA_NONE || action != VFIO_IRQ_SET_ACTION_TRIGGER || p.start)
			return makeError(EINVAL, "DEVICE_SET_IRQS count 0 is only the DATA_NONE|TRIGGER "
					 "form that disables the index");
	} else if (static_cast<uint64_t>(p.start) + p.count > available) {
		return makeError(EINVAL, "IRQ index %u has %u interrupts; start %u count %u is out of range",
				 p.index, available, p.start, p.count);
	}

	device::IrqSetRequest req;
	req.flags = p.flags;
	req.index = p.index;
	req.start = p.start;
	req.count = p.count;
	if (data == VFIO_IRQ_SET_DATA_BOOL) {
		if (msg.payload.size() - sizeof(p) < p.count)
			return makeError(EINVAL, "DEVICE_SET_IRQS DATA_BOOL needs %u bytes of data, got %zu",
					 p.count, msg.payload.size() - sizeof(p));
		req.bools = std::span<const uint8_t>(msg.payload.data() + sizeof(p), p.count);
	}
	if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
		if (!msg.fds.empty() && msg.fds.size() != p.count)
			return makeError(EINVAL, "DEVICE_SET_IRQS has %zu eventfds for count %u (send "
					 "count fds, or none to de-assign)", msg.fds.size(), p.count);
		req.eventfds = std::move(msg.fds);
	} else if (!msg.fds.empty()) {
		return makeError(EINVAL, "DEVICE_SET_IRQS sent fds without DATA_EVENTFD");
	}
	return device_.setIrqs(req);
}

Status Session::checkRegionAccess(const RegionAccessPayload &req, uint32_t needFlag) const
{
	if (req.region >= info_.numRegions)
		return makeError(EINVAL, "region %u does not exist (the device has %u)", req.region,
				 info_.numRegions);
	if (req.count == 0)
		return makeError(EINVAL, "access of 0 bytes");
	if (req.count > limits_.maxDataXfer)
		return makeError(E2BIG, "access of %u bytes exceeds max_data_xfer_size %u", req.count,
				 limits_.maxDataXfer);
	const RegionShape &r = regions_[req.region];
	if (!(r.flags & needFlag))
		return makeError(EINVAL, "region %u is not %s", req.region,
				 needFlag == VFIO_REGION_INFO_FLAG_READ ? "readable" : "writable");
	if (req.offset > r.size || req.count > r.size - req.offset)
		return makeError(EINVAL, "access 0x%llx+%u is outside region %u (0x%llx bytes)",
				 (unsigned long long)req.offset, req.count, req.region,
				 (unsigned long long)r.size);
	return {};
}

Status Session::handleRegionRead(ReceivedMessage &msg, Reply &reply)
{
	RegionAccessPayload p;
	if (!readStruct(msg, &p))
		return shortPayload(msg, sizeof(p));
	if (Status s = checkRegionAccess(p, VFIO_REGION_INFO_FLAG_READ); !s)
		return s;
	uint8_t *data = scratch_.data() + sizeof(p);
	if (Status s = device_.regionRead(p.region, p.offset, data, p.count); !s)
		return s;
	std::memcpy(scratch_.data(), &p, sizeof(p));
	reply.add(scratch_.data(), sizeof(p) + p.count);
	return {};
}

Status Session::handleRegionWrite(ReceivedMessage &msg, Reply &reply)
{
	RegionAccessPayload p;
	if (!readStruct(msg, &p))
		return shortPayload(msg, sizeof(p));
	if (msg.payload.size() - sizeof(p) != p.count)
		return makeError(EINVAL, "REGION_WRITE count %u but %zu bytes of data", p.count,
				 msg.payload.size() - sizeof(p));
	if (Status s = checkRegionAccess(p, VFIO_REGION_INFO_FLAG_WRITE); !s)
		return s;
	if (Status s = device_.regionWrite(p.region, p.offset, msg.payload.data() + sizeof(p), p.count); !s)
		return s;
	std::memcpy(scratch_.data(), &p, sizeof(p));
	reply.add(scratch_.data(), sizeof(p));
	return {};
}

} // namespace vfio_broker::server
