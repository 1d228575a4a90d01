// SPDX-License-Identifier: Apache-2.0
// Driver binding against a fake sysfs whose fake kernel binds drivers: to VFIO, back, and its failures.
#include <catch2/catch.hpp>

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <memory>

#include "control/binder.h"
#include "control/state_store.h"
#include "support/fake_sysfs.h"

using namespace vfio_broker::control;
using vfio_broker::Status;
using namespace std::chrono_literals;
using vfio_broker::testing::FakeBusDevice;
using vfio_broker::testing::FakeKernel;
using vfio_broker::testing::FakePciDevice;
using vfio_broker::testing::FakeSysfs;

namespace {

// Long enough never to expire on a loaded CI machine when the fake kernel does bind: a passing
// test returns as soon as the driver link changes, so this only bounds a failing one.
constexpr auto kBindTimeout = 5000ms;
// For the tests where nothing will ever bind: how long the Binder watches for nothing.
constexpr auto kHopelessTimeout = 150ms;

const std::string kBdf = "0000:01:00.0";

FakePciDevice nic(const std::string &driver = "e1000e")
{
	FakePciDevice d;
	d.bdf = kBdf;
	d.driver = driver;
	d.group = 9;
	return d;
}

pb::Device pciDevice(const std::string &bdf = kBdf)
{
	pb::Device dev;
	dev.set_id("pci:" + bdf);
	dev.set_kind(pb::DEVICE_KIND_PCI);
	dev.set_pci_address(bdf);
	return dev;
}

// The fake kernel's log entries from index `from` on.
std::vector<std::string> logFrom(const FakeKernel &kernel, size_t from)
{
	auto log = kernel.log();
	return { log.begin() + static_cast<std::ptrdiff_t>(std::min(from, log.size())), log.end() };
}

bool logMentions(const std::vector<std::string> &log, const std::string &prefix)
{
	return std::any_of(log.begin(), log.end(),
			   [&](const std::string &l) { return l.rfind(prefix, 0) == 0; });
}

} // namespace

// ---- vfioDriverFor and currentDriver

TEST_CASE("vfioDriverFor_eachBus_namesItsVfioDriver", "[binder]")
{
	pb::Device dev;
	dev.set_kind(pb::DEVICE_KIND_PCI);
	CHECK(vfioDriverFor(dev) == "vfio-pci");
	dev.set_kind(pb::DEVICE_KIND_PLATFORM);
	CHECK(vfioDriverFor(dev) == "vfio-platform");
	dev.set_kind(pb::DEVICE_KIND_AMBA);
	CHECK(vfioDriverFor(dev) == "vfio-amba");
	dev.set_kind(pb::DEVICE_KIND_SIMULATED);
	CHECK(vfioDriverFor(dev).empty());
}

TEST_CASE("currentDriver_boundAndUnboundDevices_readTheDriverLink", "[binder]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	FakePciDevice other = nic("");
	other.bdf = "0000:01:00.1";
	sysfs.addPciDevice(other);
	Binder binder(sysfs.root(), kBindTimeout);
	auto bound = binder.currentDriver(pciDevice());
	REQUIRE(bound.ok());
	CHECK(*bound == "e1000e");
	auto unbound = binder.currentDriver(pciDevice("0000:01:00.1"));
	REQUIRE(unbound.ok());
	CHECK(unbound->empty());
}

TEST_CASE("currentDriver_absentDevice_isAnError", "[binder]")
{
	FakeSysfs sysfs;
	Binder binder(sysfs.root(), kBindTimeout);
	auto driver = binder.currentDriver(pciDevice("0000:09:00.0"));
	REQUIRE_FALSE(driver.ok());
	CHECK(driver.error().code == ENODEV);
	CHECK_THAT(driver.error().message, Catch::Contains("pci:0000:09:00.0"));
}

// ---- bindToVfio

TEST_CASE("bindToVfio_deviceOnHostDriver_recordsOriginalDriverAndOverride", "[binder]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout);
	auto record = binder.bindToVfio(pciDevice());
	INFO((record ? std::string() : record.error().message));
	REQUIRE(record.ok());
	CHECK(record->originalDriver == "e1000e");
	CHECK(record->originalOverride.empty());
}

TEST_CASE("bindToVfio_deviceOnHostDriver_overridesUnbindsProbesAndEndsOnVfioPci", "[binder]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout);
	REQUIRE(binder.bindToVfio(pciDevice()).ok());
	REQUIRE(kernel.settle());
	CHECK(sysfs.driverOf(kBdf) == "vfio-pci");
	CHECK(kernel.overrideOf(kBdf) == "vfio-pci");
	CHECK(kernel.log() == std::vector<std::string>{"override " + kBdf + " vfio-pci",
						       "unbind " + kBdf + " e1000e",
						       "probe " + kBdf + " vfio-pci"});
}

TEST_CASE("bindToVfio_unboundDevice_bindsWithoutUnbinding", "[binder]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic(""));
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout);
	auto record = binder.bindToVfio(pciDevice());
	REQUIRE(record.ok());
	CHECK(record->originalDriver.empty());
	REQUIRE(kernel.settle());
	CHECK(sysfs.driverOf(kBdf) == "vfio-pci");
	CHECK_FALSE(logMentions(kernel.log(), "unbind"));
}

TEST_CASE("bindToVfio_existingOverride_isRecorded", "[binder]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic("pci-stub");
	d.driverOverride = "pci-stub";
	sysfs.addPciDevice(d);
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout);
	auto record = binder.bindToVfio(pciDevice());
	REQUIRE(record.ok());
	CHECK(record->originalDriver == "pci-stub");
	CHECK(record->originalOverride == "pci-stub");
	CHECK(sysfs.driverOf(kBdf) == "vfio-pci");
}

TEST_CASE("bindToVfio_sysfsAcceptsButNothingBinds_failsNamingDeviceAndSteps", "[binder]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	FakeKernel kernel(sysfs);
	kernel.refuse("vfio-pci", kBdf);
	Binder binder(sysfs.root(), kHopelessTimeout);
	auto record = binder.bindToVfio(pciDevice());
	REQUIRE_FALSE(record.ok());
	CHECK(record.error().code == ETIMEDOUT);
	CHECK_THAT(record.error().message,
		   Catch::StartsWith(
			   "binding pci:0000:01:00.0 to vfio-pci: the kernel bound nothing within 150 ms "
			   "(driver_override=vfio-pci written, e1000e unbound, drivers_probe accepted)"));
}

TEST_CASE("bindToVfio_nothingBinds_rollsBackToTheOriginalDriver", "[binder]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	FakeKernel kernel(sysfs);
	kernel.refuse("vfio-pci", kBdf);
	Binder binder(sysfs.root(), kHopelessTimeout);
	REQUIRE_FALSE(binder.bindToVfio(pciDevice()).ok());
	REQUIRE(kernel.settle());
	CHECK(sysfs.driverOf(kBdf) == "e1000e");
	CHECK(kernel.overrideOf(kBdf).empty());
	CHECK(sysfs.overrideFileOf(kBdf) == "\n");
}

TEST_CASE("bindToVfio_vfioPciNotLoaded_failsWithoutTouchingTheDevice", "[binder]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	sysfs.removeDriver("pci", "vfio-pci");
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout);
	auto record = binder.bindToVfio(pciDevice());
	REQUIRE_FALSE(record.ok());
	CHECK(record.error().code == ENODEV);
	CHECK_THAT(record.error().message, Catch::Contains("vfio-pci driver is not loaded"));
	REQUIRE(kernel.settle());
	CHECK(kernel.log().empty());
	CHECK(sysfs.driverOf(kBdf) == "e1000e");
}

TEST_CASE("bindToVfio_alreadyOnVfioPci_changesNothingAndRecordsIt", "[binder]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic("vfio-pci"));
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout);
	auto record = binder.bindToVfio(pciDevice());
	REQUIRE(record.ok());
	CHECK(record->originalDriver == "vfio-pci");
	REQUIRE(kernel.settle());
	CHECK(kernel.log().empty());
	CHECK(sysfs.overrideFileOf(kBdf) == "(null)\n");
}

TEST_CASE("bindToVfio_absentDevice_isEnodevNamingIt", "[binder]")
{
	FakeSysfs sysfs;
	Binder binder(sysfs.root(), kBindTimeout);
	auto record = binder.bindToVfio(pciDevice("0000:09:00.0"));
	REQUIRE_FALSE(record.ok());
	CHECK(record.error().code == ENODEV);
	CHECK_THAT(record.error().message, Catch::StartsWith("binding pci:0000:09:00.0 to vfio-pci"));
}

TEST_CASE("bindToVfio_simulatedDevice_isANoop", "[binder]")
{
	FakeSysfs sysfs;
	Binder binder(sysfs.root(), kBindTimeout);
	pb::Device sim;
	sim.set_id("sim:edu");
	sim.set_kind(pb::DEVICE_KIND_SIMULATED);
	auto record = binder.bindToVfio(sim);
	REQUIRE(record.ok());
	CHECK(record->originalDriver.empty());
	CHECK(binder.restore(sim, *record).ok());
}

TEST_CASE("bindToVfio_platformDevice_bindsVfioPlatformAndRestores", "[binder]")
{
	FakeSysfs sysfs;
	FakeBusDevice rtc;
	rtc.name = "9010000.pl031";
	rtc.driver = "rtc-pl031";
	sysfs.addBusDevice(rtc);
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout);
	pb::Device dev;
	dev.set_id("platform:9010000.pl031");
	dev.set_kind(pb::DEVICE_KIND_PLATFORM);
	dev.set_sysfs_path("/sys/devices/platform/9010000.pl031");
	auto record = binder.bindToVfio(dev);
	INFO((record ? std::string() : record.error().message));
	REQUIRE(record.ok());
	CHECK(sysfs.driverOf("9010000.pl031", "platform") == "vfio-platform");
	REQUIRE(binder.restore(dev, *record).ok());
	CHECK(sysfs.driverOf("9010000.pl031", "platform") == "rtc-pl031");
}

// ---- restore

TEST_CASE("restore_afterBind_rebindsOriginalAndClearsOverrideWithNewline", "[binder]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout);
	auto record = binder.bindToVfio(pciDevice());
	REQUIRE(record.ok());
	REQUIRE(kernel.settle());
	size_t mark = kernel.log().size();

	Status st = binder.restore(pciDevice(), *record);
	INFO((st ? std::string() : st.error().message));
	REQUIRE(st.ok());
	CHECK(sysfs.driverOf(kBdf) == "e1000e");
	REQUIRE(kernel.settle());
	CHECK(sysfs.overrideFileOf(kBdf) == "\n");
	CHECK(kernel.overrideOf(kBdf).empty());
	CHECK(logFrom(kernel, mark) == std::vector<std::string>{"unbind " + kBdf + " vfio-pci",
								"override " + kBdf + " cleared",
								"bind " + kBdf + " e1000e"});
}

TEST_CASE("restore_noOriginalDriver_leavesTheDeviceUnbound", "[binder]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic("");
	d.defaultDriver = "e1000e"; // any probe would bind it: restore must not probe
	sysfs.addPciDevice(d);
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout);
	auto record = binder.bindToVfio(pciDevice());
	REQUIRE(record.ok());
	REQUIRE(kernel.settle());
	size_t mark = kernel.log().size();

	REQUIRE(binder.restore(pciDevice(), *record).ok());
	REQUIRE(kernel.settle());
	CHECK(sysfs.driverOf(kBdf).empty());
	auto after = logFrom(kernel, mark);
	CHECK_FALSE(logMentions(after, "probe"));
	CHECK_FALSE(logMentions(after, "bind " + kBdf));
	CHECK(kernel.overrideOf(kBdf).empty());
}

TEST_CASE("restore_originalOverride_isWrittenBackAndItsDriverRebound", "[binder]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic("pci-stub");
	d.driverOverride = "pci-stub";
	d.defaultDriver = "e1000e";
	sysfs.addPciDevice(d);
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout);
	auto record = binder.bindToVfio(pciDevice());
	REQUIRE(record.ok());
	REQUIRE(binder.restore(pciDevice(), *record).ok());
	CHECK(sysfs.driverOf(kBdf) == "pci-stub");
	REQUIRE(kernel.settle());
	CHECK(kernel.overrideOf(kBdf) == "pci-stub");
}

TEST_CASE("restore_explicitBindRefused_fallsBackToDriversProbe", "[binder]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout);
	auto record = binder.bindToVfio(pciDevice());
	REQUIRE(record.ok());
	sysfs.removeFile("bus/pci/drivers/e1000e/bind"); // the write now fails with ENOENT
	REQUIRE(kernel.settle());
	size_t mark = kernel.log().size();

	Status st = binder.restore(pciDevice(), *record);
	INFO((st ? std::string() : st.error().message));
	REQUIRE(st.ok());
	CHECK(sysfs.driverOf(kBdf) == "e1000e");
	REQUIRE(kernel.settle());
	CHECK(logFrom(kernel, mark).back() == "probe " + kBdf + " e1000e");
}

TEST_CASE("restore_originalDriverRefusesDevice_failsNamingWhatIsBound", "[binder]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	FakeKernel kernel(sysfs);
	auto record = Binder(sysfs.root(), kBindTimeout).bindToVfio(pciDevice());
	REQUIRE(record.ok());
	kernel.refuse("e1000e", kBdf);
	Status st = Binder(sysfs.root(), kHopelessTimeout).restore(pciDevice(), *record);
	REQUIRE_FALSE(st.ok());
	CHECK(st.error().code == ETIMEDOUT);
	CHECK_THAT(st.error().message,
		   Catch::StartsWith("restoring pci:0000:01:00.0 to e1000e: no driver is bound"));
}

TEST_CASE("restore_twice_secondWritesNothing", "[binder]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout);
	auto record = binder.bindToVfio(pciDevice());
	REQUIRE(record.ok());
	REQUIRE(binder.restore(pciDevice(), *record).ok());
	REQUIRE(kernel.settle());
	size_t mark = kernel.log().size();
	REQUIRE(binder.restore(pciDevice(), *record).ok());
	REQUIRE(kernel.settle());
	CHECK(sysfs.driverOf(kBdf) == "e1000e");
	CHECK(logFrom(kernel, mark).empty());
}

TEST_CASE("restore_deviceTakenByAnotherHostDriver_isRefusedAndLeftAlone", "[binder]")
{
	FakeSysfs sysfs;
	sysfs.addPciDevice(nic());
	sysfs.addDriver("pci", "igb");
	FakeKernel kernel(sysfs);
	Binder binder(sysfs.root(), kBindTimeout);
	auto record = binder.bindToVfio(pciDevice());
	REQUIRE(record.ok());
	REQUIRE(kernel.settle());
	sysfs.unlinkDriver("pci", kBdf);
	sysfs.linkDriver("pci", kBdf, "igb");
	Status st = binder.restore(pciDevice(), *record);
	REQUIRE_FALSE(st.ok());
	CHECK(st.error().code == EBUSY);
	CHECK_THAT(st.error().message, Catch::Contains("bound to igb"));
	CHECK(sysfs.driverOf(kBdf) == "igb");
}

TEST_CASE("restore_afterBrokerRestart_usesThePersistedRecord", "[binder]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic("pci-stub");
	d.driverOverride = "pci-stub";
	sysfs.addPciDevice(d);
	FakeKernel kernel(sysfs);
	const std::string stateDir = sysfs.base() + "/state";

	{ // The first broker binds and persists what it learnt, then goes away.
		auto binder = std::make_unique<Binder>(sysfs.root(), kBindTimeout);
		auto record = binder->bindToVfio(pciDevice());
		REQUIRE(record.ok());
		StateStore store(stateDir);
		auto lock = store.lock();
		REQUIRE(lock.ok());
		pb::BrokerState state;
		pb::DeviceRecord *rec = state.add_devices();
		rec->set_device_id("pci:" + kBdf);
		rec->set_state(pb::DEVICE_STATE_ASSIGNED);
		rec->set_original_driver(record->originalDriver);
		rec->set_original_override(record->originalOverride);
		REQUIRE(store.save(state).ok());
	}
	CHECK(sysfs.driverOf(kBdf) == "vfio-pci");

	// The next one knows only the state file.
	StateStore store(stateDir);
	auto lock = store.lock();
	REQUIRE(lock.ok());
	auto state = store.load();
	REQUIRE(state.ok());
	REQUIRE(state->devices_size() == 1);
	const pb::DeviceRecord &rec = state->devices(0);
	Binder binder(sysfs.root(), kBindTimeout);
	REQUIRE(binder.restore(pciDevice(), BindRecord{rec.original_driver(), rec.original_override()}).ok());
	CHECK(sysfs.driverOf(kBdf) == "pci-stub");
	REQUIRE(kernel.settle());
	CHECK(kernel.overrideOf(kBdf) == "pci-stub");
}

// ---- the fake kernel itself, where the Binder's tests lean on its semantics

TEST_CASE("fakeKernel_emptyOverrideWrite_isIgnoredLikeTheKernel", "[binder]")
{
	FakeSysfs sysfs;
	FakePciDevice d = nic("");
	d.defaultDriver = "e1000e";
	d.driverOverride = "vfio-pci";
	sysfs.addPciDevice(d);
	FakeKernel kernel(sysfs);
	sysfs.writeFile(sysfs.deviceDir(kBdf) + "/driver_override", "");
	sysfs.writeFile("bus/pci/drivers_probe", kBdf);
	REQUIRE(kernel.settle());
	CHECK(sysfs.driverOf(kBdf) == "vfio-pci");
	CHECK(kernel.log() == std::vector<std::string>{ "override " + kBdf + " empty write ignored",
							"probe " + kBdf + " vfio-pci" });
}
