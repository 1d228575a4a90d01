// SPDX-License-Identifier: Apache-2.0
// Builds sim:platform's host device tree with libfdt's sequential-write API, from the layout the
// simulated device itself serves (device/sim_platform_layout.h).
#include "platform/sim_platform_dt.h"

#include <string>

#include "device/sim_platform_layout.h"
#include "platform/fdt_writer.h"

namespace vfio_broker::platform {

namespace {

namespace layout = vfio_broker::device::sim_platform;
using detail::appendCells;
using detail::appendU64;

constexpr uint32_t kGicPhandle = 1;
constexpr uint64_t kGicDistributor = 0x08000000;
constexpr uint64_t kGicRedistributor = 0x080a0000;
// The "/soc" bus covers 0x09000000..0x09ffffff with 1-cell addresses; its "ranges" maps them to
// the root's 2-cell physical addresses, so the device's reg goes through a real translation.
constexpr uint32_t kSocBusBase = 0x09000000;
constexpr uint32_t kSocBusSize = 0x01000000;
constexpr char kLabel[] = "sim_platform";
static_assert(layout::kRegion0Address >= kSocBusBase && layout::kRegion1Address + layout::kRegion1Size <= kSocBusBase + uint64_t(kSocBusSize),
	      "sim:platform registers must lie in the /soc bus window");

} // namespace

const char *simPlatformDtPath()
{
	static const std::string path = std::string("/soc/") + layout::kNodeName;
	return path.c_str();
}

Result<HostDeviceTree> simPlatformHostTree()
{
	std::vector<uint8_t> buf(8192);
	detail::FdtWriter w(buf);
	w.begin("");
	w.str("compatible", "vfio-broker,sim-platform-host");
	w.str("model", "vfio-broker sim:platform host");
	w.u32("#address-cells", 2);
	w.u32("#size-cells", 2);
	w.u32("interrupt-parent", kGicPhandle);

	w.begin("intc@8000000");
	w.str("compatible", "arm,gic-v3");
	w.u32("#interrupt-cells", 3);
	w.empty("interrupt-controller");
	std::string gicReg;
	appendU64(gicReg, kGicDistributor);
	appendU64(gicReg, 0x10000);
	appendU64(gicReg, kGicRedistributor);
	appendU64(gicReg, 0xf60000);
	w.raw("reg", gicReg);
	w.u32("phandle", kGicPhandle);
	w.end();

	w.begin("soc");
	w.str("compatible", "simple-bus");
	w.u32("#address-cells", 1);
	w.u32("#size-cells", 1);
	std::string ranges;
	appendCells(ranges, { kSocBusBase });
	appendU64(ranges, kSocBusBase);
	appendCells(ranges, { kSocBusSize });
	w.raw("ranges", ranges);

	w.begin(layout::kNodeName);
	w.str("compatible", layout::kCompatible);
	std::string reg;
	appendCells(reg, { static_cast<uint32_t>(layout::kRegion0Address), static_cast<uint32_t>(layout::kRegion0Size),
			   static_cast<uint32_t>(layout::kRegion1Address), static_cast<uint32_t>(layout::kRegion1Size) });
	w.raw("reg", reg);
	std::string irq;
	appendCells(irq, { 0 /* SPI */, layout::kGicSpi, layout::kGicFlags });
	w.raw("interrupts", irq);
	w.u32("interrupt-parent", kGicPhandle);
	w.empty("vfio-broker,passthrough");
	w.end();
	w.end(); // soc

	w.begin("__symbols__");
	w.str("gic", "/intc@8000000");
	w.str(kLabel, simPlatformDtPath());
	w.end();

	w.end(); // root
	if (int err = w.finish(); err != 0)
		return makeError(EIO, "cannot build the sim:platform device tree: %s", fdt_strerror(err));
	return HostDeviceTree::fromBlob(std::move(buf));
}

} // namespace vfio_broker::platform
