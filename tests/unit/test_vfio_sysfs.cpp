// SPDX-License-Identifier: Apache-2.0
// Unit tests for the sysfs helpers of the VFIO PCI backend, run against a fake sysfs tree in a temporary directory.
#include <catch2/catch.hpp>

#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "device/vfio_pci.h"
#include "device/vfio_sysfs.h"

using namespace vfio_broker::device;
namespace fs = std::filesystem;

namespace {

// A throwaway tree shaped like /sys: device directories under devices/, relative symlinks for
// bus/pci/devices, driver and iommu_group, and kernel/iommu_groups/<N>/devices, as the kernel lays them out.
class FakeSysfs
{
public:
	FakeSysfs()
	{
		char tmpl[] = "/tmp/vb-fake-sysfs-XXXXXX";
		REQUIRE(::mkdtemp(tmpl) != nullptr);
		root_ = tmpl;
		fs::create_directories(root_ / "devices");
		fs::create_directories(root_ / "bus/pci/devices");
		fs::create_directories(root_ / "kernel/iommu_groups");
	}
	~FakeSysfs()
	{
		std::error_code ec;
		fs::remove_all(root_, ec);
	}
	FakeSysfs(const FakeSysfs &) = delete;
	FakeSysfs &operator=(const FakeSysfs &) = delete;

	std::string root() const { return root_.string(); }

	// devPath is below devices/, e.g. "pci0000:00/0000:00:01.0/0000:01:00.0"; driver "" = unbound;
	// group "" = no IOMMU group.
	void addPciDevice(const std::string &devPath, const std::string &driver, const std::string &group)
	{
		fs::path dir = root_ / "devices" / devPath;
		std::string bdf = dir.filename().string();
		fs::create_directories(dir);
		link(root_ / "bus/pci/devices" / bdf, dir);
		if (!driver.empty()) {
			fs::path driverDir = root_ / "bus/pci/drivers" / driver;
			fs::create_directories(driverDir);
			link(dir / "driver", driverDir);
		}
		if (!group.empty()) {
			fs::path groupDir = root_ / "kernel/iommu_groups" / group;
			fs::create_directories(groupDir / "devices");
			link(dir / "iommu_group", groupDir);
			link(groupDir / "devices" / bdf, dir);
		}
	}

	void addDirectory(const std::string &relative) { fs::create_directories(root_ / relative); }

	void writeFile(const std::string &relative, const std::string &text)
	{
		std::ofstream(root_ / relative) << text;
	}

private:
	static void link(const fs::path &at, const fs::path &target)
	{
		fs::create_directories(at.parent_path());
		fs::create_symlink(fs::relative(target, at.parent_path()), at);
	}

	fs::path root_;
};

// A GPU with its audio function behind a root port, each GPU function in group 7, plus a lone NIC.
void addTypicalTopology(FakeSysfs &sysfs)
{
	sysfs.addPciDevice("pci0000:00/0000:00:01.0", "pcieport", "2");
	sysfs.addPciDevice("pci0000:00/0000:00:01.0/0000:01:00.0", "vfio-pci", "7");
	sysfs.addPciDevice("pci0000:00/0000:00:01.0/0000:01:00.1", "snd_hda_intel", "7");
	sysfs.addPciDevice("pci0000:00/0000:00:02.0", "", "3");
}

std::string canonical(const std::string &path)
{
	return fs::canonical(path).string();
}

} // namespace

// ---- normalizeBdf

TEST_CASE("normalizeBdf_fullAddress_isReturnedLowerCase", "[vfio_sysfs]")
{
	CHECK(normalizeBdf("0000:01:00.0") == "0000:01:00.0");
	CHECK(normalizeBdf("0000:AF:1F.7") == "0000:af:1f.7");
}

TEST_CASE("normalizeBdf_shortAddress_getsDomainZero", "[vfio_sysfs]")
{
	CHECK(normalizeBdf("01:00.0") == "0000:01:00.0");
}

TEST_CASE("normalizeBdf_vmdDomainAbove16Bits_isKept", "[vfio_sysfs]")
{
	CHECK(normalizeBdf("10000:e1:00.0") == "10000:e1:00.0");
}

TEST_CASE("normalizeBdf_malformedAddresses_areRejected", "[vfio_sysfs]")
{
	for (const char *bad : { "", "0000:01:00", "0000:01:20.0", "0000:01:00.8", "000:01:00.0", "0000:1:00.0",
				 "0000:01:0.0", "0000:01:00.00", "x0000:01:00.0", "0000:01:00.0/..", "0000:0g:00.0",
				 ":01:00.0", "a:0000:01:00.0", "01:00.0 " }) {
		INFO(bad);
		CHECK_FALSE(normalizeBdf(bad).has_value());
	}
}

// ---- resolvePciDevice

TEST_CASE("resolvePciDevice_fullBdf_givesCanonicalDevicePath", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	auto loc = resolvePciDevice(sysfs.root(), "0000:01:00.0");
	REQUIRE(loc.ok());
	CHECK(loc->bdf == "0000:01:00.0");
	CHECK(loc->path == canonical(sysfs.root() + "/devices/pci0000:00/0000:00:01.0/0000:01:00.0"));
}

TEST_CASE("resolvePciDevice_shortUpperCaseBdf_resolvesToDomainZeroDevice", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	auto loc = resolvePciDevice(sysfs.root(), "01:00.1");
	REQUIRE(loc.ok());
	CHECK(loc->bdf == "0000:01:00.1");
}

TEST_CASE("resolvePciDevice_slashSysBusPath_isTakenRelativeToRoot", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	auto loc = resolvePciDevice(sysfs.root(), "/sys/bus/pci/devices/0000:01:00.0");
	REQUIRE(loc.ok());
	CHECK(loc->bdf == "0000:01:00.0");
	CHECK(loc->path == canonical(sysfs.root() + "/devices/pci0000:00/0000:00:01.0/0000:01:00.0"));
}

TEST_CASE("resolvePciDevice_slashSysDevicesPath_isTakenRelativeToRoot", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	auto loc = resolvePciDevice(sysfs.root(), "/sys/devices/pci0000:00/0000:00:02.0");
	REQUIRE(loc.ok());
	CHECK(loc->bdf == "0000:00:02.0");
}

TEST_CASE("resolvePciDevice_pathAlreadyUnderRootWithTrailingSlash_resolves", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	auto loc = resolvePciDevice(sysfs.root() + "/", sysfs.root() + "/bus/pci/devices/0000:00:01.0/");
	REQUIRE(loc.ok());
	CHECK(loc->bdf == "0000:00:01.0");
}

TEST_CASE("resolvePciDevice_unknownBdf_failsWithEnodevNamingIt", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	auto loc = resolvePciDevice(sysfs.root(), "0000:05:00.0");
	REQUIRE_FALSE(loc.ok());
	CHECK(loc.error().code == ENODEV);
	CHECK_THAT(loc.error().message, Catch::Contains("0000:05:00.0"));
}

TEST_CASE("resolvePciDevice_pathOutsideSys_isRefused", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	auto loc = resolvePciDevice(sysfs.root(), "/etc/passwd");
	REQUIRE_FALSE(loc.ok());
	CHECK(loc.error().code == EINVAL);
}

TEST_CASE("resolvePciDevice_pathEscapingWithDotDot_isRefused", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	sysfs.addDirectory("bus/pci/drivers/vfio-pci/0000:09:00.0");
	CHECK_FALSE(resolvePciDevice(sysfs.root(), "/sys/bus/pci/devices/../../..").ok());
	// Named like a PCI device but not a device directory.
	CHECK_FALSE(resolvePciDevice(sysfs.root(), "/sys/bus/pci/drivers/vfio-pci/0000:09:00.0").ok());
}

TEST_CASE("resolvePciDevice_nonPciDeviceDirectory_isRefused", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	sysfs.addDirectory("devices/platform/serial8250");
	sysfs.addDirectory("devices/platform/0000:0a:00.0"); // PCI-looking name, but not on the PCI bus
	auto loc = resolvePciDevice(sysfs.root(), "/sys/devices/platform/serial8250");
	REQUIRE_FALSE(loc.ok());
	CHECK_THAT(loc.error().message, Catch::Contains("not a PCI device"));
	CHECK_FALSE(resolvePciDevice(sysfs.root(), "/sys/devices/platform/0000:0a:00.0").ok());
}

TEST_CASE("resolvePciDevice_relativeGarbageSpec_isRefused", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	auto loc = resolvePciDevice(sysfs.root(), "eth0");
	REQUIRE_FALSE(loc.ok());
	CHECK(loc.error().code == EINVAL);
	CHECK_THAT(loc.error().message, Catch::Contains("neither a PCI address"));
}

TEST_CASE("resolvePciDevice_missingRoot_fails", "[vfio_sysfs]")
{
	CHECK_FALSE(resolvePciDevice("/nonexistent/vb-sysfs-root", "0000:01:00.0").ok());
}

// ---- drivers and groups

TEST_CASE("readDriver_boundDevice_givesDriverName", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	auto driver = readDriver(sysfs.root(), "0000:01:00.1");
	REQUIRE(driver.ok());
	CHECK(*driver == "snd_hda_intel");
}

TEST_CASE("readDriver_unboundDevice_givesEmptyString", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	auto driver = readDriver(sysfs.root(), "0000:00:02.0");
	REQUIRE(driver.ok());
	CHECK(driver->empty());
}

TEST_CASE("readDriver_nonCanonicalAddress_isRefused", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	CHECK_FALSE(readDriver(sysfs.root(), "../../etc").ok());
}

TEST_CASE("iommuGroupOf_deviceInGroup_givesGroupNumber", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	auto group = iommuGroupOf(sysfs.root(), "0000:01:00.0");
	REQUIRE(group.ok());
	CHECK(*group == "7");
}

TEST_CASE("iommuGroupOf_deviceWithoutGroup_failsWithEnodevAndHint", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice("pci0000:00/0000:00:03.0", "vfio-pci", "");
	auto group = iommuGroupOf(sysfs.root(), "0000:00:03.0");
	REQUIRE_FALSE(group.ok());
	CHECK(group.error().code == ENODEV);
	CHECK_THAT(group.error().message, Catch::Contains("no IOMMU group"));
}

TEST_CASE("listGroupMembers_givesSortedMemberNames", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice("pci0000:00/0000:00:01.0/0000:01:00.1", "snd_hda_intel", "7");
	sysfs.addPciDevice("pci0000:00/0000:00:01.0/0000:01:00.0", "vfio-pci", "7");
	auto members = listGroupMembers(sysfs.root(), "7");
	REQUIRE(members.ok());
	CHECK(*members == std::vector<std::string>{ "0000:01:00.0", "0000:01:00.1" });
}

TEST_CASE("listGroupMembers_unknownOrMalformedGroup_fails", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	CHECK_FALSE(listGroupMembers(sysfs.root(), "42").ok());
	CHECK_FALSE(listGroupMembers(sysfs.root(), "../7").ok());
}

TEST_CASE("isNoIommuGroup_readsGroupName", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice("pci0000:00/0000:00:04.0", "vfio-pci", "0");
	sysfs.addPciDevice("pci0000:00/0000:00:05.0", "vfio-pci", "1");
	sysfs.writeFile("kernel/iommu_groups/0/name", "vfio-noiommu\n");
	CHECK(isNoIommuGroup(sysfs.root(), "0"));
	CHECK_FALSE(isNoIommuGroup(sysfs.root(), "1"));
}

// ---- viability

TEST_CASE("driverKeepsGroupViable_acceptsVfioStubPortAndUnbound", "[vfio_sysfs]")
{
	CHECK(driverKeepsGroupViable(""));
	CHECK(driverKeepsGroupViable("vfio-pci"));
	CHECK(driverKeepsGroupViable("mlx5_vfio_pci"));
	CHECK(driverKeepsGroupViable("pci-stub"));
	CHECK(driverKeepsGroupViable("pcieport"));
	CHECK_FALSE(driverKeepsGroupViable("snd_hda_intel"));
	CHECK_FALSE(driverKeepsGroupViable("nvme"));
}

TEST_CASE("findViabilityBlockers_memberOnHostDriver_isNamedWithItsDriver", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	auto blockers = findViabilityBlockers(sysfs.root(), "7");
	REQUIRE(blockers.ok());
	REQUIRE(blockers->size() == 1);
	CHECK((*blockers)[0].device == "0000:01:00.1");
	CHECK((*blockers)[0].driver == "snd_hda_intel");
}

TEST_CASE("findViabilityBlockers_vfioStubPortAndUnboundMembers_blockNothing", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice("pci0000:00/0000:00:1c.0", "pcieport", "9");
	sysfs.addPciDevice("pci0000:00/0000:00:1c.0/0000:02:00.0", "vfio-pci", "9");
	sysfs.addPciDevice("pci0000:00/0000:00:1c.0/0000:02:00.1", "pci-stub", "9");
	sysfs.addPciDevice("pci0000:00/0000:00:1c.0/0000:02:00.2", "", "9");
	auto blockers = findViabilityBlockers(sysfs.root(), "9");
	REQUIRE(blockers.ok());
	CHECK(blockers->empty());
}

TEST_CASE("findViabilityBlockers_severalHostDrivers_areAllNamedInOrder", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice("pci0000:00/0000:00:1f.3", "i801_smbus", "4");
	sysfs.addPciDevice("pci0000:00/0000:00:1f.0", "lpc_ich", "4");
	sysfs.addPciDevice("pci0000:00/0000:00:1f.2", "vfio-pci", "4");
	auto blockers = findViabilityBlockers(sysfs.root(), "4");
	REQUIRE(blockers.ok());
	REQUIRE(blockers->size() == 2);
	CHECK(describeNonViableGroup("4", *blockers) ==
	      "IOMMU group 4 is not viable: 0000:00:1f.0 is bound to lpc_ich, 0000:00:1f.3 is bound to "
	      "i801_smbus; bind every member to vfio-pci or unbind it");
}

TEST_CASE("describeNonViableGroup_oneBlocker_namesDeviceDriverAndRemedy", "[vfio_sysfs]")
{
	CHECK(describeNonViableGroup("7", { GroupBlocker{ "0000:01:00.1", "snd_hda_intel" } }) ==
	      "IOMMU group 7 is not viable: 0000:01:00.1 is bound to snd_hda_intel; bind every member to "
	      "vfio-pci or unbind it");
}

TEST_CASE("describeNonViableGroup_noBlockerVisible_stillGivesRemedy", "[vfio_sysfs]")
{
	auto msg = describeNonViableGroup("7", {});
	CHECK_THAT(msg, Catch::StartsWith("IOMMU group 7 is not viable: "));
	CHECK_THAT(msg, Catch::EndsWith("bind every member to vfio-pci or unbind it"));
}

// ---- openVfioPciDevice refuses early, before any ioctl, with the reason in words

namespace {

VfioOpenOptions fakeOptions(const FakeSysfs &sysfs)
{
	VfioOpenOptions opts;
	opts.sysfsRoot = sysfs.root();
	opts.devRoot = sysfs.root() + "/dev"; // no vfio nodes in it
	return opts;
}

} // namespace

TEST_CASE("openVfioPciDevice_deviceOnHostDriver_namesTheDriver", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice("pci0000:00/0000:00:1d.0/0000:03:00.0", "nvme", "12");
	auto dev = openVfioPciDevice("03:00.0", fakeOptions(sysfs));
	REQUIRE_FALSE(dev.ok());
	CHECK(dev.error().code == EBUSY);
	CHECK(dev.error().message == "0000:03:00.0 is bound to nvme, not vfio-pci; unbind it and bind it to vfio-pci");
}

TEST_CASE("openVfioPciDevice_unboundDevice_saysItHasNoDriver", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	auto dev = openVfioPciDevice("0000:00:02.0", fakeOptions(sysfs));
	REQUIRE_FALSE(dev.ok());
	CHECK(dev.error().code == ENODEV);
	CHECK_THAT(dev.error().message, Catch::Contains("not bound to any driver"));
}

TEST_CASE("openVfioPciDevice_deviceWithoutIommuGroup_failsWithEnodev", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice("pci0000:00/0000:00:03.0", "vfio-pci", "");
	auto dev = openVfioPciDevice("0000:00:03.0", fakeOptions(sysfs));
	REQUIRE_FALSE(dev.ok());
	CHECK(dev.error().code == ENODEV);
	CHECK_THAT(dev.error().message, Catch::Contains("no IOMMU group"));
}

TEST_CASE("openVfioPciDevice_missingGroupNode_namesTheNode", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	addTypicalTopology(sysfs);
	auto dev = openVfioPciDevice("/sys/bus/pci/devices/0000:01:00.0", fakeOptions(sysfs));
	REQUIRE_FALSE(dev.ok());
	CHECK(dev.error().code == ENOENT);
	CHECK_THAT(dev.error().message, Catch::Contains(sysfs.root() + "/dev/vfio/7 does not exist"));
}

TEST_CASE("openVfioPciDevice_noIommuGroupWithoutNode_namesTheNoIommuNode", "[vfio_sysfs]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice("pci0000:00/0000:00:04.0", "vfio-pci", "0");
	sysfs.writeFile("kernel/iommu_groups/0/name", "vfio-noiommu\n");
	auto dev = openVfioPciDevice("0000:00:04.0", fakeOptions(sysfs));
	REQUIRE_FALSE(dev.ok());
	CHECK_THAT(dev.error().message, Catch::Contains("/dev/vfio/noiommu-0 does not exist"));
}
