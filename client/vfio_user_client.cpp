// SPDX-License-Identifier: Apache-2.0
// vfio-user client, written from the spec (QEMU docs/interop/vfio-user.rst). Blocking, one
// request in flight; each call checks that the reply matches its request.
#include "client/vfio_user_client.h"

#include <linux/vfio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

#include "vfio_user/json.h"

namespace vfio_broker::client {

using namespace vfio_user;

namespace {

ReaderLimits clientLimits()
{
	ReaderLimits l;
	// The largest reply: a read of max_data_xfer_size, or region info with a long cap chain.
	l.maxMsgSize = sizeof(Header) + sizeof(RegionAccessPayload) + (16u << 20);
	l.maxFds = 8;
	return l;
}

} // namespace

MappedRegion::~MappedRegion()
{
	for (auto &m : maps_)
		::munmap(m.addr, m.size);
}

MappedRegion::MappedRegion(MappedRegion &&other) noexcept : maps_(std::move(other.maps_))
{
	other.maps_.clear();
}

MappedRegion &MappedRegion::operator=(MappedRegion &&other) noexcept
{
	if (this != &other) {
		for (auto &m : maps_)
			::munmap(m.addr, m.size);
		maps_ = std::move(other.maps_);
		other.maps_.clear();
	}
	return *this;
}

volatile uint8_t *MappedRegion::at(uint64_t offset, uint64_t len) const
{
	for (const auto &m : maps_)
		if (offset >= m.regionOffset && offset - m.regionOffset + len <= m.size)
			return static_cast<volatile uint8_t *>(m.addr) + (offset - m.regionOffset);
	return nullptr;
}

Client::Client(UniqueFd sock)
	: sock_(std::move(sock)),
	  reader_(std::make_unique<MessageReader>(sock_.get(), clientLimits()))
{
}

Result<Client> Client::connect(const std::string &socketPath)
{
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (socketPath.size() >= sizeof(addr.sun_path))
		return makeError(ENAMETOOLONG, "socket path too long: %s", socketPath.c_str());
	std::memcpy(addr.sun_path, socketPath.c_str(), socketPath.size());
	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!fd)
		return errnoError("socket");
	if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) < 0)
		return errnoError(errno, "connect " + socketPath);
	return Client(std::move(fd));
}

Result<Client> Client::adopt(UniqueFd connectedSocket)
{
	if (!connectedSocket)
		return makeError(EBADF, "no socket");
	return Client(std::move(connectedSocket));
}

Status Client::call(Command cmd, std::span<const iovec> payload, std::span<const int> fds,
		    ReceivedMessage &reply)
{
	Header h{};
	h.msgId = nextId_++;
	h.command = static_cast<uint16_t>(cmd);
	h.msgSize = sizeof(Header) + iovLength(payload);
	h.flags = kFlagTypeCommand;
	if (Status s = sendMessage(sock_.get(), h, payload, fds); !s)
		return withContext(s.takeError(), commandName(h.command));
	auto r = reader_->read(reply);
	if (!r)
		return withContext(r.takeError(), std::string("reading the ") + commandName(h.command) + " reply");
	if (!*r)
		return makeError(ECONNRESET, "server closed the connection instead of answering %s",
				 commandName(h.command));
	if ((reply.header.flags & kFlagTypeMask) != kFlagTypeReply || reply.header.msgId != h.msgId ||
	    reply.header.command != h.command)
		return makeError(EPROTO, "reply (id %u, command %u) does not match %s request id %u",
				 reply.header.msgId, reply.header.command, commandName(h.command), h.msgId);
	if (reply.header.flags & kFlagError) {
		int code = reply.header.error ? static_cast<int>(reply.header.error) : EIO;
		return makeError(code, "server refused %s: %s", commandName(h.command), std::strerror(code));
	}
	return {};
}

std::string Client::defaultCapabilities()
{
	return "{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,"
	       "\"pgsizes\":4096}}";
}

Result<Negotiated> Client::negotiate(const std::string &capabilitiesJson)
{
	VersionPayload v{ kVersionMajor, kVersionMinor };
	iovec iov[2] = { { &v, sizeof(v) },
			 { const_cast<char *>(capabilitiesJson.c_str()), capabilitiesJson.size() + 1 } };
	if (Status s = call(Command::Version, { iov, capabilitiesJson.empty() ? 1u : 2u }, {}, reply_); !s)
		return s.takeError();
	if (reply_.payload.size() < sizeof(VersionPayload))
		return makeError(EPROTO, "VERSION reply is %zu bytes", reply_.payload.size());
	Negotiated n;
	std::memcpy(&v, reply_.payload.data(), sizeof(v));
	n.major = v.major;
	n.minor = v.minor;
	if (n.major != kVersionMajor || n.minor > kVersionMinor)
		return makeError(EPROTO, "server answered version %u.%u to our %u.%u", n.major, n.minor,
				 kVersionMajor, kVersionMinor);
	std::string_view json(reinterpret_cast<const char *>(reply_.payload.data()) + sizeof(v),
			      reply_.payload.size() - sizeof(v));
	if (size_t nul = json.find('\0'); nul != std::string_view::npos)
		json = json.substr(0, nul);
	n.json = std::string(json);
	if (!json.empty()) {
		auto doc = parseJson(json);
		if (!doc)
			return withContext(doc.takeError(), "server capabilities");
		if (const JsonValue *caps = doc->find("capabilities")) {
			auto get = [&](const char *key, auto &field) {
				if (const JsonValue *val = caps->find(key); val && val->asUint())
					field = static_cast<std::remove_reference_t<decltype(field)>>(*val->asUint());
			};
			get("max_msg_fds", n.maxMsgFds);
			get("max_data_xfer_size", n.maxDataXfer);
			get("max_dma_maps", n.maxDmaMaps);
			get("pgsizes", n.pgsizes);
		}
	}
	negotiated_ = n;
	return n;
}

Result<DeviceInfo> Client::deviceInfo()
{
	DeviceInfoPayload p{ sizeof(p), 0, 0, 0 };
	iovec iov{ &p, sizeof(p) };
	if (Status s = call(Command::DeviceGetInfo, { &iov, 1 }, {}, reply_); !s)
		return s.takeError();
	if (reply_.payload.size() < sizeof(p))
		return makeError(EPROTO, "DEVICE_GET_INFO reply is %zu bytes", reply_.payload.size());
	std::memcpy(&p, reply_.payload.data(), sizeof(p));
	return DeviceInfo{ p.flags, p.numRegions, p.numIrqs };
}

Result<RegionInfo> Client::regionInfo(uint32_t index)
{
	uint32_t argsz = sizeof(RegionInfoPayload);
	for (int attempt = 0; attempt < 2; attempt++) {
		RegionInfoPayload p{ argsz, 0, index, 0, 0, 0 };
		iovec iov{ &p, sizeof(p) };
		if (Status s = call(Command::DeviceGetRegionInfo, { &iov, 1 }, {}, reply_); !s)
			return s.takeError();
		if (reply_.payload.size() < sizeof(p))
			return makeError(EPROTO, "DEVICE_GET_REGION_INFO reply is %zu bytes", reply_.payload.size());
		std::memcpy(&p, reply_.payload.data(), sizeof(p));
		if (p.argsz > argsz) {
			if (p.argsz > 64 * 1024)
				return makeError(EPROTO, "region %u info claims %u bytes", index, p.argsz);
			argsz = p.argsz; // retry with room for the capability chain
			continue;
		}
		RegionInfo info;
		info.index = index;
		info.flags = p.flags;
		info.size = p.size;
		info.offset = p.offset;
		if (!reply_.fds.empty())
			info.fd = std::move(reply_.fds[0]);
		if ((p.flags & VFIO_REGION_INFO_FLAG_CAPS) && p.capOffset >= sizeof(p)) {
			info.caps.assign(reply_.payload.begin() + sizeof(p), reply_.payload.end());
			// Walk the chain; offsets are from the start of the region info struct.
			uint32_t off = p.capOffset;
			for (int guard = 0; off && guard < 64; guard++) {
				if (off < sizeof(p) || off + sizeof(vfio_info_cap_header) > reply_.payload.size())
					return makeError(EPROTO, "region %u capability at %u is out of bounds", index, off);
				vfio_info_cap_header ch;
				std::memcpy(&ch, reply_.payload.data() + off, sizeof(ch));
				if (ch.id == VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
					vfio_region_info_cap_sparse_mmap sp;
					if (off + sizeof(sp) > reply_.payload.size())
						return makeError(EPROTO, "sparse mmap cap truncated");
					std::memcpy(&sp, reply_.payload.data() + off, sizeof(sp));
					size_t areas = off + sizeof(sp);
					if (sp.nr_areas > 1024 ||
					    areas + sp.nr_areas * sizeof(vfio_region_sparse_mmap_area) > reply_.payload.size())
						return makeError(EPROTO, "sparse mmap cap has a bad area count");
					for (uint32_t i = 0; i < sp.nr_areas; i++) {
						vfio_region_sparse_mmap_area a;
						std::memcpy(&a, reply_.payload.data() + areas + i * sizeof(a), sizeof(a));
						info.sparse.push_back({ a.offset, a.size });
					}
				} else if (ch.id == VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) {
					info.msixMappable = true;
				}
				if (ch.next && ch.next <= off)
					return makeError(EPROTO, "region %u capability chain loops", index);
				off = ch.next;
			}
		}
		return info;
	}
	return makeError(EPROTO, "region %u info kept growing", index);
}

Result<MappedRegion> Client::mapRegion(const RegionInfo &info)
{
	if (!(info.flags & VFIO_REGION_INFO_FLAG_MMAP) || !info.fd)
		return makeError(ENOTSUP, "region %u cannot be mmap'd", info.index);
	int prot = (info.flags & VFIO_REGION_INFO_FLAG_READ ? PROT_READ : 0) |
		   (info.flags & VFIO_REGION_INFO_FLAG_WRITE ? PROT_WRITE : 0);
	std::vector<SparseArea> areas = info.sparse;
	if (areas.empty())
		areas.push_back({ 0, info.size });
	MappedRegion region;
	for (const auto &a : areas) {
		if (a.size == 0)
			continue;
		if (a.offset > info.size || a.size > info.size - a.offset)
			return makeError(EPROTO, "region %u sparse area 0x%llx+0x%llx is outside it", info.index,
					 (unsigned long long)a.offset, (unsigned long long)a.size);
		void *p = ::mmap(nullptr, a.size, prot, MAP_SHARED, info.fd.get(), info.offset + a.offset);
		if (p == MAP_FAILED)
			return errnoError(errno, "mmap of region " + std::to_string(info.index));
		region.maps_.push_back({ a.offset, a.size, p });
	}
	return region;
}

Result<IrqInfo> Client::irqInfo(uint32_t index)
{
	IrqInfoPayload p{ sizeof(p), 0, index, 0 };
	iovec iov{ &p, sizeof(p) };
	if (Status s = call(Command::DeviceGetIrqInfo, { &iov, 1 }, {}, reply_); !s)
		return s.takeError();
	if (reply_.payload.size() < sizeof(p))
		return makeError(EPROTO, "DEVICE_GET_IRQ_INFO reply is %zu bytes", reply_.payload.size());
	std::memcpy(&p, reply_.payload.data(), sizeof(p));
	return IrqInfo{ p.flags, p.count };
}

Status Client::setIrqs(uint32_t index, uint32_t flags, uint32_t start, uint32_t count,
		       std::span<const int> eventfds, std::span<const uint8_t> bools)
{
	IrqSetPayload p{ static_cast<uint32_t>(sizeof(p) + bools.size()), flags, index, start, count };
	iovec iov[2] = { { &p, sizeof(p) }, { const_cast<uint8_t *>(bools.data()), bools.size() } };
	return call(Command::DeviceSetIrqs, { iov, bools.empty() ? 1u : 2u }, eventfds, reply_);
}

Status Client::setIrqEventfds(uint32_t index, std::span<const int> eventfds)
{
	return setIrqs(index, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, 0,
		       eventfds.size(), eventfds);
}

Status Client::disableIrqs(uint32_t index)
{
	return setIrqs(index, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0);
}

Status Client::unmaskIrq(uint32_t index, uint32_t sub)
{
	return setIrqs(index, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, sub, 1);
}

Status Client::regionRead(uint32_t region, uint64_t offset, void *data, uint32_t count)
{
	RegionAccessPayload p{ offset, region, count };
	iovec iov{ &p, sizeof(p) };
	if (Status s = call(Command::RegionRead, { &iov, 1 }, {}, reply_); !s)
		return s;
	if (reply_.payload.size() != sizeof(p) + count)
		return makeError(EPROTO, "REGION_READ reply carries %zu bytes for %u", reply_.payload.size(),
				 count);
	std::memcpy(data, reply_.payload.data() + sizeof(p), count);
	return {};
}

Status Client::regionWrite(uint32_t region, uint64_t offset, const void *data, uint32_t count)
{
	RegionAccessPayload p{ offset, region, count };
	iovec iov[2] = { { &p, sizeof(p) }, { const_cast<void *>(data), count } };
	return call(Command::RegionWrite, { iov, 2 }, {}, reply_);
}

Result<uint32_t> Client::read32(uint32_t region, uint64_t offset)
{
	uint32_t v = 0;
	if (Status s = regionRead(region, offset, &v, sizeof(v)); !s)
		return s.takeError();
	return v;
}

Status Client::write32(uint32_t region, uint64_t offset, uint32_t value)
{
	return regionWrite(region, offset, &value, sizeof(value));
}

Status Client::write64(uint32_t region, uint64_t offset, uint64_t value)
{
	return regionWrite(region, offset, &value, sizeof(value));
}

Status Client::dmaMap(int fd, uint64_t offset, uint64_t iova, uint64_t size, uint32_t prot)
{
	DmaMapPayload p{ sizeof(p), prot, offset, iova, size };
	iovec iov{ &p, sizeof(p) };
	int fds[1] = { fd };
	return call(Command::DmaMap, { &iov, 1 }, fd >= 0 ? std::span<const int>(fds, 1) : std::span<const int>(),
		    reply_);
}

Status Client::dmaUnmap(uint64_t iova, uint64_t size)
{
	DmaUnmapPayload p{ sizeof(p), 0, iova, size };
	iovec iov{ &p, sizeof(p) };
	return call(Command::DmaUnmap, { &iov, 1 }, {}, reply_);
}

Status Client::dmaUnmapAll()
{
	DmaUnmapPayload p{ sizeof(p), kDmaUnmapFlagAll, 0, 0 };
	iovec iov{ &p, sizeof(p) };
	return call(Command::DmaUnmap, { &iov, 1 }, {}, reply_);
}

Status Client::reset()
{
	return call(Command::DeviceReset, {}, {}, reply_);
}

Status Client::sendRaw(std::span<const uint8_t> bytes, std::span<const int> fds)
{
	if (bytes.size() < sizeof(Header)) {
		// Below a header: write it as it is (hostile-input tests send truncated headers).
		ssize_t n = ::send(sock_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
		if (n != static_cast<ssize_t>(bytes.size()))
			return errnoError("send");
		return {};
	}
	Header h;
	std::memcpy(&h, bytes.data(), sizeof(h));
	iovec iov{ const_cast<uint8_t *>(bytes.data()) + sizeof(h), bytes.size() - sizeof(h) };
	return sendMessage(sock_.get(), h, { &iov, iov.iov_len ? 1u : 0u }, fds);
}

Result<RawMessage> Client::receive()
{
	auto r = reader_->read(reply_);
	if (!r)
		return r.takeError();
	if (!*r)
		return makeError(ECONNRESET, "server closed the connection");
	RawMessage m;
	m.header = reply_.header;
	m.payload.assign(reply_.payload.begin(), reply_.payload.end());
	m.fds = std::move(reply_.fds);
	return m;
}

Result<RawMessage> Client::request(Command cmd, std::span<const uint8_t> payload, std::span<const int> fds)
{
	iovec iov{ const_cast<uint8_t *>(payload.data()), payload.size() };
	if (Status s = call(cmd, { &iov, payload.empty() ? 0u : 1u }, fds, reply_); !s)
		return s.takeError();
	RawMessage m;
	m.header = reply_.header;
	m.payload.assign(reply_.payload.begin(), reply_.payload.end());
	m.fds = std::move(reply_.fds);
	return m;
}

} // namespace vfio_broker::client
