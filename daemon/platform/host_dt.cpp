// SPDX-License-Identifier: Apache-2.0
// Decodes host device-tree nodes with libfdt: reg through every parent "ranges", interrupts,
// iommus and provider references, treating the blob as untrusted input.
#include "platform/host_dt.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <optional>

#include "common/unique_fd.h"

extern "C" {
#include <libfdt.h>
}

namespace vfio_broker::platform {

namespace {

constexpr size_t kMaxBlobSize = 64u << 20;
// #address-cells/#size-cells we translate: 64-bit numbers. PCI-style 3-cell addresses are refused.
constexpr uint32_t kMaxNumberCells = 2;
// Specifier cells of interrupt controllers, IOMMUs, clock/reset/power-domain providers: real
// bindings use at most 4; anything far above that is a corrupt or hostile blob.
constexpr uint32_t kMaxSpecifierCells = 8;
// Entries per interrupts/iommus/clocks/... property.
constexpr size_t kMaxReferences = 1024;
// interrupt-parent hops before we call it a loop.
constexpr int kMaxInterruptParentHops = 32;
constexpr size_t kMaxPathLength = 4096;

struct Prop {
	const uint8_t *data = nullptr;
	size_t len = 0;
};

std::optional<Prop> getProp(const void *fdt, int offset, const char *name)
{
	int len = 0;
	const void *p = fdt_getprop(fdt, offset, name, &len);
	if (!p || len < 0)
		return std::nullopt;
	return Prop{ static_cast<const uint8_t *>(p), static_cast<size_t>(len) };
}

uint32_t cellAt(const uint8_t *p, size_t index)
{
	fdt32_t v;
	std::memcpy(&v, p + 4 * index, sizeof(v));
	return fdt32_to_cpu(v);
}

uint64_t numberAt(const uint8_t *p, size_t index, uint32_t cells)
{
	uint64_t v = 0;
	for (uint32_t i = 0; i < cells; i++)
		v = (v << 32) | cellAt(p, index + i);
	return v;
}

std::string pathOf(const void *fdt, int offset)
{
	std::vector<char> buf(kMaxPathLength);
	if (fdt_get_path(fdt, offset, buf.data(), static_cast<int>(buf.size())) != 0)
		return strFormat("<node at offset %d>", offset);
	return std::string(buf.data());
}

bool isNulTerminatedStrings(const Prop &p)
{
	return p.len > 0 && p.data[p.len - 1] == '\0';
}

Error propError(const std::string &node, const char *prop, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

Error propError(const std::string &node, const char *prop, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char msg[512];
	std::vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return makeError(EINVAL, "%s: property \"%s\": %s", node.c_str(), prop, msg);
}

// A cell-count property ("#address-cells", "#interrupt-cells", ...): exactly one cell, at most max.
Result<uint32_t> cellCount(const void *fdt, int offset, const char *name, uint32_t absent, uint32_t max)
{
	auto p = getProp(fdt, offset, name);
	if (!p)
		return absent;
	if (p->len != 4)
		return propError(pathOf(fdt, offset), name, "length %zu, expected one cell", p->len);
	uint32_t v = cellAt(p->data, 0);
	if (v > max)
		return propError(pathOf(fdt, offset), name, "%u cells are not supported (at most %u)", v, max);
	return v;
}

// "#address-cells"/"#size-cells" a bus node declares for its children (defaults per the DT spec).
Result<uint32_t> addressCellsOf(const void *fdt, int bus)
{
	return cellCount(fdt, bus, "#address-cells", 2, kMaxNumberCells);
}

Result<uint32_t> sizeCellsOf(const void *fdt, int bus)
{
	return cellCount(fdt, bus, "#size-cells", 1, kMaxNumberCells);
}

std::vector<std::string> splitStrings(const Prop &p)
{
	std::vector<std::string> out;
	size_t start = 0;
	for (size_t i = 0; i < p.len; i++) {
		if (p.data[i] == '\0') {
			out.emplace_back(reinterpret_cast<const char *>(p.data + start), i - start);
			start = i + 1;
		}
	}
	return out;
}

// Decoding one node: the tree, its phandle index, and the node's path for messages.
class Decoder
{
public:
	Decoder(const void *fdt, const std::map<uint32_t, int> &phandles, int offset, std::string path)
		: fdt_(fdt), phandles_(phandles), offset_(offset), path_(std::move(path))
	{
	}

	Result<std::vector<DtRegion>> reg() const;
	Result<std::vector<DtInterrupt>> interrupts() const;
	Result<std::vector<DtIommu>> iommus() const;
	Result<std::vector<DtReference>> references(const char *prop, const char *cellsName) const;

private:
	struct Ref {
		int target;
		std::vector<uint32_t> args;
	};
	Result<int> resolve(uint32_t phandle, const char *prop) const;
	Result<std::vector<Ref>> phandleList(const char *prop, const char *cellsName, bool allowHoles) const;
	Result<uint64_t> translate(uint64_t address, uint64_t size) const;
	Result<int> interruptParent() const;

	const void *fdt_;
	const std::map<uint32_t, int> &phandles_;
	int offset_;
	std::string path_;
};

Result<int> Decoder::resolve(uint32_t phandle, const char *prop) const
{
	auto it = phandles_.find(phandle);
	if (phandle == 0 || phandle == 0xffffffffu || it == phandles_.end())
		return propError(path_, prop, "phandle 0x%x resolves to no node", phandle);
	return it->second;
}

Result<std::vector<DtRegion>> Decoder::reg() const
{
	std::vector<DtRegion> out;
	auto p = getProp(fdt_, offset_, "reg");
	if (!p)
		return out;
	int bus = fdt_parent_offset(fdt_, offset_);
	if (bus < 0)
		return propError(path_, "reg", "the root node has no bus to translate through");
	auto ac = addressCellsOf(fdt_, bus);
	if (!ac)
		return withContext(ac.takeError(), "reg of " + path_);
	auto sc = sizeCellsOf(fdt_, bus);
	if (!sc)
		return withContext(sc.takeError(), "reg of " + path_);
	size_t entry = 4 * (*ac + *sc);
	if (entry == 0 || p->len % entry != 0)
		return propError(path_, "reg", "length %zu is not a multiple of %zu (#address-cells %u, #size-cells %u)",
				 p->len, entry, *ac, *sc);
	if (p->len / entry > kMaxReferences)
		return propError(path_, "reg", "%zu entries, more than %zu", p->len / entry, kMaxReferences);
	for (size_t i = 0; i < p->len / entry; i++) {
		size_t cell = i * (*ac + *sc);
		uint64_t address = numberAt(p->data, cell, *ac);
		uint64_t size = numberAt(p->data, cell + *ac, *sc);
		if (size != 0 && address + size - 1 < address)
			return propError(path_, "reg", "entry %zu (0x%llx, size 0x%llx) wraps around", i,
					 static_cast<unsigned long long>(address), static_cast<unsigned long long>(size));
		auto host = translate(address, size);
		if (!host)
			return host.takeError();
		out.push_back(DtRegion{ *host, size });
	}
	return out;
}

// Walk up from the node's bus to the root, applying each bus's "ranges" (Devicetree spec 2.3.8).
// An empty "ranges" is a 1:1 mapping; a missing one means the bus's addresses are not CPU
// addresses at all (i2c, spi ...), which we report rather than pretend they are physical.
Result<uint64_t> Decoder::translate(uint64_t address, uint64_t size) const
{
	int bus = fdt_parent_offset(fdt_, offset_);
	while (bus >= 0) {
		int grand = fdt_parent_offset(fdt_, bus);
		if (grand < 0)
			break; // the root's address space is the CPU's
		std::string busPath = pathOf(fdt_, bus);
		auto ranges = getProp(fdt_, bus, "ranges");
		if (!ranges)
			return makeError(EINVAL, "%s: reg 0x%llx cannot be translated to a host address: %s has no \"ranges\"",
					 path_.c_str(), static_cast<unsigned long long>(address), busPath.c_str());
		if (ranges->len != 0) {
			auto childCells = addressCellsOf(fdt_, bus);
			if (!childCells)
				return childCells.takeError();
			auto sizeCells = sizeCellsOf(fdt_, bus);
			if (!sizeCells)
				return sizeCells.takeError();
			auto parentCells = addressCellsOf(fdt_, grand);
			if (!parentCells)
				return parentCells.takeError();
			size_t cells = *childCells + *parentCells + *sizeCells;
			if (*sizeCells == 0 || ranges->len % (4 * cells) != 0)
				return propError(busPath, "ranges", "length %zu does not hold whole (%u, %u, %u)-cell entries",
						 ranges->len, *childCells, *parentCells, *sizeCells);
			bool found = false;
			for (size_t i = 0; i < ranges->len / (4 * cells) && !found; i++) {
				uint64_t child = numberAt(ranges->data, i * cells, *childCells);
				uint64_t parent = numberAt(ranges->data, i * cells + *childCells, *parentCells);
				uint64_t len = numberAt(ranges->data, i * cells + *childCells + *parentCells, *sizeCells);
				if (address < child || address - child >= len)
					continue;
				// The whole region must lie in the window, or part of it would be untranslated.
				if (size > len - (address - child))
					return makeError(EINVAL, "%s: reg 0x%llx size 0x%llx extends past the \"ranges\" window of %s",
							 path_.c_str(), static_cast<unsigned long long>(address),
							 static_cast<unsigned long long>(size), busPath.c_str());
				uint64_t translated = parent + (address - child);
				if (translated < parent || (size != 0 && translated + size - 1 < translated))
					return makeError(EINVAL, "%s: reg 0x%llx translated by %s wraps around",
							 path_.c_str(), static_cast<unsigned long long>(address), busPath.c_str());
				address = translated;
				found = true;
			}
			if (!found)
				return makeError(EINVAL, "%s: reg 0x%llx is outside every \"ranges\" window of %s",
						 path_.c_str(), static_cast<unsigned long long>(address), busPath.c_str());
		}
		bus = grand;
	}
	return address;
}

// The interrupt parent, as Linux's of_irq_find_parent() finds it: the node's own or an
// ancestor's "interrupt-parent", followed until a node with "#interrupt-cells".
Result<int> Decoder::interruptParent() const
{
	int cur = offset_;
	for (int hops = 0; hops < kMaxInterruptParentHops; hops++) {
		int next;
		auto ip = getProp(fdt_, cur, "interrupt-parent");
		if (ip) {
			if (ip->len != 4)
				return propError(pathOf(fdt_, cur), "interrupt-parent", "length %zu, expected one phandle", ip->len);
			auto target = resolve(cellAt(ip->data, 0), "interrupt-parent");
			if (!target)
				return target.takeError();
			next = *target;
		} else {
			next = fdt_parent_offset(fdt_, cur);
			if (next < 0)
				return propError(path_, "interrupts", "no interrupt parent (no \"interrupt-parent\" up to the root)");
		}
		if (getProp(fdt_, next, "#interrupt-cells"))
			return next;
		cur = next;
	}
	return propError(path_, "interrupt-parent", "chain longer than %d hops (a loop?)", kMaxInterruptParentHops);
}

Result<std::vector<DtInterrupt>> Decoder::interrupts() const
{
	std::vector<DtInterrupt> out;
	// "interrupts-extended" wins over "interrupts" when both are present (as in Linux).
	if (getProp(fdt_, offset_, "interrupts-extended")) {
		auto refs = phandleList("interrupts-extended", "#interrupt-cells", false);
		if (!refs)
			return refs.takeError();
		for (auto &r : *refs) {
			if (r.args.empty())
				return propError(path_, "interrupts-extended", "controller %s has #interrupt-cells 0",
						 pathOf(fdt_, r.target).c_str());
			out.push_back(DtInterrupt{ pathOf(fdt_, r.target), std::move(r.args) });
		}
		return out;
	}
	auto p = getProp(fdt_, offset_, "interrupts");
	if (!p)
		return out;
	auto parent = interruptParent();
	if (!parent)
		return parent.takeError();
	std::string controller = pathOf(fdt_, *parent);
	auto cells = cellCount(fdt_, *parent, "#interrupt-cells", 0, kMaxSpecifierCells);
	if (!cells)
		return cells.takeError();
	if (*cells == 0)
		return propError(path_, "interrupts", "interrupt parent %s has #interrupt-cells 0", controller.c_str());
	if (p->len % (4 * *cells) != 0)
		return propError(path_, "interrupts", "length %zu is not a multiple of %u cells (#interrupt-cells of %s)",
				 p->len, *cells, controller.c_str());
	if (p->len / (4 * *cells) > kMaxReferences)
		return propError(path_, "interrupts", "more than %zu interrupts", kMaxReferences);
	for (size_t i = 0; i < p->len / (4 * *cells); i++) {
		DtInterrupt irq{ controller, {} };
		for (uint32_t c = 0; c < *cells; c++)
			irq.specifier.push_back(cellAt(p->data, i * *cells + c));
		out.push_back(std::move(irq));
	}
	return out;
}

// A list of <phandle arg...> entries, each provider saying how many args through cellsName.
Result<std::vector<Decoder::Ref>> Decoder::phandleList(const char *prop, const char *cellsName, bool allowHoles) const
{
	std::vector<Ref> out;
	auto p = getProp(fdt_, offset_, prop);
	if (!p)
		return out;
	if (p->len % 4 != 0)
		return propError(path_, prop, "length %zu is not a whole number of cells", p->len);
	size_t n = p->len / 4;
	size_t i = 0;
	while (i < n) {
		uint32_t ph = cellAt(p->data, i++);
		// A zero phandle is an empty slot in clocks/resets lists (kept for index alignment).
		if (ph == 0 && allowHoles)
			continue;
		auto target = resolve(ph, prop);
		if (!target)
			return target.takeError();
		std::string provider = pathOf(fdt_, *target);
		if (!getProp(fdt_, *target, cellsName))
			return propError(path_, prop, "provider %s has no \"%s\"", provider.c_str(), cellsName);
		auto cells = cellCount(fdt_, *target, cellsName, 0, kMaxSpecifierCells);
		if (!cells)
			return cells.takeError();
		if (n - i < *cells)
			return propError(path_, prop, "entry for %s is truncated (%u cells expected, %zu left)",
					 provider.c_str(), *cells, n - i);
		if (out.size() >= kMaxReferences)
			return propError(path_, prop, "more than %zu entries", kMaxReferences);
		Ref r{ *target, {} };
		for (uint32_t c = 0; c < *cells; c++)
			r.args.push_back(cellAt(p->data, i + c));
		i += *cells;
		out.push_back(std::move(r));
	}
	return out;
}

Result<std::vector<DtIommu>> Decoder::iommus() const
{
	auto refs = phandleList("iommus", "#iommu-cells", false);
	if (!refs)
		return refs.takeError();
	std::vector<DtIommu> out;
	for (auto &r : *refs)
		out.push_back(DtIommu{ pathOf(fdt_, r.target), std::move(r.args) });
	return out;
}

Result<std::vector<DtReference>> Decoder::references(const char *prop, const char *cellsName) const
{
	auto refs = phandleList(prop, cellsName, true);
	if (!refs)
		return refs.takeError();
	std::vector<DtReference> out;
	for (auto &r : *refs)
		out.push_back(DtReference{ pathOf(fdt_, r.target), std::move(r.args) });
	return out;
}

// The first label /__symbols__ gives this path, if any.
Result<std::string> labelOf(const void *fdt, const std::string &path)
{
	int symbols = fdt_path_offset(fdt, "/__symbols__");
	if (symbols < 0)
		return std::string();
	int prop;
	fdt_for_each_property_offset(prop, fdt, symbols)
	{
		const char *name = nullptr;
		int len = 0;
		const void *value = fdt_getprop_by_offset(fdt, prop, &name, &len);
		if (!value || !name || len <= 0)
			continue;
		Prop p{ static_cast<const uint8_t *>(value), static_cast<size_t>(len) };
		if (!isNulTerminatedStrings(p))
			return propError("/__symbols__", name, "not a NUL-terminated string");
		if (std::strlen(reinterpret_cast<const char *>(p.data)) == path.size() &&
		    path.compare(reinterpret_cast<const char *>(p.data)) == 0)
			return std::string(name);
	}
	return std::string();
}

bool hasPassthroughMarker(const void *fdt, int offset)
{
	return getProp(fdt, offset, "vfio-broker,passthrough") || getProp(fdt, offset, "xen,passthrough");
}

Result<std::vector<uint8_t>> readWholeFile(const std::string &path)
{
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd.isValid())
		return errnoError(errno, "cannot open " + path);
	std::vector<uint8_t> out;
	uint8_t buf[65536];
	for (;;) {
		ssize_t n = ::read(fd.get(), buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errnoError(errno, "cannot read " + path);
		}
		if (n == 0)
			break;
		if (out.size() + static_cast<size_t>(n) > kMaxBlobSize)
			return makeError(E2BIG, "%s: device tree larger than %zu MiB", path.c_str(), kMaxBlobSize >> 20);
		out.insert(out.end(), buf, buf + n);
	}
	return out;
}

} // namespace

std::string DtReference::toString() const
{
	std::string out = provider;
	for (size_t i = 0; i < args.size(); i++)
		out += strFormat("%c%u", i == 0 ? ':' : ',', args[i]);
	return out;
}

HostDeviceTree::HostDeviceTree(std::vector<uint8_t> blob) : blob_(std::move(blob)) {}

Result<HostDeviceTree> HostDeviceTree::load(const std::string &path)
{
	auto blob = readWholeFile(path);
	if (!blob)
		return blob.takeError();
	auto tree = fromBlob(std::move(*blob));
	if (!tree)
		return withContext(tree.takeError(), path);
	return tree;
}

Result<HostDeviceTree> HostDeviceTree::fromBlob(std::vector<uint8_t> blob)
{
	if (blob.size() > kMaxBlobSize)
		return makeError(E2BIG, "device tree of %zu bytes, more than %zu MiB", blob.size(), kMaxBlobSize >> 20);
	if (blob.size() < sizeof(struct fdt_header))
		return makeError(EINVAL, "device tree of %zu bytes is shorter than its header", blob.size());
	int err = fdt_check_full(blob.data(), blob.size());
	if (err != 0)
		return makeError(EINVAL, "corrupt device tree: %s", fdt_strerror(err));
	HostDeviceTree tree(std::move(blob));
	const void *fdt = tree.blob_.data();
	auto ac = addressCellsOf(fdt, 0);
	if (!ac)
		return ac.takeError();
	auto sc = sizeCellsOf(fdt, 0);
	if (!sc)
		return sc.takeError();
	tree.rootAddressCells_ = *ac;
	tree.rootSizeCells_ = *sc;
	for (int off = 0; off >= 0; off = fdt_next_node(fdt, off, nullptr)) {
		uint32_t ph = fdt_get_phandle(fdt, off);
		if (ph != 0 && ph != 0xffffffffu)
			tree.phandleOffsets_.emplace(ph, off); // the first node wins, like libfdt's lookup
	}
	return tree;
}

Result<int> HostDeviceTree::offsetOfPhandle(uint32_t phandle) const
{
	auto it = phandleOffsets_.find(phandle);
	if (it == phandleOffsets_.end())
		return makeError(ENOENT, "no node has phandle 0x%x", phandle);
	return it->second;
}

Result<std::string> HostDeviceTree::pathOfPhandle(uint32_t phandle) const
{
	auto off = offsetOfPhandle(phandle);
	if (!off)
		return off.takeError();
	return pathOf(blob_.data(), *off);
}

Result<DtNode> HostDeviceTree::node(const std::string &path) const
{
	const void *fdt = blob_.data();
	if (path.empty() || path[0] != '/')
		return makeError(EINVAL, "device-tree path \"%s\" is not absolute", path.c_str());
	int offset = fdt_path_offset_namelen(fdt, path.data(), static_cast<int>(path.size()));
	if (offset < 0)
		return makeError(offset == -FDT_ERR_NOTFOUND ? ENOENT : EINVAL, "no device-tree node %s: %s",
				 path.c_str(), fdt_strerror(offset));
	DtNode node;
	node.path = pathOf(fdt, offset);
	Decoder dec(fdt, phandleOffsets_, offset, node.path);

	auto label = labelOf(fdt, node.path);
	if (!label)
		return label.takeError();
	node.label = std::move(*label);

	if (auto compat = getProp(fdt, offset, "compatible")) {
		if (!isNulTerminatedStrings(*compat))
			return propError(node.path, "compatible", "not a list of NUL-terminated strings");
		node.compatible = splitStrings(*compat);
	}
	node.status = "okay";
	if (auto status = getProp(fdt, offset, "status")) {
		if (!isNulTerminatedStrings(*status))
			return propError(node.path, "status", "not a NUL-terminated string");
		node.status = reinterpret_cast<const char *>(status->data);
	}
	node.passthrough = hasPassthroughMarker(fdt, offset);
	node.dmaCoherent = getProp(fdt, offset, "dma-coherent").has_value();

	auto reg = dec.reg();
	if (!reg)
		return reg.takeError();
	node.reg = std::move(*reg);
	auto irqs = dec.interrupts();
	if (!irqs)
		return irqs.takeError();
	node.interrupts = std::move(*irqs);
	auto iommus = dec.iommus();
	if (!iommus)
		return iommus.takeError();
	node.iommus = std::move(*iommus);
	auto clocks = dec.references("clocks", "#clock-cells");
	if (!clocks)
		return clocks.takeError();
	node.clocks = std::move(*clocks);
	auto resets = dec.references("resets", "#reset-cells");
	if (!resets)
		return resets.takeError();
	node.resets = std::move(*resets);
	auto domains = dec.references("power-domains", "#power-domain-cells");
	if (!domains)
		return domains.takeError();
	node.powerDomains = std::move(*domains);

	int prop;
	fdt_for_each_property_offset(prop, fdt, offset)
	{
		const char *name = nullptr;
		int len = 0;
		const void *value = fdt_getprop_by_offset(fdt, prop, &name, &len);
		if (!value || !name || len < 0)
			return makeError(EINVAL, "%s: unreadable property at offset %d", node.path.c_str(), prop);
		auto *bytes = static_cast<const uint8_t *>(value);
		node.properties[name] = std::vector<uint8_t>(bytes, bytes + len);
	}
	return node;
}

Result<std::vector<DtNode>> HostDeviceTree::passthroughNodes() const
{
	const void *fdt = blob_.data();
	std::vector<DtNode> out;
	for (int off = fdt_next_node(fdt, -1, nullptr); off >= 0; off = fdt_next_node(fdt, off, nullptr)) {
		if (!hasPassthroughMarker(fdt, off))
			continue;
		auto n = node(pathOf(fdt, off));
		if (!n)
			return n.takeError();
		out.push_back(std::move(*n));
	}
	return out;
}

Result<std::string> dtPathFromOfNodeLink(const std::string &linkTarget)
{
	static const std::string kBase = "firmware/devicetree/base";
	size_t pos = 0;
	for (;;) {
		pos = linkTarget.find(kBase, pos);
		if (pos == std::string::npos)
			return makeError(EINVAL, "of_node link \"%s\" does not point under firmware/devicetree/base",
					 linkTarget.c_str());
		size_t end = pos + kBase.size();
		bool startOk = pos == 0 || linkTarget[pos - 1] == '/';
		bool endOk = end == linkTarget.size() || linkTarget[end] == '/';
		if (startOk && endOk)
			break;
		pos = end;
	}
	std::string rest = linkTarget.substr(pos + kBase.size());
	while (rest.size() > 1 && rest.back() == '/')
		rest.pop_back();
	if (rest.empty() || rest == "/")
		return std::string("/");
	// No "." or ".." components: the result names a node, not a relative walk.
	size_t i = 1;
	while (i <= rest.size()) {
		size_t next = rest.find('/', i);
		if (next == std::string::npos)
			next = rest.size();
		std::string comp = rest.substr(i, next - i);
		if (comp.empty() || comp == "." || comp == "..")
			return makeError(EINVAL, "of_node link \"%s\" has an invalid component \"%s\"", linkTarget.c_str(),
					 comp.c_str());
		i = next + 1;
	}
	return rest;
}

} // namespace vfio_broker::platform
