// SPDX-License-Identifier: Apache-2.0
// Device discovery: PCI devices from sysfs, platform/AMBA devices from sysfs and the host device
// tree, simulated devices.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "vfio_broker/v1/broker.pb.h"

namespace vfio_broker::control {

namespace pb = ::vfio_broker::v1;

struct InventoryOptions {
	std::string sysfsRoot = "/sys";
	std::vector<std::string> simulated; // "sim:edu", "sim:platform"
	// The running kernel's release ("6.1.0-56-arm64"); empty = uname(2). Read for one thing
	// only: Linux 6.1's vfio-platform probe failure (see platformOutlook).
	std::string kernelRelease;
};

// Canonical id for what a caller typed: "pci:0000:01:00.0" from "0000:01:00.0", "01:00.0",
// "pci:..." or a sysfs path; "platform:9010000.pl031" / "amba:9010000.pl031" from that id, a
// sysfs path (/sys/bus/platform/devices/NAME, /sys/bus/amba/devices/NAME, /sys/devices/platform/
// ...) or a device-tree path ("/soc/rtc@9010000", any path not under /sys); "sim:edu" as is
// (only when configured). A sysfs path that is neither a PCI device nor resolves under
// <root>/devices/platform is refused (EINVAL): only devices there are platform devices we bind,
// the check Android's VFIO handler makes (packages/modules/Virtualization,
// virtualizationservice/vfio_handler/src/aidl.rs, check_platform_device). ENOENT when nothing
// matches; EINVAL when the input is neither an id, a PCI address nor a path.
Result<std::string> resolveDeviceId(const InventoryOptions &opts, const std::string &input);

// What --device of vfio-broker-device takes for this id ("0000:01:00.0", "sim:edu",
// "/sys/bus/platform/devices/9010000.pl031", "/sys/bus/amba/devices/9010000.pl031").
std::string deviceDaemonArgument(const std::string &id);

// What the host kernel will make of binding a platform or AMBA device to vfio-platform /
// vfio-amba, worked out from sysfs (module parameters) and the kernel release:
//  - a reset handler exists when vfio-platform ships a reset module for the node's FIRST
//    compatible string (the kernel reads only that one: vfio_platform_of_probe reads
//    "compatible" with device_property_read_string). Linux 6.1 ships three, in
//    drivers/vfio/platform/reset/: "calxeda,hb-xgmac", "amd,xgbe-seattle-v1a",
//    "brcm,iproc-flexrm-mbox".
//  - vfio-platform refuses a device without one unless loaded with reset_required=0
//    (<root>/module/vfio_platform/parameters/reset_required; default Y); vfio-amba never
//    requires one (vfio_amba.c sets reset_required = false).
//  - Linux 6.1 fails the probe with ENOENT without a reset handler whatever reset_required
//    says, for vfio-platform and vfio-amba alike: vfio_platform_init_common() returns
//    vfio_platform_get_reset()'s error (a regression of 5f6c7e0831a1, "vfio/platform: Use the
//    new device life cycle helpers", v6.1; fixed by 168a9c91fe0a, "vfio: platform: ignore
//    missing reset if disabled at module init", v6.2). Debian 12's 6.1 kernels lack the fix.
//  - a device without an IOMMU group binds only in VFIO no-IOMMU mode
//    (<root>/module/vfio/parameters/enable_unsafe_noiommu_mode = Y).
struct PlatformOutlook {
	bool resetHandler = false;
	std::string resetMethod;           // "vfio-platform reset module for \"calxeda,hb-xgmac\""
	std::string bindFailure;           // why the bind will fail, "" when nothing says it will
	std::vector<std::string> warnings; // every sentence for Device.warnings (bindFailure too)
};
PlatformOutlook platformOutlook(const InventoryOptions &opts, const pb::Device &device);

// One device, read fresh from sysfs: kind, sysfs path, ids, driver, IOMMU group (members,
// viability and blockers, no-IOMMU), reset support and method, MMIO ranges ("resource"),
// the legacy interrupt line. Policy, state and vm are left for the caller. ENOENT when the
// device does not exist (or vanished while it was read).
//
// How the fields are filled:
// - sysfs_path is the canonical device directory as if sysfs were mounted at /sys
//   ("/sys/devices/pci0000:00/0000:00:01.0"), whatever sysfsRoot is.
// - iommu_group.members are device ids ("pci:0000:01:00.1") and always include the device
//   itself; blockers are "0000:01:00.1 (snd_hda_intel)". A PCI device without an IOMMU group
//   gets number -1 and no_iommu = true (only VFIO no-IOMMU mode could drive it), and is viable
//   when its own driver keeps a group viable. A device in a "vfio-noiommu" group keeps its
//   group number and has no_iommu = true.
// - Simulated devices (sim:edu: kind SIMULATED, vendor 0x1234, device 0x11e8) live entirely in
//   the device daemon and do no host DMA, so no IOMMU group is needed: number -1, members
//   [itself], viable = true, no_iommu = false. Conflict checks must therefore not read
//   "number -1" alone as "unprotected": no_iommu says that. Reset is supported (the daemon
//   resets the model), reset_method is empty, and there is no MMIO, interrupt or driver.
// - mmio: the non-empty IORESOURCE_MEM (0x200) resources among the BARs and the expansion ROM
//   (the first 7 lines of "resource"), in that order. SR-IOV VF BARs and bridge windows that
//   follow are left out: they are other devices' MMIO (each VF, each device behind the bridge).
// - interrupts: the legacy INTx line, Interrupt{controller: "pci-intx", specifier: [irq]},
//   when "irq" is non-zero and the interrupt pin (config space 0x3d) is set. The pin check
//   matters because a device without INTx may show an MSI vector in "irq"; when "config"
//   cannot be read (or is too short) a non-zero "irq" alone decides.
// - Unreadable or garbled attribute files (vendor, device, resource, irq, reset_method) leave
//   their fields at the defaults rather than failing the device; broken links do fail it.
Result<pb::Device> scanDevice(const InventoryOptions &opts, const std::string &id);

// Platform and AMBA devices ("platform:NAME", "amba:NAME", from <root>/bus/{platform,amba}/
// devices, those with an of_node link and a directory under <root>/devices/platform): kind
// PLATFORM / AMBA; sysfs_path the canonical directory as if under /sys; platform.dt_path from
// of_node; everything else from the host tree <root>/firmware/fdt (read once per scan): mmio =
// the translated "reg", interrupts = {controller DT path, specifier cells}, stream_ids =
// {IOMMU DT path, first "iommus" cell}, platform info (compatible, status, passthrough,
// clocks/resets/power domains); driver; IOMMU group as for PCI (none: number -1, no_iommu);
// reset and warnings from platformOutlook. A device whose node the host tree lacks (or cannot
// decode) keeps its sysfs facts and says why in warnings.
//
// sim:platform (when configured): kind SIMULATED with the platform info, mmio and interrupt of
// its node in simPlatformHostTree(); no IOMMU group needed (it does no host DMA).
//
// Every candidate device, sorted by id. Devices that vanish during the scan are skipped.
Result<std::vector<pb::Device>> scanAll(const InventoryOptions &opts);

} // namespace vfio_broker::control
