// SPDX-License-Identifier: Apache-2.0
// A throwaway sysfs tree (FakeSysfs) and a fake kernel that binds drivers in it (FakeKernel).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/unique_fd.h"

// Setup failures (a mkdir, a symlink) throw std::runtime_error naming the path and errno: Catch2
// reports them as a failed test, and the helpers stay free of Catch2.
namespace vfio_broker::testing {

// One line of a PCI "resource" file: start, end (inclusive) and IORESOURCE_* flags.
struct FakeResource {
	uint64_t start = 0;
	uint64_t end = 0;
	uint64_t flags = 0;
};

constexpr uint64_t kFakeIoresourceMem = 0x200;
constexpr uint64_t kFakeIoresourceIo = 0x100;

struct FakePciDevice {
	std::string bdf;                          // "0000:01:00.0"
	std::string parent = "pci0000:00";        // directory under <root>/devices holding its own
	uint16_t vendor = 0x8086;
	uint16_t device = 0x10d3;
	std::string driver;                       // bound now; "" = unbound
	std::optional<std::string> defaultDriver; // what a probe without override binds; unset = driver
	int group = -1;                           // IOMMU group; -1 = none (IOMMU off)
	std::vector<FakeResource> resources;      // padded with empty lines to the kernel's 13
	uint32_t irq = 0;                         // the "irq" file
	uint8_t interruptPin = 1;                 // config space 0x3d (INTA) in the 64-byte "config"
	bool reset = true;                        // a "reset" file exists
	std::string resetMethod = "flr bus";      // "reset_method"; "" = no such file
	std::string driverOverride;               // "" shows as "(null)", as the kernel does
};

// A device on the platform or amba bus: <root>/devices/<parent>/<name>.
struct FakeBusDevice {
	std::string bus = "platform";
	std::string name; // "9010000.pl031"
	std::string driver;
	std::optional<std::string> defaultDriver;
	std::string ofNode;              // DT path ("/pl031@9010000"): an of_node link; "" = none
	std::string compatible;          // its first compatible string, for FakeKernel's reset model
	int group = -1;                  // IOMMU group; -1 = none
	std::string parent = "platform"; // directory under devices/ ("platform/soc", "system")
};

// What FakeKernel needs to know about a device.
struct FakeDeviceEntry {
	std::string bus;
	std::string name;
	std::string dir; // relative to root(): "devices/pci0000:00/0000:01:00.0"
	std::string defaultDriver;
	std::string compatible; // bus devices: the first compatible string
};

struct FakeNonViableGroup {
	std::string device;  // "0000:02:00.0", bound to the driver the caller chose
	std::string blocker; // "0000:02:00.1", bound to snd_hda_intel
};

// A sysfs tree at <mkdtemp dir>/sys (in $TMPDIR, else /dev/shm, else /tmp), removed on destruction. Laid out
// like the kernel's: device directories under devices/, relative links for bus/<bus>/devices/<name>, driver,
// iommu_group and kernel/iommu_groups/<N>/devices/<name>; bus/<bus>/drivers/<drv>/{bind,unbind},
// bus/<bus>/drivers_probe and per-device driver_override files. Starts with the pci bus and
// its vfio-pci driver. Paths passed to the file helpers are relative to root().
class FakeSysfs
{
public:
	FakeSysfs();
	~FakeSysfs();
	FakeSysfs(const FakeSysfs &) = delete;
	FakeSysfs &operator=(const FakeSysfs &) = delete;

	const std::string &base() const { return base_; } // the mkdtemp directory
	const std::string &root() const { return root_; } // the sysfs root for the code under test

	void addPciDevice(const FakePciDevice &dev);
	// `count` devices from `templ` (its bdf and parent ignored), at 0001:00:00.0 onwards, each
	// in its own IOMMU group from firstGroup (firstGroup < 0: no groups). Returns the BDFs.
	// Plain syscalls with precomputed link targets: 10,000 devices take well under a second.
	std::vector<std::string> addPciDevices(size_t count, const FakePciDevice &templ = {},
					       int firstGroup = 1000);
	// A GPU-like pair in one group: <bus>:00.0 on deviceDriver, <bus>:00.1 on snd_hda_intel,
	// which no VFIO user may share a group with.
	FakeNonViableGroup addNonViableGroup(int group, const std::string &bus = "0000:02",
					     const std::string &deviceDriver = "");
	void addBusDevice(const FakeBusDevice &dev);

	// bus/<bus> with drivers/ and drivers_probe, plus its VFIO driver (vfio-platform, vfio-amba).
	void addBus(const std::string &bus);
	// bus/<bus>/drivers/<name> with bind and unbind: the driver "exists" (is loaded).
	void addDriver(const std::string &bus, const std::string &name);
	void removeDriver(const std::string &bus, const std::string &name);
	// Mark a group as a VFIO no-IOMMU group (its "name" reads vfio-noiommu).
	void setNoIommuGroup(int group);
	// firmware/fdt: the host's flattened device tree.
	void setDeviceTree(const std::vector<uint8_t> &blob);
	// module/<module>/parameters/<param> holding "<value>\n" (the module is "loaded").
	void setModuleParameter(const std::string &module, const std::string &param, const std::string &value);

	// Links as the kernel changes them (FakeKernel uses these; tests may for setup).
	void linkDriver(const std::string &bus, const std::string &name, const std::string &driver);
	void unlinkDriver(const std::string &bus, const std::string &name);
	// The bound driver ("" for none), from the device's driver link.
	std::string driverOf(const std::string &name, const std::string &bus = "pci") const;
	// driver_override's raw contents, exactly as last written.
	std::string overrideFileOf(const std::string &name, const std::string &bus = "pci") const;
	// Relative to root(): "devices/pci0000:00/0000:01:00.0".
	std::string deviceDir(const std::string &name, const std::string &bus = "pci") const;

	void writeFile(const std::string &relative, const std::string &text);
	std::string readFile(const std::string &relative) const;
	bool exists(const std::string &relative) const;
	void removeFile(const std::string &relative);   // unlink; a missing file is fine
	void removeTree(const std::string &relative);   // rm -r, for "the device vanished"

	std::optional<FakeDeviceEntry> entry(const std::string &bus, const std::string &name) const;
	std::vector<FakeDeviceEntry> entries() const;
	std::vector<std::string> buses() const;

private:
	void mkdirs(const std::string &relative);
	void ensureGroup(int group);

	std::string base_;
	std::string root_;
	mutable std::mutex mutex_; // guards devices_ and buses_ (FakeKernel reads them from its thread)
	std::map<std::pair<std::string, std::string>, FakeDeviceEntry> devices_;
	std::set<std::string> buses_;
	std::set<std::string> madeDirs_;
};

// Watches the tree with inotify (IN_CLOSE_WRITE) from its own thread and does what the kernel
// would on each write, in order:
//   drivers/<drv>/unbind  "<name>": removes the driver link if <drv> is bound;
//   drivers/<drv>/bind    "<name>": links <drv> if the device is unbound, <drv> is loaded, the
//                                   override is empty or <drv>, and <drv> does not refuse it;
//   drivers_probe         "<name>": an unbound device gets its override driver if set (and
//                                   loaded and not refusing), else its default driver;
//   driver_override: the first line sets it, a lone "\n" clears it, and an empty write is
//                    ignored (it never reaches the kernel's store callback).
// Writes always succeed, as sysfs writes that "work" while nothing binds. Every action is
// logged. Start it after the tree is built, or call watchNew() after adding to it.
class FakeKernel
{
public:
	explicit FakeKernel(FakeSysfs &sysfs);
	~FakeKernel();
	FakeKernel(const FakeKernel &) = delete;
	FakeKernel &operator=(const FakeKernel &) = delete;

	// Watch buses, drivers and devices added since construction.
	void watchNew();
	// Block until every write made before this call has been handled (a marker write goes
	// through the same inotify queue). False after `limit` — a hung fake, not a slow one.
	bool settle(std::chrono::milliseconds limit = std::chrono::seconds(10));

	// Failure switch: <driver> refuses <name> — bind and probe accept the write, nothing binds.
	void refuse(const std::string &driver, const std::string &name);
	void allowAll();
	// Model vfio-platform / vfio-amba's reset check, reading the device's first compatible
	// string and module/vfio_platform/parameters/reset_required as the kernel does: a device
	// without a reset handler (Linux 6.1's three: calxeda,hb-xgmac, amd,xgbe-seattle-v1a,
	// brcm,iproc-flexrm-mbox) fails the probe when vfio-platform's reset_required is Y (or the
	// parameter is absent: the default) and, with `linux61`, always (Linux 6.1's ENOENT bug,
	// vfio-amba included). As in the kernel the sysfs write still succeeds; the log says
	// "probe <name> vfio-platform: -ENOENT (no reset handler)".
	void modelVfioPlatformReset(bool linux61);

	// What it did, oldest first: "override <name> vfio-pci", "override <name> cleared",
	// "override <name> empty write ignored", "unbind <name> e1000e", "unbind <name> e1000e: not bound",
	// "probe <name> vfio-pci", "probe <name>: nothing bound", "probe <name>: already bound",
	// "bind <name> e1000e", "bind <name> e1000e: refused" (busy / override / not loaded).
	std::vector<std::string> log() const;
	void clearLog();
	// The override as the kernel holds it ("" for none), which may differ from the file.
	std::string overrideOf(const std::string &name, const std::string &bus = "pci") const;

private:
	enum class WatchKind { Settle, Bus, Driver, Device };
	struct Watch {
		WatchKind kind;
		std::string bus;
		std::string name; // driver or device name
	};

	void addWatch(const std::string &path, Watch w);
	void run();
	void handle(const Watch &w, const std::string &file);
	void probe(const std::string &bus, const std::string &name);
	void bind(const std::string &bus, const std::string &driver, const std::string &name);
	void unbind(const std::string &bus, const std::string &driver, const std::string &name);
	void setOverride(const std::string &bus, const std::string &name, const std::string &contents);
	bool loaded(const std::string &bus, const std::string &driver) const;
	void note(std::string line);

	FakeSysfs &sysfs_;
	UniqueFd inotify_;
	UniqueFd stop_; // eventfd
	std::string settlePath_;

	mutable std::mutex mutex_;
	std::map<int, Watch> watches_;
	std::map<std::pair<std::string, std::string>, std::string> overrides_; // (bus, name) -> driver
	std::set<std::pair<std::string, std::string>> refused_;                // (driver, name)
	std::optional<bool> resetModel_; // modelVfioPlatformReset(linux61), when on
	bool resetRefuses(const std::string &bus, const std::string &driver, const std::string &name) const;
	std::vector<std::string> log_;
	uint64_t settlesHandled_ = 0;
	std::condition_variable settled_;

	std::mutex settleMutex_; // one settle() at a time, so the marker count means "mine was seen"
	uint64_t settlesSent_ = 0;

	std::thread thread_;
};

// Compile device-tree source with dtc (Debian device-tree-compiler) into a flattened tree;
// throws std::runtime_error with dtc's messages when it fails.
std::vector<uint8_t> compileDts(const std::string &source);
// fdtoverlay -i base -o out overlay: the merged tree; throws with fdtoverlay's messages.
std::vector<uint8_t> applyOverlay(const std::vector<uint8_t> &base, const std::vector<uint8_t> &overlay);
// dtc -I dtb -O dts: the tree as source text, for checks that read it.
std::string decompileDtb(const std::vector<uint8_t> &blob);

} // namespace vfio_broker::testing
