// SPDX-License-Identifier: Apache-2.0
// Unit tests for sim:edu driven through the Device interface: what vfio-pci would show, edu.rst registers, IRQs, DMA.
#include <catch2/catch.hpp>

#include <linux/vfio.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "device/sim_edu.h"
#include "device/vfio_caps.h"
#include "vfio_user/protocol.h"

using namespace vfio_broker;
using namespace vfio_broker::device;

namespace {

constexpr uint32_t kBar0 = VFIO_PCI_BAR0_REGION_INDEX;
constexpr uint32_t kBar2 = VFIO_PCI_BAR2_REGION_INDEX;
constexpr uint32_t kConfig = VFIO_PCI_CONFIG_REGION_INDEX;
constexpr uint32_t kRead = vfio_user::kDmaMapFlagRead;
constexpr uint32_t kWrite = vfio_user::kDmaMapFlagWrite;

UniqueFd makeEventfd()
{
	UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
	REQUIRE(fd);
	return fd;
}

// How many times the eventfd was signalled since the last look (0 when it was not).
uint64_t signals(const UniqueFd &fd)
{
	eventfd_t v = 0;
	if (::eventfd_read(fd.get(), &v) < 0)
		return 0;
	return v;
}

ino_t inodeOf(int fd)
{
	struct stat st;
	REQUIRE(::fstat(fd, &st) == 0);
	return st.st_ino;
}

// "Client memory": a memfd mapped twice, once as the client sees it and once as the server's
// DMA table would map it for the device.
struct ClientMemory {
	UniqueFd fd;
	size_t size;
	uint8_t *client = nullptr;
	uint8_t *device = nullptr;

	explicit ClientMemory(size_t bytes) : fd(::memfd_create("sim-edu-test-ram", MFD_CLOEXEC)), size(bytes)
	{
		REQUIRE(fd);
		REQUIRE(::ftruncate(fd.get(), size) == 0);
		void *c = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
		void *d = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
		REQUIRE(c != MAP_FAILED);
		REQUIRE(d != MAP_FAILED);
		client = static_cast<uint8_t *>(c);
		device = static_cast<uint8_t *>(d);
	}
	~ClientMemory()
	{
		::munmap(client, size);
		::munmap(device, size);
	}
	DmaRange range(uint64_t iova, uint32_t prot, size_t offset = 0, size_t bytes = 0) const
	{
		return DmaRange{ iova, bytes ? bytes : size - offset, device + offset, prot };
	}
};

struct Edu {
	std::unique_ptr<SimEdu> dev;

	Edu()
	{
		auto r = SimEdu::create();
		REQUIRE(r.ok());
		dev = std::move(r).value();
	}

	uint32_t read32(uint64_t off)
	{
		uint32_t v = 0;
		REQUIRE(dev->regionRead(kBar0, off, &v, 4).ok());
		return v;
	}
	uint64_t read64(uint64_t off)
	{
		uint64_t v = 0;
		REQUIRE(dev->regionRead(kBar0, off, &v, 8).ok());
		return v;
	}
	void write32(uint64_t off, uint32_t v) { REQUIRE(dev->regionWrite(kBar0, off, &v, 4).ok()); }
	void write64(uint64_t off, uint64_t v) { REQUIRE(dev->regionWrite(kBar0, off, &v, 8).ok()); }

	uint16_t config16(uint32_t off)
	{
		uint16_t v = 0;
		REQUIRE(dev->regionRead(kConfig, off, &v, 2).ok());
		return v;
	}
	uint32_t config32(uint32_t off)
	{
		uint32_t v = 0;
		REQUIRE(dev->regionRead(kConfig, off, &v, 4).ok());
		return v;
	}
	void setConfig16(uint32_t off, uint16_t v) { REQUIRE(dev->regionWrite(kConfig, off, &v, 2).ok()); }
	void setConfig32(uint32_t off, uint32_t v) { REQUIRE(dev->regionWrite(kConfig, off, &v, 4).ok()); }
	void enable(uint16_t command) { setConfig16(pci::kCommand, command); }

	// SET_IRQS with one eventfd (a dup of `fd`, which the test keeps to watch).
	Status setEventfd(uint32_t index, const UniqueFd &fd)
	{
		IrqSetRequest req;
		req.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
		req.index = index;
		req.count = 1;
		req.eventfds.emplace_back(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
		return dev->setIrqs(req);
	}
	// SET_IRQS DATA_EVENTFD with no fds: de-assign.
	Status clearEventfd(uint32_t index)
	{
		IrqSetRequest req;
		req.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
		req.index = index;
		req.count = 1;
		return dev->setIrqs(req);
	}
	Status irqAction(uint32_t index, uint32_t action, uint32_t count = 1)
	{
		IrqSetRequest req;
		req.flags = VFIO_IRQ_SET_DATA_NONE | action;
		req.index = index;
		req.count = count;
		return dev->setIrqs(req);
	}

	void dma(uint64_t src, uint64_t dst, uint64_t count, uint32_t cmd)
	{
		write64(edu::kRegDmaSrc, src);
		write64(edu::kRegDmaDst, dst);
		write64(edu::kRegDmaCount, count);
		write64(edu::kRegDmaCmd, cmd);
	}
	// RAM -> device buffer.
	void dmaIn(uint64_t iova, uint64_t bufOffset, uint64_t count)
	{
		dma(iova, edu::kDmaBufferAddr + bufOffset, count, edu::kDmaStart);
	}
	// Device buffer -> RAM.
	void dmaOut(uint64_t bufOffset, uint64_t iova, uint64_t count)
	{
		dma(edu::kDmaBufferAddr + bufOffset, iova, count, edu::kDmaStart | edu::kDmaToRam);
	}
};

std::vector<uint8_t> pattern(size_t size, uint8_t seed)
{
	std::vector<uint8_t> v(size);
	for (size_t i = 0; i < size; i++)
		v[i] = static_cast<uint8_t>(seed + i * 13);
	return v;
}

} // namespace

// ---- What vfio-pci would show

TEST_CASE("sim:edu is a resettable PCI device with 9 regions and 5 IRQ indexes", "[sim_edu]")
{
	Edu edu;
	DeviceInfo info = edu.dev->info();
	CHECK(info.flags == (VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET));
	CHECK(info.numRegions == 9);
	CHECK(info.numIrqs == 5);
	CHECK(edu.dev->name() == "sim:edu");
}

TEST_CASE("BAR0 is a 1 MiB trapped region without an fd", "[sim_edu]")
{
	Edu edu;
	auto r = edu.dev->regionInfo(kBar0);
	REQUIRE(r.ok());
	CHECK(r->flags == (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE));
	CHECK(r->size == 1u << 20);
	CHECK(r->fd == -1);
	CHECK(r->caps.empty());
}

TEST_CASE("BAR2 is a 64 KiB mappable region whose sparse-mmap capability leaves out the last page", "[sim_edu]")
{
	Edu edu;
	auto r = edu.dev->regionInfo(kBar2);
	REQUIRE(r.ok());
	CHECK(r->flags == (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP));
	CHECK(r->size == 64 * 1024);
	CHECK(r->mmapOffset == 0);
	REQUIRE(r->fd >= 0);
	struct stat st;
	REQUIRE(::fstat(r->fd, &st) == 0);
	CHECK(st.st_size >= static_cast<off_t>(r->mmapOffset + r->size));

	// The chain as device.h documents it: it follows the 32-byte vfio_region_info, the first
	// capability at 32, every "next" relative to the start of vfio_region_info.
	std::vector<uint8_t> info(kRegionInfoSize, 0);
	info.insert(info.end(), r->caps.begin(), r->caps.end());
	auto caps = extractCaps(info, kRegionInfoSize, kRegionInfoSize);
	REQUIRE(caps.ok());
	REQUIRE(caps->size() == 1);
	CHECK((*caps)[0].id == VFIO_REGION_INFO_CAP_SPARSE_MMAP);
	CHECK((*caps)[0].version == 1);
	auto areas = parseSparseMmap((*caps)[0].body);
	REQUIRE(areas.ok());
	REQUIRE(areas->size() == 1);
	CHECK((*areas)[0] == MmapArea{ 0, 0xf000 });
}

TEST_CASE("the RAM BAR's fd and REGION_READ/WRITE show the same memory", "[sim_edu]")
{
	Edu edu;
	auto r = edu.dev->regionInfo(kBar2);
	REQUIRE(r.ok());
	void *p = ::mmap(nullptr, 0xf000, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, r->mmapOffset);
	REQUIRE(p != MAP_FAILED);
	auto *mapped = static_cast<uint8_t *>(p);
	mapped[0x100] = 0xa5;
	uint8_t v = 0;
	REQUIRE(edu.dev->regionRead(kBar2, 0x100, &v, 1).ok());
	CHECK(v == 0xa5);
	uint32_t w = 0x11223344;
	REQUIRE(edu.dev->regionWrite(kBar2, 0x200, &w, 4).ok());
	CHECK(std::memcmp(mapped + 0x200, &w, 4) == 0);
	// The trapped last page works through REGION_READ/WRITE.
	REQUIRE(edu.dev->regionWrite(kBar2, 0xfffc, &w, 4).ok());
	uint32_t back = 0;
	REQUIRE(edu.dev->regionRead(kBar2, 0xfffc, &back, 4).ok());
	CHECK(back == w);
	::munmap(p, 0xf000);
}

TEST_CASE("config space is a 256-byte region that identifies edu 1234:11e8", "[sim_edu]")
{
	Edu edu;
	auto r = edu.dev->regionInfo(kConfig);
	REQUIRE(r.ok());
	CHECK(r->size == 256);
	CHECK(r->flags == (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE));
	CHECK(edu.config16(pci::kVendorId) == 0x1234);
	CHECK(edu.config16(pci::kDeviceId) == 0x11e8);
	CHECK(edu.config32(0x08) == 0x00ff0010); // class 00ff (unclassified), revision 0x10 as QEMU's edu
	uint8_t pin = 0;
	REQUIRE(edu.dev->regionRead(kConfig, pci::kInterruptPin, &pin, 1).ok());
	CHECK(pin == 1); // INTA#
}

TEST_CASE("config space carries an MSI capability at 0x40", "[sim_edu]")
{
	Edu edu;
	CHECK((edu.config16(pci::kStatus) & pci::kStatusCapList));
	uint8_t ptr = 0;
	REQUIRE(edu.dev->regionRead(kConfig, pci::kCapabilityList, &ptr, 1).ok());
	CHECK(ptr == 0x40);
	uint16_t idNext = edu.config16(0x40);
	CHECK((idNext & 0xff) == pci::kCapIdMsi);
	CHECK((idNext >> 8) == 0); // the last capability
	uint16_t control = edu.config16(0x42);
	CHECK((control & (1u << 7))); // 64-bit address
	CHECK(((control >> 1) & 7) == 0); // one vector
	// Enable, address and data are writable, as a driver programs them.
	edu.setConfig16(0x42, control | 1);
	CHECK((edu.config16(0x42) & 1));
	edu.setConfig32(0x44, 0xfee00000);
	edu.setConfig32(0x48, 0x1);
	edu.setConfig16(0x4c, 0x4021);
	CHECK(edu.config32(0x44) == 0xfee00000);
	CHECK(edu.config32(0x48) == 0x1);
	CHECK(edu.config16(0x4c) == 0x4021);
}

TEST_CASE("the BAR sizing probe returns each BAR's size mask", "[sim_edu]")
{
	Edu edu;
	for (uint32_t bar = 0; bar < 6; bar++)
		edu.setConfig32(pci::kBar0 + 4 * bar, 0xffffffff);
	CHECK(edu.config32(pci::kBar0) == 0xfff00000);     // BAR0: 1 MiB
	CHECK(edu.config32(pci::kBar0 + 4) == 0);          // BAR1: none
	CHECK(edu.config32(pci::kBar0 + 8) == 0xffff0000); // BAR2: 64 KiB
	for (uint32_t bar = 3; bar < 6; bar++)
		CHECK(edu.config32(pci::kBar0 + 4 * bar) == 0);
}

TEST_CASE("the command register takes only memory, bus-master and INTx-disable", "[sim_edu]")
{
	Edu edu;
	CHECK(edu.config16(pci::kCommand) == 0);
	edu.setConfig16(pci::kCommand, 0xffff);
	CHECK(edu.config16(pci::kCommand) == (pci::kCommandMemory | pci::kCommandMaster | pci::kCommandIntxDisable));
	edu.setConfig16(pci::kVendorId, 0);
	CHECK(edu.config16(pci::kVendorId) == 0x1234);
}

TEST_CASE("unimplemented BARs, ROM and VGA have size 0; indexes past 8 do not exist", "[sim_edu]")
{
	Edu edu;
	for (uint32_t index : { 1u, 3u, 4u, 5u, 6u, 8u }) {
		INFO("region " << index);
		auto r = edu.dev->regionInfo(index);
		REQUIRE(r.ok());
		CHECK(r->size == 0);
		CHECK(r->flags == 0);
		CHECK(r->fd == -1);
	}
	auto r = edu.dev->regionInfo(9);
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().code == EINVAL);
	uint32_t v = 0;
	CHECK(edu.dev->regionRead(1, 0, &v, 4).error().code == EINVAL);
	CHECK(edu.dev->regionWrite(6, 0, &v, 4).error().code == EINVAL);
}

TEST_CASE("IRQ indexes are INTx (maskable, automasked), MSI, no MSI-X, no ERR, and REQ", "[sim_edu]")
{
	Edu edu;
	auto intx = edu.dev->irqInfo(VFIO_PCI_INTX_IRQ_INDEX);
	REQUIRE(intx.ok());
	CHECK(intx->flags == (VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED));
	CHECK(intx->count == 1);
	auto msi = edu.dev->irqInfo(VFIO_PCI_MSI_IRQ_INDEX);
	REQUIRE(msi.ok());
	CHECK((msi->flags & VFIO_IRQ_INFO_EVENTFD));
	CHECK(msi->count == 1);
	CHECK(edu.dev->irqInfo(VFIO_PCI_MSIX_IRQ_INDEX)->count == 0);
	CHECK(edu.dev->irqInfo(VFIO_PCI_ERR_IRQ_INDEX)->count == 0);
	CHECK(edu.dev->irqInfo(VFIO_PCI_REQ_IRQ_INDEX)->count == 1);
	auto none = edu.dev->irqInfo(5);
	REQUIRE_FALSE(none.ok());
	CHECK(none.error().code == EINVAL);
}

TEST_CASE("sim:edu offers the lab's IOMMU page sizes and IOVA windows", "[sim_edu]")
{
	Edu edu;
	IommuInfo io = edu.dev->iommuInfo();
	CHECK(io.translates);
	CHECK((io.pgsizes & 4096));
	REQUIRE_FALSE(io.iovaRanges.empty());
	for (const auto &r : io.iovaRanges)
		CHECK(r.start <= r.last);
}

// ---- Registers (QEMU docs/specs/edu.rst)

TEST_CASE("the identification register reads 0x010000ed", "[sim_edu]")
{
	Edu edu;
	CHECK(edu.read32(edu::kRegId) == 0x010000ed);
	edu.write32(edu::kRegId, 0); // read-only
	CHECK(edu.read32(edu::kRegId) == 0x010000ed);
}

TEST_CASE("the liveness register reads back the inverse of what was written", "[sim_edu]")
{
	Edu edu;
	edu.write32(edu::kRegLiveness, 0x12345678);
	CHECK(edu.read32(edu::kRegLiveness) == ~0x12345678u);
	edu.write32(edu::kRegLiveness, 0);
	CHECK(edu.read32(edu::kRegLiveness) == 0xffffffff);
}

TEST_CASE("the factorial register computes n! (mod 2^32) and clears the computing bit", "[sim_edu]")
{
	Edu edu;
	edu.write32(edu::kRegFactorial, 5);
	CHECK(edu.read32(edu::kRegFactorial) == 120);
	CHECK((edu.read32(edu::kRegStatus) & edu::kStatusComputing) == 0);
	edu.write32(edu::kRegFactorial, 12);
	CHECK(edu.read32(edu::kRegFactorial) == 479001600);
	edu.write32(edu::kRegFactorial, 13);
	CHECK(edu.read32(edu::kRegFactorial) == static_cast<uint32_t>(6227020800ull));
	edu.write32(edu::kRegFactorial, 0);
	CHECK(edu.read32(edu::kRegFactorial) == 1);
	edu.write32(edu::kRegFactorial, 40); // 40! has more than 32 factors of two
	CHECK(edu.read32(edu::kRegFactorial) == 0);
}

// QEMU's edu counts down, so every n terminates; a loop counting up to n = 0xffffffff on a
// uint32_t never would, and one register write from a client would hang the device thread.
// Run in a child so a hang is a failure, not a stuck suite.
TEST_CASE("a factorial of 0xffffffff completes (its value mod 2^32 is 0)", "[sim_edu]")
{
	pid_t child = ::fork();
	REQUIRE(child >= 0);
	if (child == 0) {
		auto r = SimEdu::create();
		if (!r)
			::_exit(2);
		uint32_t v = 0xffffffff;
		(void)(*r)->regionWrite(kBar0, edu::kRegFactorial, &v, 4);
		(void)(*r)->regionRead(kBar0, edu::kRegFactorial, &v, 4);
		::_exit(v == 0 ? 0 : 1);
	}
	UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, child, 0)));
	REQUIRE(pidfd);
	pollfd p{ pidfd.get(), POLLIN, 0 };
	bool exited = ::poll(&p, 1, 10000) == 1; // a deadline for a hang, not a synchronisation sleep
	if (!exited)
		::kill(child, SIGKILL);
	int status = 0;
	::waitpid(child, &status, 0);
	CHECK(exited);
	CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
}

TEST_CASE("the status register keeps only the irq-on-factorial bit", "[sim_edu]")
{
	Edu edu;
	edu.write32(edu::kRegStatus, 0xffffffff);
	CHECK(edu.read32(edu::kRegStatus) == edu::kStatusIrqOnFactorial); // computing (0x01) is read-only
	edu.write32(edu::kRegStatus, 0);
	CHECK(edu.read32(edu::kRegStatus) == 0);
}

TEST_CASE("a factorial raises interrupt 0x1 only when the status register asks for it", "[sim_edu]")
{
	Edu edu;
	edu.write32(edu::kRegFactorial, 4);
	CHECK(edu.read32(edu::kRegIrqStatus) == 0);
	edu.write32(edu::kRegStatus, edu::kStatusIrqOnFactorial);
	edu.write32(edu::kRegFactorial, 4);
	CHECK(edu.read32(edu::kRegFactorial) == 24);
	CHECK(edu.read32(edu::kRegIrqStatus) == edu::kIrqFactorial);
}

TEST_CASE("interrupt raise ORs into the status and acknowledge clears those bits", "[sim_edu]")
{
	Edu edu;
	edu.write32(edu::kRegIrqRaise, 0x5);
	edu.write32(edu::kRegIrqRaise, 0x100);
	CHECK(edu.read32(edu::kRegIrqStatus) == 0x105);
	edu.write32(edu::kRegIrqAck, 0x101);
	CHECK(edu.read32(edu::kRegIrqStatus) == 0x4);
	edu.write32(edu::kRegIrqStatus, 0); // read-only
	CHECK(edu.read32(edu::kRegIrqStatus) == 0x4);
}

TEST_CASE("below 0x80, 8-byte reads are all ones and 8-byte writes are ignored", "[sim_edu]")
{
	Edu edu;
	CHECK(edu.read64(edu::kRegId) == ~0ull);
	CHECK(edu.read64(edu::kRegFactorial) == ~0ull);
	edu.write64(edu::kRegFactorial, 5);
	CHECK(edu.read32(edu::kRegFactorial) == 0);
	edu.write64(edu::kRegIrqRaise, 0x1);
	CHECK(edu.read32(edu::kRegIrqStatus) == 0);
}

TEST_CASE("1- and 2-byte and unaligned writes are ignored", "[sim_edu]")
{
	Edu edu;
	edu.write32(edu::kRegLiveness, 0);
	uint16_t half = 0xffff;
	uint8_t byte = 0xff;
	REQUIRE(edu.dev->regionWrite(kBar0, edu::kRegLiveness, &half, 2).ok());
	REQUIRE(edu.dev->regionWrite(kBar0, edu::kRegLiveness + 1, &byte, 1).ok());
	uint32_t word = 0xffffffff;
	REQUIRE(edu.dev->regionWrite(kBar0, edu::kRegLiveness + 2, &word, 4).ok());
	REQUIRE(edu.dev->regionWrite(kBar0, edu::kRegIrqRaise + 1, &word, 4).ok());
	CHECK(edu.read32(edu::kRegLiveness) == 0xffffffff);
	CHECK(edu.read32(edu::kRegIrqStatus) == 0);
}

// edu's MMIO region is valid for 4- and 8-byte accesses only (valid.min_access_size = 4), so a
// 1- or 2-byte access never reaches its registers: it reads as all ones.
TEST_CASE("1- and 2-byte reads below 0x80 return all ones", "[sim_edu]")
{
	Edu edu;
	uint16_t half = 0;
	REQUIRE(edu.dev->regionRead(kBar0, edu::kRegId, &half, 2).ok());
	CHECK(half == 0xffff);
	uint8_t byte = 0;
	REQUIRE(edu.dev->regionRead(kBar0, edu::kRegId, &byte, 1).ok());
	CHECK(byte == 0xff);
}

TEST_CASE("registers that do not exist read as all ones", "[sim_edu]")
{
	Edu edu;
	CHECK(edu.read32(0x10) == 0xffffffff);
	CHECK(edu.read32(edu::kRegIrqRaise) == 0xffffffff); // write-only
	CHECK(edu.read32(0xffffc) == 0xffffffff);           // the last word of the 1 MiB BAR
	CHECK(edu.read64(0xa0) == ~0ull);
}

TEST_CASE("DMA registers are 64-bit and also take 4-byte accesses to their low half", "[sim_edu]")
{
	Edu edu;
	edu.write64(edu::kRegDmaSrc, 0x123456789abcdef0ull);
	CHECK(edu.read64(edu::kRegDmaSrc) == 0x123456789abcdef0ull);
	CHECK(edu.read32(edu::kRegDmaSrc) == 0x9abcdef0);
	CHECK(edu.read32(edu::kRegDmaSrc + 4) == 0xffffffff); // the high half is not a register
	edu.write32(edu::kRegDmaSrc + 4, 0);                   // ignored
	CHECK(edu.read64(edu::kRegDmaSrc) == 0x123456789abcdef0ull);
	edu.write32(edu::kRegDmaSrc, 0x1000); // a 4-byte write sets the whole register
	CHECK(edu.read64(edu::kRegDmaSrc) == 0x1000);
	edu.write64(edu::kRegDmaDst, 0x40000);
	edu.write64(edu::kRegDmaCount, 0x80);
	CHECK(edu.read64(edu::kRegDmaDst) == 0x40000);
	CHECK(edu.read64(edu::kRegDmaCount) == 0x80);
}

// ---- INTx

TEST_CASE("INTx signals its eventfd when the line asserts, then stays masked until UNMASK", "[sim_edu]")
{
	Edu edu;
	UniqueFd efd = makeEventfd();
	REQUIRE(edu.setEventfd(VFIO_PCI_INTX_IRQ_INDEX, efd).ok());
	CHECK(signals(efd) == 0);

	edu.write32(edu::kRegIrqRaise, 0x1);
	CHECK(signals(efd) == 1);
	edu.write32(edu::kRegIrqRaise, 0x2); // automasked: no second event
	CHECK(signals(efd) == 0);

	edu.write32(edu::kRegIrqAck, 0x3);
	REQUIRE(edu.irqAction(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK).ok());
	CHECK(signals(efd) == 0); // the line is low: nothing to report

	edu.write32(edu::kRegIrqRaise, 0x4);
	CHECK(signals(efd) == 1);
}

TEST_CASE("unmasking INTx while the line is still asserted signals again at once", "[sim_edu]")
{
	Edu edu;
	UniqueFd efd = makeEventfd();
	REQUIRE(edu.setEventfd(VFIO_PCI_INTX_IRQ_INDEX, efd).ok());
	edu.write32(edu::kRegIrqRaise, 0x1);
	CHECK(signals(efd) == 1);
	REQUIRE(edu.irqAction(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK).ok());
	CHECK(signals(efd) == 1);
}

TEST_CASE("a masked INTx line does not signal, and unmasking delivers the pending level", "[sim_edu]")
{
	Edu edu;
	UniqueFd efd = makeEventfd();
	REQUIRE(edu.setEventfd(VFIO_PCI_INTX_IRQ_INDEX, efd).ok());
	REQUIRE(edu.irqAction(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_MASK).ok());
	edu.write32(edu::kRegIrqRaise, 0x1);
	CHECK(signals(efd) == 0);
	REQUIRE(edu.irqAction(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK).ok());
	CHECK(signals(efd) == 1);
}

TEST_CASE("the INTx-disable bit in the command register suppresses INTx", "[sim_edu]")
{
	Edu edu;
	UniqueFd efd = makeEventfd();
	REQUIRE(edu.setEventfd(VFIO_PCI_INTX_IRQ_INDEX, efd).ok());
	edu.enable(pci::kCommandMemory | pci::kCommandIntxDisable);
	edu.write32(edu::kRegIrqRaise, 0x1);
	CHECK(signals(efd) == 0);
	CHECK((edu.config16(pci::kStatus) & pci::kStatusInterrupt) == 0);
	// Enabling INTx again with the interrupt still pending asserts the line.
	edu.enable(pci::kCommandMemory);
	CHECK(signals(efd) == 1);
}

TEST_CASE("the PCI status interrupt bit follows the INTx line", "[sim_edu]")
{
	Edu edu;
	CHECK((edu.config16(pci::kStatus) & pci::kStatusInterrupt) == 0);
	edu.write32(edu::kRegIrqRaise, 0x1);
	CHECK((edu.config16(pci::kStatus) & pci::kStatusInterrupt));
	edu.write32(edu::kRegIrqAck, 0x1);
	CHECK((edu.config16(pci::kStatus) & pci::kStatusInterrupt) == 0);
}

TEST_CASE("INTx mask and unmask need INTx enabled", "[sim_edu]")
{
	Edu edu;
	CHECK(edu.irqAction(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK).error().code == EINVAL);
	CHECK(edu.irqAction(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_MASK).error().code == EINVAL);
}

TEST_CASE("a DATA_NONE trigger on INTx fires the eventfd (loopback)", "[sim_edu]")
{
	Edu edu;
	UniqueFd efd = makeEventfd();
	REQUIRE(edu.setEventfd(VFIO_PCI_INTX_IRQ_INDEX, efd).ok());
	REQUIRE(edu.irqAction(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER).ok());
	CHECK(signals(efd) == 1);
}

TEST_CASE("disabling INTx (count 0) stops its eventfd", "[sim_edu]")
{
	Edu edu;
	UniqueFd efd = makeEventfd();
	REQUIRE(edu.setEventfd(VFIO_PCI_INTX_IRQ_INDEX, efd).ok());
	REQUIRE(edu.irqAction(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER, 0).ok());
	edu.write32(edu::kRegIrqRaise, 0x1);
	CHECK(signals(efd) == 0);
}

// ---- MSI

TEST_CASE("with MSI enabled every raise is a message", "[sim_edu]")
{
	Edu edu;
	UniqueFd efd = makeEventfd();
	REQUIRE(edu.setEventfd(VFIO_PCI_MSI_IRQ_INDEX, efd).ok());
	edu.write32(edu::kRegIrqRaise, 0x1);
	edu.write32(edu::kRegIrqRaise, 0x1); // an edge each time, even with the bit already set
	CHECK(signals(efd) == 2);
	// MSI leaves the INTx line alone.
	CHECK((edu.config16(pci::kStatus) & pci::kStatusInterrupt) == 0);
}

// edu_raise_irq() notifies only when irq_status is non-zero after the OR; raising 0 with
// nothing pending is no interrupt at all.
TEST_CASE("raising 0 with nothing pending sends no MSI", "[sim_edu]")
{
	Edu edu;
	UniqueFd efd = makeEventfd();
	REQUIRE(edu.setEventfd(VFIO_PCI_MSI_IRQ_INDEX, efd).ok());
	edu.write32(edu::kRegIrqRaise, 0);
	CHECK(signals(efd) == 0);
}

TEST_CASE("INTx and MSI are mutually exclusive", "[sim_edu]")
{
	Edu edu;
	UniqueFd intx = makeEventfd(), msi = makeEventfd();
	SECTION("MSI while INTx is enabled") {
		REQUIRE(edu.setEventfd(VFIO_PCI_INTX_IRQ_INDEX, intx).ok());
		Status s = edu.setEventfd(VFIO_PCI_MSI_IRQ_INDEX, msi);
		REQUIRE_FALSE(s.ok());
		CHECK(s.error().code == EINVAL);
		edu.write32(edu::kRegIrqRaise, 1);
		CHECK(signals(intx) == 1); // INTx still in charge
		CHECK(signals(msi) == 0);
	}
	SECTION("INTx while MSI is enabled") {
		REQUIRE(edu.setEventfd(VFIO_PCI_MSI_IRQ_INDEX, msi).ok());
		Status s = edu.setEventfd(VFIO_PCI_INTX_IRQ_INDEX, intx);
		REQUIRE_FALSE(s.ok());
		CHECK(s.error().code == EINVAL);
		edu.write32(edu::kRegIrqRaise, 1);
		CHECK(signals(msi) == 1);
		CHECK(signals(intx) == 0);
	}
	SECTION("MSI after INTx is disabled") {
		REQUIRE(edu.setEventfd(VFIO_PCI_INTX_IRQ_INDEX, intx).ok());
		REQUIRE(edu.irqAction(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER, 0).ok());
		REQUIRE(edu.setEventfd(VFIO_PCI_MSI_IRQ_INDEX, msi).ok());
		edu.write32(edu::kRegIrqRaise, 1);
		CHECK(signals(msi) == 1);
	}
}

// vfio-pci refuses any INTx SET_IRQS while MSI is enabled (vfio_pci_set_intx_trigger: EINVAL
// unless INTx or no IRQ mode is active): a stray INTx de-assign must not turn MSI off, nor the
// reverse.
TEST_CASE("de-assigning the INTx eventfd while MSI is enabled leaves MSI working", "[sim_edu]")
{
	Edu edu;
	UniqueFd msi = makeEventfd();
	REQUIRE(edu.setEventfd(VFIO_PCI_MSI_IRQ_INDEX, msi).ok());
	(void)edu.clearEventfd(VFIO_PCI_INTX_IRQ_INDEX); // refused or a no-op; either way MSI stays
	edu.write32(edu::kRegIrqRaise, 1);
	CHECK(signals(msi) == 1);
}

TEST_CASE("de-assigning the MSI eventfd while INTx is enabled leaves INTx working", "[sim_edu]")
{
	Edu edu;
	UniqueFd intx = makeEventfd();
	REQUIRE(edu.setEventfd(VFIO_PCI_INTX_IRQ_INDEX, intx).ok());
	(void)edu.clearEventfd(VFIO_PCI_MSI_IRQ_INDEX);
	edu.write32(edu::kRegIrqRaise, 1);
	CHECK(signals(intx) == 1);
}

TEST_CASE("MSI refuses mask and unmask", "[sim_edu]")
{
	Edu edu;
	CHECK(edu.irqAction(VFIO_PCI_MSI_IRQ_INDEX, VFIO_IRQ_SET_ACTION_MASK).error().code == EINVAL);
	CHECK(edu.irqAction(VFIO_PCI_MSI_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK).error().code == EINVAL);
}

TEST_CASE("an fd that is not an eventfd is refused", "[sim_edu]")
{
	Edu edu;
	int pipefd[2];
	REQUIRE(::pipe2(pipefd, O_CLOEXEC) == 0);
	UniqueFd rd(pipefd[0]), wr(pipefd[1]);
	for (uint32_t index : { VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_REQ_IRQ_INDEX }) {
		INFO("index " << index);
		IrqSetRequest req;
		req.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
		req.index = index;
		req.count = 1;
		req.eventfds.emplace_back(::fcntl(wr.get(), F_DUPFD_CLOEXEC, 0));
		Status s = edu.dev->setIrqs(req);
		REQUIRE_FALSE(s.ok());
		CHECK(s.error().code == EINVAL);
	}
	// Nothing was wired: raising an interrupt writes nothing into the pipe.
	edu.write32(edu::kRegIrqRaise, 1);
	REQUIRE(::fcntl(rd.get(), F_SETFL, O_NONBLOCK) == 0);
	char c;
	CHECK(::read(rd.get(), &c, 1) == -1);
}

TEST_CASE("IRQ indexes without interrupts refuse SET_IRQS", "[sim_edu]")
{
	Edu edu;
	UniqueFd efd = makeEventfd();
	CHECK(edu.setEventfd(VFIO_PCI_MSIX_IRQ_INDEX, efd).error().code == EINVAL);
	CHECK(edu.setEventfd(VFIO_PCI_ERR_IRQ_INDEX, efd).error().code == EINVAL);
}

// ---- DMA

TEST_CASE("DMA copies client RAM into the device buffer and back out through mapped ranges", "[sim_edu]")
{
	Edu edu;
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	ClientMemory ram(0x3000);
	REQUIRE(edu.dev->dmaMap(ram.range(0x100000, kRead | kWrite)).ok());
	auto data = pattern(0x200, 3);
	std::memcpy(ram.client + 0x80, data.data(), data.size());

	edu.dmaIn(0x100080, 0x10, data.size());    // RAM -> device
	CHECK(edu.read64(edu::kRegDmaCmd) == 0);  // done: the start bit is clear
	edu.dmaOut(0x10, 0x102000, data.size());   // device -> RAM
	CHECK(std::memcmp(ram.client + 0x2000, data.data(), data.size()) == 0);
	CHECK(edu.dev->iommuFaults() == 0);
}

TEST_CASE("a DMA with the interrupt bit raises interrupt 0x100 when done", "[sim_edu]")
{
	Edu edu;
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	UniqueFd efd = makeEventfd();
	REQUIRE(edu.setEventfd(VFIO_PCI_MSI_IRQ_INDEX, efd).ok());
	ClientMemory ram(0x1000);
	REQUIRE(edu.dev->dmaMap(ram.range(0x100000, kRead | kWrite)).ok());
	edu.dma(0x100000, edu::kDmaBufferAddr, 16, edu::kDmaStart | edu::kDmaIrq);
	CHECK(edu.read32(edu::kRegIrqStatus) == edu::kIrqDma);
	CHECK(signals(efd) == 1);
}

TEST_CASE("DMA is blocked while bus mastering is off", "[sim_edu]")
{
	Edu edu;
	edu.enable(pci::kCommandMemory); // no bus master
	ClientMemory ram(0x1000);
	REQUIRE(edu.dev->dmaMap(ram.range(0x100000, kRead | kWrite)).ok());
	auto data = pattern(64, 9);
	std::memcpy(ram.client, data.data(), data.size());
	edu.dmaIn(0x100000, 0, 64);
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	edu.dmaOut(0, 0x100800, 64); // what reached the device buffer: nothing
	CHECK(std::vector<uint8_t>(ram.client + 0x800, ram.client + 0x840) == std::vector<uint8_t>(64, 0));
}

TEST_CASE("DMA to an unmapped IOVA faults and moves nothing", "[sim_edu]")
{
	Edu edu;
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	ClientMemory ram(0x1000);
	REQUIRE(edu.dev->dmaMap(ram.range(0x100000, kRead | kWrite)).ok());
	std::memset(ram.client, 0x77, ram.size);
	edu.dmaOut(0, 0x200000, 16);       // nothing mapped there
	edu.dmaOut(0, 0x100ff8, 16);       // runs past the end of the range
	edu.dmaIn(0xff000, 0, 16);         // just below the range
	CHECK(edu.dev->iommuFaults() == 3);
	CHECK(std::vector<uint8_t>(ram.client, ram.client + ram.size) == std::vector<uint8_t>(ram.size, 0x77));
}

TEST_CASE("DMA against the range's protection faults", "[sim_edu]")
{
	Edu edu;
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	ClientMemory ram(0x2000);
	REQUIRE(edu.dev->dmaMap(ram.range(0x100000, kRead, 0, 0x1000)).ok());       // device may only read
	REQUIRE(edu.dev->dmaMap(ram.range(0x101000, kWrite, 0x1000, 0x1000)).ok()); // device may only write
	std::memset(ram.client, 0x11, 0x1000);
	std::memset(ram.client + 0x1000, 0x22, 0x1000);

	edu.dmaOut(0, 0x100000, 16); // write into a read-only range
	CHECK(edu.dev->iommuFaults() == 1);
	CHECK(ram.client[0] == 0x11);
	edu.dmaIn(0x101000, 0, 16); // read from a write-only range
	CHECK(edu.dev->iommuFaults() == 2);
	// The allowed directions work.
	edu.dmaIn(0x100000, 0, 16);
	edu.dmaOut(0, 0x101000, 16);
	CHECK(edu.dev->iommuFaults() == 2);
	CHECK(ram.client[0x1000] == 0x11);
}

TEST_CASE("DMA to a range mapped without a host address faults", "[sim_edu]")
{
	Edu edu;
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	REQUIRE(edu.dev->dmaMap(DmaRange{ 0x100000, 0x1000, nullptr, kRead | kWrite }).ok());
	edu.dmaOut(0, 0x100000, 16);
	CHECK(edu.dev->iommuFaults() == 1);
}

TEST_CASE("device-side addresses outside the 4 KiB buffer are ignored without a crash", "[sim_edu]")
{
	Edu edu;
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	ClientMemory ram(0x2000);
	REQUIRE(edu.dev->dmaMap(ram.range(0x100000, kRead | kWrite)).ok());
	std::memset(ram.client, 0x33, ram.size);
	edu.dmaOut(0xff0, 0x100000, 0x20);                      // runs past the buffer's end
	edu.dma(0x0, 0x100000, 0x10, edu::kDmaStart | edu::kDmaToRam);  // below the buffer
	edu.dma(~0ull, 0x100000, 0x10, edu::kDmaStart | edu::kDmaToRam); // wraps
	edu.dma(0x100000, ~0ull - 4, 0x10, edu::kDmaStart);             // into a wrapping buffer address
	edu.dmaIn(0x100000, 0, 0x2000);                          // longer than the buffer
	CHECK(std::vector<uint8_t>(ram.client, ram.client + ram.size) == std::vector<uint8_t>(ram.size, 0x33));
	CHECK(edu.read64(edu::kRegDmaCmd) == 0x0);
	CHECK(edu.dev->iommuFaults() == 0); // the device never got as far as the IOMMU
}

TEST_CASE("DMA addresses are cut to the 28-bit DMA mask", "[sim_edu]")
{
	Edu edu;
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	ClientMemory ram(0x1000);
	REQUIRE(edu.dev->dmaMap(ram.range(0x100000, kRead | kWrite)).ok());
	auto data = pattern(32, 5);
	std::memcpy(ram.client, data.data(), data.size());
	edu.dmaIn(0xf0100000ull, 0, 32); // bits above 27 are dropped: IOVA 0x100000
	edu.dmaOut(0, 0x1100100ull, 32);  // bit 24 is inside the mask: 0x1100100 stays, and is unmapped
	CHECK(edu.dev->iommuFaults() == 1);
	edu.dmaOut(0, 0x10100100ull, 32); // bit 28 is dropped: IOVA 0x100100
	CHECK(std::memcmp(ram.client + 0x100, data.data(), 32) == 0);
}

// A real IOMMU translates page by page: a transfer that crosses from one DMA_MAP range into
// the adjacent one succeeds on hardware, and so must it in the sim.
TEST_CASE("a DMA crossing two adjacent mapped ranges succeeds", "[sim_edu]")
{
	Edu edu;
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	ClientMemory ram(0x2000);
	REQUIRE(edu.dev->dmaMap(ram.range(0x100000, kRead | kWrite, 0, 0x1000)).ok());
	REQUIRE(edu.dev->dmaMap(ram.range(0x101000, kRead | kWrite, 0x1000, 0x1000)).ok());
	auto data = pattern(64, 1);
	std::memcpy(ram.client + 0xfe0, data.data(), data.size());
	edu.dmaIn(0x100fe0, 0, 64);
	edu.dmaOut(0, 0x100000, 64);
	CHECK(edu.dev->iommuFaults() == 0);
	CHECK(std::memcmp(ram.client, data.data(), 64) == 0);
}

TEST_CASE("a DMA of 0 bytes does nothing and does not fault", "[sim_edu]")
{
	Edu edu;
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	edu.dmaOut(0, 0x5000000, 0);
	CHECK(edu.dev->iommuFaults() == 0);
}

TEST_CASE("a DMA_UNMAP'd range is no longer reachable", "[sim_edu]")
{
	Edu edu;
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	ClientMemory ram(0x1000);
	DmaRange range = ram.range(0x100000, kRead | kWrite);
	REQUIRE(edu.dev->dmaMap(range).ok());
	REQUIRE(edu.dev->dmaUnmap(range).ok());
	edu.dmaOut(0, 0x100000, 16);
	CHECK(edu.dev->iommuFaults() == 1);
	CHECK(edu.dev->dmaUnmap(range).error().code == ENOENT);
}

// ---- Reset and quiesce

TEST_CASE("reset() restores power-on registers and clears the RAM BAR", "[sim_edu]")
{
	Edu edu;
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	edu.setConfig32(pci::kBar0, 0xfe000000);
	edu.write32(edu::kRegLiveness, 0);
	edu.write32(edu::kRegFactorial, 6);
	edu.write32(edu::kRegStatus, edu::kStatusIrqOnFactorial);
	edu.write32(edu::kRegIrqRaise, 0x8);
	edu.write64(edu::kRegDmaSrc, 0x1234);
	uint32_t w = 0xdeadbeef;
	REQUIRE(edu.dev->regionWrite(kBar2, 0x40, &w, 4).ok());

	REQUIRE(edu.dev->reset().ok());
	CHECK(edu.read32(edu::kRegLiveness) == 0);
	CHECK(edu.read32(edu::kRegFactorial) == 0);
	CHECK(edu.read32(edu::kRegStatus) == 0);
	CHECK(edu.read32(edu::kRegIrqStatus) == 0);
	CHECK(edu.read64(edu::kRegDmaSrc) == 0);
	CHECK(edu.config16(pci::kCommand) == 0);
	CHECK(edu.config32(pci::kBar0) == 0);
	CHECK(edu.config16(pci::kVendorId) == 0x1234);
	uint32_t back = 1;
	REQUIRE(edu.dev->regionRead(kBar2, 0x40, &back, 4).ok());
	CHECK(back == 0);
}

TEST_CASE("reset() keeps the client's interrupt wiring and DMA ranges", "[sim_edu]")
{
	Edu edu;
	UniqueFd efd = makeEventfd();
	REQUIRE(edu.setEventfd(VFIO_PCI_MSI_IRQ_INDEX, efd).ok());
	ClientMemory ram(0x1000);
	REQUIRE(edu.dev->dmaMap(ram.range(0x100000, kRead | kWrite)).ok());
	REQUIRE(edu.dev->reset().ok());
	edu.write32(edu::kRegIrqRaise, 1);
	CHECK(signals(efd) == 1);
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	edu.dmaOut(0, 0x100000, 16);
	CHECK(edu.dev->iommuFaults() == 0);
}

TEST_CASE("quiesce() drops every eventfd: none of them fires afterwards", "[sim_edu]")
{
	Edu edu;
	UniqueFd intx = makeEventfd(), msi = makeEventfd(), req = makeEventfd();
	REQUIRE(edu.setEventfd(VFIO_PCI_REQ_IRQ_INDEX, req).ok());
	SECTION("INTx") {
		REQUIRE(edu.setEventfd(VFIO_PCI_INTX_IRQ_INDEX, intx).ok());
	}
	SECTION("MSI") {
		REQUIRE(edu.setEventfd(VFIO_PCI_MSI_IRQ_INDEX, msi).ok());
	}
	REQUIRE(edu.dev->quiesce().ok());
	edu.write32(edu::kRegIrqRaise, 1);
	REQUIRE(edu.irqAction(VFIO_PCI_REQ_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER).ok());
	CHECK(signals(intx) == 0);
	CHECK(signals(msi) == 0);
	CHECK(signals(req) == 0);
	// INTx is no longer enabled either.
	CHECK(edu.irqAction(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK).error().code == EINVAL);
}

TEST_CASE("quiesce() gives a new, zeroed RAM BAR that the old client cannot see", "[sim_edu]")
{
	Edu edu;
	auto before = edu.dev->regionInfo(kBar2);
	REQUIRE(before.ok());
	// Keep the old client's view alive, as a client that still has it mapped would.
	UniqueFd oldFd(::fcntl(before->fd, F_DUPFD_CLOEXEC, 0));
	REQUIRE(oldFd);
	uint32_t w = 0xcafef00d;
	REQUIRE(edu.dev->regionWrite(kBar2, 0x10, &w, 4).ok());

	REQUIRE(edu.dev->quiesce().ok());
	auto after = edu.dev->regionInfo(kBar2);
	REQUIRE(after.ok());
	REQUIRE(after->fd >= 0);
	CHECK(inodeOf(after->fd) != inodeOf(oldFd.get()));
	uint32_t back = 1;
	REQUIRE(edu.dev->regionRead(kBar2, 0x10, &back, 4).ok());
	CHECK(back == 0);

	// What the next client writes stays out of the old memfd.
	uint32_t secret = 0x5ec2e7;
	REQUIRE(edu.dev->regionWrite(kBar2, 0x20, &secret, 4).ok());
	uint32_t old = 0;
	REQUIRE(::pread(oldFd.get(), &old, 4, 0x20) == 4);
	CHECK(old == 0);
}

TEST_CASE("quiesce() forgets DMA ranges and resets registers", "[sim_edu]")
{
	Edu edu;
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	ClientMemory ram(0x1000);
	REQUIRE(edu.dev->dmaMap(ram.range(0x100000, kRead | kWrite)).ok());
	edu.write32(edu::kRegLiveness, 0);
	REQUIRE(edu.dev->quiesce().ok());
	CHECK(edu.read32(edu::kRegLiveness) == 0);
	CHECK(edu.config16(pci::kCommand) == 0);
	edu.enable(pci::kCommandMemory | pci::kCommandMaster);
	edu.dmaOut(0, 0x100000, 16);
	CHECK(edu.dev->iommuFaults() == 1);
}

TEST_CASE("the RAM BAR memfd is sealed against resizing", "[sim_edu]")
{
	Edu edu;
	auto r = edu.dev->regionInfo(kBar2);
	REQUIRE(r.ok());
	CHECK(::ftruncate(r->fd, 4096) == -1);
	CHECK(errno == EPERM);
	int seals = ::fcntl(r->fd, F_GET_SEALS);
	CHECK((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) == (F_SEAL_SHRINK | F_SEAL_GROW));
}
