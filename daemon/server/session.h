// SPDX-License-Identifier: Apache-2.0
// Session: one vfio-user client connection — validates every request, drives the Device, replies.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "device/device.h"
#include "server/dma_table.h"
#include "vfio_user/message_io.h"

namespace vfio_broker::server {

struct ServerLimits {
	uint32_t maxDataXfer = 1u << 20; // REGION_READ/WRITE count
	uint32_t maxMsgFds = 16;         // fds in one message
	uint32_t maxDmaMaps = 4096;      // simultaneous DMA mappings
	bool allowMmap = true;           // hand region fds to the client
};

struct SessionStats {
	uint64_t messages = 0;
	uint64_t errors = 0;
};

class Session
{
public:
	Session(device::Device &device, UniqueFd conn, const ServerLimits &limits);
	~Session();

	// Serve requests until the client disconnects, framing is lost or stop() is called;
	// then remove every DMA mapping and quiesce the device. Blocking; returns why it ended
	// (success for an orderly disconnect or stop()).
	Status run();

	// Thread-safe: makes run() return soon (shuts the socket down).
	void stop();

	const SessionStats &stats() const { return stats_; }

private:
	struct Reply {
		iovec iov[3];
		size_t iovCount = 0;
		int fd = -1;
		void add(const void *p, size_t n) { iov[iovCount++] = { const_cast<void *>(p), n }; }
	};

	Status dispatch(vfio_user::ReceivedMessage &msg, Reply &reply);
	Status handleVersion(vfio_user::ReceivedMessage &msg, Reply &reply);
	Status handleDmaMap(vfio_user::ReceivedMessage &msg);
	Status handleDmaUnmap(vfio_user::ReceivedMessage &msg, Reply &reply);
	Status handleGetInfo(vfio_user::ReceivedMessage &msg, Reply &reply);
	Status handleGetRegionInfo(vfio_user::ReceivedMessage &msg, Reply &reply);
	Status handleGetIrqInfo(vfio_user::ReceivedMessage &msg, Reply &reply);
	Status handleSetIrqs(vfio_user::ReceivedMessage &msg);
	Status handleRegionRead(vfio_user::ReceivedMessage &msg, Reply &reply);
	Status handleRegionWrite(vfio_user::ReceivedMessage &msg, Reply &reply);
	Status checkRegionAccess(const vfio_user::RegionAccessPayload &req, uint32_t needFlag) const;

	Status sendError(const vfio_user::Header &request, const Error &err);
	void logError(const vfio_user::Header &request, const Error &err);
	void cleanup();

	device::Device &device_;
	UniqueFd conn_;
	ServerLimits limits_;
	DmaTable dma_;
	std::atomic<bool> stopping_{ false };

	// Cached at connect so the hot path allocates nothing.
	device::DeviceInfo info_;
	struct RegionShape {
		uint32_t flags;
		uint64_t size;
	};
	std::vector<RegionShape> regions_;
	std::vector<device::IrqInfo> irqs_;

	bool negotiated_ = false;
	uint32_t clientMaxMsgFds_ = vfio_user::kSpecDefaultMaxMsgFds;

	// Reply scratch space (payload structs, read data, region info caps, version JSON).
	std::vector<uint8_t> scratch_;
	SessionStats stats_;
	unsigned loggedErrors_ = 0;
};

} // namespace vfio_broker::server
