// SPDX-License-Identifier: Apache-2.0
// A fake sysfs tree for the control daemon's tests, and a fake kernel thread that binds drivers in it.
#include "fake_sysfs.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace vfio_broker::testing {

namespace {

[[noreturn]] void fail(const std::string &what, int err)
{
	throw std::runtime_error("fake sysfs: " + what + ": " + std::strerror(err));
}

void putFile(const std::string &path, const std::string &text)
{
	int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fail("creating " + path, errno);
	ssize_t n = ::write(fd, text.data(), text.size());
	int err = errno;
	::close(fd);
	if (n != static_cast<ssize_t>(text.size()))
		fail("writing " + path, n < 0 ? err : EIO);
}

// Create an empty file, keeping what is there if it exists.
void touch(const std::string &path)
{
	int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		fail("creating " + path, errno);
	::close(fd);
}

std::string slurp(const std::string &path)
{
	int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fail("opening " + path, errno);
	std::string out;
	char buf[4096];
	ssize_t n;
	while ((n = ::read(fd, buf, sizeof(buf))) > 0)
		out.append(buf, static_cast<size_t>(n));
	int err = errno;
	::close(fd);
	if (n < 0)
		fail("reading " + path, err);
	return out;
}

void symlinkTo(const std::string &target, const std::string &at)
{
	if (::symlink(target.c_str(), at.c_str()) != 0)
		fail("linking " + at + " -> " + target, errno);
}

// "../" once per component of a path relative to the root: from inside it back to the root.
std::string upTo(const std::string &relative)
{
	std::string up = "../";
	for (char c : relative)
		if (c == '/')
			up += "../";
	return up;
}

std::string vfioDriverOfBus(const std::string &bus)
{
	if (bus == "pci")
		return "vfio-pci";
	if (bus == "platform")
		return "vfio-platform";
	if (bus == "amba")
		return "vfio-amba";
	return "";
}

std::string firstLine(const std::string &text)
{
	std::string line = text.substr(0, text.find('\n'));
	while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r'))
		line.pop_back();
	return line;
}

// $TMPDIR when set; else tmpfs at /dev/shm when usable, since a tree is thousands of tiny
// files and links (on a disk file system 10,000 devices take half a minute); else /tmp.
std::string tempParent()
{
	if (const char *tmp = ::getenv("TMPDIR"); tmp && *tmp)
		return tmp;
	if (::access("/dev/shm", W_OK | X_OK) == 0)
		return "/dev/shm";
	return "/tmp";
}

} // namespace

// ---- FakeSysfs

FakeSysfs::FakeSysfs()
{
	std::string tmpl = tempParent() + "/vb-fake-sysfs-XXXXXX";
	if (!::mkdtemp(tmpl.data()))
		fail("mkdtemp in " + tempParent(), errno);
	base_ = tmpl;
	root_ = base_ + "/sys";
	if (::mkdir(root_.c_str(), 0755) != 0)
		fail("mkdir " + root_, errno);
	mkdirs("devices");
	mkdirs("kernel/iommu_groups");
	addBus("pci");
}

FakeSysfs::~FakeSysfs()
{
	std::error_code ec;
	std::filesystem::remove_all(base_, ec);
}

void FakeSysfs::mkdirs(const std::string &relative)
{
	if (madeDirs_.count(relative))
		return;
	// Parents first, from the cache: no failing mkdir per new directory.
	if (size_t slash = relative.rfind('/'); slash != std::string::npos)
		mkdirs(relative.substr(0, slash));
	std::string path = root_ + "/" + relative;
	if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
		fail("mkdir " + path, errno);
	madeDirs_.insert(relative);
}

void FakeSysfs::addBus(const std::string &bus)
{
	{
		std::lock_guard<std::mutex> lock(mutex_);
		if (!buses_.insert(bus).second)
			return;
	}
	mkdirs("bus/" + bus + "/devices");
	mkdirs("bus/" + bus + "/drivers");
	touch(root_ + "/bus/" + bus + "/drivers_probe");
	if (std::string vfio = vfioDriverOfBus(bus); !vfio.empty())
		addDriver(bus, vfio);
}

void FakeSysfs::addDriver(const std::string &bus, const std::string &name)
{
	addBus(bus);
	std::string dir = "bus/" + bus + "/drivers/" + name;
	if (madeDirs_.count(dir))
		return;
	mkdirs(dir);
	touch(root_ + "/" + dir + "/bind");
	touch(root_ + "/" + dir + "/unbind");
}

void FakeSysfs::removeDriver(const std::string &bus, const std::string &name)
{
	removeTree("bus/" + bus + "/drivers/" + name);
}

void FakeSysfs::ensureGroup(int group)
{
	mkdirs("kernel/iommu_groups/" + std::to_string(group) + "/devices");
}

void FakeSysfs::setNoIommuGroup(int group)
{
	ensureGroup(group);
	putFile(root_ + "/kernel/iommu_groups/" + std::to_string(group) + "/name", "vfio-noiommu\n");
}

void FakeSysfs::addPciDevice(const FakePciDevice &dev)
{
	if (dev.bdf.empty() || dev.parent.empty())
		throw std::runtime_error("fake sysfs: a PCI device needs a bdf and a parent");
	const std::string dirRel = "devices/" + dev.parent + "/" + dev.bdf;
	const std::string dir = root_ + "/" + dirRel;
	const std::string up = upTo(dirRel);
	mkdirs(dirRel);

	char buf[64];
	std::snprintf(buf, sizeof(buf), "0x%04x\n", dev.vendor);
	putFile(dir + "/vendor", buf);
	std::snprintf(buf, sizeof(buf), "0x%04x\n", dev.device);
	putFile(dir + "/device", buf);
	std::string resource;
	for (size_t i = 0; i < std::max<size_t>(dev.resources.size(), 13); i++) {
		FakeResource r = i < dev.resources.size() ? dev.resources[i] : FakeResource{};
		std::snprintf(buf, sizeof(buf), "0x%016llx 0x%016llx 0x%016llx\n",
			      static_cast<unsigned long long>(r.start),
			      static_cast<unsigned long long>(r.end),
			      static_cast<unsigned long long>(r.flags));
		resource += buf;
	}
	putFile(dir + "/resource", resource);
	putFile(dir + "/irq", std::to_string(dev.irq) + "\n");
	std::string config(64, '\0');
	config[0] = static_cast<char>(dev.vendor & 0xff);
	config[1] = static_cast<char>(dev.vendor >> 8);
	config[2] = static_cast<char>(dev.device & 0xff);
	config[3] = static_cast<char>(dev.device >> 8);
	config[0x3c] = static_cast<char>(dev.irq & 0xff);
	config[0x3d] = static_cast<char>(dev.interruptPin);
	putFile(dir + "/config", config);
	if (dev.reset)
		touch(dir + "/reset");
	if (!dev.resetMethod.empty())
		putFile(dir + "/reset_method", dev.resetMethod + "\n");
	putFile(dir + "/driver_override",
		dev.driverOverride.empty() ? "(null)\n" : dev.driverOverride + "\n");

	symlinkTo("../../../" + dirRel, root_ + "/bus/pci/devices/" + dev.bdf);
	std::string defaultDriver = dev.defaultDriver.value_or(dev.driver);
	if (!defaultDriver.empty())
		addDriver("pci", defaultDriver);
	if (!dev.driver.empty()) {
		addDriver("pci", dev.driver);
		symlinkTo(up + "bus/pci/drivers/" + dev.driver, dir + "/driver");
	}
	if (dev.group >= 0) {
		std::string group = std::to_string(dev.group);
		ensureGroup(dev.group);
		symlinkTo(up + "kernel/iommu_groups/" + group, dir + "/iommu_group");
		symlinkTo("../../../../" + dirRel,
			  root_ + "/kernel/iommu_groups/" + group + "/devices/" + dev.bdf);
	}

	std::lock_guard<std::mutex> lock(mutex_);
	devices_[{ "pci", dev.bdf }] = FakeDeviceEntry{ "pci", dev.bdf, dirRel, defaultDriver, "" };
}

std::vector<std::string> FakeSysfs::addPciDevices(size_t count, const FakePciDevice &templ, int firstGroup)
{
	std::vector<std::string> bdfs;
	bdfs.reserve(count);
	FakePciDevice dev = templ;
	for (size_t i = 0; i < count; i++) {
		unsigned domain = 1 + static_cast<unsigned>(i / 65536);
		char bdf[32], parent[32];
		std::snprintf(bdf, sizeof(bdf), "%04x:%02zx:%02zx.%zx", domain, (i / 256) % 256, (i / 8) % 32,
			      i % 8);
		std::snprintf(parent, sizeof(parent), "pci%04x:00", domain);
		dev.bdf = bdf;
		dev.parent = parent;
		dev.group = firstGroup < 0 ? -1 : firstGroup + static_cast<int>(i);
		addPciDevice(dev);
		bdfs.push_back(dev.bdf);
	}
	return bdfs;
}

FakeNonViableGroup FakeSysfs::addNonViableGroup(int group, const std::string &bus,
						const std::string &deviceDriver)
{
	FakeNonViableGroup out{ bus + ":00.0", bus + ":00.1" };
	FakePciDevice gpu;
	gpu.bdf = out.device;
	gpu.vendor = 0x10de;
	gpu.device = 0x1b80;
	gpu.driver = deviceDriver;
	gpu.group = group;
	gpu.resources = { { 0xf6000000, 0xf6ffffff, kFakeIoresourceMem } };
	FakePciDevice audio;
	audio.bdf = out.blocker;
	audio.vendor = 0x10de;
	audio.device = 0x10f0;
	audio.driver = "snd_hda_intel";
	audio.group = group;
	audio.resources = { { 0xf7080000, 0xf7083fff, kFakeIoresourceMem } };
	audio.interruptPin = 2;
	addPciDevice(gpu);
	addPciDevice(audio);
	return out;
}

void FakeSysfs::addBusDevice(const FakeBusDevice &dev)
{
	if (dev.name.empty() || dev.bus.empty())
		throw std::runtime_error("fake sysfs: a bus device needs a bus and a name");
	addBus(dev.bus);
	const std::string dirRel = "devices/" + dev.parent + "/" + dev.name;
	const std::string dir = root_ + "/" + dirRel;
	const std::string up = upTo(dirRel);
	mkdirs(dirRel);
	putFile(dir + "/driver_override", "(null)\n");
	symlinkTo("../../../" + dirRel, root_ + "/bus/" + dev.bus + "/devices/" + dev.name);
	if (!dev.ofNode.empty()) {
		std::string node = "firmware/devicetree/base" + (dev.ofNode == "/" ? std::string() : dev.ofNode);
		mkdirs(node);
		symlinkTo(up + node, dir + "/of_node");
	}
	if (dev.group >= 0) {
		std::string group = std::to_string(dev.group);
		ensureGroup(dev.group);
		symlinkTo(up + "kernel/iommu_groups/" + group, dir + "/iommu_group");
		symlinkTo("../../../../" + dirRel, root_ + "/kernel/iommu_groups/" + group + "/devices/" + dev.name);
	}
	std::string defaultDriver = dev.defaultDriver.value_or(dev.driver);
	if (!defaultDriver.empty())
		addDriver(dev.bus, defaultDriver);
	if (!dev.driver.empty()) {
		addDriver(dev.bus, dev.driver);
		symlinkTo(upTo(dirRel) + "bus/" + dev.bus + "/drivers/" + dev.driver, dir + "/driver");
	}
	std::lock_guard<std::mutex> lock(mutex_);
	devices_[{ dev.bus, dev.name }] = FakeDeviceEntry{ dev.bus, dev.name, dirRel, defaultDriver, dev.compatible };
}

void FakeSysfs::setDeviceTree(const std::vector<uint8_t> &blob)
{
	mkdirs("firmware");
	putFile(root_ + "/firmware/fdt", std::string(blob.begin(), blob.end()));
}

void FakeSysfs::setModuleParameter(const std::string &module, const std::string &param, const std::string &value)
{
	mkdirs("module/" + module + "/parameters");
	putFile(root_ + "/module/" + module + "/parameters/" + param, value + "\n");
}

void FakeSysfs::linkDriver(const std::string &bus, const std::string &name, const std::string &driver)
{
	std::string dir = deviceDir(name, bus);
	symlinkTo(upTo(dir) + "bus/" + bus + "/drivers/" + driver, root_ + "/" + dir + "/driver");
}

void FakeSysfs::unlinkDriver(const std::string &bus, const std::string &name)
{
	std::string link = root_ + "/" + deviceDir(name, bus) + "/driver";
	if (::unlink(link.c_str()) != 0 && errno != ENOENT)
		fail("unlinking " + link, errno);
}

std::string FakeSysfs::driverOf(const std::string &name, const std::string &bus) const
{
	std::string link = root_ + "/bus/" + bus + "/devices/" + name + "/driver";
	char buf[PATH_MAX];
	ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf) - 1);
	if (n < 0) {
		if (errno == ENOENT)
			return "";
		fail("reading " + link, errno);
	}
	std::string target(buf, static_cast<size_t>(n));
	return target.substr(target.rfind('/') + 1);
}

std::string FakeSysfs::overrideFileOf(const std::string &name, const std::string &bus) const
{
	return readFile(deviceDir(name, bus) + "/driver_override");
}

std::string FakeSysfs::deviceDir(const std::string &name, const std::string &bus) const
{
	auto e = entry(bus, name);
	if (!e)
		throw std::runtime_error("fake sysfs: no device " + bus + "/" + name);
	return e->dir;
}

void FakeSysfs::writeFile(const std::string &relative, const std::string &text)
{
	putFile(root_ + "/" + relative, text);
}

std::string FakeSysfs::readFile(const std::string &relative) const
{
	return slurp(root_ + "/" + relative);
}

bool FakeSysfs::exists(const std::string &relative) const
{
	return ::access((root_ + "/" + relative).c_str(), F_OK) == 0;
}

void FakeSysfs::removeFile(const std::string &relative)
{
	std::string path = root_ + "/" + relative;
	if (::unlink(path.c_str()) != 0 && errno != ENOENT)
		fail("unlinking " + path, errno);
}

void FakeSysfs::removeTree(const std::string &relative)
{
	std::error_code ec;
	std::filesystem::remove_all(root_ + "/" + relative, ec);
	if (ec)
		fail("removing " + relative, ec.value());
	madeDirs_.clear(); // cheap to rebuild; exactness matters more than speed here
}

std::optional<FakeDeviceEntry> FakeSysfs::entry(const std::string &bus, const std::string &name) const
{
	std::lock_guard<std::mutex> lock(mutex_);
	auto it = devices_.find({ bus, name });
	if (it == devices_.end())
		return std::nullopt;
	return it->second;
}

std::vector<FakeDeviceEntry> FakeSysfs::entries() const
{
	std::lock_guard<std::mutex> lock(mutex_);
	std::vector<FakeDeviceEntry> out;
	out.reserve(devices_.size());
	for (const auto &[key, e] : devices_)
		out.push_back(e);
	return out;
}

std::vector<std::string> FakeSysfs::buses() const
{
	std::lock_guard<std::mutex> lock(mutex_);
	return { buses_.begin(), buses_.end() };
}

// ---- FakeKernel

FakeKernel::FakeKernel(FakeSysfs &sysfs)
	: sysfs_(sysfs),
	  inotify_(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK)),
	  stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
	  settlePath_(sysfs.base() + "/settle")
{
	if (!inotify_)
		fail("inotify_init1", errno);
	if (!stop_)
		fail("eventfd", errno);
	touch(settlePath_);
	addWatch(sysfs_.base(), Watch{ WatchKind::Settle, "", "" });
	watchNew();
	thread_ = std::thread([this] { run(); });
}

FakeKernel::~FakeKernel()
{
	uint64_t one = 1;
	(void)!::write(stop_.get(), &one, sizeof(one));
	thread_.join();
}

void FakeKernel::addWatch(const std::string &path, Watch w)
{
	int wd = ::inotify_add_watch(inotify_.get(), path.c_str(), IN_CLOSE_WRITE | IN_ONLYDIR);
	if (wd < 0)
		fail("watching " + path, errno);
	std::lock_guard<std::mutex> lock(mutex_);
	watches_[wd] = std::move(w);
}

void FakeKernel::watchNew()
{
	const std::string &root = sysfs_.root();
	for (const std::string &bus : sysfs_.buses()) {
		addWatch(root + "/bus/" + bus, Watch{ WatchKind::Bus, bus, "" });
		std::string drivers = root + "/bus/" + bus + "/drivers";
		DIR *d = ::opendir(drivers.c_str());
		if (!d)
			fail("listing " + drivers, errno);
		while (struct dirent *entry = ::readdir(d)) {
			std::string name = entry->d_name;
			if (name != "." && name != "..")
				addWatch(drivers + "/" + name, Watch{ WatchKind::Driver, bus, name });
		}
		::closedir(d);
	}
	for (const FakeDeviceEntry &e : sysfs_.entries()) {
		auto key = std::make_pair(e.bus, e.name);
		bool known;
		{
			std::lock_guard<std::mutex> lock(mutex_);
			known = overrides_.count(key) > 0;
		}
		if (!known) {
			std::string line = firstLine(sysfs_.readFile(e.dir + "/driver_override"));
			std::lock_guard<std::mutex> lock(mutex_);
			overrides_[key] = line == "(null)" ? "" : line;
		}
		addWatch(root + "/" + e.dir, Watch{ WatchKind::Device, e.bus, e.name });
	}
}

bool FakeKernel::settle(std::chrono::milliseconds limit)
{
	std::lock_guard<std::mutex> one(settleMutex_);
	uint64_t ticket = ++settlesSent_;
	putFile(settlePath_, std::to_string(ticket) + "\n");
	std::unique_lock<std::mutex> lock(mutex_);
	return settled_.wait_for(lock, limit, [&] { return settlesHandled_ >= ticket; });
}

void FakeKernel::refuse(const std::string &driver, const std::string &name)
{
	std::lock_guard<std::mutex> lock(mutex_);
	refused_.insert({ driver, name });
}

void FakeKernel::allowAll()
{
	std::lock_guard<std::mutex> lock(mutex_);
	refused_.clear();
}

void FakeKernel::modelVfioPlatformReset(bool linux61)
{
	std::lock_guard<std::mutex> lock(mutex_);
	resetModel_ = linux61;
}

bool FakeKernel::resetRefuses(const std::string &bus, const std::string &driver, const std::string &name) const
{
	std::optional<bool> linux61;
	{
		std::lock_guard<std::mutex> lock(mutex_);
		linux61 = resetModel_;
	}
	if (!linux61 || (driver != "vfio-platform" && driver != "vfio-amba"))
		return false;
	auto e = sysfs_.entry(bus, name);
	if (!e)
		return false;
	for (const char *handled : { "calxeda,hb-xgmac", "amd,xgbe-seattle-v1a", "brcm,iproc-flexrm-mbox" })
		if (e->compatible == handled)
			return false;
	if (*linux61)
		return true;
	if (driver == "vfio-amba")
		return false;
	const std::string param = "module/vfio_platform/parameters/reset_required";
	return !sysfs_.exists(param) || firstLine(sysfs_.readFile(param)) != "N";
}

std::vector<std::string> FakeKernel::log() const
{
	std::lock_guard<std::mutex> lock(mutex_);
	return log_;
}

void FakeKernel::clearLog()
{
	std::lock_guard<std::mutex> lock(mutex_);
	log_.clear();
}

std::string FakeKernel::overrideOf(const std::string &name, const std::string &bus) const
{
	std::lock_guard<std::mutex> lock(mutex_);
	auto it = overrides_.find({ bus, name });
	return it == overrides_.end() ? "" : it->second;
}

void FakeKernel::note(std::string line)
{
	std::lock_guard<std::mutex> lock(mutex_);
	log_.push_back(std::move(line));
}

bool FakeKernel::loaded(const std::string &bus, const std::string &driver) const
{
	return sysfs_.exists("bus/" + bus + "/drivers/" + driver);
}

void FakeKernel::run()
{
	// Aligned for struct inotify_event; holds many events per read.
	alignas(struct inotify_event) char buf[64 * 1024];
	for (;;) {
		struct pollfd fds[2] = { { inotify_.get(), POLLIN, 0 }, { stop_.get(), POLLIN, 0 } };
		if (::poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			note(std::string("error: poll: ") + std::strerror(errno));
			return;
		}
		if (fds[1].revents & POLLIN)
			return;
		ssize_t n = ::read(inotify_.get(), buf, sizeof(buf));
		if (n <= 0)
			continue;
		for (ssize_t off = 0; off < n;) {
			const auto *ev = reinterpret_cast<const struct inotify_event *>(buf + off);
			off += static_cast<ssize_t>(sizeof(struct inotify_event) + ev->len);
			if (ev->mask & IN_Q_OVERFLOW) {
				note("error: inotify queue overflow, events lost");
				continue;
			}
			std::optional<Watch> w;
			{
				std::lock_guard<std::mutex> lock(mutex_);
				auto it = watches_.find(ev->wd);
				if (it != watches_.end())
					w = it->second;
				if (ev->mask & IN_IGNORED)
					watches_.erase(ev->wd);
			}
			if (!w || !(ev->mask & IN_CLOSE_WRITE) || ev->len == 0)
				continue;
			try {
				handle(*w, ev->name);
			} catch (const std::exception &e) {
				note(std::string("error: ") + e.what());
			}
		}
	}
}

void FakeKernel::handle(const Watch &w, const std::string &file)
{
	const std::string &root = sysfs_.root();
	switch (w.kind) {
	case WatchKind::Settle:
		if (file == "settle") {
			std::lock_guard<std::mutex> lock(mutex_);
			settlesHandled_++;
			settled_.notify_all();
		}
		return;
	case WatchKind::Bus:
		if (file == "drivers_probe") {
			std::string name = firstLine(slurp(root + "/bus/" + w.bus + "/drivers_probe"));
			if (name.empty())
				note("probe: empty write ignored");
			else
				probe(w.bus, name);
		}
		return;
	case WatchKind::Driver:
		if (file == "bind" || file == "unbind") {
			std::string name =
				firstLine(slurp(root + "/bus/" + w.bus + "/drivers/" + w.name + "/" + file));
			if (name.empty())
				note(file + ": empty write ignored");
			else if (file == "bind")
				bind(w.bus, w.name, name);
			else
				unbind(w.bus, w.name, name);
		}
		return;
	case WatchKind::Device:
		if (file == "driver_override")
			setOverride(w.bus, w.name,
				    slurp(root + "/" + sysfs_.deviceDir(w.name, w.bus) + "/driver_override"));
		return;
	}
}

void FakeKernel::probe(const std::string &bus, const std::string &name)
{
	auto e = sysfs_.entry(bus, name);
	if (!e) {
		note("probe " + name + ": no such device");
		return;
	}
	if (!sysfs_.driverOf(name, bus).empty()) {
		note("probe " + name + ": already bound");
		return;
	}
	std::string target = overrideOf(name, bus);
	if (target.empty())
		target = e->defaultDriver;
	bool refusing;
	{
		std::lock_guard<std::mutex> lock(mutex_);
		refusing = refused_.count({ target, name }) > 0;
	}
	if (!target.empty() && !refusing && loaded(bus, target) && resetRefuses(bus, target, name)) {
		note("probe " + name + " " + target + ": -ENOENT (no reset handler)");
		return;
	}
	if (target.empty() || refusing || !loaded(bus, target)) {
		note("probe " + name + ": nothing bound");
		return;
	}
	sysfs_.linkDriver(bus, name, target);
	note("probe " + name + " " + target);
}

void FakeKernel::bind(const std::string &bus, const std::string &driver, const std::string &name)
{
	const std::string what = "bind " + name + " " + driver;
	if (!sysfs_.entry(bus, name)) {
		note(what + ": refused (no such device)");
		return;
	}
	if (!sysfs_.driverOf(name, bus).empty()) {
		note(what + ": refused (busy)");
		return;
	}
	std::string wanted = overrideOf(name, bus);
	if (!wanted.empty() && wanted != driver) {
		note(what + ": refused (override " + wanted + ")");
		return;
	}
	bool refusing;
	{
		std::lock_guard<std::mutex> lock(mutex_);
		refusing = refused_.count({ driver, name }) > 0;
	}
	if (refusing || !loaded(bus, driver)) {
		note(what + (refusing ? ": refused" : ": refused (not loaded)"));
		return;
	}
	if (resetRefuses(bus, driver, name)) {
		note(what + ": -ENOENT (no reset handler)");
		return;
	}
	sysfs_.linkDriver(bus, name, driver);
	note(what);
}

void FakeKernel::unbind(const std::string &bus, const std::string &driver, const std::string &name)
{
	if (!sysfs_.entry(bus, name) || sysfs_.driverOf(name, bus) != driver) {
		note("unbind " + name + " " + driver + ": not bound");
		return;
	}
	sysfs_.unlinkDriver(bus, name);
	note("unbind " + name + " " + driver);
}

void FakeKernel::setOverride(const std::string &bus, const std::string &name, const std::string &contents)
{
	if (contents.empty()) {
		note("override " + name + " empty write ignored");
		return;
	}
	std::string line = firstLine(contents);
	{
		std::lock_guard<std::mutex> lock(mutex_);
		overrides_[{ bus, name }] = line;
	}
	note("override " + name + (line.empty() ? std::string(" cleared") : " " + line));
}

// ---- dtc and fdtoverlay

namespace {

// Run a device-tree tool in a scratch directory holding `inputs` (name -> bytes); returns the
// bytes of `output`, or throws with what the tool printed.
std::string runDtTool(const std::vector<std::string> &argv, const std::map<std::string, std::string> &inputs,
		      const std::string &output)
{
	std::string tmpl = tempParent() + "/vb-dt-XXXXXX";
	if (!::mkdtemp(tmpl.data()))
		fail("mkdtemp in " + tempParent(), errno);
	const std::string dir = tmpl;
	struct Cleanup {
		std::string dir;
		~Cleanup()
		{
			std::error_code ec;
			std::filesystem::remove_all(dir, ec);
		}
	} cleanup{ dir };
	for (const auto &[name, bytes] : inputs)
		putFile(dir + "/" + name, bytes);
	const std::string log = dir + "/tool.log";
	std::vector<std::string> args = argv;
	pid_t pid = ::fork();
	if (pid < 0)
		fail("fork", errno);
	if (pid == 0) {
		if (::chdir(dir.c_str()) != 0)
			::_exit(126);
		int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd >= 0) {
			::dup2(fd, 1);
			::dup2(fd, 2);
		}
		std::vector<char *> cargs;
		for (auto &a : args)
			cargs.push_back(a.data());
		cargs.push_back(nullptr);
		::execvp(cargs[0], cargs.data());
		::_exit(127);
	}
	int status = 0;
	while (::waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			fail("waitpid " + argv[0], errno);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		throw std::runtime_error(argv[0] + " failed (wait status " + std::to_string(status) + "): " + slurp(log));
	return slurp(dir + "/" + output);
}

} // namespace

std::vector<uint8_t> compileDts(const std::string &source)
{
	std::string out = runDtTool({ "dtc", "-q", "-@", "-I", "dts", "-O", "dtb", "-o", "out.dtb", "in.dts" },
				    { { "in.dts", source } }, "out.dtb");
	return std::vector<uint8_t>(out.begin(), out.end());
}

std::vector<uint8_t> applyOverlay(const std::vector<uint8_t> &base, const std::vector<uint8_t> &overlay)
{
	std::string out = runDtTool({ "fdtoverlay", "-i", "base.dtb", "-o", "out.dtb", "overlay.dtbo" },
				    { { "base.dtb", std::string(base.begin(), base.end()) },
				      { "overlay.dtbo", std::string(overlay.begin(), overlay.end()) } },
				    "out.dtb");
	return std::vector<uint8_t>(out.begin(), out.end());
}

std::string decompileDtb(const std::vector<uint8_t> &blob)
{
	return runDtTool({ "dtc", "-q", "-I", "dtb", "-O", "dts", "-o", "out.dts", "in.dtb" },
			 { { "in.dtb", std::string(blob.begin(), blob.end()) } }, "out.dts");
}

} // namespace vfio_broker::testing
