// SPDX-License-Identifier: Apache-2.0
// PCI configuration space byte array with write masks.
#include "device/pci_config.h"

#include <cstring>

namespace vfio_broker::device {

void PciConfigSpace::clear()
{
	bytes_.fill(0);
	writable_.fill(0);
}

void PciConfigSpace::init8(uint32_t off, uint8_t value, uint8_t writable)
{
	bytes_[off] = value;
	writable_[off] = writable;
}

void PciConfigSpace::init16(uint32_t off, uint16_t value, uint16_t writable)
{
	init8(off, value & 0xff, writable & 0xff);
	init8(off + 1, value >> 8, writable >> 8);
}

void PciConfigSpace::init32(uint32_t off, uint32_t value, uint32_t writable)
{
	init16(off, value & 0xffff, writable & 0xffff);
	init16(off + 2, value >> 16, writable >> 16);
}

void PciConfigSpace::initMemBar(unsigned bar, uint32_t size)
{
	// Memory space, 32-bit, non-prefetchable: type bits 0; the size bits are read-only zero.
	init32(pci::kBar0 + 4 * bar, 0, ~(size - 1));
}

uint16_t PciConfigSpace::read16(uint32_t off) const
{
	return bytes_[off] | (bytes_[off + 1] << 8);
}

uint32_t PciConfigSpace::read32(uint32_t off) const
{
	return read16(off) | (static_cast<uint32_t>(read16(off + 2)) << 16);
}

void PciConfigSpace::read(uint32_t off, void *data, uint32_t count) const
{
	std::memcpy(data, bytes_.data() + off, count);
}

void PciConfigSpace::write(uint32_t off, const void *data, uint32_t count)
{
	const uint8_t *in = static_cast<const uint8_t *>(data);
	for (uint32_t i = 0; i < count; i++) {
		uint8_t mask = writable_[off + i];
		bytes_[off + i] = (bytes_[off + i] & ~mask) | (in[i] & mask);
	}
}

void PciConfigSpace::set16(uint32_t off, uint16_t value)
{
	bytes_[off] = value & 0xff;
	bytes_[off + 1] = value >> 8;
}

} // namespace vfio_broker::device
