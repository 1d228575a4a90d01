// SPDX-License-Identifier: Apache-2.0
// The VMM-side vfio-user client library: connect, negotiate, query, map, interrupts, access, DMA.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "vfio_user/message_io.h"
#include "vfio_user/protocol.h"

namespace vfio_broker::client {

struct Negotiated {
	uint16_t major = 0, minor = 0;
	uint32_t maxMsgFds = vfio_user::kSpecDefaultMaxMsgFds;
	uint32_t maxDataXfer = vfio_user::kSpecDefaultMaxDataXferSize;
	uint32_t maxDmaMaps = vfio_user::kSpecDefaultMaxDmaMaps;
	uint64_t pgsizes = vfio_user::kSpecDefaultPgsizes;
	std::string json; // the server's capability text
};

struct DeviceInfo {
	uint32_t flags = 0, numRegions = 0, numIrqs = 0;
};

struct SparseArea {
	uint64_t offset, size;
};

struct RegionInfo {
	uint32_t index = 0, flags = 0;
	uint64_t size = 0, offset = 0;
	std::vector<uint8_t> caps;      // as received, following the 32-byte struct
	std::vector<SparseArea> sparse; // from VFIO_REGION_INFO_CAP_SPARSE_MMAP, if present
	bool msixMappable = false;      // VFIO_REGION_INFO_CAP_MSIX_MAPPABLE present
	UniqueFd fd;                    // present when the region can be mmap'd
};

struct IrqInfo {
	uint32_t flags = 0, count = 0;
};

// An mmap of a region (the whole region, or its sparse areas), unmapped on destruction.
class MappedRegion
{
public:
	MappedRegion() = default;
	~MappedRegion();
	MappedRegion(MappedRegion &&other) noexcept;
	MappedRegion &operator=(MappedRegion &&other) noexcept;
	MappedRegion(const MappedRegion &) = delete;
	MappedRegion &operator=(const MappedRegion &) = delete;

	// Pointer to region offset `offset`, or nullptr when that byte is not mapped.
	volatile uint8_t *at(uint64_t offset, uint64_t len = 1) const;
	bool mapped() const { return !maps_.empty(); }

private:
	friend class Client;
	struct Map {
		uint64_t regionOffset;
		uint64_t size;
		void *addr;
	};
	std::vector<Map> maps_;
};

struct RawMessage {
	vfio_user::Header header{};
	std::vector<uint8_t> payload;
	std::vector<UniqueFd> fds;
};

class Client
{
public:
	static Result<Client> connect(const std::string &socketPath);
	static Result<Client> adopt(UniqueFd connectedSocket);

	Client(Client &&) = default;
	Client &operator=(Client &&) = default;

	// VERSION: propose our version and capabilities (JSON object text, may be empty).
	Result<Negotiated> negotiate(const std::string &capabilitiesJson = defaultCapabilities());
	static std::string defaultCapabilities();

	Result<DeviceInfo> deviceInfo();
	// Probes with a short argsz first, then fetches the caps and fd with the size the server asks.
	Result<RegionInfo> regionInfo(uint32_t index);
	Result<IrqInfo> irqInfo(uint32_t index);
	Result<MappedRegion> mapRegion(const RegionInfo &info);

	Status setIrqs(uint32_t index, uint32_t flags, uint32_t start, uint32_t count,
		       std::span<const int> eventfds = {}, std::span<const uint8_t> bools = {});
	Status setIrqEventfds(uint32_t index, std::span<const int> eventfds);
	Status disableIrqs(uint32_t index);
	Status unmaskIrq(uint32_t index, uint32_t sub = 0);

	Status regionRead(uint32_t region, uint64_t offset, void *data, uint32_t count);
	Status regionWrite(uint32_t region, uint64_t offset, const void *data, uint32_t count);
	Result<uint32_t> read32(uint32_t region, uint64_t offset);
	Status write32(uint32_t region, uint64_t offset, uint32_t value);
	Status write64(uint32_t region, uint64_t offset, uint64_t value);

	// Share [offset, offset+size) of fd (a memfd/tmpfs/hugetlbfs file) at iova.
	Status dmaMap(int fd, uint64_t offset, uint64_t iova, uint64_t size, uint32_t prot);
	Status dmaUnmap(uint64_t iova, uint64_t size);
	Status dmaUnmapAll();
	Status reset();

	// Raw protocol access (tests): send bytes as they are, or one command, and read the next
	// message. request() returns error replies as errors (code = the reply's errno).
	Status sendRaw(std::span<const uint8_t> bytes, std::span<const int> fds = {});
	Result<RawMessage> receive();
	Result<RawMessage> request(vfio_user::Command cmd, std::span<const uint8_t> payload,
				   std::span<const int> fds = {});

	int fd() const { return sock_.get(); }
	const Negotiated &negotiated() const { return negotiated_; }

private:
	explicit Client(UniqueFd sock);
	// Send a command and read its reply. Fast path: no allocation when out/outFds are null.
	Status call(vfio_user::Command cmd, std::span<const iovec> payload, std::span<const int> fds,
		    vfio_user::ReceivedMessage &reply);

	UniqueFd sock_;
	std::unique_ptr<vfio_user::MessageReader> reader_;
	uint16_t nextId_ = 1;
	Negotiated negotiated_;
	vfio_user::ReceivedMessage reply_;
};

} // namespace vfio_broker::client
