// SPDX-License-Identifier: Apache-2.0
// The host device tree, read with libfdt: what a platform device is made of (MMIO, interrupts,
// IOMMU connections, clocks/resets/power domains), in host terms, for inventory, conflict checks
// and guest overlays.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace vfio_broker::platform {

// One "reg" entry translated through every parent "ranges" to a host physical address.
struct DtRegion {
	uint64_t address = 0;
	uint64_t size = 0;
};

// One interrupt, from "interrupts" (with the interrupt parent found through "interrupt-parent",
// inherited from ancestors) or from "interrupts-extended". `specifier` has exactly the
// parent's #interrupt-cells cells. For a GIC (3 cells): {0 = SPI / 1 = PPI, number, flags}.
struct DtInterrupt {
	std::string controller; // the interrupt controller's node path, "/intc@8000000"
	std::vector<uint32_t> specifier;
};

// One "iommus" entry: the IOMMU node and its specifier (#iommu-cells cells; for an SMMU the
// first cell is the stream ID).
struct DtIommu {
	std::string iommu; // node path
	std::vector<uint32_t> specifier;
};

// A phandle reference with its argument cells ("clocks", "resets", "power-domains"), printed
// as "<provider path>" or "<provider path>:<cell>,<cell>" for messages and the API.
struct DtReference {
	std::string provider;
	std::vector<uint32_t> args;
	std::string toString() const;
};

struct DtNode {
	std::string path;                    // "/soc/rtc@9010000"
	std::string label;                   // from /__symbols__ when the host tree has one; else empty
	std::vector<std::string> compatible; // in order
	std::string status;                  // "okay" when the property is absent
	bool passthrough = false;            // "vfio-broker,passthrough" or "xen,passthrough" present
	std::vector<DtRegion> reg;           // host physical, in "reg" order
	std::vector<DtInterrupt> interrupts;
	std::vector<DtIommu> iommus;
	std::vector<DtReference> clocks;
	std::vector<DtReference> resets;
	std::vector<DtReference> powerDomains;
	bool dmaCoherent = false;            // "dma-coherent"
	// Every property of the node, raw (big-endian cells as in the blob), by name, for the
	// overlay generator's allow-list copy.
	std::map<std::string, std::vector<uint8_t>> properties;
};

class HostDeviceTree
{
public:
	// The live tree (/sys/firmware/fdt) or any flattened tree. The blob is checked with
	// fdt_check_full(); a truncated or corrupt blob is EINVAL with libfdt's reason. Blobs over
	// 64 MiB are refused (E2BIG).
	static Result<HostDeviceTree> load(const std::string &path);
	static Result<HostDeviceTree> fromBlob(std::vector<uint8_t> blob);

	// The node at `path` ("/soc/rtc@9010000"), decoded. ENOENT when there is no such node;
	// EINVAL (naming the property) when a property is malformed: a reg/ranges length that is not
	// a multiple of its cells, a phandle that resolves to nothing, a controller without
	// #interrupt-cells, a reg that no parent "ranges" translates (an untranslatable address is
	// never reported as an identity one).
	Result<DtNode> node(const std::string &path) const;

	// Node path for a phandle; ENOENT when none.
	Result<std::string> pathOfPhandle(uint32_t phandle) const;

	// Every node marked for passthrough (see DtNode::passthrough), in tree order.
	Result<std::vector<DtNode>> passthroughNodes() const;

	// #address-cells/#size-cells the root declares (a guest overlay's reg uses the guest's).
	uint32_t rootAddressCells() const { return rootAddressCells_; }
	uint32_t rootSizeCells() const { return rootSizeCells_; }

	const std::vector<uint8_t> &blob() const { return blob_; }

private:
	explicit HostDeviceTree(std::vector<uint8_t> blob);
	Result<int> offsetOfPhandle(uint32_t phandle) const;

	std::vector<uint8_t> blob_;
	uint32_t rootAddressCells_ = 2;
	uint32_t rootSizeCells_ = 1;
	// phandle -> node offset, built once: libfdt's lookup scans the whole tree per call, which a
	// hostile blob with many references would turn quadratic.
	std::map<uint32_t, int> phandleOffsets_;
};

// The DT node path from a sysfs device's "of_node" link target
// ("../../../firmware/devicetree/base/soc/rtc@9010000" -> "/soc/rtc@9010000"); EINVAL when the
// target is not under firmware/devicetree/base.
Result<std::string> dtPathFromOfNodeLink(const std::string &linkTarget);

} // namespace vfio_broker::platform
