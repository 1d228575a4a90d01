// SPDX-License-Identifier: Apache-2.0
// The attach library in-process: request order and content, irqfd/resample wiring with a recording KVM, DMA pool, rollback, placement checks.
#include <fcntl.h>
#include <linux/vfio.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <memory>

#include "crosvm/attach.h"
#include "device/sim_edu.h"
#include "device/sim_platform.h"
#include "fake_crosvm.h"
#include "protocol/daemon_fixture.h"
#include "unit/fake_device.h"

using namespace vfio_broker;
using namespace vfio_broker::crosvm;
using namespace vfio_broker::test;

namespace {

const uint64_t kPageSize = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));

// KVM as the attach code sees it, recording every KVM_IRQFD; `failAt` makes that call fail.
struct KvmLog {
	struct Call {
		IrqfdArgs args;
		ino_t trigger = 0;
		ino_t resample = 0;
	};
	std::vector<Call> calls;
	std::string hypervisor;
	ino_t vmFd = 0;
	int failAt = -1;
};

class RecordingKvm : public KvmVm
{
public:
	explicit RecordingKvm(std::shared_ptr<KvmLog> log) : log_(std::move(log)) {}
	Status irqfd(const IrqfdArgs &a) override
	{
		KvmLog::Call c{ a, inodeOf(a.eventfd), a.resamplefd >= 0 ? inodeOf(a.resamplefd) : 0 };
		log_->calls.push_back(c);
		if (static_cast<int>(log_->calls.size()) - 1 == log_->failAt)
			return makeError(EINVAL, "recording KVM: failing KVM_IRQFD as told");
		return {};
	}

private:
	std::shared_ptr<KvmLog> log_;
};

KvmVmFactory recordingFactory(std::shared_ptr<KvmLog> log)
{
	return [log](VmDescriptor d) -> Result<std::unique_ptr<KvmVm>> {
		log->hypervisor = d.hypervisor;
		log->vmFd = inodeOf(d.vmFd.get());
		return std::unique_ptr<KvmVm>(new RecordingKvm(log));
	};
}

// crosvm's answer to GetVmDescriptor, with `vm` as the VM fd.
void answerVmDescriptor(FakeCrosvm &peer, int vm)
{
	int fds[] = { vm };
	peer.send(R"({"VmDescriptor":{"hypervisor":"Kvm","vm_fd":0}})", fds);
}

std::unique_ptr<device::SimEdu> makeEdu()
{
	auto edu = device::SimEdu::create();
	REQUIRE(edu);
	return std::move(*edu);
}

void write32(device::Device &dev, uint32_t region, uint64_t offset, uint32_t value)
{
	REQUIRE(dev.regionWrite(region, offset, &value, 4));
}

// sim:edu's INTx: memory decoding and bus mastering on, INTx-disable off.
void enableEduIntx(device::Device &dev)
{
	uint16_t command = kPciCommandMemory | kPciCommandMaster;
	REQUIRE(dev.regionWrite(kConfig, 4, &command, 2));
}

bool readable(int fd, int timeoutMs)
{
	pollfd p{ fd, POLLIN, 0 };
	return ::poll(&p, 1, timeoutMs) == 1;
}

std::string registerGolden(uint64_t offset, uint64_t start, uint64_t end)
{
	return strFormat(R"({"RegisterMemory":{"fd":0,"offset":%llu,"range_start":%llu,"range_end":%llu,"cache_coherent":true}})",
			 (unsigned long long)offset, (unsigned long long)start, (unsigned long long)end);
}

bool peerQuiet(FakeCrosvm &peer)
{
	pollfd p{ peer.connection(), POLLIN, 0 };
	return ::poll(&p, 1, 0) == 0;
}

} // namespace

TEST_CASE("attach asks for the VM fd, then registers each mmap-able area, then wires KVM_IRQFD", "[crosvm_attach]")
{
	auto edu = makeEdu();
	auto [peer, end] = FakeCrosvm::connectedPair();
	ControlSocket sock(std::move(end));
	auto log = std::make_shared<KvmLog>();
	UniqueFd vm(::eventfd(0, EFD_CLOEXEC));

	// Answers queue up ahead of the requests they answer.
	answerVmDescriptor(peer, vm.get());
	peer.send(R"({"RegisterMemory2":{"region_id":4294967296}})");
	AttachConfig cfg;
	cfg.regions = { { edu::kRamBar, 0x100000000 } };
	cfg.irqs = { { VFIO_PCI_INTX_IRQ_INDEX, 5 } };
	auto a = Attachment::attach(*edu, sock, cfg, recordingFactory(log));
	INFO((a ? "" : a.error().message));
	REQUIRE(a);

	PeerMessage m = peer.receive();
	CHECK(m.json == "\"GetVmDescriptor\"");
	CHECK(m.fds.empty());
	CHECK(log->hypervisor == "Kvm");
	CHECK(log->vmFd == inodeOf(vm.get()));

	// sim:edu's RAM BAR: 64 KiB whose last page is trapped, so one area of 0xf000 bytes.
	m = peer.receive();
	CHECK(m.json == registerGolden(0, 0x100000000, 0x10000f000));
	REQUIRE(m.fds.size() == 1);
	auto ri = edu->regionInfo(edu::kRamBar);
	REQUIRE(ri);
	CHECK(inodeOf(m.fds[0].get()) == inodeOf(ri->fd));
	// What crosvm maps is the device's memory: a word stored through its mapping is what the
	// device reads back through a trapped access.
	void *p = ::mmap(nullptr, 0xf000, PROT_READ | PROT_WRITE, MAP_SHARED, m.fds[0].get(), 0);
	REQUIRE(p != MAP_FAILED);
	static_cast<uint32_t *>(p)[0x100 / 4] = 0xc0ffee11;
	uint32_t seen = 0;
	REQUIRE(edu->regionRead(edu::kRamBar, 0x100, &seen, 4));
	CHECK(seen == 0xc0ffee11);
	::munmap(p, 0xf000);

	REQUIRE(log->calls.size() == 1);
	const KvmLog::Call c = log->calls[0]; // a copy: detach appends to the log
	CHECK(c.args.gsi == 5);
	CHECK_FALSE(c.args.deassign);
	REQUIRE((*a)->irqs().size() == 1);
	const Attachment::Irq &irq = (*a)->irqs()[0];
	CHECK(c.trigger == inodeOf(irq.trigger.get()));
	// INTx is automasked: a level, so KVM gets a resample fd.
	REQUIRE(irq.resample);
	CHECK(c.resample == inodeOf(irq.resample.get()));
	CHECK(irq.relay); // sim:edu takes no unmask eventfd
	CHECK(peerQuiet(peer));

	peer.send(R"("Ok")");
	REQUIRE((*a)->detach(true));
	m = peer.receive();
	CHECK(m.json == R"({"UnregisterMemory":{"region_id":4294967296}})");
	REQUIRE(log->calls.size() == 2);
	CHECK(log->calls[1].args.deassign);
	CHECK(log->calls[1].args.gsi == 5);
	CHECK(log->calls[1].trigger == c.trigger);
}

TEST_CASE("a level interrupt signals KVM's eventfd, and the guest's EOI (resample) unmasks it", "[crosvm_attach]")
{
	auto edu = makeEdu();
	auto [peer, end] = FakeCrosvm::connectedPair();
	ControlSocket sock(std::move(end));
	auto log = std::make_shared<KvmLog>();
	UniqueFd vm(::eventfd(0, EFD_CLOEXEC));
	answerVmDescriptor(peer, vm.get());
	AttachConfig cfg;
	cfg.irqs = { { VFIO_PCI_INTX_IRQ_INDEX, 10 } };
	auto a = Attachment::attach(*edu, sock, cfg, recordingFactory(log));
	REQUIRE(a);
	const Attachment::Irq &irq = (*a)->irqs()[0];
	REQUIRE(irq.relay);

	enableEduIntx(*edu);
	write32(*edu, kBar0, edu::kRegIrqRaise, 1);
	REQUIRE(readable(irq.trigger.get(), kWaitMs));
	CHECK(takeEventfd(irq.trigger.get()) == 1);
	// Automasked: raising again before the EOI signals nothing.
	write32(*edu, kBar0, edu::kRegIrqRaise, 2);
	CHECK(takeEventfd(irq.trigger.get()) == 0);

	// The guest's EOI, as KVM reports it: the resample fd. The line is still asserted, so the
	// unmask fires the interrupt again at once.
	REQUIRE(::eventfd_write(irq.resample.get(), 1) == 0);
	auto e = (*a)->step(-1, kWaitMs);
	REQUIRE(e);
	CHECK(*e == Attachment::Event::Idle);
	CHECK(takeEventfd(irq.trigger.get()) == 1);

	// Handled this time: the cause is acknowledged before the EOI, so nothing fires again.
	write32(*edu, kBar0, edu::kRegIrqAck, 3);
	REQUIRE(::eventfd_write(irq.resample.get(), 1) == 0);
	REQUIRE((*a)->step(-1, kWaitMs));
	CHECK(takeEventfd(irq.trigger.get()) == 0);

	// After detach the device no longer signals KVM's eventfd.
	REQUIRE((*a)->detach(false));
	enableEduIntx(*edu);
	write32(*edu, kBar0, edu::kRegIrqRaise, 1);
	CHECK(takeEventfd(irq.trigger.get()) == 0);
}

TEST_CASE("sim:platform takes the resample fd as its unmask eventfd: the EOI never passes through us", "[crosvm_attach]")
{
	namespace sp = device::sim_platform;
	auto created = device::SimPlatform::create();
	REQUIRE(created);
	device::SimPlatform &dev = **created;
	auto [peer, end] = FakeCrosvm::connectedPair();
	ControlSocket sock(std::move(end));
	auto log = std::make_shared<KvmLog>();
	UniqueFd vm(::eventfd(0, EFD_CLOEXEC));
	answerVmDescriptor(peer, vm.get());
	peer.send(R"({"RegisterMemory2":{"region_id":152043520}})");
	AttachConfig cfg;
	cfg.regions = { { sp::kRegionPage, sp::kRegion0Address } };
	cfg.irqs = { { sp::kIrqIndex, sp::kGicSpi } };
	auto a = Attachment::attach(dev, sock, cfg, recordingFactory(log));
	INFO((a ? "" : a.error().message));
	REQUIRE(a);
	CHECK(peer.receive().json == "\"GetVmDescriptor\"");
	PeerMessage m = peer.receive();
	CHECK(m.json == registerGolden(0, sp::kRegion0Address, sp::kRegion0Address + std::max<uint64_t>(sp::kRegion0Size, kPageSize)));
	CHECK(m.fds.size() == 1);
	REQUIRE(log->calls.size() == 1);
	CHECK(log->calls[0].args.gsi == 96);
	const Attachment::Irq &irq = (*a)->irqs()[0];
	CHECK_FALSE(irq.relay);

	// A software interrupt: enabled in IMSC, raised through ISR.
	write32(dev, sp::kRegionControl, sp::kRegImsc, sp::kIntSoft);
	write32(dev, sp::kRegionControl, sp::kRegIsr, sp::kIntSoft);
	REQUIRE(readable(irq.trigger.get(), kWaitMs));
	CHECK(takeEventfd(irq.trigger.get()) == 1);
	CHECK(dev.irqMasked());
	// EOI with the line still up: the device itself unmasks and fires again; no step() here.
	REQUIRE(::eventfd_write(irq.resample.get(), 1) == 0);
	REQUIRE(readable(irq.trigger.get(), kWaitMs));
	CHECK(takeEventfd(irq.trigger.get()) == 1);
	// Cleared before the EOI: unmasked, quiet.
	write32(dev, sp::kRegionControl, sp::kRegIcr, sp::kIntSoft);
	REQUIRE(::eventfd_write(irq.resample.get(), 1) == 0);
	REQUIRE(dev.waitEventfdActions(2, std::chrono::milliseconds(kWaitMs)));
	CHECK_FALSE(dev.irqMasked());
	CHECK(takeEventfd(irq.trigger.get()) == 0);

	peer.send(R"("Ok")");
	REQUIRE((*a)->detach(true));
	CHECK(peer.receive().json == R"({"UnregisterMemory":{"region_id":152043520}})");
}

TEST_CASE("a failure half-way undoes what was done, at crosvm too", "[crosvm_attach]")
{
	auto edu = makeEdu();
	auto [peer, end] = FakeCrosvm::connectedPair();
	ControlSocket sock(std::move(end));
	UniqueFd vm(::eventfd(0, EFD_CLOEXEC));
	AttachConfig cfg;
	cfg.regions = { { edu::kRamBar, 0x100000000 } };
	cfg.irqs = { { VFIO_PCI_INTX_IRQ_INDEX, 5 } };

	SECTION("KVM refuses the irqfd after the region was registered")
	{
		auto log = std::make_shared<KvmLog>();
		log->failAt = 0;
		answerVmDescriptor(peer, vm.get());
		peer.send(R"({"RegisterMemory2":{"region_id":7}})");
		peer.send(R"("Ok")");
		auto a = Attachment::attach(*edu, sock, cfg, recordingFactory(log));
		REQUIRE_FALSE(a);
		CHECK(a.error().message == "IRQ index 0 -> GSI 5: recording KVM: failing KVM_IRQFD as told");
		CHECK(peer.receive().json == "\"GetVmDescriptor\"");
		CHECK(peer.receive().json == registerGolden(0, 0x100000000, 0x10000f000));
		CHECK(peer.receive().json == R"({"UnregisterMemory":{"region_id":7}})");
		CHECK(log->calls.size() == 1); // nothing to deassign: the assign failed
	}
	SECTION("crosvm refuses RegisterMemory")
	{
		cfg.irqs.clear();
		peer.send(R"({"ErrString":"register memory failed: Os { code: 17, kind: AlreadyExists }"})");
		auto a = Attachment::attach(*edu, sock, cfg);
		REQUIRE_FALSE(a);
		CHECK(a.error().message == "region 2 (0xf000 bytes at 0x100000000): crosvm refused RegisterMemory: "
					   "register memory failed: Os { code: 17, kind: AlreadyExists }");
		CHECK(peer.receive().json == registerGolden(0, 0x100000000, 0x10000f000));
		CHECK(peerQuiet(peer));
	}
	SECTION("the VM fd is not a KVM VM (the real KvmVm): refused before any region is registered")
	{
		answerVmDescriptor(peer, vm.get());
		auto a = Attachment::attach(*edu, sock, cfg);
		REQUIRE_FALSE(a);
		CHECK(a.error().message == "the VM fd crosvm sent (anon_inode:[eventfd]) is not a KVM VM fd");
		CHECK(peer.receive().json == "\"GetVmDescriptor\"");
		CHECK(peerQuiet(peer));
	}
	SECTION("crosvm runs another hypervisor")
	{
		int fds[] = { vm.get() };
		peer.send(R"({"VmDescriptor":{"hypervisor":"Gunyah","vm_fd":0}})", fds);
		auto a = Attachment::attach(*edu, sock, cfg);
		REQUIRE_FALSE(a);
		CHECK(a.error().code == ENOTSUP);
		CHECK(a.error().message == "crosvm runs the VM on Gunyah; attach mode wires interrupts with KVM_IRQFD only");
		CHECK(peer.receive().json == "\"GetVmDescriptor\"");
		CHECK(peerQuiet(peer));
	}
}

TEST_CASE("the placement is checked against the device before anything is sent", "[crosvm_attach]")
{
	auto edu = makeEdu();
	auto refuse = [&](const device::Device &dev, const AttachConfig &cfg) {
		auto plan = planMemory(dev, cfg, 4096);
		REQUIRE_FALSE(plan);
		return plan.error().message;
	};
	AttachConfig cfg;
	cfg.regions = { { kBar0, 0x100000000 } };
	CHECK_THAT(refuse(*edu, cfg), Catch::StartsWith("region 0 is not mmap-able"));
	cfg.regions = { { edu::kRamBar, 0x100000800 } };
	CHECK(refuse(*edu, cfg) == "region 2: guest address 0x100000800 is not aligned to the 4096-byte page");
	cfg.regions = { { 99, 0x100000000 } };
	CHECK_THAT(refuse(*edu, cfg), Catch::StartsWith("region 99: "));
	cfg.regions = { { edu::kRamBar, 0x100000000 }, { edu::kRamBar, 0x200000000 } };
	CHECK(refuse(*edu, cfg) == "region 2 is placed twice");
	cfg.regions = { { edu::kRamBar, 0xfffffffffffff000 } };
	CHECK_THAT(refuse(*edu, cfg), Catch::Contains("wraps around"));
	cfg.regions = { { edu::kRamBar, 0x100000000 } };
	cfg.dmaPool = DmaPool{ "/dev/null", 0x10000e000, 0x2000 };
	CHECK(refuse(*edu, cfg) == "the DMA pool at 0x10000e000 overlaps region 2 at 0x100000000+0xf000");

	// Two mmap-able regions of a fake device: read-only is refused, overlaps are refused.
	testing::FakeDevice fake;
	UniqueFd mem = makeMemfd(0x4000);
	uint32_t rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP;
	fake.setRegion(0, { rw, 0x2000, 0, {}, mem.get() });
	fake.setRegion(1, { VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_MMAP, 0x1000, 0x2000, {}, mem.get() });
	fake.setRegion(2, { rw, 0x1000, 0x3000, {}, mem.get() });
	AttachConfig two;
	two.regions = { { 1, 0x40000000 } };
	CHECK(refuse(fake, two) == "region 1 is not read-write; crosvm's RegisterMemory always maps read-write");
	two.regions = { { 0, 0x40000000 }, { 2, 0x40001000 } };
	CHECK(refuse(fake, two) == "region 2 at 0x40001000 overlaps region 0 at 0x40000000+0x2000");
	two.regions = { { 0, 0x40000000 }, { 2, 0x40002000 } };
	auto plan = planMemory(fake, two, 4096);
	REQUIRE(plan);
	REQUIRE(plan->size() == 2);
	CHECK((*plan)[1].fileOffset == 0x3000);
	CHECK((*plan)[1].guestAddress == 0x40002000);

	AttachConfig irqs;
	irqs.irqs = { { VFIO_PCI_INTX_IRQ_INDEX, 5 }, { VFIO_PCI_MSI_IRQ_INDEX, 5 } };
	CHECK(checkIrqs(*edu, irqs).error().message == "GSI 5 is given to two interrupts; shared interrupts are refused");
	irqs.irqs = { { VFIO_PCI_INTX_IRQ_INDEX, 5 }, { VFIO_PCI_INTX_IRQ_INDEX, 6 } };
	CHECK(checkIrqs(*edu, irqs).error().message == "IRQ index 0 is wired twice");
	irqs.irqs = { { VFIO_PCI_MSIX_IRQ_INDEX, 5 } };
	CHECK(checkIrqs(*edu, irqs).error().message == "IRQ index 2 has no interrupt that can signal an eventfd");
	irqs.irqs = { { 9, 5 } };
	CHECK_THAT(checkIrqs(*edu, irqs).error().message, Catch::StartsWith("IRQ index 9: "));
}

TEST_CASE("the DMA pool is DMA-mapped at IOVA = guest address, and only where the IOMMU translates", "[crosvm_attach]")
{
	auto [peer, end] = FakeCrosvm::connectedPair();
	ControlSocket sock(std::move(end));
	const uint64_t kPool = 0x8000000, kSize = 0x10000; // inside sim:edu's 28-bit DMA mask
	UniqueFd poolFd = makeMemfd(kSize, "dma-pool");
	std::string poolPath = "/proc/self/fd/" + std::to_string(poolFd.get());
	AttachConfig cfg;
	cfg.dmaPool = DmaPool{ poolPath, kPool, kSize };

	SECTION("the device DMAs into the pool crosvm maps")
	{
		auto edu = makeEdu();
		auto a = Attachment::attach(*edu, sock, cfg);
		INFO((a ? "" : a.error().message));
		REQUIRE(a);
		CHECK(peerQuiet(peer)); // crosvm maps the pool itself (--file-backed-mapping)
		auto *pool = static_cast<uint8_t *>(::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, poolFd.get(), 0));
		REQUIRE(pool != MAP_FAILED);
		for (int i = 0; i < 64; i++)
			pool[0x100 + i] = static_cast<uint8_t>(i * 7 + 1);
		enableEduIntx(*edu);
		auto dma = [&](uint64_t src, uint64_t dst, uint32_t cmd) {
			uint64_t v[] = { src, dst, 64 };
			REQUIRE(edu->regionWrite(kBar0, edu::kRegDmaSrc, &v[0], 8));
			REQUIRE(edu->regionWrite(kBar0, edu::kRegDmaDst, &v[1], 8));
			REQUIRE(edu->regionWrite(kBar0, edu::kRegDmaCount, &v[2], 8));
			uint64_t c = cmd;
			REQUIRE(edu->regionWrite(kBar0, edu::kRegDmaCmd, &c, 8));
		};
		dma(kPool + 0x100, edu::kDmaBuffer, edu::kDmaStart);
		dma(edu::kDmaBuffer, kPool + 0x800, edu::kDmaStart | edu::kDmaToRam);
		CHECK(std::memcmp(pool + 0x100, pool + 0x800, 64) == 0);
		CHECK(edu->iommuFaults() == 0);

		REQUIRE((*a)->detach(true));
		enableEduIntx(*edu);
		dma(kPool + 0x100, edu::kDmaBuffer, edu::kDmaStart);
		CHECK(edu->iommuFaults() == 1); // unmapped at detach
		::munmap(pool, kSize);
	}
	SECTION("no IOMMU translation: refused")
	{
		auto platform = device::SimPlatform::create();
		REQUIRE(platform);
		auto a = Attachment::attach(**platform, sock, cfg);
		REQUIRE_FALSE(a);
		CHECK(a.error().code == EPERM);
		CHECK_THAT(a.error().message, Catch::Contains("sim:platform has no IOMMU translation (no-IOMMU mode)"));
	}
	SECTION("outside the IOMMU's IOVA windows, or misaligned: refused")
	{
		auto edu = makeEdu();
		cfg.dmaPool->address = 0xfee00000; // sim:edu's windows skip the x86 MSI range
		auto a = Attachment::attach(*edu, sock, cfg);
		REQUIRE_FALSE(a);
		CHECK_THAT(a.error().message, Catch::Contains("is outside the IOVA windows"));
		cfg.dmaPool->address = kPool + 0x800;
		a = Attachment::attach(*edu, sock, cfg);
		REQUIRE_FALSE(a);
		CHECK_THAT(a.error().message, Catch::Contains("is not aligned to"));
	}
	SECTION("a file VFIO cannot pin long-term: refused")
	{
		TempDir dir;
		struct statfs fs {};
		REQUIRE(::statfs(dir.path().c_str(), &fs) == 0);
		if (fs.f_type == TMPFS_MAGIC) {
			WARN("skipped: " << dir.path() << " is on tmpfs here, so it cannot stand for a disk file");
			return;
		}
		std::string path = dir.file("pool");
		UniqueFd f(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
		REQUIRE(::ftruncate(f.get(), kSize) == 0);
		cfg.dmaPool->path = path;
		auto edu = makeEdu();
		auto a = Attachment::attach(*edu, sock, cfg);
		REQUIRE_FALSE(a);
		CHECK(a.error().message == "DMA pool " + path + ": must be on tmpfs (e.g. /dev/shm) or hugetlbfs");
	}
}

TEST_CASE("the wait ends at crosvm's hang-up or the stop fd; an unasked message is an error", "[crosvm_attach]")
{
	auto edu = makeEdu();
	auto [peer, end] = FakeCrosvm::connectedPair();
	ControlSocket sock(std::move(end));
	peer.send(R"({"RegisterMemory2":{"region_id":1}})");
	AttachConfig cfg;
	cfg.regions = { { edu::kRamBar, 0x100000000 } };
	auto a = Attachment::attach(*edu, sock, cfg);
	REQUIRE(a);
	(void)peer.receive();
	UniqueFd stop(::eventfd(0, EFD_CLOEXEC));

	auto idle = (*a)->step(stop.get(), 0);
	REQUIRE(idle);
	CHECK(*idle == Attachment::Event::Idle);
	SECTION("hang-up")
	{
		peer.hangUp();
		auto e = (*a)->run(stop.get());
		REQUIRE(e);
		CHECK(*e == Attachment::Event::PeerHangup);
	}
	SECTION("stop")
	{
		REQUIRE(::eventfd_write(stop.get(), 1) == 0);
		auto e = (*a)->run(stop.get());
		REQUIRE(e);
		CHECK(*e == Attachment::Event::Stop);
	}
	SECTION("unasked message")
	{
		peer.send(R"("Ok")");
		auto e = (*a)->run(stop.get());
		REQUIRE_FALSE(e);
		CHECK(e.error().code == EPROTO);
		CHECK(e.error().message == "crosvm sent a message nobody asked for: \"\"Ok\"\"");
	}
	REQUIRE((*a)->detach(false));
}
