// SPDX-License-Identifier: Apache-2.0
// Kernel VFIO below the bus: legacy container + group (type1v2 or no-IOMMU), and the device-fd ioctls every bus shares.
#include "device/vfio_group.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "device/vfio_caps.h"
#include "device/vfio_sysfs.h"
#include "vfio_user/protocol.h"

namespace vfio_broker::device {

namespace {

// Caps are a few hundred bytes; refuse to follow an argsz that keeps growing.
constexpr uint32_t kMaxInfoSize = 1u << 20;

bool pathExists(const std::string &path)
{
	struct stat st;
	return ::stat(path.c_str(), &st) == 0;
}

Result<UniqueFd> openNode(const std::string &path)
{
	int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return errnoError(errno, "cannot open " + path);
	return UniqueFd(fd);
}

// The group node, its container and the IOMMU type set on it. One per device daemon: the group node can be
// open in one place only, so a second daemon for the same group fails with EBUSY.
class VfioContainer final : public IommuBackend
{
public:
	static Result<std::unique_ptr<VfioContainer>> open(const VfioOpenOptions &opts, const std::string &group,
							    const std::string &device, std::string_view vfioDriver);

	const IommuInfo &info() const override { return info_; }
	Status mapDma(uint64_t iova, uint64_t size, void *vaddr, bool readable, bool writable) override;
	Status unmapDma(uint64_t iova, uint64_t size) override;
	Result<UniqueFd> openDevice(const std::string &name) override;

private:
	Status checkViable(const VfioOpenOptions &opts);
	Status loadIommuInfo();

	// container_ before group_: the group closes (and leaves the container) first.
	UniqueFd container_;
	UniqueFd group_;
	std::string groupId_;
	bool noIommu_ = false;
	IommuInfo info_;
};

Result<std::unique_ptr<VfioContainer>> VfioContainer::open(const VfioOpenOptions &opts, const std::string &group,
							    const std::string &device, std::string_view vfioDriver)
{
	auto self = std::make_unique<VfioContainer>();
	self->groupId_ = group;

	// No-IOMMU groups get their own node name so nobody opens one by mistake. Sysfs names such a group
	// "vfio-noiommu"; the node name alone decides when sysfs does not say.
	const std::string groupNode = opts.devRoot + "/vfio/" + group;
	const std::string noIommuNode = opts.devRoot + "/vfio/noiommu-" + group;
	self->noIommu_ = isNoIommuGroup(opts.sysfsRoot, group) ||
			 (!pathExists(groupNode) && pathExists(noIommuNode));
	const std::string &node = self->noIommu_ ? noIommuNode : groupNode;
	if (!pathExists(node))
		return makeError(ENOENT, "%s does not exist: is %.*s loaded and %s bound to it?", node.c_str(),
				 static_cast<int>(vfioDriver.size()), vfioDriver.data(), device.c_str());

	auto container = openNode(opts.devRoot + "/vfio/vfio");
	if (!container)
		return container.takeError();
	self->container_ = std::move(*container);
	int version = ::ioctl(self->container_.get(), VFIO_GET_API_VERSION);
	if (version != VFIO_API_VERSION)
		return makeError(ENOTSUP, "VFIO API version %d, expected %d", version, VFIO_API_VERSION);
	const unsigned long type = self->noIommu_ ? VFIO_NOIOMMU_IOMMU : VFIO_TYPE1v2_IOMMU;
	if (::ioctl(self->container_.get(), VFIO_CHECK_EXTENSION, type) <= 0)
		return self->noIommu_
			       ? makeError(ENOTSUP, "the VFIO container does not offer no-IOMMU mode "
						    "(vfio.enable_unsafe_noiommu_mode=1)")
			       : makeError(ENOTSUP, "the VFIO container offers no type1v2 IOMMU (is vfio_iommu_type1 "
						    "loaded?)");

	int groupFd = ::open(node.c_str(), O_RDWR | O_CLOEXEC);
	if (groupFd < 0) {
		int err = errno;
		if (err == EBUSY)
			return makeError(EBUSY, "IOMMU group %s (%s) is already open elsewhere (another "
					 "vfio-broker-device or a VMM?)", group.c_str(), node.c_str());
		if (err == EPERM || err == EACCES)
			return errnoError(err, "cannot open " + node +
						       (self->noIommu_ ? " (no-IOMMU needs CAP_SYS_RAWIO)"
								       : " (check its owner and mode)"));
		return errnoError(err, "cannot open " + node);
	}
	self->group_.reset(groupFd);

	if (auto st = self->checkViable(opts); !st)
		return st.takeError();
	int containerFd = self->container_.get();
	if (::ioctl(self->group_.get(), VFIO_GROUP_SET_CONTAINER, &containerFd) < 0)
		return errnoError(errno, "VFIO_GROUP_SET_CONTAINER for group " + group);
	if (::ioctl(self->container_.get(), VFIO_SET_IOMMU, type) < 0) {
		int err = errno;
		// type1 refuses unsafe interrupts with EPERM unless the platform remaps them.
		return errnoError(err, std::string("VFIO_SET_IOMMU ") + (self->noIommu_ ? "no-IOMMU" : "type1v2") +
					       (err == EPERM && !self->noIommu_
							? " (no interrupt remapping? see "
							  "vfio_iommu_type1.allow_unsafe_interrupts)"
							: ""));
	}

	if (self->noIommu_) {
		// The device sees physical addresses: nothing may be mapped, nothing is protected.
		self->info_.translates = false;
		self->info_.pgsizes = hostPageSize();
		self->info_.iovaRanges.clear();
	} else if (auto st = self->loadIommuInfo(); !st) {
		return st.takeError();
	}
	return self;
}

Status VfioContainer::checkViable(const VfioOpenOptions &opts)
{
	vfio_group_status status{};
	status.argsz = sizeof(status);
	if (::ioctl(group_.get(), VFIO_GROUP_GET_STATUS, &status) < 0)
		return errnoError(errno, "VFIO_GROUP_GET_STATUS for group " + groupId_);
	if (status.flags & VFIO_GROUP_FLAGS_CONTAINER_SET)
		return makeError(EBUSY, "IOMMU group %s is already attached to a container", groupId_.c_str());
	if (status.flags & VFIO_GROUP_FLAGS_VIABLE)
		return {};
	// The kernel only says "not viable"; sysfs tells which member holds the group and with which driver.
	auto blockers = findViabilityBlockers(opts.sysfsRoot, groupId_);
	if (!blockers)
		return makeError(EBUSY, "IOMMU group %s is not viable (%s); bind every member to vfio-pci or unbind it",
				 groupId_.c_str(), blockers.error().message.c_str());
	return makeError(EBUSY, "%s", describeNonViableGroup(groupId_, *blockers).c_str());
}

Status VfioContainer::loadIommuInfo()
{
	auto reply = queryVfioInfo(container_.get(), VFIO_IOMMU_GET_INFO, vfio_iommu_type1_info{}, "VFIO_IOMMU_GET_INFO");
	if (!reply)
		return reply.takeError();
	vfio_iommu_type1_info fixed;
	std::memcpy(&fixed, reply->data(), sizeof(fixed));
	if (fixed.flags & VFIO_IOMMU_INFO_PGSIZES) {
		if (fixed.iova_pgsizes == 0)
			return makeError(EIO, "VFIO_IOMMU_GET_INFO reports no supported page size");
		info_.pgsizes = fixed.iova_pgsizes;
	} else {
		info_.pgsizes = hostPageSize();
	}
	auto caps = parseIommuInfoCaps(*reply);
	if (!caps)
		return caps.takeError();
	if (caps->hasIovaRanges)
		info_.iovaRanges = std::move(caps->iovaRanges);
	else // kernels before 5.4 do not say; the whole space is the honest default
		info_.iovaRanges = { IovaRange{ 0, UINT64_MAX } };
	info_.maxMappings = caps->dmaAvail.value_or(0);
	info_.translates = true;
	return {};
}

Status VfioContainer::mapDma(uint64_t iova, uint64_t size, void *vaddr, bool readable, bool writable)
{
	if (noIommu_)
		return makeError(ENOTSUP, "IOMMU group %s is a no-IOMMU group: DMA cannot be mapped",
				 groupId_.c_str());
	vfio_iommu_type1_dma_map map{};
	map.argsz = sizeof(map);
	map.flags = (readable ? VFIO_DMA_MAP_FLAG_READ : 0) | (writable ? VFIO_DMA_MAP_FLAG_WRITE : 0);
	map.vaddr = reinterpret_cast<uintptr_t>(vaddr);
	map.iova = iova;
	map.size = size;
	if (::ioctl(container_.get(), VFIO_IOMMU_MAP_DMA, &map) < 0) {
		int err = errno;
		// type1 pins every page and charges it to RLIMIT_MEMLOCK, the usual cause of ENOMEM.
		return errnoError(err, strFormat("VFIO_IOMMU_MAP_DMA iova 0x%llx size 0x%llx%s",
						 static_cast<unsigned long long>(iova), static_cast<unsigned long long>(size),
						 err == ENOMEM ? " (RLIMIT_MEMLOCK too low?)" : ""));
	}
	return {};
}

Status VfioContainer::unmapDma(uint64_t iova, uint64_t size)
{
	if (noIommu_)
		return makeError(ENOTSUP, "IOMMU group %s is a no-IOMMU group: DMA cannot be unmapped",
				 groupId_.c_str());
	vfio_iommu_type1_dma_unmap unmap{};
	unmap.argsz = sizeof(unmap);
	unmap.iova = iova;
	unmap.size = size;
	if (::ioctl(container_.get(), VFIO_IOMMU_UNMAP_DMA, &unmap) < 0)
		return errnoError(errno, strFormat("VFIO_IOMMU_UNMAP_DMA iova 0x%llx size 0x%llx",
						   static_cast<unsigned long long>(iova),
						   static_cast<unsigned long long>(size)));
	// The kernel reports what it removed; anything else means our table and the IOMMU disagree.
	if (unmap.size != size)
		return makeError(EIO, "VFIO_IOMMU_UNMAP_DMA iova 0x%llx: unmapped 0x%llx bytes, expected 0x%llx",
				 static_cast<unsigned long long>(iova), static_cast<unsigned long long>(unmap.size),
				 static_cast<unsigned long long>(size));
	return {};
}

Result<UniqueFd> VfioContainer::openDevice(const std::string &name)
{
	int fd = ::ioctl(group_.get(), VFIO_GROUP_GET_DEVICE_FD, name.c_str());
	if (fd < 0)
		return errnoError(errno, "VFIO_GROUP_GET_DEVICE_FD " + name);
	UniqueFd device(fd);
	// The kernel creates it O_CLOEXEC; make sure, since this fd must never leak into a child.
	int fdFlags = ::fcntl(fd, F_GETFD);
	if (fdFlags < 0 || (!(fdFlags & FD_CLOEXEC) && ::fcntl(fd, F_SETFD, fdFlags | FD_CLOEXEC) < 0))
		return errnoError(errno, "cannot set FD_CLOEXEC on the device fd of " + name);
	return device;
}

} // namespace

uint64_t hostPageSize()
{
	long size = ::sysconf(_SC_PAGESIZE);
	return size > 0 ? static_cast<uint64_t>(size) : 4096;
}

Result<std::vector<uint8_t>> queryVfioInfo(int fd, unsigned long request, const void *seed, uint32_t seedSize,
					   const char *what)
{
	uint32_t argsz = seedSize;
	for (int attempt = 0; attempt < 4; attempt++) {
		std::vector<uint8_t> buf(argsz, 0);
		std::memcpy(buf.data(), seed, seedSize);
		std::memcpy(buf.data(), &argsz, sizeof(argsz));
		if (::ioctl(fd, request, buf.data()) < 0)
			return errnoError(errno, what);
		uint32_t needed;
		std::memcpy(&needed, buf.data(), sizeof(needed));
		if (needed <= argsz)
			return buf;
		if (needed > kMaxInfoSize)
			return makeError(EIO, "%s: the kernel asks for a %u-byte reply", what, needed);
		argsz = needed;
	}
	return makeError(EIO, "%s: the reply size kept changing", what);
}

Result<vfio_device_info> queryDeviceInfo(int deviceFd, uint32_t busFlag, const char *busName, uint32_t maxRegions,
					 uint32_t maxIrqIndexes)
{
	vfio_device_info info{};
	info.argsz = sizeof(info);
	if (::ioctl(deviceFd, VFIO_DEVICE_GET_INFO, &info) < 0)
		return errnoError(errno, "VFIO_DEVICE_GET_INFO");
	if (!(info.flags & busFlag))
		return makeError(ENODEV, "VFIO reports device flags 0x%x, not a %s device", info.flags, busName);
	if (info.num_regions > maxRegions || info.num_irqs > maxIrqIndexes)
		return makeError(EIO, "VFIO_DEVICE_GET_INFO reports %u regions and %u IRQ indexes", info.num_regions,
				 info.num_irqs);
	return info;
}

Result<KernelRegion> queryRegionInfo(int deviceFd, uint32_t index)
{
	vfio_region_info seed{};
	seed.index = index;
	std::string what = strFormat("VFIO_DEVICE_GET_REGION_INFO %u", index);
	auto reply = queryVfioInfo(deviceFd, VFIO_DEVICE_GET_REGION_INFO, seed, what.c_str());
	if (!reply)
		return reply.takeError();
	KernelRegion region;
	vfio_region_info &ri = region.info;
	std::memcpy(&ri, reply->data(), sizeof(ri));
	if (ri.index != index || ri.size > UINT64_MAX - ri.offset)
		return makeError(EIO, "%s: kernel replied index %u, offset 0x%llx, size 0x%llx", what.c_str(), ri.index,
				 static_cast<unsigned long long>(ri.offset), static_cast<unsigned long long>(ri.size));
	if ((ri.flags & VFIO_REGION_INFO_FLAG_CAPS) && ri.cap_offset != 0) {
		auto caps = extractCaps(*reply, ri.cap_offset, kRegionInfoSize);
		if (!caps)
			return withContext(caps.takeError(), what);
		region.caps = std::move(*caps);
	}
	return region;
}

Result<std::unique_ptr<IommuBackend>> openVfioContainer(const VfioOpenOptions &opts, const std::string &group,
							  const std::string &device, std::string_view vfioDriver)
{
	auto container = VfioContainer::open(opts, group, device, vfioDriver);
	if (!container)
		return container.takeError();
	return std::unique_ptr<IommuBackend>(std::move(*container));
}

VfioDevice::VfioDevice(std::string name, std::unique_ptr<IommuBackend> iommu, UniqueFd device)
	: name_(std::move(name)), iommu_(std::move(iommu)), device_(std::move(device))
{
}

Status VfioDevice::setRegion(uint32_t index, KernelRegion region, uint32_t kernelFlags,
			     const std::optional<MsixCapability> &msix, bool allowMmap, uint64_t pageSize)
{
	const vfio_region_info &ri = region.info;
	auto exposure = exposeRegion(index, kernelFlags, ri.size, std::move(region.caps), msix, allowMmap, pageSize);
	if (!exposure)
		return exposure.takeError();
	Region &out = regions_[index];
	out.kernelOffset = ri.offset;
	out.exposed.flags = exposure->flags;
	out.exposed.size = ri.size;
	out.exposed.mmapOffset = ri.offset;
	out.exposed.caps = buildCapChain(exposure->caps, kRegionInfoSize);
	return {};
}

Status VfioDevice::loadIrqInfo(uint32_t numIrqs)
{
	irqs_.assign(numIrqs, IrqInfo{});
	for (uint32_t index = 0; index < numIrqs; index++) {
		vfio_irq_info irq{};
		irq.argsz = sizeof(irq);
		irq.index = index;
		if (::ioctl(device_.get(), VFIO_DEVICE_GET_IRQ_INFO, &irq) < 0) {
			if (errno == EINVAL) // an index this device lacks
				continue;
			return errnoError(errno, strFormat("VFIO_DEVICE_GET_IRQ_INFO %u", index));
		}
		irqs_[index] = IrqInfo{ irq.flags, irq.count };
	}
	return {};
}

Result<RegionInfo> VfioDevice::regionInfo(uint32_t index) const
{
	if (index >= regions_.size())
		return makeError(EINVAL, "region %u does not exist (%s has %zu)", index, name_.c_str(), regions_.size());
	RegionInfo info = regions_[index].exposed;
	info.fd = (info.flags & VFIO_REGION_INFO_FLAG_MMAP) ? device_.get() : -1;
	return info;
}

Result<IrqInfo> VfioDevice::irqInfo(uint32_t index) const
{
	if (index >= irqs_.size())
		return makeError(EINVAL, "IRQ index %u does not exist (%s has %zu)", index, name_.c_str(), irqs_.size());
	return irqs_[index];
}

Status VfioDevice::regionRead(uint32_t index, uint64_t offset, void *data, uint32_t count)
{
	// The server has checked these; a second check keeps a server bug from reaching another region.
	if (index >= regions_.size() || offset > regions_[index].exposed.size ||
	    count > regions_[index].exposed.size - offset)
		return makeError(EINVAL, "read of %u bytes at 0x%llx is outside region %u", count,
				 static_cast<unsigned long long>(offset), index);
	ssize_t n;
	do
		n = ::pread(device_.get(), data, count, static_cast<off_t>(regions_[index].kernelOffset + offset));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errnoError(errno, strFormat("read of %u bytes at 0x%llx in region %u", count,
						   static_cast<unsigned long long>(offset), index));
	if (static_cast<size_t>(n) != count)
		return makeError(EIO, "short read at 0x%llx in region %u: %zd of %u bytes",
				 static_cast<unsigned long long>(offset), index, n, count);
	return {};
}

Status VfioDevice::regionWrite(uint32_t index, uint64_t offset, const void *data, uint32_t count)
{
	if (index >= regions_.size() || offset > regions_[index].exposed.size ||
	    count > regions_[index].exposed.size - offset)
		return makeError(EINVAL, "write of %u bytes at 0x%llx is outside region %u", count,
				 static_cast<unsigned long long>(offset), index);
	ssize_t n;
	do
		n = ::pwrite(device_.get(), data, count, static_cast<off_t>(regions_[index].kernelOffset + offset));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errnoError(errno, strFormat("write of %u bytes at 0x%llx in region %u", count,
						   static_cast<unsigned long long>(offset), index));
	if (static_cast<size_t>(n) != count)
		return makeError(EIO, "short write at 0x%llx in region %u: %zd of %u bytes",
				 static_cast<unsigned long long>(offset), index, n, count);
	return {};
}

Status VfioDevice::setIrqs(IrqSetRequest &request)
{
	if (request.index >= irqs_.size())
		return makeError(EINVAL, "IRQ index %u does not exist", request.index);
	// An IRQ index holds at most 2048 vectors (MSI-X); this bounds the buffer below.
	if (request.count > 2048)
		return makeError(EINVAL, "SET_IRQS count %u is too large", request.count);

	std::vector<uint8_t> data;
	switch (request.flags & VFIO_IRQ_SET_DATA_TYPE_MASK) {
	case VFIO_IRQ_SET_DATA_NONE:
		break;
	case VFIO_IRQ_SET_DATA_BOOL:
		if (request.bools.size() != request.count)
			return makeError(EINVAL, "SET_IRQS: %zu bools for count %u", request.bools.size(), request.count);
		data.assign(request.bools.begin(), request.bools.end());
		break;
	case VFIO_IRQ_SET_DATA_EVENTFD: {
		if (!request.eventfds.empty() && request.eventfds.size() != request.count)
			return makeError(EINVAL, "SET_IRQS: %zu eventfds for count %u", request.eventfds.size(),
					 request.count);
		// No fds means de-assign: -1 tells the kernel to drop the trigger of each vector.
		data.resize(size_t(request.count) * sizeof(int32_t));
		for (uint32_t i = 0; i < request.count; i++) {
			int32_t fd = request.eventfds.empty() ? -1 : request.eventfds[i].get();
			std::memcpy(data.data() + i * sizeof(int32_t), &fd, sizeof(fd));
		}
		break;
	}
	default:
		return makeError(EINVAL, "SET_IRQS flags 0x%x name no single data type", request.flags);
	}

	std::vector<uint8_t> buf(sizeof(vfio_irq_set) + data.size());
	vfio_irq_set set{};
	set.argsz = static_cast<uint32_t>(buf.size());
	set.flags = request.flags;
	set.index = request.index;
	set.start = request.start;
	set.count = request.count;
	std::memcpy(buf.data(), &set, sizeof(set));
	if (!data.empty())
		std::memcpy(buf.data() + sizeof(set), data.data(), data.size());
	if (::ioctl(device_.get(), VFIO_DEVICE_SET_IRQS, buf.data()) < 0)
		return errnoError(errno, strFormat("VFIO_DEVICE_SET_IRQS index %u start %u count %u flags 0x%x",
						   request.index, request.start, request.count, request.flags));
	// The kernel took its own references to the eventfd contexts; ours can go.
	request.eventfds.clear();
	return {};
}

Status VfioDevice::dmaMap(const DmaRange &range)
{
	if (!iommu_->info().translates)
		return makeError(ENOTSUP, "%s has no IOMMU translation (no-IOMMU mode): DMA mapping is refused",
				 name_.c_str());
	if (!range.vaddr)
		return makeError(EINVAL,
				 "DMA map of iova 0x%llx size 0x%llx has no backing memory: the client sent no file "
				 "descriptor, and kernel VFIO can only map memory this process has mapped",
				 static_cast<unsigned long long>(range.iova), static_cast<unsigned long long>(range.size));
	return iommu_->mapDma(range.iova, range.size, range.vaddr, range.prot & vfio_user::kDmaMapFlagRead,
			      range.prot & vfio_user::kDmaMapFlagWrite);
}

Status VfioDevice::dmaUnmap(const DmaRange &range)
{
	if (!iommu_->info().translates)
		return makeError(ENOTSUP, "%s has no IOMMU translation (no-IOMMU mode): DMA unmapping is refused",
				 name_.c_str());
	return iommu_->unmapDma(range.iova, range.size);
}

Status VfioDevice::reset()
{
	if (!(info_.flags & VFIO_DEVICE_FLAGS_RESET))
		return makeError(ENOTSUP, "device %s offers no reset (%s)", name_.c_str(), noResetReason().c_str());
	if (::ioctl(device_.get(), VFIO_DEVICE_RESET) < 0)
		return errnoError(errno, "VFIO_DEVICE_RESET " + name_);
	return {};
}

Status VfioDevice::quiesce()
{
	// Keep going after a failure: every index must be disabled whatever happened to the previous one.
	Status result;
	for (uint32_t index = 0; index < irqs_.size(); index++) {
		if (irqs_[index].count == 0)
			continue;
		vfio_irq_set set{};
		set.argsz = sizeof(set);
		set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
		set.index = index;
		set.start = 0;
		set.count = 0;
		// vfio-pci answers EINVAL when the index has nothing enabled, which is the state we want.
		// (vfio-platform accepts the count-0 disable whatever the state.)
		if (::ioctl(device_.get(), VFIO_DEVICE_SET_IRQS, &set) < 0 && errno != EINVAL && result.ok())
			result = errnoError(errno, strFormat("disabling IRQ index %u of %s", index, name_.c_str()));
		if (quiesceUnmasks_ && (irqs_[index].flags & VFIO_IRQ_INFO_MASKABLE)) {
			// After the trigger is gone, so a level still asserted cannot fire and mask itself again.
			// vfio-platform keeps its mask as a nested disable_irq() across trigger changes (6.1.y with
			// "vfio/platform: Create persistent IRQ handlers"): left masked, the next client would never
			// see this interrupt.
			// First drop the client's unmask eventfd (virqfd): disabling the trigger does not, on
			// vfio-platform, so the departed client could otherwise still unmask the next one's line.
			alignas(vfio_irq_set) uint8_t noUnmaskFd[sizeof(vfio_irq_set) + sizeof(int32_t)] = {};
			vfio_irq_set drop{};
			drop.argsz = sizeof(noUnmaskFd);
			drop.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK;
			drop.index = index;
			drop.start = 0;
			drop.count = 1;
			const int32_t noFd = -1;
			std::memcpy(noUnmaskFd, &drop, sizeof(drop));
			std::memcpy(noUnmaskFd + sizeof(drop), &noFd, sizeof(noFd));
			if (::ioctl(device_.get(), VFIO_DEVICE_SET_IRQS, noUnmaskFd) < 0 && errno != EINVAL && result.ok())
				result = errnoError(errno, strFormat("dropping the unmask eventfd of IRQ index %u of %s", index,
								     name_.c_str()));
			vfio_irq_set unmask{};
			unmask.argsz = sizeof(unmask);
			unmask.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
			unmask.index = index;
			unmask.start = 0;
			unmask.count = irqs_[index].count;
			if (::ioctl(device_.get(), VFIO_DEVICE_SET_IRQS, &unmask) < 0 && errno != EINVAL && result.ok())
				result = errnoError(errno, strFormat("unmasking IRQ index %u of %s", index, name_.c_str()));
		}
	}
	if (auto st = reset(); !st && st.error().code != ENOTSUP && result.ok())
		result = st;
	return result;
}

} // namespace vfio_broker::device
