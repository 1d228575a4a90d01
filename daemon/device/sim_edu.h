// SPDX-License-Identifier: Apache-2.0
// sim:edu — a simulated PCI device compatible with QEMU's "edu" (docs/specs/edu.rst), behind the Device interface.
#pragma once

#include <map>
#include <mutex>

#include "device/device.h"
#include "device/pci_config.h"

namespace vfio_broker::device {

namespace edu {
constexpr uint16_t kVendor = 0x1234;
constexpr uint16_t kDevice = 0x11e8;
constexpr uint32_t kId = 0x010000ed; // version 1.0
constexpr uint32_t kRegId = 0x00;
constexpr uint32_t kRegLiveness = 0x04;
constexpr uint32_t kRegFactorial = 0x08;
constexpr uint32_t kRegStatus = 0x20;
constexpr uint32_t kRegIrqStatus = 0x24;
constexpr uint32_t kRegIrqRaise = 0x60;
constexpr uint32_t kRegIrqAck = 0x64;
constexpr uint32_t kRegDmaSrc = 0x80;
constexpr uint32_t kRegDmaDst = 0x88;
constexpr uint32_t kRegDmaCount = 0x90;
constexpr uint32_t kRegDmaCmd = 0x98;
constexpr uint32_t kStatusComputing = 0x01;
constexpr uint32_t kStatusIrqOnFactorial = 0x80;
constexpr uint32_t kDmaStart = 0x01;
constexpr uint32_t kDmaToRam = 0x02;
constexpr uint32_t kDmaIrq = 0x04;
constexpr uint32_t kIrqFactorial = 0x001;
constexpr uint32_t kIrqDma = 0x100;
constexpr uint64_t kDmaBufferAddr = 0x40000;
constexpr uint32_t kDmaBufferSize = 4096;
constexpr uint64_t kDmaMask = (1ull << 28) - 1;
constexpr uint64_t kBar0Size = 1 << 20;
// The RAM-like BAR that is handed to the client as a memfd to mmap.
constexpr unsigned kRamBar = 2;
constexpr uint64_t kRamBarSize = 64 * 1024;
constexpr uint64_t kRamBarTrappedSize = 4096; // the last page: REGION_READ/WRITE only
constexpr uint32_t kMsiCapOffset = 0x40;
} // namespace edu

class SimEdu : public Device
{
public:
	static Result<std::unique_ptr<SimEdu>> create();

	std::string name() const override { return "sim:edu"; }
	DeviceInfo info() const override;
	Result<RegionInfo> regionInfo(uint32_t index) const override;
	Result<IrqInfo> irqInfo(uint32_t index) const override;
	IommuInfo iommuInfo() const override;

	Status regionRead(uint32_t index, uint64_t offset, void *data, uint32_t count) override;
	Status regionWrite(uint32_t index, uint64_t offset, const void *data, uint32_t count) override;
	Status setIrqs(IrqSetRequest &request) override;
	Status dmaMap(const DmaRange &range) override;
	Status dmaUnmap(const DmaRange &range) override;
	Status reset() override;
	Status quiesce() override;

	// Observability for tests and logs.
	uint64_t iommuFaults() const { return iommuFaults_; }

private:
	SimEdu() = default;
	Status createRamBar();
	void resetRegisters();

	uint64_t bar0Read(uint64_t addr, unsigned size) const;
	void bar0Write(uint64_t addr, uint64_t value, unsigned size);
	void raiseIrq(uint32_t bits);
	void lowerIrq(uint32_t bits);
	void updateIntx();
	void runDma();
	bool dmaAccess(uint64_t iova, void *buf, uint32_t len, bool toRam);

	enum class IrqMode { None, Intx, Msi };

	PciConfigSpace config_;
	UniqueFd ramFd_;
	void *ram_ = nullptr;

	// edu registers
	uint32_t liveness_ = 0;
	uint32_t factorial_ = 0;
	uint32_t status_ = 0;
	uint32_t irqStatus_ = 0;
	uint64_t dmaSrc_ = 0, dmaDst_ = 0, dmaCount_ = 0, dmaCmd_ = 0;
	uint8_t dmaBuffer_[edu::kDmaBufferSize] = {};

	// interrupt plumbing, as vfio-pci presents it
	IrqMode irqMode_ = IrqMode::None;
	UniqueFd intxFd_, msiFd_, reqFd_;
	bool intxMasked_ = false;

	std::map<uint64_t, DmaRange> dma_; // by iova
	uint64_t iommuFaults_ = 0;
};

} // namespace vfio_broker::device
