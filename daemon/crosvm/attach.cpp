// SPDX-License-Identifier: Apache-2.0
// Attach mode: plan checks, the RegisterMemory / GetVmDescriptor / KVM_IRQFD / SET_IRQS sequence, the wait, and the teardown.
#include "crosvm/attach.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/vfio.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <set>

#include "device/vfio_caps.h"
#include "device/vfio_group.h"
#include "vfio_user/protocol.h"

namespace vfio_broker::crosvm {

namespace {

using device::Device;

std::string hex(uint64_t v)
{
	return strFormat("0x%" PRIx64, v);
}

bool addOverflows(uint64_t a, uint64_t b)
{
	return a + b < a;
}

uint64_t roundUp(uint64_t v, uint64_t page)
{
	return (v + page - 1) / page * page;
}

// The areas of a region a client may mmap: its sparse-mmap capability, or all of it.
Result<std::vector<device::MmapArea>> mmapAreas(const device::RegionInfo &ri)
{
	if (ri.caps.empty())
		return std::vector<device::MmapArea>{ { 0, ri.size } };
	// The chain follows the fixed 32-byte vfio_region_info, its offsets relative to its start.
	std::vector<uint8_t> info(device::kRegionInfoSize, 0);
	info.insert(info.end(), ri.caps.begin(), ri.caps.end());
	auto caps = device::extractCaps(info, device::kRegionInfoSize, device::kRegionInfoSize);
	if (!caps)
		return caps.takeError();
	for (const auto &c : *caps)
		if (c.id == VFIO_REGION_INFO_CAP_SPARSE_MMAP)
			return device::parseSparseMmap(c.body);
	return std::vector<device::MmapArea>{ { 0, ri.size } };
}

// A dup the device may own (SET_IRQS takes its eventfds), ours staying with us.
Result<UniqueFd> dupFd(int fd)
{
	UniqueFd d(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
	if (!d)
		return errnoError("dup of an eventfd");
	return d;
}

Result<UniqueFd> newEventfd()
{
	UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (!fd)
		return errnoError("eventfd");
	return fd;
}

} // namespace

Result<std::vector<MemoryMapping>> planMemory(const Device &dev, const AttachConfig &config, uint64_t pageSize)
{
	std::vector<MemoryMapping> out;
	std::set<uint32_t> seen;
	for (const GuestRegion &g : config.regions) {
		if (!seen.insert(g.index).second)
			return makeError(EINVAL, "region %u is placed twice", g.index);
		auto ri = dev.regionInfo(g.index);
		if (!ri)
			return withContext(ri.takeError(), "region " + std::to_string(g.index));
		if (ri->size == 0)
			return makeError(EINVAL, "region %u is empty on %s", g.index, dev.name().c_str());
		if (!(ri->flags & VFIO_REGION_INFO_FLAG_MMAP) || ri->fd < 0)
			return makeError(EINVAL, "region %u is not mmap-able; in attach mode crosvm can only map "
					 "regions into the guest, it cannot forward trapped accesses", g.index);
		uint32_t rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
		if ((ri->flags & rw) != rw)
			return makeError(EINVAL, "region %u is not read-write; crosvm's RegisterMemory always maps "
					 "read-write", g.index);
		if (g.address % pageSize)
			return makeError(EINVAL, "region %u: guest address %s is not aligned to the %" PRIu64
					 "-byte page", g.index, hex(g.address).c_str(), pageSize);
		auto areas = mmapAreas(*ri);
		if (!areas)
			return withContext(areas.takeError(), "region " + std::to_string(g.index));
		for (const device::MmapArea &a : *areas) {
			if (a.size == 0)
				continue;
			if (a.offset % pageSize || addOverflows(ri->mmapOffset, a.offset))
				return makeError(EINVAL, "region %u: mmap area at %s is not page-aligned", g.index,
						 hex(a.offset).c_str());
			uint64_t size = roundUp(a.size, pageSize);
			if (a.offset > roundUp(ri->size, pageSize) || size > roundUp(ri->size, pageSize) - a.offset)
				return makeError(EINVAL, "region %u: mmap area %s+%s lies outside the region", g.index,
						 hex(a.offset).c_str(), hex(a.size).c_str());
			if (addOverflows(g.address, a.offset) || addOverflows(g.address + a.offset, size))
				return makeError(ERANGE, "region %u: guest address %s + %s wraps around", g.index,
						 hex(g.address).c_str(), hex(a.offset + size).c_str());
			out.push_back({ g.index, a.offset, size, g.address + a.offset, ri->fd,
					ri->mmapOffset + a.offset });
		}
	}

	// Overlaps among the areas and the DMA pool: crosvm would refuse some, and a region mapped
	// over the pool would let the device DMA into its own registers.
	struct Span {
		uint64_t start, size;
		std::string what;
	};
	std::vector<Span> spans;
	for (const auto &m : out)
		spans.push_back({ m.guestAddress, m.size, "region " + std::to_string(m.index) });
	if (config.dmaPool) {
		const DmaPool &p = *config.dmaPool;
		if (p.size == 0 || addOverflows(p.address, p.size))
			return makeError(EINVAL, "DMA pool %s+%s is empty or wraps around", hex(p.address).c_str(),
					 hex(p.size).c_str());
		spans.push_back({ p.address, p.size, "the DMA pool" });
	}
	std::sort(spans.begin(), spans.end(), [](const Span &a, const Span &b) { return a.start < b.start; });
	for (size_t i = 1; i < spans.size(); i++)
		if (spans[i].start - spans[i - 1].start < spans[i - 1].size)
			return makeError(EINVAL, "%s at %s overlaps %s at %s+%s", spans[i].what.c_str(),
					 hex(spans[i].start).c_str(), spans[i - 1].what.c_str(),
					 hex(spans[i - 1].start).c_str(), hex(spans[i - 1].size).c_str());
	return out;
}

Status checkIrqs(const Device &dev, const AttachConfig &config)
{
	std::set<uint32_t> indexes, gsis;
	for (const GuestIrq &g : config.irqs) {
		if (!indexes.insert(g.index).second)
			return makeError(EINVAL, "IRQ index %u is wired twice", g.index);
		if (!gsis.insert(g.gsi).second)
			return makeError(EINVAL, "GSI %u is given to two interrupts; shared interrupts are refused", g.gsi);
		auto info = dev.irqInfo(g.index);
		if (!info)
			return withContext(info.takeError(), "IRQ index " + std::to_string(g.index));
		if (info->count == 0 || !(info->flags & VFIO_IRQ_INFO_EVENTFD))
			return makeError(EINVAL, "IRQ index %u has no interrupt that can signal an eventfd", g.index);
	}
	return {};
}

Result<std::unique_ptr<KvmVm>> openKvmVm(VmDescriptor d)
{
	if (d.hypervisor != "Kvm")
		return makeError(ENOTSUP, "crosvm runs the VM on %s; attach mode wires interrupts with KVM_IRQFD only",
				 d.hypervisor.c_str());
	if (Status s = checkKvmVm(d.vmFd.get()); !s)
		return s.takeError();
	return makeKvmVm(std::move(d.vmFd));
}

Result<std::unique_ptr<Attachment>> Attachment::attach(Device &dev, ControlSocket &socket,
						       const AttachConfig &config, const KvmVmFactory &kvm)
{
	auto plan = planMemory(dev, config, device::hostPageSize());
	if (!plan)
		return plan.takeError();
	if (Status s = checkIrqs(dev, config); !s)
		return s.takeError();

	std::unique_ptr<Attachment> a(new Attachment(dev, socket));
	auto fail = [&a](Error err) -> Error {
		(void)a->detach(true);
		return err;
	};
	if (!config.irqs.empty()) {
		auto desc = socket.getVmDescriptor();
		if (!desc)
			return fail(desc.takeError());
		auto vm = kvm(std::move(*desc));
		if (!vm)
			return fail(vm.takeError());
		a->kvm_ = std::move(*vm);
	}
	if (config.dmaPool) {
		if (Status s = a->mapDmaPool(*config.dmaPool); !s)
			return fail(withContext(s.takeError(), "DMA pool " + config.dmaPool->path));
	}
	for (const MemoryMapping &m : *plan) {
		RegisterMemoryRequest r{ m.fileOffset, m.guestAddress, m.guestAddress + m.size, true };
		auto id = socket.registerMemory(m.fd, r);
		if (!id)
			return fail(withContext(id.takeError(), strFormat("region %u (%s bytes at %s)", m.index,
									    hex(m.size).c_str(), hex(m.guestAddress).c_str())));
		a->registered_.push_back({ m, *id });
	}
	for (const GuestIrq &g : config.irqs) {
		if (Status s = a->wireIrq(g); !s)
			return fail(withContext(s.takeError(), strFormat("IRQ index %u -> GSI %u", g.index, g.gsi)));
	}
	return a;
}

Status Attachment::mapDmaPool(const DmaPool &p)
{
	device::IommuInfo iommu = dev_.iommuInfo();
	if (!iommu.translates)
		return makeError(EPERM, "%s has no IOMMU translation (no-IOMMU mode): its DMA cannot be confined "
				 "to a pool", dev_.name().c_str());
	uint64_t align = std::max<uint64_t>(device::hostPageSize(),
					    iommu.pgsizes ? iommu.pgsizes & (~iommu.pgsizes + 1) : 4096);
	if (p.address % align || p.size % align)
		return makeError(EINVAL, "%s+%s is not aligned to %s (page and IOMMU page size)",
				 hex(p.address).c_str(), hex(p.size).c_str(), hex(align).c_str());
	if (!iommu.iovaRanges.empty()) {
		uint64_t last = p.address + p.size - 1;
		bool inside = std::any_of(iommu.iovaRanges.begin(), iommu.iovaRanges.end(),
					  [&](const device::IovaRange &r) { return p.address >= r.start && last <= r.last; });
		if (!inside)
			return makeError(EINVAL, "%s..%s is outside the IOVA windows of %s's IOMMU",
					 hex(p.address).c_str(), hex(last).c_str(), dev_.name().c_str());
	}
	pool_.fd.reset(::open(p.path.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY));
	if (!pool_.fd)
		return errnoError("open");
	struct stat st {};
	struct statfs fs {};
	if (::fstat(pool_.fd.get(), &st) < 0 || ::fstatfs(pool_.fd.get(), &fs) < 0)
		return errnoError("fstat");
	if (!S_ISREG(st.st_mode))
		return makeError(EINVAL, "not a regular file");
	// VFIO pins the pool's pages for as long as it is mapped; Linux (6.5 and later) refuses such
	// long-term pins of ordinary file pages, and only shmem and hugetlbfs pages stay put.
	if (fs.f_type != TMPFS_MAGIC && fs.f_type != HUGETLBFS_MAGIC)
		return makeError(EINVAL, "must be on tmpfs (e.g. /dev/shm) or hugetlbfs");
	if (static_cast<uint64_t>(st.st_size) < p.size)
		return makeError(EINVAL, "is %lld bytes, smaller than the pool's %s", static_cast<long long>(st.st_size),
				 hex(p.size).c_str());
	void *map = ::mmap(nullptr, p.size, PROT_READ | PROT_WRITE, MAP_SHARED, pool_.fd.get(), 0);
	if (map == MAP_FAILED)
		return errnoError("mmap");
	pool_.map = map;
	pool_.range = { p.address, p.size, map, vfio_user::kDmaMapFlagRead | vfio_user::kDmaMapFlagWrite };
	if (Status s = dev_.dmaMap(pool_.range); !s)
		return withContext(s.takeError(), "DMA map at IOVA " + hex(p.address));
	pool_.dmaMapped = true;
	return {};
}

Status Attachment::wireIrq(const GuestIrq &g)
{
	auto info = dev_.irqInfo(g.index);
	if (!info)
		return info.takeError();
	Irq irq;
	irq.index = g.index;
	irq.gsi = g.gsi;
	auto trigger = newEventfd();
	if (!trigger)
		return trigger.takeError();
	irq.trigger = std::move(*trigger);
	// An automasked interrupt is a level: the device masks it when it fires, and it must be
	// unmasked after the guest has handled it, which KVM reports on the resample fd.
	bool level = info->flags & VFIO_IRQ_INFO_AUTOMASKED;
	if (level) {
		auto resample = newEventfd();
		if (!resample)
			return resample.takeError();
		irq.resample = std::move(*resample);
	}
	if (Status s = kvm_->irqfd({ irq.trigger.get(), irq.gsi, irq.resample ? irq.resample.get() : -1, false }); !s)
		return s.takeError();
	// From here on the irqfd exists: record it, so a failure below deassigns it.
	irqs_.push_back(std::move(irq));
	Irq &wired = irqs_.back();

	auto dupTrigger = dupFd(wired.trigger.get());
	if (!dupTrigger)
		return dupTrigger.takeError();
	device::IrqSetRequest trig;
	trig.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	trig.index = g.index;
	trig.count = 1;
	trig.eventfds.push_back(std::move(*dupTrigger));
	if (Status s = dev_.setIrqs(trig); !s)
		return withContext(s.takeError(), "SET_IRQS trigger eventfd");
	if (!level)
		return {};

	auto dupResample = dupFd(wired.resample.get());
	if (!dupResample)
		return dupResample.takeError();
	device::IrqSetRequest unmask;
	unmask.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK;
	unmask.index = g.index;
	unmask.count = 1;
	unmask.eventfds.push_back(std::move(*dupResample));
	// vfio-pci (INTx) and vfio-platform take an unmask eventfd (virqfd), so the EOI reaches the
	// device without us. A device that does not gets the unmask from step() instead.
	if (!dev_.setIrqs(unmask))
		wired.relay = true;
	return {};
}

Status Attachment::relay(Irq &irq)
{
	eventfd_t count = 0;
	if (::eventfd_read(irq.resample.get(), &count) < 0)
		return errno == EAGAIN ? Status{} : errnoError("read of a resample eventfd");
	device::IrqSetRequest unmask;
	unmask.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
	unmask.index = irq.index;
	unmask.count = 1;
	if (Status s = dev_.setIrqs(unmask); !s)
		return withContext(s.takeError(), strFormat("unmask of IRQ index %u after the guest's EOI", irq.index));
	return {};
}

Result<Attachment::Event> Attachment::step(int stopFd, int timeoutMs)
{
	std::vector<pollfd> fds;
	fds.push_back({ socket_.fd(), POLLIN, 0 });
	fds.push_back({ stopFd, POLLIN, 0 }); // a negative fd is ignored by poll
	std::vector<Irq *> relays;
	for (Irq &irq : irqs_) {
		if (irq.relay) {
			fds.push_back({ irq.resample.get(), POLLIN, 0 });
			relays.push_back(&irq);
		}
	}
	int n = ::poll(fds.data(), fds.size(), timeoutMs);
	if (n < 0)
		return errno == EINTR ? Event::Idle : Result<Event>(errnoError("poll"));
	for (size_t i = 0; i < relays.size(); i++)
		if (fds[2 + i].revents)
			if (Status s = relay(*relays[i]); !s)
				return s.takeError();
	if (fds[1].revents)
		return Event::Stop;
	if (fds[0].revents) {
		auto d = socket_.receive(0);
		if (!d && d.error().code == ECONNRESET)
			return Event::PeerHangup;
		if (!d)
			return withContext(d.takeError(), "crosvm's control socket");
		return makeError(EPROTO, "crosvm sent a message nobody asked for: \"%s\"", excerpt(d->bytes).c_str());
	}
	return Event::Idle;
}

Result<Attachment::Event> Attachment::run(int stopFd)
{
	for (;;) {
		auto e = step(stopFd, -1);
		if (!e || *e != Event::Idle)
			return e;
	}
}

Status Attachment::detach(bool askCrosvm)
{
	if (detached_)
		return {};
	detached_ = true;
	Status first;
	auto note = [&first](Status s) {
		if (!s && first)
			first = std::move(s);
	};
	for (auto it = irqs_.rbegin(); it != irqs_.rend(); ++it) {
		device::IrqSetRequest off;
		off.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
		off.index = it->index;
		off.count = 0; // count 0: disable the whole index, dropping its eventfds
		note(dev_.setIrqs(off));
		note(kvm_->irqfd({ it->trigger.get(), it->gsi, -1, true }));
	}
	irqs_.clear();
	if (askCrosvm) {
		for (auto it = registered_.rbegin(); it != registered_.rend(); ++it) {
			Status s = socket_.unregisterMemory(it->regionId);
			if (!s)
				note(withContext(s.takeError(), strFormat("region %u at %s", it->mapping.index,
									  hex(it->mapping.guestAddress).c_str())));
		}
	}
	registered_.clear();
	if (pool_.dmaMapped)
		note(dev_.dmaUnmap(pool_.range));
	pool_.dmaMapped = false;
	if (pool_.map)
		::munmap(pool_.map, pool_.range.size);
	pool_.map = nullptr;
	pool_.fd.reset();
	note(dev_.quiesce());
	return first;
}

Attachment::~Attachment()
{
	(void)detach(false);
}

std::string Attachment::summary() const
{
	std::string s;
	for (const Registered &r : registered_)
		s += strFormat("%sregion %u+%s at %s (crosvm region %s)", s.empty() ? "" : ", ", r.mapping.index,
			       hex(r.mapping.regionOffset).c_str(), hex(r.mapping.guestAddress).c_str(),
			       hex(r.regionId).c_str());
	for (const Irq &i : irqs_)
		s += strFormat("%sIRQ %u -> GSI %u (%s)", s.empty() ? "" : ", ", i.index, i.gsi,
			       !i.resample ? "edge" : i.relay ? "level, EOI relayed by the daemon" : "level, EOI to the device");
	if (pool_.dmaMapped)
		s += strFormat("%sDMA pool %s+%s", s.empty() ? "" : ", ", hex(pool_.range.iova).c_str(),
			       hex(pool_.range.size).c_str());
	return s.empty() ? "nothing" : s;
}

} // namespace vfio_broker::crosvm
