// SPDX-License-Identifier: Apache-2.0
// Kernel VFIO PCI backend: a Device over a vfio-pci device fd; the only code in the project that issues VFIO ioctls.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "device/device.h"

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
	// How many mappings the kernel accepted when the backend was set up (type1 dma_entry_limit, 65535 by
	// default); nullopt when it does not say. A bound for the server's own mapping limit.
	virtual std::optional<uint32_t> dmaMappingsAvailable() const = 0;
	virtual Status mapDma(uint64_t iova, uint64_t size, void *vaddr, bool readable, bool writable) = 0;
	virtual Status unmapDma(uint64_t iova, uint64_t size) = 0;
	// The device fd, attached to this address space (GROUP_GET_DEVICE_FD here; cdev + bind for iommufd).
	virtual Result<UniqueFd> openDevice(const std::string &bdf) = 0;
};

class VfioPciDevice final : public Device
{
public:
	// Resolve spec (see openVfioPciDevice), check the IOMMU group, attach it and cache everything the
	// device reports (regions with their capability chains, IRQ indexes, MSI-X layout).
	static Result<std::unique_ptr<VfioPciDevice>> open(const std::string &spec, const VfioOpenOptions &opts);

	std::string name() const override { return bdf_; }
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
	Status quiesce() override;

	// Beyond Device: what the type1 driver still accepts, for the server's mapping limit.
	std::optional<uint32_t> dmaMappingsAvailable() const { return iommu_->dmaMappingsAvailable(); }

private:
	// What open() learns about one region; exposed.fd is filled in by regionInfo().
	struct Region {
		RegionInfo exposed;
		uint64_t kernelOffset = 0; // of the region in the device fd, for pread/pwrite
	};

	VfioPciDevice(std::string bdf, std::unique_ptr<IommuBackend> iommu, UniqueFd device);
	Status loadDeviceInfo(const VfioOpenOptions &opts);

	std::string bdf_;
	// Declared before device_ so the device fd closes before its group and container.
	std::unique_ptr<IommuBackend> iommu_;
	UniqueFd device_;
	DeviceInfo info_;
	std::vector<Region> regions_;
	std::vector<IrqInfo> irqs_;
};

// spec: a PCI address ("0000:01:00.0", or "01:00.0" for domain 0) or a sysfs device path
// ("/sys/bus/pci/devices/0000:01:00.0", "/sys/devices/pci0000:00/0000:00:01.0"), taken relative to
// opts.sysfsRoot. Errors name the reason in words (device not bound to vfio-pci, group not viable and why,
// group busy, no IOMMU group).
Result<std::unique_ptr<Device>> openVfioPciDevice(const std::string &spec, const VfioOpenOptions &opts);

} // namespace vfio_broker::device
