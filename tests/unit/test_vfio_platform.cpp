// SPDX-License-Identifier: Apache-2.0
// Unit tests for the vfio-platform/vfio-amba backend's checks before any ioctl, on a fake sysfs tree in a temporary directory.
#include <catch2/catch.hpp>

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "device/open_device.h"
#include "device/vfio_platform.h"

using namespace vfio_broker::device;
namespace fs = std::filesystem;

namespace {

// A throwaway tree shaped like an arm64 /sys: device directories under devices/platform, their
// subsystem, driver and iommu_group symlinks, bus/<bus>/devices listings, kernel/iommu_groups.
class FakePlatformSysfs
{
public:
	FakePlatformSysfs()
	{
		char tmpl[] = "/tmp/vb-fake-platform-XXXXXX";
		REQUIRE(::mkdtemp(tmpl) != nullptr);
		root_ = tmpl;
		for (const char *bus : { "platform", "amba", "pci" })
			fs::create_directories(root_ / "bus" / bus / "devices");
		fs::create_directories(root_ / "kernel/iommu_groups");
	}
	~FakePlatformSysfs()
	{
		std::error_code ec;
		fs::remove_all(root_, ec);
	}
	FakePlatformSysfs(const FakePlatformSysfs &) = delete;
	FakePlatformSysfs &operator=(const FakePlatformSysfs &) = delete;

	std::string root() const { return root_.string(); }

	// devPath below devices/ ("platform/9010000.pl031"); driver "" = unbound; group "" = none;
	// noIommu names the group "vfio-noiommu" as vfio does for the groups it creates.
	void addDevice(const std::string &devPath, const std::string &bus, const std::string &driver,
		       const std::string &group, bool noIommu = false)
	{
		fs::path dir = root_ / "devices" / devPath;
		std::string name = dir.filename().string();
		fs::create_directories(dir);
		link(dir / "subsystem", root_ / "bus" / bus);
		link(root_ / "bus" / bus / "devices" / name, dir);
		if (!driver.empty()) {
			fs::path driverDir = root_ / "bus" / bus / "drivers" / driver;
			fs::create_directories(driverDir);
			link(dir / "driver", driverDir);
		}
		if (!group.empty()) {
			fs::path groupDir = root_ / "kernel/iommu_groups" / group;
			fs::create_directories(groupDir / "devices");
			link(dir / "iommu_group", groupDir);
			link(groupDir / "devices" / name, dir);
			if (noIommu)
				std::ofstream(groupDir / "name") << "vfio-noiommu\n";
		}
	}

private:
	static void link(const fs::path &at, const fs::path &target)
	{
		fs::create_directories(at.parent_path());
		fs::create_symlink(fs::relative(target, at.parent_path()), at);
	}

	fs::path root_;
};

VfioOpenOptions fakeOptions(const FakePlatformSysfs &sysfs)
{
	VfioOpenOptions opts;
	opts.sysfsRoot = sysfs.root();
	opts.devRoot = sysfs.root() + "/dev"; // no vfio nodes in it
	return opts;
}

// QEMU virt as the arm64 lab sees it: the PL031 on the AMBA bus, two virtio-mmio transports on the
// platform bus, and a PCI device behind the platform PCIe host bridge.
void addVirtTopology(FakePlatformSysfs &sysfs)
{
	sysfs.addDevice("platform/9010000.pl031", "amba", "vfio-amba", "0", true);
	sysfs.addDevice("platform/a000000.virtio_mmio", "platform", "vfio-platform", "1", true);
	sysfs.addDevice("platform/a000200.virtio_mmio", "platform", "", "");
	sysfs.addDevice("platform/4010000000.pcie/pci0000:00/0000:00:01.0", "pci", "virtio-pci", "");
}

} // namespace

TEST_CASE("resolvePlatformDevice_everySpecForm_findsTheDeviceAndItsBus", "[vfio_platform]")
{
	FakePlatformSysfs sysfs;
	addVirtTopology(sysfs);
	const std::vector<std::string> specs = { "amba:9010000.pl031", "/sys/bus/amba/devices/9010000.pl031",
						 "/sys/devices/platform/9010000.pl031/",
						 sysfs.root() + "/bus/amba/devices/9010000.pl031" };
	for (const std::string &spec : specs) {
		INFO(spec);
		auto loc = resolvePlatformDevice(sysfs.root(), spec);
		REQUIRE(loc.ok());
		CHECK(loc->name == "9010000.pl031");
		CHECK(loc->bus == "amba");
	}
	auto vm = resolvePlatformDevice(sysfs.root(), "platform:a000000.virtio_mmio");
	REQUIRE(vm.ok());
	CHECK(vm->bus == "platform");
	CHECK(std::string(vfioDriverForBus(vm->bus)) == "vfio-platform");
	CHECK(std::string(vfioDriverForBus("amba")) == "vfio-amba");
}

TEST_CASE("resolvePlatformDevice_pciDeviceUnderThePlatformTree_isRefusedNamingItsBus", "[vfio_platform]")
{
	FakePlatformSysfs sysfs;
	addVirtTopology(sysfs);
	auto loc = resolvePlatformDevice(sysfs.root(), "/sys/devices/platform/4010000000.pcie/pci0000:00/0000:00:01.0");
	REQUIRE_FALSE(loc.ok());
	CHECK(loc.error().code == EINVAL);
	CHECK_THAT(loc.error().message, Catch::Contains("0000:00:01.0 is a device on the pci bus") &&
						Catch::Contains("only platform and AMBA devices"));
}

TEST_CASE("resolvePlatformDevice_badSpecs_areRefused", "[vfio_platform]")
{
	FakePlatformSysfs sysfs;
	addVirtTopology(sysfs);
	// Wrong bus for the id, a path escape, a missing device, paths outside sysfs and outside devices/.
	CHECK(resolvePlatformDevice(sysfs.root(), "platform:9010000.pl031").error().code == ENODEV);
	CHECK(resolvePlatformDevice(sysfs.root(), "platform:../../../etc").error().code == EINVAL);
	CHECK(resolvePlatformDevice(sysfs.root(), "amba:").error().code == EINVAL);
	CHECK(resolvePlatformDevice(sysfs.root(), "/sys/bus/platform/devices/nothing").error().code == ENODEV);
	CHECK(resolvePlatformDevice(sysfs.root(), "/etc/passwd").error().code == EINVAL);
	CHECK(resolvePlatformDevice(sysfs.root(), "/sys/bus/amba").error().code == EINVAL);
	CHECK(resolvePlatformDevice(sysfs.root(), "9010000.pl031").error().code == EINVAL);
}

TEST_CASE("namesPlatformDevice_routesByBusNotByPath", "[vfio_platform]")
{
	FakePlatformSysfs sysfs;
	addVirtTopology(sysfs);
	CHECK(namesPlatformDevice(sysfs.root(), "amba:9010000.pl031"));
	CHECK(namesPlatformDevice(sysfs.root(), "platform:a000000.virtio_mmio"));
	CHECK(namesPlatformDevice(sysfs.root(), "/sys/bus/platform/devices/does-not-exist"));
	CHECK(namesPlatformDevice(sysfs.root(), "/sys/devices/platform/a000000.virtio_mmio"));
	// A PCI device behind the platform PCIe host, PCI addresses and simulated devices stay elsewhere.
	CHECK_FALSE(namesPlatformDevice(sysfs.root(), "/sys/devices/platform/4010000000.pcie/pci0000:00/0000:00:01.0"));
	CHECK_FALSE(namesPlatformDevice(sysfs.root(), "0000:00:01.0"));
	CHECK_FALSE(namesPlatformDevice(sysfs.root(), "sim:edu"));
}

TEST_CASE("openVfioPlatformDevice_deviceOnHostDriver_namesTheDriverAndTheVfioOne", "[vfio_platform]")
{
	FakePlatformSysfs sysfs;
	sysfs.addDevice("platform/9010000.pl031", "amba", "rtc-pl031", "");
	auto dev = openVfioPlatformDevice("amba:9010000.pl031", fakeOptions(sysfs));
	REQUIRE_FALSE(dev.ok());
	CHECK(dev.error().code == EBUSY);
	CHECK(dev.error().message == "9010000.pl031 is bound to rtc-pl031, not vfio-amba; unbind it and bind it to vfio-amba");
}

TEST_CASE("openVfioPlatformDevice_platformDeviceOnVfioAmba_isRefused", "[vfio_platform]")
{
	// Each bus has its own VFIO driver; vfio-amba on a platform device is not what the kernel does.
	FakePlatformSysfs sysfs;
	sysfs.addDevice("platform/a000000.virtio_mmio", "platform", "vfio-amba", "1", true);
	auto dev = openVfioPlatformDevice("platform:a000000.virtio_mmio", fakeOptions(sysfs));
	REQUIRE_FALSE(dev.ok());
	CHECK(dev.error().code == EBUSY);
	CHECK_THAT(dev.error().message, Catch::Contains("not vfio-platform"));
}

TEST_CASE("openVfioPlatformDevice_unboundDevice_saysHowToBindIt", "[vfio_platform]")
{
	FakePlatformSysfs sysfs;
	addVirtTopology(sysfs);
	auto dev = openVfioPlatformDevice("platform:a000200.virtio_mmio", fakeOptions(sysfs));
	REQUIRE_FALSE(dev.ok());
	CHECK(dev.error().code == ENODEV);
	CHECK_THAT(dev.error().message, Catch::Contains("not bound to any driver; bind it to vfio-platform"));
}

TEST_CASE("openVfioPlatformDevice_withoutIommuGroup_mentionsNoIommuMode", "[vfio_platform]")
{
	FakePlatformSysfs sysfs;
	sysfs.addDevice("platform/9010000.pl031", "amba", "vfio-amba", "");
	auto dev = openVfioPlatformDevice("amba:9010000.pl031", fakeOptions(sysfs));
	REQUIRE_FALSE(dev.ok());
	CHECK(dev.error().code == ENODEV);
	CHECK_THAT(dev.error().message, Catch::Contains("no IOMMU group") &&
						Catch::Contains("enable_unsafe_noiommu_mode"));
}

TEST_CASE("openVfioPlatformDevice_noIommuGroup_opensTheNoIommuNode", "[vfio_platform]")
{
	// The group is a vfio-noiommu one: its node is /dev/vfio/noiommu-N, which the error names.
	FakePlatformSysfs sysfs;
	addVirtTopology(sysfs);
	auto dev = openVfioPlatformDevice("/sys/bus/amba/devices/9010000.pl031", fakeOptions(sysfs));
	REQUIRE_FALSE(dev.ok());
	CHECK(dev.error().code == ENOENT);
	CHECK_THAT(dev.error().message, Catch::Contains(sysfs.root() + "/dev/vfio/noiommu-0 does not exist") &&
						Catch::Contains("is vfio-amba loaded and 9010000.pl031 bound to it?"));
}

TEST_CASE("openDevice_platformSpecs_reachThePlatformBackend", "[vfio_platform]")
{
	FakePlatformSysfs sysfs;
	addVirtTopology(sysfs);
	OpenOptions opts;
	opts.sysfsRoot = sysfs.root();
	opts.devRoot = sysfs.root() + "/dev";
	auto amba = openDevice("/sys/devices/platform/9010000.pl031", opts);
	REQUIRE_FALSE(amba.ok());
	CHECK_THAT(amba.error().message, Catch::Contains("vfio-amba"));
	auto unbound = openDevice("platform:a000200.virtio_mmio", opts);
	REQUIRE_FALSE(unbound.ok());
	CHECK_THAT(unbound.error().message, Catch::Contains("bind it to vfio-platform"));
}
