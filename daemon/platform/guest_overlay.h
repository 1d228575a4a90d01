// SPDX-License-Identifier: Apache-2.0
// Guest device-tree overlays for passed-through platform devices, and the crosvm command line
// that goes with them (launch mode).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "platform/host_dt.h"

namespace vfio_broker::platform {

// One platform device to place in a guest.
struct GuestDeviceRequest {
	DtNode host;             // decoded host node (HostDeviceTree::node, or the sim:platform node)
	std::string sysfsPath;   // "/sys/bus/platform/devices/9010000.pl031", for crosvm's --vfio
	std::string label;       // overlay label / crosvm dt-symbol; derived from the node name when empty
	bool identity = false;   // guest reg = host reg; otherwise relocated into the guest MMIO window
	bool dma = true;         // false for non-DMA devices (no iommus, no restricted-DMA pool)
};

struct OverlayOptions {
	// Relocated devices get page-aligned guest MMIO from this window, in request order.
	// Defaults: crosvm's aarch64 platform MMIO window is not fixed across versions, so the
	// caller passes it (vfio-broker-launch takes it from the VM config).
	uint64_t guestMmioBase = 0;
	uint64_t guestMmioSize = 0;
	// Guest SPIs are handed out from here, in request order (GIC SPI numbers, i.e. INTID - 32).
	uint32_t firstGuestSpi = 0;
	// A restricted-DMA pool ("restricted-dma-pool" reserved-memory node, and memory-region on
	// each DMA device) at this guest address; size 0 = none.
	uint64_t dmaPoolBase = 0;
	uint64_t dmaPoolSize = 0;
	// Properties copied from the host node besides compatible/reg/interrupts (which are always
	// written). Empty = the built-in allow-list (see the .cpp).
	std::vector<std::string> copyProperties;
};

// Where one device ended up, for the launcher, the device daemon (--guest-address for attach
// mode) and the conflict checks.
struct GuestPlacement {
	std::string label;
	std::string nodeName;                 // "rtc@9010000"
	std::vector<DtRegion> guestReg;       // one per host reg entry
	std::vector<uint32_t> guestSpis;      // one per host interrupt
	std::vector<uint32_t> guestIrqFlags;  // trigger flags per interrupt (GIC cell 3)
};

struct Overlay {
	std::vector<uint8_t> dtbo;            // a valid flattened overlay (fdt_check_full passes)
	std::vector<GuestPlacement> placements;
};

// Build the overlay: one fragment targeting "/" (target-path) with a node per device, labels in
// __symbols__, phandle references to the guest interrupt controller in __fixups__ (the base
// tree's label for it is `gicLabel`, crosvm's base tree has "intc"), reg in the guest's
// 2-cell address / 2-cell size, interrupts <0 spi flags>. EINVAL for a host interrupt that is
// not a GIC SPI, an interrupt-less device is fine; ENOSPC when the MMIO window or the SPI
// range runs out; EEXIST for two devices with the same label; and with identity mapping,
// EINVAL when two devices' reg overlap.
Result<Overlay> buildOverlay(const std::vector<GuestDeviceRequest> &devices,
			     const OverlayOptions &options, const std::string &gicLabel = "intc");

// crosvm arguments for these devices (launch mode), one argv element per string:
// "--vfio", "<sysfs>,dt-symbol=<label>" per device, then "--device-tree-overlay",
// "<overlayPath>,filter". crosvm's `--vfio` takes platform devices too (it tells them from PCI
// by VFIO_DEVICE_FLAGS_PLATFORM; `--vfio-platform` is a deprecated alias), and its `iommu=`
// key defaults to `off`, the only value that means anything for a non-pKVM platform device, so
// it is not emitted. Verified against crosvm src/crosvm/cmdline.rs at commit
// fd4df63707aee57092a28db63bc1ff8945c76058; see docs/crosvm.md.
std::vector<std::string> crosvmArguments(const std::vector<GuestDeviceRequest> &devices,
					 const std::string &overlayPath);

// The label a device gets in the overlay's __symbols__ and in crosvm's dt-symbol: its `label`,
// else the host label, else the host node name made a valid label ("rtc@9010000" ->
// "rtc_9010000").
std::string effectiveLabel(const GuestDeviceRequest &device);

// The sysfs path Linux gives the device created from this DT node: of_device_make_bus_id()
// names it "<translated reg[0] address in hex>.<node name>" ("9010000.pl031"), on the amba bus
// for "arm,primecell" nodes, the platform bus otherwise. Empty for a node without reg.
std::string platformSysfsPath(const DtNode &node);

} // namespace vfio_broker::platform
