// SPDX-License-Identifier: Apache-2.0
// sim:platform as the host device tree would describe it: shared by the simulated device (the
// device daemon) and its device-tree node (inventory, overlays), which must agree.
#pragma once

#include <cstdint>

namespace vfio_broker::device::sim_platform {

inline constexpr const char *kId = "sim:platform";
inline constexpr const char *kCompatible = "vfio-broker,sim-platform";
inline constexpr const char *kNodeName = "sim-platform@9100000";

// VFIO region 0: a 4 KiB register page, mmap-able (the client reads PrimeCell-style IDs at
// 0xfe0..0xffc through its mapping). VFIO region 1: 0x200 bytes of control registers, sub-page,
// so always trapped. In the host "DT" they are reg entries 0 and 1.
inline constexpr uint64_t kRegion0Address = 0x09100000;
inline constexpr uint64_t kRegion0Size = 0x1000;
inline constexpr uint64_t kRegion1Address = 0x09101000;
inline constexpr uint64_t kRegion1Size = 0x200;

// VFIO IRQ index 0: one level-triggered interrupt (GIC SPI 96, IRQ_TYPE_LEVEL_HIGH), automasked
// when it fires; the client unmasks it after clearing the cause.
inline constexpr uint32_t kGicSpi = 96;
inline constexpr uint32_t kGicFlags = 4;

} // namespace vfio_broker::device::sim_platform
