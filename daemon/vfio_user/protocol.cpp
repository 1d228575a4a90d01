// SPDX-License-Identifier: Apache-2.0
// Names of vfio-user commands, for logs and error messages.
#include "vfio_user/protocol.h"

namespace vfio_broker::vfio_user {

const char *commandName(uint16_t command)
{
	switch (static_cast<Command>(command)) {
	case Command::Version: return "VERSION";
	case Command::DmaMap: return "DMA_MAP";
	case Command::DmaUnmap: return "DMA_UNMAP";
	case Command::DeviceGetInfo: return "DEVICE_GET_INFO";
	case Command::DeviceGetRegionInfo: return "DEVICE_GET_REGION_INFO";
	case Command::DeviceGetRegionIoFds: return "DEVICE_GET_REGION_IO_FDS";
	case Command::DeviceGetIrqInfo: return "DEVICE_GET_IRQ_INFO";
	case Command::DeviceSetIrqs: return "DEVICE_SET_IRQS";
	case Command::RegionRead: return "REGION_READ";
	case Command::RegionWrite: return "REGION_WRITE";
	case Command::DmaRead: return "DMA_READ";
	case Command::DmaWrite: return "DMA_WRITE";
	case Command::DeviceReset: return "DEVICE_RESET";
	case Command::RegionWriteMulti: return "REGION_WRITE_MULTI";
	case Command::DeviceFeature: return "DEVICE_FEATURE";
	case Command::MigDataRead: return "MIG_DATA_READ";
	case Command::MigDataWrite: return "MIG_DATA_WRITE";
	}
	return "UNKNOWN";
}

} // namespace vfio_broker::vfio_user
