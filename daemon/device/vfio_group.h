// SPDX-License-Identifier: Apache-2.0
// Kernel VFIO below the bus: the container/group IOMMU backend (type1v2 or no-IOMMU) and a Device over any VFIO device fd.
#pragma once

#include <linux/vfio.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "device/device.h"
#include "device/vfio_caps.h"

// vfio-pci, vfio-platform and vfio-amba share everything past "which device, in which group": the group
// and container, the region/IRQ ioctls, interrupts, DMA and reset. The bus backends (vfio_pci,
// vfio_platform) resolve and check the device, then hand its fd to VfioDevice.
namespace vfio_broker::device {

struct VfioOpenOptions {
	std::string sysfsRoot = "/sys";
	std::string devRoot = "/dev";
	bool allowMmap = true; // false: every access is trapped (no MMAP flag, no fd handed out)
};

// The IOMMU side of VFIO: owns the DMA address space and hands out the device fd attached to it. The legacy
// container/group with type1 (or no-IOMMU) implements it today; an iommufd backend (/dev/iommu plus
// /dev/vfio/devices/vfioN, BIND_IOMMUFD, IOAS_MAP) is meant to sit beside it behind the same interface.
class IommuBackend
{
public:
	virtual ~IommuBackend() = default;

	virtual const IommuInfo &info() const = 0;
	virtual Status mapDma(uint64_t iova, uint64_t size, void *vaddr, bool readable, bool writable) = 0;
	virtual Status unmapDma(uint64_t iova, uint64_t size) = 0;
	// The device fd, attached to this address space (GROUP_GET_DEVICE_FD here; cdev + bind for iommufd).
	// name is what the bus calls the device: a PCI address, a platform device name ("9010000.pl031").
	virtual Result<UniqueFd> openDevice(const std::string &name) = 0;
};

// Open IOMMU group `group` (its /dev/vfio/N node, or /dev/vfio/noiommu-N for a no-IOMMU group), check that it
// is viable, and attach it to a new container with type1v2, or the no-IOMMU type (then info().translates is
// false and DMA is refused). device and vfioDriver only make the errors say what to do ("is vfio-amba loaded
// and 9010000.pl031 bound to it?").
Result<std::unique_ptr<IommuBackend>> openVfioContainer(const VfioOpenOptions &opts, const std::string &group,
							  const std::string &device, std::string_view vfioDriver);

// The host's page size (sysconf), 4096 if it will not say.
uint64_t hostPageSize();

// An INFO ioctl whose capability chain may not fit: the kernel then raises argsz to what it needs and leaves
// the chain out, so grow the buffer and ask again. Returns the whole reply (fixed struct + chain). seed is the
// fixed struct with its input fields (index) set; its leading u32 argsz is overwritten.
Result<std::vector<uint8_t>> queryVfioInfo(int fd, unsigned long request, const void *seed, uint32_t seedSize,
					   const char *what);

template<typename Fixed>
Result<std::vector<uint8_t>> queryVfioInfo(int fd, unsigned long request, const Fixed &seed, const char *what)
{
	return queryVfioInfo(fd, request, &seed, sizeof(Fixed), what);
}

// VFIO_DEVICE_GET_INFO, refused (ENODEV) unless the device reports busFlag (VFIO_DEVICE_FLAGS_PCI,
// _PLATFORM, _AMBA) and (EIO) when it reports more regions or IRQ indexes than the limits.
Result<vfio_device_info> queryDeviceInfo(int deviceFd, uint32_t busFlag, const char *busName, uint32_t maxRegions,
					 uint32_t maxIrqIndexes);

// One region as VFIO_DEVICE_GET_REGION_INFO reports it, with its capability chain copied out; copying
// the caps out and re-serialising them rebases the chain to start at 32 whatever cap_offset the kernel
// chose. The reply is checked (index echoed, offset + size without wrap-around). Errors keep the
// kernel's errno, so a caller can tell vfio-pci's EINVAL for a region the device lacks.
struct KernelRegion {
	vfio_region_info info{};
	std::vector<Capability> caps;
};
Result<KernelRegion> queryRegionInfo(int deviceFd, uint32_t index);

// A Device over a VFIO device fd, whatever its bus. Subclasses fill info_, regions_ and irqs_ when they open
// the device; everything after that (trapped access, SET_IRQS, DMA through the backend, reset, quiesce) is the
// same ioctl for every bus.
class VfioDevice : public Device
{
public:
	std::string name() const override { return name_; }
	DeviceInfo info() const override { return info_; }
	Result<RegionInfo> regionInfo(uint32_t index) const override;
	Result<IrqInfo> irqInfo(uint32_t index) const override;
	IommuInfo iommuInfo() const override { return iommu_->info(); }

	Status regionRead(uint32_t index, uint64_t offset, void *data, uint32_t count) override;
	Status regionWrite(uint32_t index, uint64_t offset, const void *data, uint32_t count) override;

	// Hands the eventfds to the kernel; on success request.eventfds is emptied (the kernel keeps its own
	// references), on failure they stay with the request.
	Status setIrqs(IrqSetRequest &request) override;

	Status dmaMap(const DmaRange &range) override;
	Status dmaUnmap(const DmaRange &range) override;
	Status reset() override;
	// Disables every IRQ index (and with quiesceUnmasks_ unmasks the maskable ones), then resets when the
	// device can.
	Status quiesce() override;


protected:
	// What open learns about one region; exposed.fd is filled in by regionInfo().
	struct Region {
		RegionInfo exposed;
		uint64_t kernelOffset = 0; // of the region in the device fd, for pread/pwrite
	};

	VfioDevice(std::string name, std::unique_ptr<IommuBackend> iommu, UniqueFd device);
	// Why the device offers no VFIO_DEVICE_RESET, for the ENOTSUP message ("no FLR, PM or bus reset").
	virtual std::string noResetReason() const = 0;
	// Fill regions_[index] from the kernel's region info: what exposeRegion() lets the client see (kernelFlags
	// may be narrower than region.info.flags), the capability chain rebased to 32, the kernel offset.
	Status setRegion(uint32_t index, KernelRegion region, uint32_t kernelFlags, const std::optional<MsixCapability> &msix,
			 bool allowMmap, uint64_t pageSize);
	// VFIO_DEVICE_GET_IRQ_INFO for every index into irqs_ (an index the kernel answers EINVAL for stays empty).
	Status loadIrqInfo(uint32_t numIrqs);

	std::string name_;
	// Declared before device_ so the device fd closes before its group and container.
	std::unique_ptr<IommuBackend> iommu_;
	UniqueFd device_;
	DeviceInfo info_;
	std::vector<Region> regions_;
	std::vector<IrqInfo> irqs_;
	// vfio-platform keeps an automasked level interrupt masked across trigger changes, so a client that dies
	// between the interrupt and its unmask would leave it masked for the next one; quiesce() then unmasks
	// each maskable index once its trigger is disabled.
	bool quiesceUnmasks_ = false;
};

} // namespace vfio_broker::device
