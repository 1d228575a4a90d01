// SPDX-License-Identifier: Apache-2.0
// Binding platform and AMBA devices to vfio-platform / vfio-amba on a fake sysfs whose fake kernel
// models vfio-platform's reset check (reset_required, Linux 6.1's ENOENT), and the path checks.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>

#include "control/binder.h"
#include "support/fake_sysfs.h"

using namespace vfio_broker::control;
using namespace std::chrono_literals;
using vfio_broker::testing::FakeBusDevice;
using vfio_broker::testing::FakeKernel;
using vfio_broker::testing::FakeSysfs;

namespace {

constexpr auto kBindTimeout = 5000ms;
// For the tests where nothing will ever bind: how long the Binder watches for nothing.
constexpr auto kHopelessTimeout = 150ms;

FakeBusDevice busDevice(const std::string &bus, const std::string &name, const std::string &driver,
			const std::string &compatible, int group = 3)
{
	FakeBusDevice d;
	d.bus = bus;
	d.name = name;
	d.driver = driver;
	d.compatible = compatible;
	d.ofNode = "/" + name;
	d.group = group;
	return d;
}

// The Device as the inventory describes it: what the binder reads.
pb::Device describe(const FakeBusDevice &d)
{
	pb::Device dev;
	dev.set_id(d.bus + ":" + d.name);
	dev.set_kind(d.bus == "amba" ? pb::DEVICE_KIND_AMBA : pb::DEVICE_KIND_PLATFORM);
	dev.set_sysfs_path("/sys/devices/" + d.parent + "/" + d.name);
	dev.mutable_platform()->add_compatible(d.compatible);
	dev.mutable_iommu_group()->set_number(d.group);
	return dev;
}

bool logHas(const FakeKernel &kernel, const std::string &line)
{
	auto log = kernel.log();
	return std::find(log.begin(), log.end(), line) != log.end();
}

} // namespace

TEST_CASE("bindToVfio_ambaDevice_bindsVfioAmbaThroughDriverOverrideAndRestores", "[platform_binder]")
{
	FakeSysfs sysfs;
	FakeBusDevice rtc = busDevice("amba", "9010000.pl031", "rtc-pl031", "arm,pl031");
	sysfs.addBusDevice(rtc);
	FakeKernel kernel(sysfs);
	kernel.modelVfioPlatformReset(false); // vfio-amba needs no reset handler after 6.1
	Binder binder(sysfs.root(), kBindTimeout, "6.12.0-1-arm64");
	pb::Device dev = describe(rtc);
	auto record = binder.bindToVfio(dev);
	INFO((record ? std::string() : record.error().message));
	REQUIRE(record.ok());
	CHECK(record->originalDriver == "rtc-pl031");
	CHECK(sysfs.driverOf("9010000.pl031", "amba") == "vfio-amba");
	CHECK(kernel.overrideOf("9010000.pl031", "amba") == "vfio-amba");
	CHECK(logHas(kernel, "unbind 9010000.pl031 rtc-pl031"));
	CHECK(logHas(kernel, "probe 9010000.pl031 vfio-amba"));
	REQUIRE(binder.restore(dev, *record).ok());
	CHECK(sysfs.driverOf("9010000.pl031", "amba") == "rtc-pl031");
	CHECK(kernel.overrideOf("9010000.pl031", "amba").empty());
}

TEST_CASE("bindToVfio_resetRequiredWithoutHandler_failsNamingTheCauseAndRollsBack", "[platform_binder]")
{
	FakeSysfs sysfs;
	FakeBusDevice uart = busDevice("platform", "9000000.serial", "uart-pl011", "arm,pl011");
	sysfs.addBusDevice(uart);
	sysfs.setModuleParameter("vfio_platform", "reset_required", "Y");
	FakeKernel kernel(sysfs);
	kernel.modelVfioPlatformReset(false);
	Binder binder(sysfs.root(), kHopelessTimeout, "6.12.0-1-arm64");
	auto record = binder.bindToVfio(describe(uart));
	REQUIRE_FALSE(record.ok());
	CHECK(record.error().code == EBUSY);
	CHECK_THAT(record.error().message,
		   Catch::Contains("vfio-platform refuses devices without a reset handler") &&
			   Catch::Contains("load vfio-platform with reset_required=0") &&
			   Catch::Contains("rolled back to uart-pl011"));
	CHECK(logHas(kernel, "probe 9000000.serial vfio-platform: -ENOENT (no reset handler)"));
	CHECK(sysfs.driverOf("9000000.serial", "platform") == "uart-pl011");
}

TEST_CASE("bindToVfio_resetRequiredOff_bindsWithoutAHandler", "[platform_binder]")
{
	FakeSysfs sysfs;
	FakeBusDevice uart = busDevice("platform", "9000000.serial", "uart-pl011", "arm,pl011");
	sysfs.addBusDevice(uart);
	sysfs.setModuleParameter("vfio_platform", "reset_required", "N");
	FakeKernel kernel(sysfs);
	kernel.modelVfioPlatformReset(false);
	Binder binder(sysfs.root(), kBindTimeout, "6.12.0-1-arm64");
	auto record = binder.bindToVfio(describe(uart));
	INFO((record ? std::string() : record.error().message));
	REQUIRE(record.ok());
	CHECK(sysfs.driverOf("9000000.serial", "platform") == "vfio-platform");
}

TEST_CASE("bindToVfio_linux61WithoutHandler_failsWithTheEnoentBugEvenWithResetRequiredOff", "[platform_binder]")
{
	FakeSysfs sysfs;
	FakeBusDevice uart = busDevice("platform", "9000000.serial", "uart-pl011", "arm,pl011");
	FakeBusDevice rtc = busDevice("amba", "9010000.pl031", "rtc-pl031", "arm,pl031", 4);
	sysfs.addBusDevice(uart);
	sysfs.addBusDevice(rtc);
	sysfs.setModuleParameter("vfio_platform", "reset_required", "N");
	FakeKernel kernel(sysfs);
	kernel.modelVfioPlatformReset(true);
	Binder binder(sysfs.root(), kHopelessTimeout, "6.1.0-56-arm64");
	for (const FakeBusDevice *d : { &uart, &rtc }) {
		INFO(d->name);
		auto record = binder.bindToVfio(describe(*d));
		REQUIRE_FALSE(record.ok());
		CHECK(record.error().code == EBUSY);
		CHECK_THAT(record.error().message,
			   Catch::Contains("Linux 6.1.0-56-arm64 fails the") && Catch::Contains("ENOENT") &&
				   Catch::Contains("168a9c91fe0a"));
		CHECK(sysfs.driverOf(d->name, d->bus) == d->driver);
	}
	CHECK(logHas(kernel, "probe 9010000.pl031 vfio-amba: -ENOENT (no reset handler)"));
}

TEST_CASE("bindToVfio_linux61WithResetHandler_binds", "[platform_binder]")
{
	FakeSysfs sysfs;
	FakeBusDevice eth = busDevice("platform", "fff51000.ethernet", "calxedaxgmac", "calxeda,hb-xgmac");
	sysfs.addBusDevice(eth);
	FakeKernel kernel(sysfs);
	kernel.modelVfioPlatformReset(true);
	Binder binder(sysfs.root(), kBindTimeout, "6.1.0-56-arm64");
	auto record = binder.bindToVfio(describe(eth));
	INFO((record ? std::string() : record.error().message));
	REQUIRE(record.ok());
	CHECK(sysfs.driverOf("fff51000.ethernet", "platform") == "vfio-platform");
}

TEST_CASE("bindToVfio_nothingBindsForAnUnpredictedReason_isATimeout", "[platform_binder]")
{
	FakeSysfs sysfs;
	FakeBusDevice eth = busDevice("platform", "fff51000.ethernet", "calxedaxgmac", "calxeda,hb-xgmac");
	sysfs.addBusDevice(eth);
	FakeKernel kernel(sysfs);
	kernel.refuse("vfio-platform", "fff51000.ethernet");
	Binder binder(sysfs.root(), kHopelessTimeout, "6.12.0-1-arm64");
	auto record = binder.bindToVfio(describe(eth));
	REQUIRE_FALSE(record.ok());
	CHECK(record.error().code == ETIMEDOUT);
	CHECK_THAT(record.error().message, Catch::Contains("the kernel bound nothing within 150 ms"));
}

TEST_CASE("bindToVfio_deviceOutsideThePlatformTree_isRefusedUntouched", "[platform_binder]")
{
	FakeSysfs sysfs;
	FakeBusDevice odd = busDevice("platform", "cpufreq-dt", "cpufreq-dt", "operating-points-v2");
	odd.parent = "system";
	sysfs.addBusDevice(odd);
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout, "6.12.0-1-arm64");
	auto record = binder.bindToVfio(describe(odd));
	REQUIRE_FALSE(record.ok());
	CHECK(record.error().code == EINVAL);
	CHECK_THAT(record.error().message, Catch::Contains("devices/platform"));
	REQUIRE(kernel.settle());
	CHECK(kernel.log().empty());
	CHECK(sysfs.driverOf("cpufreq-dt", "platform") == "cpufreq-dt");
}
