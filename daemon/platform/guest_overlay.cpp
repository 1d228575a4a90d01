// SPDX-License-Identifier: Apache-2.0
// Guest DT overlays for passed-through platform devices (the layout `dtc -@` gives a /plugin/
// source) and the crosvm launch arguments that reference them.
//
// What crosvm does with them (crosvm commit fd4df63707aee57092a28db63bc1ff8945c76058):
// arch/src/fdt.rs apply_device_tree_overlays() finds the node each --vfio device's dt-symbol
// names in the overlay's __symbols__, overwrites its "reg" with crosvm's own allocation (2-cell
// address/size pairs, page-aligned, from the platform MMIO window after guest RAM) and its
// "interrupts" with <0 spi flags> (flags 4 for an automasked, i.e. level, VFIO IRQ, else 1),
// then cros_fdt/src/overlay.rs apply_overlay() resolves __fixups__ against the base tree's
// __symbols__ ("intc" is the GIC, aarch64/src/fdt.rs), renumbers local phandles through
// __local_fixups__, and with `filter` keeps only the labelled device nodes and the nodes they
// reach through __local_fixups__ (our restricted-DMA pool). So the reg/interrupts written here
// are what fdtoverlay and attach mode use, and a faithful description in launch mode.
#include "platform/guest_overlay.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "common/path_util.h"
#include "platform/fdt_writer.h"

namespace vfio_broker::platform {

namespace {

using detail::appendCell;
using detail::appendU64;
using detail::FdtWriter;

constexpr uint64_t kGuestPage = 4096;
// GIC SPIs are INTIDs 32..1019, i.e. SPI numbers 0..987.
constexpr uint32_t kMaxGicSpi = 987;
constexpr uint32_t kGicSpiType = 0;
// The DT spec's limit for property names, and labels become __symbols__ property names.
constexpr size_t kMaxLabelLength = 31;
constexpr size_t kMaxDevices = 256;
constexpr size_t kMaxOverlaySize = 16u << 20;
constexpr char kFragment[] = "/fragment@0/__overlay__";
constexpr char kPoolLabel[] = "vfio_broker_dma_pool";
constexpr uint32_t kPoolPhandle = 1; // local to the overlay; renumbered on application

// Copied when the caller gives no list: properties that describe the block itself and name no
// other node. Clock, reset, power-domain, pinctrl, DMA-channel, GPIO and regulator references
// point at host providers the guest does not have (the host keeps them running for a
// vfio-platform device), so they, and their *-names companions, are never copied.
const char *const kDefaultCopy[] = {
	"reg-names",      "interrupt-names", "clock-frequency", "dma-coherent", "arm,primecell-periphid",
	"big-endian",     "little-endian",   "native-endian",   "reg-shift",    "reg-io-width",
	"current-speed",  "fifo-size",
};

// Properties we write ourselves or must never copy (they hold host phandles or host-only state).
const char *const kNeverCopy[] = {
	"compatible",      "reg",          "interrupts",     "interrupts-extended", "interrupt-parent",
	"phandle",         "linux,phandle", "status",        "clocks",              "clock-names",
	"assigned-clocks", "assigned-clock-parents", "assigned-clock-rates", "resets", "reset-names",
	"power-domains",   "power-domain-names", "iommus",   "iommu-map",           "memory-region",
	"dmas",            "dma-names",    "msi-parent",     "vfio-broker,passthrough", "xen,passthrough",
	"interconnects",   "interconnect-names", "operating-points-v2", "nvmem-cells", "nvmem-cell-names",
};

bool neverCopy(const std::string &name)
{
	auto endsWith = [&](const char *suffix) {
		size_t n = std::char_traits<char>::length(suffix);
		return name.size() >= n && name.compare(name.size() - n, n, suffix) == 0;
	};
	if (name.rfind("pinctrl-", 0) == 0 || endsWith("-supply") || endsWith("-gpios") || endsWith("-gpio"))
		return true;
	return std::find(std::begin(kNeverCopy), std::end(kNeverCopy), name) != std::end(kNeverCopy);
}

bool isValidLabel(const std::string &label)
{
	if (label.empty() || label.size() > kMaxLabelLength)
		return false;
	if (!(std::isalpha(static_cast<unsigned char>(label[0])) || label[0] == '_'))
		return false;
	return std::all_of(label.begin(), label.end(),
			   [](unsigned char c) { return std::isalnum(c) || c == '_'; });
}

std::string nameWithoutUnit(const std::string &nodeName)
{
	return nodeName.substr(0, nodeName.find('@'));
}

uint64_t alignUp(uint64_t v, uint64_t align)
{
	return (v + align - 1) & ~(align - 1);
}

bool overlaps(const DtRegion &a, const DtRegion &b)
{
	return a.size != 0 && b.size != 0 && a.address < b.address + b.size && b.address < a.address + a.size;
}

struct Planned {
	const GuestDeviceRequest *request;
	GuestPlacement placement;
	std::vector<std::pair<std::string, std::vector<uint8_t>>> copied;
};

// Decide where everything goes; no bytes written yet.
Result<std::vector<Planned>> plan(const std::vector<GuestDeviceRequest> &devices, const OverlayOptions &options,
				  const std::string &gicLabel)
{
	if (devices.size() > kMaxDevices)
		return makeError(E2BIG, "%zu devices in one overlay, more than %zu", devices.size(), kMaxDevices);
	if (!isValidLabel(gicLabel))
		return makeError(EINVAL, "interrupt-controller label \"%s\" is not a valid label", gicLabel.c_str());
	const bool pool = options.dmaPoolSize != 0;
	DtRegion poolRegion{ options.dmaPoolBase, options.dmaPoolSize };
	if (pool && (options.dmaPoolBase % kGuestPage != 0 || options.dmaPoolSize % kGuestPage != 0 ||
		     options.dmaPoolBase + options.dmaPoolSize < options.dmaPoolBase))
		return makeError(EINVAL, "restricted-DMA pool 0x%llx size 0x%llx is not page-aligned",
				 static_cast<unsigned long long>(options.dmaPoolBase),
				 static_cast<unsigned long long>(options.dmaPoolSize));

	std::vector<Planned> out;
	std::set<std::string> labels{ gicLabel };
	if (pool)
		labels.insert(kPoolLabel);
	std::vector<DtRegion> taken; // guest MMIO handed out so far (identity first)
	if (pool)
		taken.push_back(poolRegion);

	for (const auto &dev : devices) {
		Planned p{ &dev, {}, {} };
		const std::string &host = dev.host.path;
		p.placement.label = effectiveLabel(dev);
		if (!isValidLabel(p.placement.label))
			return makeError(EINVAL, "%s: label \"%s\" is not a valid device-tree label ([A-Za-z_][A-Za-z0-9_]*, at most %zu characters)",
					 host.c_str(), p.placement.label.c_str(), kMaxLabelLength);
		if (!labels.insert(p.placement.label).second)
			return makeError(EEXIST, "%s: label \"%s\" is used twice in the overlay", host.c_str(),
					 p.placement.label.c_str());
		std::string sysfs = dev.sysfsPath.empty() ? platformSysfsPath(dev.host) : dev.sysfsPath;
		if (sysfs.find_first_of(",=\"") != std::string::npos)
			return makeError(EINVAL, "%s: sysfs path \"%s\" has a character crosvm's --vfio key=value syntax cannot carry",
					 host.c_str(), sysfs.c_str());
		if (dev.host.compatible.empty())
			return makeError(EINVAL, "%s: no \"compatible\": a guest driver could not bind it", host.c_str());

		for (size_t i = 0; i < dev.host.interrupts.size(); i++) {
			const auto &irq = dev.host.interrupts[i];
			if (irq.specifier.size() != 3 || irq.specifier[0] != kGicSpiType)
				return makeError(EINVAL, "%s: interrupt %zu (controller %s) is not a GIC SPI; only SPIs can be passed through",
						 host.c_str(), i, irq.controller.c_str());
		}
		if (dev.identity) {
			for (const auto &r : dev.host.reg) {
				if (r.size == 0)
					return makeError(EINVAL, "%s: reg entry of size 0", host.c_str());
				for (const auto &t : taken)
					if (overlaps(r, t))
						return makeError(EINVAL, "%s: identity reg 0x%llx size 0x%llx overlaps another guest region at 0x%llx size 0x%llx",
								 host.c_str(), static_cast<unsigned long long>(r.address),
								 static_cast<unsigned long long>(r.size),
								 static_cast<unsigned long long>(t.address),
								 static_cast<unsigned long long>(t.size));
				taken.push_back(r);
				p.placement.guestReg.push_back(r);
			}
		}
		out.push_back(std::move(p));
	}

	// Relocated devices: page-aligned spans from the window, in request order, each entry keeping
	// its offset within the host page (a driver or a sub-page trap may rely on it), skipping
	// whatever identity devices and the pool already occupy.
	uint64_t windowEnd = options.guestMmioBase + options.guestMmioSize;
	if (windowEnd < options.guestMmioBase)
		return makeError(EINVAL, "guest MMIO window 0x%llx size 0x%llx wraps around",
				 static_cast<unsigned long long>(options.guestMmioBase),
				 static_cast<unsigned long long>(options.guestMmioSize));
	uint64_t cursor = alignUp(options.guestMmioBase, kGuestPage);
	for (auto &p : out) {
		if (p.request->identity)
			continue;
		for (const auto &r : p.request->host.reg) {
			if (r.size == 0)
				return makeError(EINVAL, "%s: reg entry of size 0", p.request->host.path.c_str());
			uint64_t inPage = r.address % kGuestPage;
			if (r.size > (1ull << 40))
				return makeError(ENOSPC, "%s: reg of size 0x%llx cannot be relocated", p.request->host.path.c_str(),
						 static_cast<unsigned long long>(r.size));
			uint64_t span = alignUp(inPage + r.size, kGuestPage);
			for (;;) {
				if (cursor < options.guestMmioBase || cursor > windowEnd || windowEnd - cursor < span)
					return makeError(ENOSPC, "%s: guest MMIO window 0x%llx size 0x%llx is full (needs 0x%llx more)",
							 p.request->host.path.c_str(),
							 static_cast<unsigned long long>(options.guestMmioBase),
							 static_cast<unsigned long long>(options.guestMmioSize),
							 static_cast<unsigned long long>(span));
				DtRegion candidate{ cursor, span };
				auto clash = std::find_if(taken.begin(), taken.end(),
							  [&](const DtRegion &t) { return overlaps(candidate, t); });
				if (clash == taken.end())
					break;
				cursor = alignUp(clash->address + clash->size, kGuestPage);
			}
			taken.push_back(DtRegion{ cursor, span });
			p.placement.guestReg.push_back(DtRegion{ cursor + inPage, r.size });
			cursor += span;
		}
	}

	// SPIs in request order; the trigger type (edge 1/2, level 4/8) is the host's.
	uint64_t nextSpi = options.firstGuestSpi;
	std::set<std::string> nodeNames;
	for (auto &p : out) {
		for (const auto &irq : p.request->host.interrupts) {
			if (nextSpi > kMaxGicSpi)
				return makeError(ENOSPC, "%s: no guest SPI left (SPIs %u..%u are used up)",
						 p.request->host.path.c_str(), options.firstGuestSpi, kMaxGicSpi);
			p.placement.guestSpis.push_back(static_cast<uint32_t>(nextSpi++));
			p.placement.guestIrqFlags.push_back(irq.specifier[2] & 0xf);
		}
		std::string name = nameWithoutUnit(path::baseName(p.request->host.path));
		if (name.empty())
			return makeError(EINVAL, "%s: cannot name a guest node after it", p.request->host.path.c_str());
		if (!p.placement.guestReg.empty())
			name += strFormat("@%llx", static_cast<unsigned long long>(p.placement.guestReg[0].address));
		if (!nodeNames.insert(name).second)
			return makeError(EEXIST, "%s: guest node %s is generated twice", p.request->host.path.c_str(),
					 name.c_str());
		p.placement.nodeName = std::move(name);

		// Allow-listed properties, in host-tree order (std::map is by name: stable output).
		if (options.copyProperties.empty()) {
			for (const char *prop : kDefaultCopy) {
				auto it = p.request->host.properties.find(prop);
				if (it != p.request->host.properties.end())
					p.copied.emplace_back(it->first, it->second);
			}
		} else {
			for (const auto &prop : options.copyProperties) {
				if (neverCopy(prop))
					return makeError(EINVAL, "property \"%s\" cannot be copied into a guest overlay (it is generated, or refers to host nodes)",
							 prop.c_str());
				auto it = p.request->host.properties.find(prop);
				if (it != p.request->host.properties.end())
					p.copied.emplace_back(it->first, it->second);
			}
		}
	}
	return out;
}

std::string stringList(const std::vector<std::string> &strings)
{
	std::string out;
	for (const auto &s : strings) {
		out += s;
		out.push_back('\0');
	}
	return out;
}

// Write the overlay into a buffer of `capacity` bytes; -FDT_ERR_NOSPACE asks for a bigger one.
int writeOverlay(std::vector<uint8_t> &buf, const std::vector<Planned> &planned, const OverlayOptions &options,
		 const std::string &gicLabel)
{
	const bool pool = options.dmaPoolSize != 0;
	const std::string poolName = strFormat("vfio-broker-dma@%llx", static_cast<unsigned long long>(options.dmaPoolBase));
	FdtWriter w(buf);
	w.begin("");
	w.begin("fragment@0");
	w.str("target-path", "/");
	w.begin("__overlay__");
	std::vector<std::string> gicFixups;
	std::vector<const Planned *> poolUsers;
	for (const auto &p : planned) {
		w.begin(p.placement.nodeName);
		w.raw("compatible", stringList(p.request->host.compatible));
		if (!p.placement.guestReg.empty()) {
			std::string reg;
			for (const auto &r : p.placement.guestReg) {
				appendU64(reg, r.address);
				appendU64(reg, r.size);
			}
			w.raw("reg", reg);
		}
		if (!p.placement.guestSpis.empty()) {
			w.u32("interrupt-parent", 0xffffffffu); // resolved through __fixups__
			gicFixups.push_back(std::string(kFragment) + "/" + p.placement.nodeName + ":interrupt-parent:0");
			std::string irqs;
			for (size_t i = 0; i < p.placement.guestSpis.size(); i++) {
				appendCell(irqs, kGicSpiType);
				appendCell(irqs, p.placement.guestSpis[i]);
				appendCell(irqs, p.placement.guestIrqFlags[i]);
			}
			w.raw("interrupts", irqs);
		}
		for (const auto &[name, value] : p.copied)
			w.raw(name.c_str(), value.data(), value.size());
		if (pool && p.request->dma) {
			w.u32("memory-region", kPoolPhandle);
			poolUsers.push_back(&p);
		}
		w.str("status", "okay");
		w.end();
	}
	if (pool) {
		w.begin("reserved-memory");
		w.u32("#address-cells", 2);
		w.u32("#size-cells", 2);
		w.empty("ranges");
		w.begin(poolName);
		w.str("compatible", "restricted-dma-pool");
		std::string reg;
		appendU64(reg, options.dmaPoolBase);
		appendU64(reg, options.dmaPoolSize);
		w.raw("reg", reg);
		w.u32("phandle", kPoolPhandle);
		w.end();
		w.end();
	}
	w.end(); // __overlay__
	w.end(); // fragment@0

	w.begin("__symbols__");
	for (const auto &p : planned)
		w.str(p.placement.label.c_str(), std::string(kFragment) + "/" + p.placement.nodeName);
	if (pool)
		w.str(kPoolLabel, std::string(kFragment) + "/reserved-memory/" + poolName);
	w.end();

	if (!gicFixups.empty()) {
		w.begin("__fixups__");
		w.raw(gicLabel.c_str(), stringList(gicFixups));
		w.end();
	}
	if (!poolUsers.empty()) {
		w.begin("__local_fixups__");
		w.begin("fragment@0");
		w.begin("__overlay__");
		for (const Planned *p : poolUsers) {
			w.begin(p->placement.nodeName);
			w.u32("memory-region", 0); // byte offset of the phandle inside the property
			w.end();
		}
		w.end();
		w.end();
		w.end();
	}
	w.end(); // root
	return w.finish();
}

} // namespace

std::string effectiveLabel(const GuestDeviceRequest &device)
{
	if (!device.label.empty())
		return device.label;
	if (isValidLabel(device.host.label))
		return device.host.label;
	std::string label = path::baseName(device.host.path);
	for (char &c : label)
		if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_'))
			c = '_';
	if (label.empty() || std::isdigit(static_cast<unsigned char>(label[0])))
		label.insert(label.begin(), '_');
	if (label.size() > kMaxLabelLength)
		label.resize(kMaxLabelLength);
	return label;
}

std::string platformSysfsPath(const DtNode &node)
{
	if (node.reg.empty())
		return std::string();
	bool amba = std::find(node.compatible.begin(), node.compatible.end(), "arm,primecell") != node.compatible.end();
	return strFormat("/sys/bus/%s/devices/%llx.%s", amba ? "amba" : "platform",
			 static_cast<unsigned long long>(node.reg[0].address), nameWithoutUnit(path::baseName(node.path)).c_str());
}

Result<Overlay> buildOverlay(const std::vector<GuestDeviceRequest> &devices, const OverlayOptions &options,
			     const std::string &gicLabel)
{
	auto planned = plan(devices, options, gicLabel);
	if (!planned)
		return planned.takeError();
	Overlay out;
	size_t capacity = 4096;
	for (const auto &p : *planned) {
		capacity += 1024 + 32 * p.placement.guestReg.size() + 12 * p.placement.guestSpis.size();
		for (const auto &[name, value] : p.copied)
			capacity += name.size() + value.size() + 16;
		for (const auto &c : p.request->host.compatible)
			capacity += c.size() + 1;
	}
	for (;;) {
		if (capacity > kMaxOverlaySize)
			return makeError(E2BIG, "the overlay would exceed %zu MiB", kMaxOverlaySize >> 20);
		out.dtbo.assign(capacity, 0);
		int err = writeOverlay(out.dtbo, *planned, options, gicLabel);
		if (err == 0)
			break;
		if (err != -FDT_ERR_NOSPACE)
			return makeError(EIO, "cannot write the overlay: %s", fdt_strerror(err));
		capacity *= 2;
	}
	if (int err = fdt_check_full(out.dtbo.data(), out.dtbo.size()); err != 0)
		return makeError(EIO, "generated overlay fails fdt_check_full: %s", fdt_strerror(err));
	for (auto &p : *planned)
		out.placements.push_back(std::move(p.placement));
	return out;
}

std::vector<std::string> crosvmArguments(const std::vector<GuestDeviceRequest> &devices, const std::string &overlayPath)
{
	std::vector<std::string> args;
	for (const auto &dev : devices) {
		std::string path = dev.sysfsPath.empty() ? platformSysfsPath(dev.host) : dev.sysfsPath;
		args.push_back("--vfio");
		args.push_back(path + ",dt-symbol=" + effectiveLabel(dev));
	}
	args.push_back("--device-tree-overlay");
	args.push_back(overlayPath + ",filter");
	return args;
}

} // namespace vfio_broker::platform
