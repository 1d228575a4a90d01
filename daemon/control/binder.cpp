// SPDX-License-Identifier: Apache-2.0
// Moves devices between their host driver and VFIO through sysfs, and checks the kernel really did it.
#include "control/binder.h"

#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string_view>
#include <thread>

#include "common/path_util.h"
#include "common/unique_fd.h"
#include "control/inventory.h"
#include "device/vfio_sysfs.h"

namespace vfio_broker::control {

namespace {

using Clock = std::chrono::steady_clock;

// Where a device lives on its bus: <root>/bus/<bus>/devices/<name>.
struct BusDevice {
	std::string bus;  // "pci", "platform", "amba"
	std::string name; // "0000:01:00.0", "9010000.pl031"
	std::string vfio; // the VFIO driver for the bus
};

using path::baseName;
using path::stripTrailingSlashes;

// A name used as one path component: nothing that could climb out of the bus directory.
bool isSafeComponent(const std::string &name)
{
	return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
	       std::all_of(name.begin(), name.end(),
			   [](char c) { return std::isgraph(static_cast<unsigned char>(c)); });
}

Result<BusDevice> busDeviceOf(const pb::Device &device)
{
	BusDevice bd;
	bd.vfio = vfioDriverFor(device);
	switch (device.kind()) {
	case pb::DEVICE_KIND_PCI: {
		bd.bus = "pci";
		bd.name = device.pci_address();
		if (bd.name.empty() && device.id().rfind("pci:", 0) == 0)
			bd.name = device.id().substr(4);
		if (device::normalizeBdf(bd.name) != bd.name)
			return makeError(EINVAL, "%s: '%s' is not a canonical PCI address",
					 device.id().c_str(), bd.name.c_str());
		return bd;
	}
	case pb::DEVICE_KIND_PLATFORM:
	case pb::DEVICE_KIND_AMBA: {
		bd.bus = device.kind() == pb::DEVICE_KIND_PLATFORM ? "platform" : "amba";
		bd.name = baseName(stripTrailingSlashes(device.sysfs_path()));
		if (device.sysfs_path().empty()) {
			size_t colon = device.id().find(':');
			bd.name = colon == std::string::npos ? std::string() : device.id().substr(colon + 1);
		}
		if (!isSafeComponent(bd.name))
			return makeError(EINVAL, "%s: cannot tell its %s device name", device.id().c_str(),
					 bd.bus.c_str());
		return bd;
	}
	default:
		return makeError(EINVAL, "%s: no driver binding for device kind %s", device.id().c_str(),
				 pb::DeviceKind_Name(device.kind()).c_str());
	}
}

// One write(2) of the whole value, as sysfs store callbacks see exactly one call per write.
Status writeAttribute(const std::string &path, std::string_view value)
{
	UniqueFd fd(::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
	if (!fd)
		return errnoError(errno, path);
	ssize_t n;
	do {
		n = ::write(fd.get(), value.data(), value.size());
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errnoError(errno, path);
	if (static_cast<size_t>(n) != value.size())
		return makeError(EIO, "%s: short write (%zd of %zu bytes)", path.c_str(), n, value.size());
	// Only a regular file stands in for sysfs in tests; its close is what the fake kernel sees.
	if (::close(fd.release()) != 0 && errno != EINTR)
		return errnoError(errno, path);
	return {};
}

// driver_override as the kernel shows it: "(null)" (or nothing) when unset.
Result<std::string> readOverride(const std::string &devDir)
{
	std::string path = devDir + "/driver_override";
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd)
		return errnoError(errno, "reading " + path);
	char buf[256];
	ssize_t n;
	do {
		n = ::read(fd.get(), buf, sizeof(buf));
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errnoError(errno, "reading " + path);
	std::string value(buf, static_cast<size_t>(n));
	size_t nl = value.find('\n');
	if (nl != std::string::npos)
		value.resize(nl);
	if (value == "(null)")
		value.clear();
	if (!value.empty() && !isSafeComponent(value))
		return makeError(EINVAL, "%s holds '%s', not a driver name", path.c_str(), value.c_str());
	return value;
}

// The basename of the driver link, "" when there is none.
Result<std::string> readDriverLink(const std::string &root, const BusDevice &bd)
{
	if (bd.bus == "pci")
		return device::readDriver(root, bd.name);
	std::string link = root + "/bus/" + bd.bus + "/devices/" + bd.name + "/driver";
	auto target = path::readLink(link);
	if (!target)
		return target.takeError();
	return *target ? baseName(**target) : std::string();
}

// The kernel offers no notification when a driver link appears, so this is a poll with a
// deadline (1 ms, doubling up to 20 ms): cheap next to a driver probe, and bounded. Returns the
// driver bound when it matched or the deadline passed.
Result<std::string> waitForDriver(const std::string &root, const BusDevice &bd, const std::string &want,
				  std::chrono::milliseconds timeout)
{
	const auto deadline = Clock::now() + timeout;
	auto pause = std::chrono::milliseconds(1);
	for (;;) {
		auto driver = readDriverLink(root, bd);
		if (!driver || *driver == want || Clock::now() >= deadline)
			return driver;
		std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - Clock::now()));
		pause = std::min(pause * 2, std::chrono::milliseconds(20));
	}
}

std::string describeDriver(const std::string &driver)
{
	return driver.empty() ? "no driver" : driver;
}

// ENODEV "<ctx>: no such device (<dir>)" when the device directory is not there.
Status checkPresent(const std::string &devDir, const std::string &ctx)
{
	if (::access(devDir.c_str(), F_OK) == 0)
		return {};
	if (errno == ENOENT)
		return makeError(ENODEV, "%s: no such device (%s)", ctx.c_str(), devDir.c_str());
	return errnoError(errno, ctx + ": " + devDir);
}

// Platform and AMBA devices are bound only when they live under <root>/devices/platform (the
// check Android's VFIO handler makes: packages/modules/Virtualization,
// virtualizationservice/vfio_handler/src/aidl.rs, check_platform_device).
Status checkPlatformTree(const std::string &root, const BusDevice &bd, const std::string &devDir,
			 const std::string &ctx)
{
	if (bd.bus == "pci")
		return {};
	char *dev = ::realpath(devDir.c_str(), nullptr);
	if (!dev)
		return errnoError(errno, ctx + ": resolving " + devDir);
	std::string path = dev;
	std::free(dev);
	char *top = ::realpath((root + "/devices/platform").c_str(), nullptr);
	std::string platformDir = top ? std::string(top) + "/" : std::string();
	std::free(top);
	if (platformDir.empty() || path.compare(0, platformDir.size(), platformDir) != 0)
		return makeError(EINVAL, "%s: %s resolves to %s, which is not under %s/devices/platform; only "
				 "devices there are bound as platform devices",
				 ctx.c_str(), devDir.c_str(), path.c_str(), root.c_str());
	return {};
}

// Binder::restore, also used to roll back a failed bindToVfio (not through the virtual, so a
// test double overriding restore never sees rollbacks it did not ask for).
Status restoreDevice(const std::string &root, std::chrono::milliseconds timeout, const pb::Device &device,
		     const BindRecord &record)
{
	if (device.kind() == pb::DEVICE_KIND_SIMULATED)
		return {};
	auto bdr = busDeviceOf(device);
	if (!bdr)
		return bdr.takeError();
	const BusDevice &bd = *bdr;
	const std::string ctx = "restoring " + device.id() + " to " + describeDriver(record.originalDriver);
	const std::string busDir = root + "/bus/" + bd.bus;
	const std::string devDir = busDir + "/devices/" + bd.name;
	if (!record.originalDriver.empty() && !isSafeComponent(record.originalDriver))
		return makeError(EINVAL, "%s: '%s' is not a driver name", ctx.c_str(),
				 record.originalDriver.c_str());
	if (!record.originalOverride.empty() && !isSafeComponent(record.originalOverride))
		return makeError(EINVAL, "%s: '%s' is not a driver name", ctx.c_str(),
				 record.originalOverride.c_str());

	if (Status st = checkPresent(devDir, ctx); !st)
		return st.takeError();
	if (Status st = checkPlatformTree(root, bd, devDir, ctx); !st)
		return st.takeError();
	auto current = readDriverLink(root, bd);
	if (!current)
		return withContext(current.takeError(), ctx + ": reading its driver");

	// Only a VFIO driver is ours to unbind; anything else was bound by someone else since.
	bool onOriginal = *current == record.originalDriver;
	if (!onOriginal && !current->empty() && !device::isVfioDriver(*current))
		return makeError(EBUSY, "%s: it is bound to %s now, which is not VFIO; leaving it there",
				 ctx.c_str(), current->c_str());
	if (!onOriginal && !current->empty()) {
		if (Status st = writeAttribute(busDir + "/drivers/" + *current + "/unbind", bd.name); !st)
			return withContext(st.takeError(), ctx + ": unbinding " + *current);
	}
	// Already where it belongs (a repeated restore, or it never left): touch the override only
	// if it differs, and nothing else.
	if (onOriginal) {
		auto overrideNow = readOverride(devDir);
		if (overrideNow && *overrideNow == record.originalOverride)
			return {};
	}
	// An empty write never reaches the kernel's store callback; a lone newline clears the override.
	std::string overrideValue =
		record.originalOverride.empty() ? std::string("\n") : record.originalOverride;
	if (Status st = writeAttribute(devDir + "/driver_override", overrideValue); !st)
		return withContext(st.takeError(), ctx + ": writing driver_override");
	if (onOriginal)
		return {};

	std::string how = "unbound";
	if (!record.originalDriver.empty()) {
		Status st = writeAttribute(busDir + "/drivers/" + record.originalDriver + "/bind", bd.name);
		how = "bind accepted";
		if (!st) {
			// The explicit bind can be refused (driver unloaded and reloaded, dynamic ids
			// gone); let the bus pick the driver as at boot.
			if (Status probe = writeAttribute(busDir + "/drivers_probe", bd.name); !probe)
				return makeError(probe.error().code,
						 "%s: bind failed (%s), and drivers_probe too (%s)",
						 ctx.c_str(), st.error().message.c_str(),
						 probe.error().message.c_str());
			how = "bind failed (" + st.error().message + "), drivers_probe accepted";
		}
	}
	auto bound = waitForDriver(root, bd, record.originalDriver, timeout);
	if (!bound)
		return withContext(bound.takeError(), ctx + ": verifying");
	if (*bound != record.originalDriver)
		return makeError(ETIMEDOUT, "%s: %s is bound after %ld ms (%s)", ctx.c_str(),
				 describeDriver(*bound).c_str(), static_cast<long>(timeout.count()),
				 how.c_str());
	return {};
}

} // namespace

std::string vfioDriverFor(const pb::Device &device)
{
	switch (device.kind()) {
	case pb::DEVICE_KIND_PCI:
		return "vfio-pci";
	case pb::DEVICE_KIND_PLATFORM:
		return "vfio-platform";
	case pb::DEVICE_KIND_AMBA:
		return "vfio-amba";
	default:
		return "";
	}
}

Result<std::string> Binder::currentDriver(const pb::Device &device) const
{
	if (device.kind() == pb::DEVICE_KIND_SIMULATED)
		return std::string();
	auto bd = busDeviceOf(device);
	if (!bd)
		return bd.takeError();
	std::string devDir = root_ + "/bus/" + bd->bus + "/devices/" + bd->name;
	if (Status st = checkPresent(devDir, device.id()); !st)
		return st.takeError();
	auto driver = readDriverLink(root_, *bd);
	if (!driver)
		return withContext(driver.takeError(), device.id());
	return driver;
}

Result<BindRecord> Binder::bindToVfio(const pb::Device &device)
{
	if (device.kind() == pb::DEVICE_KIND_SIMULATED)
		return BindRecord{};
	auto bdr = busDeviceOf(device);
	if (!bdr)
		return bdr.takeError();
	const BusDevice &bd = *bdr;
	const std::string ctx = "binding " + device.id() + " to " + bd.vfio;
	const std::string busDir = root_ + "/bus/" + bd.bus;
	const std::string devDir = busDir + "/devices/" + bd.name;

	if (Status st = checkPresent(devDir, ctx); !st)
		return st.takeError();
	if (Status st = checkPlatformTree(root_, bd, devDir, ctx); !st)
		return st.takeError();
	auto current = readDriverLink(root_, bd);
	if (!current)
		return withContext(current.takeError(), ctx + ": reading its driver");
	auto overrideNow = readOverride(devDir);
	if (!overrideNow)
		return withContext(overrideNow.takeError(), ctx);
	BindRecord record{ *current, *overrideNow };
	// Variant drivers (mlx5_vfio_pci, ...) are VFIO too: the device daemon can open the device.
	if (device::isVfioDriver(*current))
		return record;
	if (::access((busDir + "/drivers/" + bd.vfio).c_str(), F_OK) != 0)
		return makeError(ENODEV, "%s: the %s driver is not loaded (no %s/drivers/%s; modprobe %s)",
				 ctx.c_str(), bd.vfio.c_str(), busDir.c_str(), bd.vfio.c_str(),
				 bd.vfio.c_str());

	// Override first, then unbind (as libvirt does): whatever probes the device after the
	// unbind — us, udev, a module load — can then only pick the VFIO driver.
	std::string done;
	auto fail = [&](Error err) -> Error {
		// All or nothing: put the device back where it was before reporting.
		Status back = restoreDevice(root_, timeout_, device, record);
		err.message = ctx + ": " + err.message;
		if (!done.empty())
			err.message += " (" + done + ")";
		if (back)
			err.message += record.originalDriver.empty()
					       ? "; left unbound as before"
					       : "; rolled back to " + record.originalDriver;
		else
			err.message += "; rollback failed: " + back.error().message;
		return err;
	};
	if (Status st = writeAttribute(devDir + "/driver_override", bd.vfio); !st)
		return fail(withContext(st.takeError(), "writing driver_override"));
	done = "driver_override=" + bd.vfio + " written";
	if (!current->empty()) {
		if (Status st = writeAttribute(busDir + "/drivers/" + *current + "/unbind", bd.name); !st)
			return fail(withContext(st.takeError(), "unbinding " + *current));
		done += ", " + *current + " unbound";
	}
	if (Status st = writeAttribute(busDir + "/drivers_probe", bd.name); !st)
		return fail(withContext(st.takeError(), "writing drivers_probe"));
	done += ", drivers_probe accepted";

	auto bound = waitForDriver(root_, bd, bd.vfio, timeout_);
	if (!bound)
		return fail(withContext(bound.takeError(), "verifying the binding"));
	if (*bound != bd.vfio) {
		long ms = static_cast<long>(timeout_.count());
		if (bound->empty() && bd.bus != "pci") {
			// vfio-platform's probe fails for reasons sysfs can predict; say which.
			InventoryOptions opts;
			opts.sysfsRoot = root_;
			opts.kernelRelease = kernelRelease_;
			PlatformOutlook outlook = platformOutlook(opts, device);
			if (!outlook.bindFailure.empty())
				return fail(makeError(EBUSY, "the kernel bound nothing within %ld ms, as expected: %s",
						      ms, outlook.bindFailure.c_str()));
		}
		if (bound->empty())
			return fail(makeError(ETIMEDOUT, "the kernel bound nothing within %ld ms", ms));
		return fail(
			makeError(EBUSY, "the kernel bound %s instead within %ld ms", bound->c_str(), ms));
	}
	return record;
}

Status Binder::restore(const pb::Device &device, const BindRecord &record)
{
	return restoreDevice(root_, timeout_, device, record);
}

} // namespace vfio_broker::control
