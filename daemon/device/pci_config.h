// SPDX-License-Identifier: Apache-2.0
// A 256-byte PCI configuration space with per-bit write masks (BAR sizing, command, capabilities).
#pragma once

#include <array>
#include <cstdint>

namespace vfio_broker::device {

namespace pci {
constexpr uint32_t kVendorId = 0x00;
constexpr uint32_t kDeviceId = 0x02;
constexpr uint32_t kCommand = 0x04;
constexpr uint32_t kStatus = 0x06;
constexpr uint32_t kRevision = 0x08;
constexpr uint32_t kClassProg = 0x09;
constexpr uint32_t kHeaderType = 0x0e;
constexpr uint32_t kBar0 = 0x10;
constexpr uint32_t kSubsystemVendorId = 0x2c;
constexpr uint32_t kSubsystemId = 0x2e;
constexpr uint32_t kCapabilityList = 0x34;
constexpr uint32_t kInterruptLine = 0x3c;
constexpr uint32_t kInterruptPin = 0x3d;

constexpr uint16_t kCommandMemory = 1u << 1;
constexpr uint16_t kCommandMaster = 1u << 2;
constexpr uint16_t kCommandIntxDisable = 1u << 10;
constexpr uint16_t kStatusCapList = 1u << 4;
constexpr uint16_t kStatusInterrupt = 1u << 3;

constexpr uint8_t kCapIdMsi = 0x05;
} // namespace pci

class PciConfigSpace
{
public:
	static constexpr uint32_t kSize = 256;

	PciConfigSpace() { clear(); }
	void clear();

	// Define a field's value and which of its bits a guest may write.
	void init8(uint32_t off, uint8_t value, uint8_t writable = 0);
	void init16(uint32_t off, uint16_t value, uint16_t writable = 0);
	void init32(uint32_t off, uint32_t value, uint32_t writable = 0);
	// A 32-bit memory BAR of a power-of-two size; the low bits read back as zero so the
	// classic "write all ones, read the size mask" probe works.
	void initMemBar(unsigned bar, uint32_t size);

	uint8_t read8(uint32_t off) const { return bytes_[off]; }
	uint16_t read16(uint32_t off) const;
	uint32_t read32(uint32_t off) const;

	// Any width at any offset inside the space (the caller bounds-checks); only writable
	// bits change.
	void read(uint32_t off, void *data, uint32_t count) const;
	void write(uint32_t off, const void *data, uint32_t count);
	// Bypass the write mask (device-side state such as the status register).
	void set16(uint32_t off, uint16_t value);

private:
	std::array<uint8_t, kSize> bytes_{};
	std::array<uint8_t, kSize> writable_{};
};

} // namespace vfio_broker::device
