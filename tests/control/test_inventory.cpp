// SPDX-License-Identifier: Apache-2.0
// Device discovery against a fake sysfs tree: ids, driver, IOMMU group, reset, MMIO, INTx, sims.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>

#include "control/inventory.h"
#include "support/fake_sysfs.h"

using namespace vfio_broker::control;
using vfio_broker::testing::FakePciDevice;
using vfio_broker::testing::FakeResource;
using vfio_broker::testing::FakeSysfs;
using vfio_broker::testing::kFakeIoresourceIo;
using vfio_broker::testing::kFakeIoresourceMem;

namespace {

// A NIC behind a root port, alone in group 9.
FakePciDevice nic()
{
	FakePciDevice d;
	d.bdf = "0000:01:00.0";
	d.parent = "pci0000:00/0000:00:01.0";
	d.vendor = 0x8086;
	d.device = 0x10d3;
	d.driver = "e1000e";
	d.group = 9;
	d.resources = { { 0xfe000000, 0xfe01ffff, kFakeIoresourceMem | 0x40000 } };
	d.irq = 16;
	return d;
}

// The root port the NIC sits behind, in its own group.
void addRootPort(FakeSysfs &sysfs)
{
	FakePciDevice port;
	port.bdf = "0000:00:01.0";
	port.vendor = 0x8086;
	port.device = 0x1901;
	port.driver = "pcieport";
	port.group = 2;
	sysfs.addPciDevice(port);
}

InventoryOptions optionsFor(const FakeSysfs &sysfs, std::vector<std::string> sims = {})
{
	InventoryOptions opts;
	opts.sysfsRoot = sysfs.root();
	opts.simulated = std::move(sims);
	return opts;
}

pb::Device scanOk(const InventoryOptions &opts, const std::string &id)
{
	auto dev = scanDevice(opts, id);
	INFO((dev ? std::string() : dev.error().message));
	REQUIRE(dev.ok());
	return *dev;
}

std::vector<std::string> members(const pb::Device &dev)
{
	return { dev.iommu_group().members().begin(), dev.iommu_group().members().end() };
}

} // namespace

// ---- resolveDeviceId and deviceDaemonArgument

TEST_CASE("resolveDeviceId_everySpellingOfAPciDevice_givesTheCanonicalId", "[inventory]")
{
	FakeSysfs sysfs;
	addRootPort(sysfs);
	sysfs.addPciDevice(nic());
	auto opts = optionsFor(sysfs);
	for (const char *spelling :
	     {"0000:01:00.0", "01:00.0", "0000:01:00.0", "pci:0000:01:00.0", "pci:01:00.0",
	      "/sys/bus/pci/devices/0000:01:00.0", "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0"}) {
		INFO(spelling);
		auto id = resolveDeviceId(opts, spelling);
		REQUIRE(id.ok());
		CHECK(*id == "pci:0000:01:00.0");
	}
}

TEST_CASE("resolveDeviceId_absentPciDevice_isEnoent", "[inventory]")
{
	FakeSysfs sysfs;
	auto id = resolveDeviceId(optionsFor(sysfs), "0000:05:00.0");
	REQUIRE_FALSE(id.ok());
	CHECK(id.error().code == ENOENT);
	CHECK_THAT(id.error().message, Catch::Contains("0000:05:00.0"));
}

TEST_CASE("resolveDeviceId_textThatIsNoDeviceSpec_isEinval", "[inventory]")
{
	FakeSysfs sysfs;
	auto id = resolveDeviceId(optionsFor(sysfs), "my-nic");
	REQUIRE_FALSE(id.ok());
	CHECK(id.error().code == EINVAL);
}

TEST_CASE("resolveDeviceId_configuredSim_isKeptAsIs", "[inventory]")
{
	FakeSysfs sysfs;
	auto id = resolveDeviceId(optionsFor(sysfs, { "sim:edu" }), "sim:edu");
	REQUIRE(id.ok());
	CHECK(*id == "sim:edu");
}

TEST_CASE("resolveDeviceId_simNotConfigured_isEnoent", "[inventory]")
{
	FakeSysfs sysfs;
	auto id = resolveDeviceId(optionsFor(sysfs), "sim:edu");
	REQUIRE_FALSE(id.ok());
	CHECK(id.error().code == ENOENT);
}

TEST_CASE("deviceDaemonArgument_pciIdAndSimId_giveWhatTheDeviceDaemonTakes", "[inventory]")
{
	CHECK(deviceDaemonArgument("pci:0000:01:00.0") == "0000:01:00.0");
	CHECK(deviceDaemonArgument("sim:edu") == "sim:edu");
}

// ---- scanDevice: PCI identity

TEST_CASE("scanDevice_pciDevice_readsIdsDriverAndPathAsUnderSys", "[inventory]")
{
	FakeSysfs sysfs;
	addRootPort(sysfs);
	sysfs.addPciDevice(nic());
	pb::Device dev = scanOk(optionsFor(sysfs), "pci:0000:01:00.0");
	CHECK(dev.id() == "pci:0000:01:00.0");
	CHECK(dev.kind() == pb::DEVICE_KIND_PCI);
	CHECK(dev.pci_address() == "0000:01:00.0");
	CHECK(dev.vendor_id() == 0x8086);
	CHECK(dev.device_id() == 0x10d3);
	CHECK(dev.driver() == "e1000e");
	CHECK(dev.sysfs_path() == "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0");
	CHECK(dev.state() == pb::DEVICE_STATE_UNSPECIFIED);
	CHECK_FALSE(dev.has_policy());
}

TEST_CASE("scanDevice_unboundDevice_hasEmptyDriver", "[inventory]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic();
	d.driver = "";
	sysfs.addPciDevice(d);
	CHECK(scanOk(optionsFor(sysfs), "pci:0000:01:00.0").driver().empty());
}

TEST_CASE("scanDevice_absentDevice_isEnoent", "[inventory]")
{
	FakeSysfs sysfs;
	auto dev = scanDevice(optionsFor(sysfs), "pci:0000:07:00.0");
	REQUIRE_FALSE(dev.ok());
	CHECK(dev.error().code == ENOENT);
}

TEST_CASE("scanDevice_nonCanonicalId_isRefused", "[inventory]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	auto dev = scanDevice(optionsFor(sysfs), "pci:01:00.0");
	REQUIRE_FALSE(dev.ok());
	CHECK(dev.error().code == EINVAL);
}

// ---- scanDevice: IOMMU group

TEST_CASE("scanDevice_groupOfVfioAndUnboundMembers_isViableWithMemberIds", "[inventory]")
{
	FakeSysfs sysfs;
	FakePciDevice a = nic();
	a.driver = "vfio-pci";
	a.group = 7;
	FakePciDevice b = nic();
	b.bdf = "0000:01:00.1";
	b.driver = "";
	b.group = 7;
	sysfs.addPciDevice(a);
	sysfs.addPciDevice(b);
	pb::Device dev = scanOk(optionsFor(sysfs), "pci:0000:01:00.0");
	CHECK(dev.iommu_group().number() == 7);
	CHECK(members(dev) == std::vector<std::string>{ "pci:0000:01:00.0", "pci:0000:01:00.1" });
	CHECK(dev.iommu_group().viable());
	CHECK(dev.iommu_group().blockers().empty());
	CHECK_FALSE(dev.iommu_group().no_iommu());
}

TEST_CASE("scanDevice_memberOnHostDriver_makesGroupNotViableNamingIt", "[inventory]")
{
	FakeSysfs sysfs;
	auto pair = sysfs.addNonViableGroup(12, "0000:02", "vfio-pci");
	pb::Device dev = scanOk(optionsFor(sysfs), "pci:" + pair.device);
	CHECK(dev.iommu_group().number() == 12);
	CHECK_FALSE(dev.iommu_group().viable());
	REQUIRE(dev.iommu_group().blockers_size() == 1);
	CHECK(dev.iommu_group().blockers(0) == "0000:02:00.1 (snd_hda_intel)");
}

TEST_CASE("scanDevice_deviceOnItsOwnHostDriver_blocksItsOwnGroup", "[inventory]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	pb::Device dev = scanOk(optionsFor(sysfs), "pci:0000:01:00.0");
	CHECK_FALSE(dev.iommu_group().viable());
	REQUIRE(dev.iommu_group().blockers_size() == 1);
	CHECK(dev.iommu_group().blockers(0) == "0000:01:00.0 (e1000e)");
}

TEST_CASE("scanDevice_noIommuGroup_isNumberMinusOneFlaggedNoIommu", "[inventory]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic();
	d.group = -1;
	d.driver = "";
	sysfs.addPciDevice(d);
	pb::Device dev = scanOk(optionsFor(sysfs), "pci:0000:01:00.0");
	CHECK(dev.iommu_group().number() == -1);
	CHECK(dev.iommu_group().no_iommu());
	CHECK(members(dev) == std::vector<std::string>{ "pci:0000:01:00.0" });
	CHECK(dev.iommu_group().viable());
}

TEST_CASE("scanDevice_vfioNoiommuGroup_keepsNumberAndIsFlaggedNoIommu", "[inventory]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic();
	d.driver = "vfio-pci";
	d.group = 0;
	sysfs.addPciDevice(d);
	sysfs.setNoIommuGroup(0);
	pb::Device dev = scanOk(optionsFor(sysfs), "pci:0000:01:00.0");
	CHECK(dev.iommu_group().number() == 0);
	CHECK(dev.iommu_group().no_iommu());
	CHECK(dev.iommu_group().viable());
}

// ---- scanDevice: reset, MMIO, interrupts

TEST_CASE("scanDevice_resetFiles_giveSupportAndMethod", "[inventory]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic();
	d.resetMethod = "flr bus";
	sysfs.addPciDevice(d);
	pb::Device dev = scanOk(optionsFor(sysfs), "pci:0000:01:00.0");
	CHECK(dev.reset_supported());
	CHECK(dev.reset_method() == "flr bus");
}

TEST_CASE("scanDevice_noResetFiles_isUnsupportedWithNoMethod", "[inventory]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic();
	d.reset = false;
	d.resetMethod = "";
	sysfs.addPciDevice(d);
	pb::Device dev = scanOk(optionsFor(sysfs), "pci:0000:01:00.0");
	CHECK_FALSE(dev.reset_supported());
	CHECK(dev.reset_method().empty());
}

TEST_CASE("scanDevice_resourceFile_givesNonEmptyMemoryBarsAndRomOnly", "[inventory]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic();
	d.resources = {
		{ 0xfe000000, 0xfe01ffff, kFakeIoresourceMem },                // BAR0
		{ 0, 0, 0 },                                                   // unused BAR1
		{ 0xe000, 0xe01f, kFakeIoresourceIo },                         // I/O BAR2
		{ 0x4000000000, 0x40000fffff, kFakeIoresourceMem | 0x102000 }, // 64-bit prefetchable BAR3
		{ 0, 0, 0 },                                                   // BAR4: BAR3's upper half
		{ 0, 0, 0 },                                                   // BAR5
		{ 0xfe100000, 0xfe17ffff, kFakeIoresourceMem | 0x4000 },       // expansion ROM
		{ 0x4001000000, 0x4001ffffff, kFakeIoresourceMem },            // SR-IOV VF BAR0: the VFs'
	};
	sysfs.addPciDevice(d);
	pb::Device dev = scanOk(optionsFor(sysfs), "pci:0000:01:00.0");
	REQUIRE(dev.mmio_size() == 3);
	CHECK(dev.mmio(0).address() == 0xfe000000);
	CHECK(dev.mmio(0).size() == 0x20000);
	CHECK(dev.mmio(1).address() == 0x4000000000);
	CHECK(dev.mmio(1).size() == 0x100000);
	CHECK(dev.mmio(2).address() == 0xfe100000);
	CHECK(dev.mmio(2).size() == 0x80000);
}

TEST_CASE("scanDevice_irqWithInterruptPin_isOnePciIntxLine", "[inventory]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	pb::Device dev = scanOk(optionsFor(sysfs), "pci:0000:01:00.0");
	REQUIRE(dev.interrupts_size() == 1);
	CHECK(dev.interrupts(0).controller() == "pci-intx");
	CHECK(std::vector<uint32_t>(dev.interrupts(0).specifier().begin(),
				    dev.interrupts(0).specifier().end()) == std::vector<uint32_t>{16});
}

TEST_CASE("scanDevice_irqZero_hasNoInterrupt", "[inventory]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic();
	d.irq = 0;
	sysfs.addPciDevice(d);
	CHECK(scanOk(optionsFor(sysfs), "pci:0000:01:00.0").interrupts().empty());
}

TEST_CASE("scanDevice_noInterruptPin_hasNoInterruptDespiteIrq", "[inventory]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic();
	d.interruptPin = 0; // MSI-only: "irq" may show an MSI vector
	sysfs.addPciDevice(d);
	CHECK(scanOk(optionsFor(sysfs), "pci:0000:01:00.0").interrupts().empty());
}

TEST_CASE("scanDevice_unreadableConfig_letsIrqAloneDecide", "[inventory]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic();
	d.interruptPin = 0;
	sysfs.addPciDevice(d);
	sysfs.removeFile(sysfs.deviceDir(d.bdf) + "/config");
	CHECK(scanOk(optionsFor(sysfs), "pci:0000:01:00.0").interrupts_size() == 1);
}

TEST_CASE("scanDevice_garbageInAttributeFiles_leavesDefaultsAndKeepsGoodLines", "[inventory]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic();
	sysfs.addPciDevice(d);
	std::string dir = sysfs.deviceDir(d.bdf);
	sysfs.writeFile(dir + "/vendor", "0xZZZZ\n");
	sysfs.writeFile(dir + "/device", "0x123456789\n"); // wider than 16 bits
	sysfs.writeFile(dir + "/irq", "-5\n");
	sysfs.writeFile(dir + "/reset_method", std::string("flr\0bus\x01", 8));
	sysfs.writeFile(dir + "/resource", "garbage\n0x1 0x2\n0xffffffffffffffffff 0x1 0x200\n"
					   "0xfe000000 0xfe000fff 0x200\n0xfe002000 0xfe001000 0x200\n"
					   "0x0 0xffffffffffffffff 0x200\n" +
					   std::string(100000, 'x'));
	pb::Device dev = scanOk(optionsFor(sysfs), "pci:0000:01:00.0");
	CHECK(dev.vendor_id() == 0);
	CHECK(dev.device_id() == 0);
	CHECK(dev.interrupts().empty());
	CHECK(dev.reset_method().empty());
	REQUIRE(dev.mmio_size() == 1);
	CHECK(dev.mmio(0).address() == 0xfe000000);
	CHECK(dev.mmio(0).size() == 0x1000);
}

TEST_CASE("scanDevice_attributeFilesMissing_leavesDefaults", "[inventory]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic();
	sysfs.addPciDevice(d);
	std::string dir = sysfs.deviceDir(d.bdf);
	for (const char *file : { "/vendor", "/device", "/irq", "/resource", "/reset_method", "/config" })
		sysfs.removeFile(dir + file);
	pb::Device dev = scanOk(optionsFor(sysfs), "pci:0000:01:00.0");
	CHECK(dev.vendor_id() == 0);
	CHECK(dev.mmio().empty());
	CHECK(dev.interrupts().empty());
	CHECK(dev.driver() == "e1000e");
}

// ---- simulated devices

TEST_CASE("scanDevice_simEdu_isSimulatedWithViableNoGroupAndReset", "[inventory]")
{
	FakeSysfs sysfs;
	pb::Device dev = scanOk(optionsFor(sysfs, { "sim:edu" }), "sim:edu");
	CHECK(dev.id() == "sim:edu");
	CHECK(dev.kind() == pb::DEVICE_KIND_SIMULATED);
	CHECK(dev.vendor_id() == 0x1234);
	CHECK(dev.device_id() == 0x11e8);
	CHECK(dev.iommu_group().number() == -1);
	CHECK(dev.iommu_group().viable());
	CHECK_FALSE(dev.iommu_group().no_iommu());
	CHECK(members(dev) == std::vector<std::string>{ "sim:edu" });
	CHECK(dev.reset_supported());
	CHECK(dev.driver().empty());
	CHECK(dev.mmio().empty());
	CHECK(dev.interrupts().empty());
}

TEST_CASE("scanDevice_simNotConfigured_isEnoent", "[inventory]")
{
	FakeSysfs sysfs;
	auto dev = scanDevice(optionsFor(sysfs), "sim:edu");
	REQUIRE_FALSE(dev.ok());
	CHECK(dev.error().code == ENOENT);
}

// ---- scanAll

TEST_CASE("scanAll_pciAndSimDevices_areListedSortedById", "[inventory]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	addRootPort(sysfs);
	sysfs.addNonViableGroup(12, "0000:02");
	auto all = scanAll(optionsFor(sysfs, { "sim:edu" }));
	REQUIRE(all.ok());
	std::vector<std::string> ids;
	for (const pb::Device &d : *all)
		ids.push_back(d.id());
	CHECK(ids == std::vector<std::string>{ "pci:0000:00:01.0", "pci:0000:01:00.0", "pci:0000:02:00.0",
					       "pci:0000:02:00.1", "sim:edu" });
}

TEST_CASE("scanAll_membersOfOneGroup_reportTheSameGroup", "[inventory]")
{
	FakeSysfs sysfs;
	sysfs.addNonViableGroup(12, "0000:02");
	auto all = scanAll(optionsFor(sysfs));
	REQUIRE(all.ok());
	REQUIRE(all->size() == 2);
	for (const pb::Device &d : *all) {
		INFO(d.id());
		CHECK(d.iommu_group().number() == 12);
		CHECK(members(d) == std::vector<std::string>{ "pci:0000:02:00.0", "pci:0000:02:00.1" });
		CHECK_FALSE(d.iommu_group().viable());
	}
}

TEST_CASE("scanAll_deviceGoneAfterItWasListed_isSkipped", "[inventory]")
{
	FakeSysfs sysfs;
	addRootPort(sysfs);
	sysfs.addPciDevice(nic());
	// What readdir of bus/pci/devices sees when the device is unplugged under it: the
	// directory is gone, its bus link still listed.
	sysfs.removeTree(sysfs.deviceDir("0000:01:00.0"));
	auto all = scanAll(optionsFor(sysfs));
	REQUIRE(all.ok());
	REQUIRE(all->size() == 1);
	CHECK(all->front().id() == "pci:0000:00:01.0");
}

TEST_CASE("scanDevice_groupDirectoryGoneWhileDevicePresent_isAnErrorNotAbsence", "[inventory]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	sysfs.removeTree("kernel/iommu_groups/9");
	auto dev = scanDevice(optionsFor(sysfs), "pci:0000:01:00.0");
	REQUIRE_FALSE(dev.ok());
	CHECK(dev.error().code != ENOENT);
	CHECK_THAT(dev.error().message, Catch::Contains("0000:01:00.0"));
}

TEST_CASE("scanAll_noPciBus_listsOnlySimulatedDevices", "[inventory]")
{
	FakeSysfs sysfs;
	sysfs.removeTree("bus/pci");
	auto all = scanAll(optionsFor(sysfs, { "sim:edu" }));
	REQUIRE(all.ok());
	REQUIRE(all->size() == 1);
	CHECK(all->front().id() == "sim:edu");
}

TEST_CASE("scanAll_manyGeneratedDevices_areAllListed", "[inventory]")
{
	FakeSysfs sysfs;
	auto bdfs = sysfs.addPciDevices(600);
	auto all = scanAll(optionsFor(sysfs));
	REQUIRE(all.ok());
	REQUIRE(all->size() == 600);
	// Generated BDFs are already in id order.
	for (size_t i = 0; i < bdfs.size(); i++)
		REQUIRE((*all)[i].id() == "pci:" + bdfs[i]);
	CHECK((*all)[599].iommu_group().number() == 1599);
}
