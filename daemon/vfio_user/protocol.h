// SPDX-License-Identifier: Apache-2.0
// vfio-user wire format (QEMU docs/interop/vfio-user.rst, protocol 0.x): commands, header and payload layouts.
#pragma once

#include <linux/vfio.h>

#include <cstddef>
#include <cstdint>

namespace vfio_broker::vfio_user {

// The protocol version this implementation speaks. Minor 2 is what libvfio-user and QEMU's client use.
constexpr uint16_t kVersionMajor = 0;
constexpr uint16_t kVersionMinor = 2;

enum class Command : uint16_t {
	Version = 1,
	DmaMap = 2,
	DmaUnmap = 3,
	DeviceGetInfo = 4,
	DeviceGetRegionInfo = 5,
	DeviceGetRegionIoFds = 6,
	DeviceGetIrqInfo = 7,
	DeviceSetIrqs = 8,
	RegionRead = 9,
	RegionWrite = 10,
	DmaRead = 11,
	DmaWrite = 12,
	DeviceReset = 13,
	RegionWriteMulti = 15,
	DeviceFeature = 16,
	MigDataRead = 17,
	MigDataWrite = 18,
};

const char *commandName(uint16_t command);

// Header flags.
constexpr uint32_t kFlagTypeMask = 0xf;
constexpr uint32_t kFlagTypeCommand = 0x0;
constexpr uint32_t kFlagTypeReply = 0x1;
constexpr uint32_t kFlagNoReply = 1u << 4;
constexpr uint32_t kFlagError = 1u << 5;

struct __attribute__((packed)) Header {
	uint16_t msgId;
	uint16_t command;
	uint32_t msgSize; // whole message, header included
	uint32_t flags;
	uint32_t error; // errno in error replies
};
static_assert(sizeof(Header) == 16);

struct __attribute__((packed)) VersionPayload {
	uint16_t major;
	uint16_t minor;
	// followed by optional NUL-terminated JSON
};
static_assert(sizeof(VersionPayload) == 4);

struct __attribute__((packed)) DmaMapPayload {
	uint32_t argsz;
	uint32_t flags;
	uint64_t offset;
	uint64_t address;
	uint64_t size;
};
static_assert(sizeof(DmaMapPayload) == 32);
constexpr uint32_t kDmaMapFlagRead = 1u << 0;
constexpr uint32_t kDmaMapFlagWrite = 1u << 1;

struct __attribute__((packed)) DmaUnmapPayload {
	uint32_t argsz;
	uint32_t flags;
	uint64_t address;
	uint64_t size;
};
static_assert(sizeof(DmaUnmapPayload) == 24);
constexpr uint32_t kDmaUnmapFlagGetDirtyBitmap = 1u << 0;
constexpr uint32_t kDmaUnmapFlagAll = 1u << 1;

struct __attribute__((packed)) DeviceInfoPayload {
	uint32_t argsz;
	uint32_t flags;
	uint32_t numRegions;
	uint32_t numIrqs;
};
static_assert(sizeof(DeviceInfoPayload) == 16);

// Same layout as struct vfio_region_info.
struct __attribute__((packed)) RegionInfoPayload {
	uint32_t argsz;
	uint32_t flags;
	uint32_t index;
	uint32_t capOffset;
	uint64_t size;
	uint64_t offset;
};
static_assert(sizeof(RegionInfoPayload) == 32);
static_assert(sizeof(RegionInfoPayload) == sizeof(struct vfio_region_info));

// Same layout as struct vfio_irq_info.
struct __attribute__((packed)) IrqInfoPayload {
	uint32_t argsz;
	uint32_t flags;
	uint32_t index;
	uint32_t count;
};
static_assert(sizeof(IrqInfoPayload) == 16);

// Same layout as struct vfio_irq_set, without the trailing data.
struct __attribute__((packed)) IrqSetPayload {
	uint32_t argsz;
	uint32_t flags;
	uint32_t index;
	uint32_t start;
	uint32_t count;
};
static_assert(sizeof(IrqSetPayload) == 20);

struct __attribute__((packed)) RegionAccessPayload {
	uint64_t offset;
	uint32_t region;
	uint32_t count;
	// followed by count bytes of data (write request, read reply)
};
static_assert(sizeof(RegionAccessPayload) == 16);

// Defaults named by the spec for capabilities a peer leaves out.
constexpr uint32_t kSpecDefaultMaxMsgFds = 1;
constexpr uint32_t kSpecDefaultMaxDataXferSize = 1u << 20;
constexpr uint32_t kSpecDefaultMaxDmaMaps = 65535;
constexpr uint64_t kSpecDefaultPgsizes = 4096;

} // namespace vfio_broker::vfio_user
