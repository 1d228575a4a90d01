// SPDX-License-Identifier: Apache-2.0
// Unit tests for the PCI configuration space model: write masks, BAR size probing, any-width accesses.
#include <catch2/catch.hpp>

#include <cstring>

#include "device/pci_config.h"

using namespace vfio_broker::device;

namespace {

void write32(PciConfigSpace &c, uint32_t off, uint32_t v) { c.write(off, &v, 4); }
void write16(PciConfigSpace &c, uint32_t off, uint16_t v) { c.write(off, &v, 2); }
void write8(PciConfigSpace &c, uint32_t off, uint8_t v) { c.write(off, &v, 1); }

uint32_t readAny32(const PciConfigSpace &c, uint32_t off)
{
	uint32_t v = 0;
	c.read(off, &v, 4);
	return v;
}

} // namespace

TEST_CASE("a fresh config space reads as zeros and ignores every write", "[pci_config]")
{
	PciConfigSpace c;
	std::vector<uint8_t> all(PciConfigSpace::kSize, 0xaa);
	c.read(0, all.data(), all.size());
	CHECK(all == std::vector<uint8_t>(PciConfigSpace::kSize, 0));

	std::vector<uint8_t> ones(PciConfigSpace::kSize, 0xff);
	c.write(0, ones.data(), ones.size());
	c.read(0, all.data(), all.size());
	CHECK(all == std::vector<uint8_t>(PciConfigSpace::kSize, 0));
}

TEST_CASE("fields are stored little-endian", "[pci_config]")
{
	PciConfigSpace c;
	c.init16(pci::kVendorId, 0x1234);
	c.init16(pci::kDeviceId, 0x11e8);
	c.init32(0x40, 0xa1b2c3d4);
	CHECK(c.read8(0x00) == 0x34);
	CHECK(c.read8(0x01) == 0x12);
	CHECK(c.read16(pci::kVendorId) == 0x1234);
	CHECK(c.read32(0x00) == 0x11e81234);
	CHECK(c.read8(0x40) == 0xd4);
	CHECK(c.read16(0x42) == 0xa1b2);
	CHECK(readAny32(c, 0x40) == 0xa1b2c3d4);
}

TEST_CASE("only writable bits change; read-only bits keep their value", "[pci_config]")
{
	PciConfigSpace c;
	c.init16(pci::kCommand, 0x0000, pci::kCommandMemory | pci::kCommandMaster | pci::kCommandIntxDisable);
	write16(c, pci::kCommand, 0xffff);
	CHECK(c.read16(pci::kCommand) == 0x0406);
	write16(c, pci::kCommand, 0x0000);
	CHECK(c.read16(pci::kCommand) == 0x0000);

	c.init16(0x50, 0x1234, 0x00ff);
	write16(c, 0x50, 0xabcd);
	CHECK(c.read16(0x50) == 0x12cd);
	write16(c, 0x50, 0x0000);
	CHECK(c.read16(0x50) == 0x1200);
}

TEST_CASE("a read-only field survives writes of every width over it", "[pci_config]")
{
	PciConfigSpace c;
	c.init16(pci::kVendorId, 0x1234);
	c.init16(pci::kDeviceId, 0x11e8);
	write32(c, 0x00, 0xffffffff);
	write16(c, 0x02, 0);
	write8(c, 0x01, 0);
	CHECK(c.read32(0x00) == 0x11e81234);
}

TEST_CASE("a memory BAR reads back its size mask after the all-ones probe", "[pci_config]")
{
	PciConfigSpace c;
	c.initMemBar(0, 1u << 20);
	c.initMemBar(2, 64 * 1024);
	c.initMemBar(5, 4096);
	write32(c, pci::kBar0, 0xffffffff);
	write32(c, pci::kBar0 + 8, 0xffffffff);
	write32(c, pci::kBar0 + 20, 0xffffffff);
	CHECK(c.read32(pci::kBar0) == 0xfff00000);      // size = ~mask + 1 = 1 MiB
	CHECK(c.read32(pci::kBar0 + 8) == 0xffff0000);  // 64 KiB
	CHECK(c.read32(pci::kBar0 + 20) == 0xfffff000); // 4 KiB
	CHECK(~(c.read32(pci::kBar0) & ~0xfu) + 1 == 1u << 20);
	// Neighbouring BARs that were not set up stay unimplemented.
	CHECK(c.read32(pci::kBar0 + 4) == 0);
}

TEST_CASE("a BAR keeps only the address bits its size allows", "[pci_config]")
{
	PciConfigSpace c;
	c.initMemBar(0, 1u << 20);
	write32(c, pci::kBar0, 0xfebc1234);
	CHECK(c.read32(pci::kBar0) == 0xfeb00000);
	// Type bits (memory, 32-bit, non-prefetchable) are read-only zero.
	write32(c, pci::kBar0, 0x0000000f);
	CHECK((c.read32(pci::kBar0) & 0xf) == 0);
}

TEST_CASE("a BAR of size 0 probes as unimplemented", "[pci_config]")
{
	PciConfigSpace c;
	c.initMemBar(1, 0);
	write32(c, pci::kBar0 + 4, 0xffffffff);
	CHECK(c.read32(pci::kBar0 + 4) == 0);
}

TEST_CASE("a BAR can be probed and programmed a byte or a word at a time", "[pci_config]")
{
	PciConfigSpace c;
	c.initMemBar(0, 1u << 20);
	write8(c, pci::kBar0 + 3, 0xff);
	CHECK(c.read32(pci::kBar0) == 0xff000000);
	write8(c, pci::kBar0 + 2, 0xff);
	CHECK(c.read32(pci::kBar0) == 0xfff00000);
	write8(c, pci::kBar0 + 1, 0xff); // all read-only bits
	write8(c, pci::kBar0 + 0, 0xff);
	CHECK(c.read32(pci::kBar0) == 0xfff00000);
	write16(c, pci::kBar0 + 2, 0xc010);
	CHECK(c.read32(pci::kBar0) == 0xc0100000);
}

TEST_CASE("an unaligned write spanning several fields applies each field's own mask", "[pci_config]")
{
	PciConfigSpace c;
	c.init16(pci::kDeviceId, 0x11e8);                     // 0x02: read-only
	c.init16(pci::kCommand, 0, pci::kCommandMaster);      // 0x04: bit 2 writable
	c.init16(pci::kStatus, pci::kStatusCapList);          // 0x06: read-only
	uint8_t bytes[5] = { 0xff, 0xff, 0xff, 0xff, 0xff };
	c.write(0x03, bytes, sizeof(bytes)); // 0x03..0x07
	CHECK(c.read16(pci::kDeviceId) == 0x11e8);
	CHECK(c.read16(pci::kCommand) == pci::kCommandMaster);
	CHECK(c.read16(pci::kStatus) == pci::kStatusCapList);
}

TEST_CASE("unaligned reads of any width return the bytes at that offset", "[pci_config]")
{
	PciConfigSpace c;
	for (uint32_t i = 0; i < PciConfigSpace::kSize; i++)
		c.init8(i, static_cast<uint8_t>(i ^ 0x5a));
	for (uint32_t width : { 1u, 2u, 3u, 4u, 8u }) {
		for (uint32_t off = 0; off + width <= PciConfigSpace::kSize; off += 13) {
			uint8_t buf[8] = {};
			c.read(off, buf, width);
			for (uint32_t i = 0; i < width; i++) {
				INFO("width " << width << " offset " << off << " byte " << i);
				CHECK(buf[i] == static_cast<uint8_t>((off + i) ^ 0x5a));
			}
		}
	}
	uint8_t last[4];
	c.read(PciConfigSpace::kSize - 4, last, 4);
	CHECK(last[3] == static_cast<uint8_t>(0xff ^ 0x5a));
}

TEST_CASE("set16 bypasses the write mask", "[pci_config]")
{
	PciConfigSpace c;
	c.init16(pci::kStatus, pci::kStatusCapList); // read-only to the guest
	c.set16(pci::kStatus, pci::kStatusCapList | pci::kStatusInterrupt);
	CHECK(c.read16(pci::kStatus) == (pci::kStatusCapList | pci::kStatusInterrupt));
	write16(c, pci::kStatus, 0);
	CHECK(c.read16(pci::kStatus) == (pci::kStatusCapList | pci::kStatusInterrupt));
}

TEST_CASE("clear() forgets values and write masks", "[pci_config]")
{
	PciConfigSpace c;
	c.init16(pci::kCommand, 0x0006, 0xffff);
	c.clear();
	CHECK(c.read16(pci::kCommand) == 0);
	write16(c, pci::kCommand, 0xffff);
	CHECK(c.read16(pci::kCommand) == 0);
}

TEST_CASE("init replaces an earlier field definition, mask included", "[pci_config]")
{
	PciConfigSpace c;
	c.init8(0x3c, 0x0b, 0xff);
	c.init8(0x3c, 0x00);
	write8(c, 0x3c, 0x55);
	CHECK(c.read8(0x3c) == 0x00);
}
