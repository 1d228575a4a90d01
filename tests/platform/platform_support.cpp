// SPDX-License-Identifier: Apache-2.0
// Helpers for the platform tests (see platform_support.h).
#include "platform_support.h"

#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

extern "C" {
#include <libfdt.h>
}

namespace vfio_broker::platform::test {

DtbBuilder::DtbBuilder() : buf_(1 << 16)
{
	REQUIRE(fdt_create(buf_.data(), static_cast<int>(buf_.size())) == 0);
	REQUIRE(fdt_finish_reservemap(buf_.data()) == 0);
}

DtbBuilder &DtbBuilder::begin(const std::string &name)
{
	REQUIRE(fdt_begin_node(buf_.data(), name.c_str()) == 0);
	return *this;
}

DtbBuilder &DtbBuilder::end()
{
	REQUIRE(fdt_end_node(buf_.data()) == 0);
	return *this;
}

DtbBuilder &DtbBuilder::cells(const char *name, std::initializer_list<uint32_t> values)
{
	return cells(name, std::vector<uint32_t>(values));
}

DtbBuilder &DtbBuilder::cells(const char *name, const std::vector<uint32_t> &values)
{
	std::vector<fdt32_t> be;
	for (uint32_t v : values)
		be.push_back(cpu_to_fdt32(v));
	REQUIRE(fdt_property(buf_.data(), name, be.data(), static_cast<int>(be.size() * 4)) == 0);
	return *this;
}

DtbBuilder &DtbBuilder::str(const char *name, const std::string &value)
{
	REQUIRE(fdt_property_string(buf_.data(), name, value.c_str()) == 0);
	return *this;
}

DtbBuilder &DtbBuilder::strings(const char *name, std::initializer_list<std::string> values)
{
	std::string all;
	for (const auto &v : values) {
		all += v;
		all.push_back('\0');
	}
	REQUIRE(fdt_property(buf_.data(), name, all.data(), static_cast<int>(all.size())) == 0);
	return *this;
}

DtbBuilder &DtbBuilder::empty(const char *name)
{
	REQUIRE(fdt_property(buf_.data(), name, nullptr, 0) == 0);
	return *this;
}

DtbBuilder &DtbBuilder::raw(const char *name, const std::vector<uint8_t> &bytes)
{
	REQUIRE(fdt_property(buf_.data(), name, bytes.data(), static_cast<int>(bytes.size())) == 0);
	return *this;
}

std::vector<uint8_t> DtbBuilder::finish()
{
	REQUIRE(fdt_finish(buf_.data()) == 0);
	std::vector<uint8_t> out(buf_.begin(), buf_.begin() + fdt_totalsize(buf_.data()));
	return out;
}

HostDeviceTree treeOf(std::vector<uint8_t> blob)
{
	auto tree = HostDeviceTree::fromBlob(std::move(blob));
	INFO((tree ? std::string() : tree.error().message));
	REQUIRE(tree.ok());
	return std::move(*tree);
}

std::string findProgram(const std::string &name)
{
	if (name.find('/') != std::string::npos)
		return ::access(name.c_str(), X_OK) == 0 ? name : std::string();
	const char *path = std::getenv("PATH");
	std::string dirs = path ? path : "/usr/bin:/bin";
	size_t start = 0;
	while (start <= dirs.size()) {
		size_t colon = dirs.find(':', start);
		std::string dir = dirs.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
		std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
		if (::access(candidate.c_str(), X_OK) == 0)
			return candidate;
		if (colon == std::string::npos)
			break;
		start = colon + 1;
	}
	return std::string();
}

CommandResult runCommand(const std::vector<std::string> &argv)
{
	CommandResult result;
	std::string program = findProgram(argv.at(0));
	if (program.empty()) {
		result.err = argv[0] + ": not found";
		return result;
	}
	int outPipe[2], errPipe[2];
	REQUIRE(::pipe2(outPipe, O_CLOEXEC) == 0);
	REQUIRE(::pipe2(errPipe, O_CLOEXEC) == 0);
	std::vector<char *> args;
	for (const auto &a : argv)
		args.push_back(const_cast<char *>(a.c_str()));
	args.push_back(nullptr);
	pid_t pid = ::fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		::dup2(outPipe[1], STDOUT_FILENO);
		::dup2(errPipe[1], STDERR_FILENO);
		::execv(program.c_str(), args.data());
		::_exit(127);
	}
	::close(outPipe[1]);
	::close(errPipe[1]);
	struct pollfd fds[2] = { { outPipe[0], POLLIN, 0 }, { errPipe[0], POLLIN, 0 } };
	std::string *sinks[2] = { &result.out, &result.err };
	int open = 2;
	while (open > 0) {
		int n = ::poll(fds, 2, -1);
		if (n < 0 && errno == EINTR)
			continue;
		REQUIRE(n > 0);
		for (int i = 0; i < 2; i++) {
			if (fds[i].fd < 0 || fds[i].revents == 0)
				continue;
			char buf[4096];
			ssize_t got = ::read(fds[i].fd, buf, sizeof(buf));
			if (got > 0) {
				sinks[i]->append(buf, static_cast<size_t>(got));
			} else if (got == 0 || errno != EINTR) {
				::close(fds[i].fd);
				fds[i].fd = -1;
				open--;
			}
		}
	}
	int status = 0;
	while (::waitpid(pid, &status, 0) < 0)
		REQUIRE(errno == EINTR);
	result.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	return result;
}

TempDir::TempDir()
{
	const char *base = std::getenv("TMPDIR");
	std::string tmpl = std::string(base && *base ? base : "/tmp") + "/vb-platform-XXXXXX";
	std::vector<char> buf(tmpl.begin(), tmpl.end());
	buf.push_back('\0');
	REQUIRE(::mkdtemp(buf.data()) != nullptr);
	path_ = buf.data();
}

TempDir::~TempDir()
{
	::nftw(
		path_.c_str(),
		[](const char *p, const struct stat *, int, struct FTW *) { return ::remove(p); }, 16,
		FTW_DEPTH | FTW_PHYS);
}

std::vector<uint8_t> readBytes(const std::string &path)
{
	std::ifstream in(path, std::ios::binary);
	INFO(path);
	REQUIRE(in.good());
	return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void writeBytes(const std::string &path, const std::vector<uint8_t> &data)
{
	std::ofstream out(path, std::ios::binary | std::ios::trunc);
	out.write(reinterpret_cast<const char *>(data.data()), static_cast<std::streamsize>(data.size()));
	INFO(path);
	REQUIRE(out.good());
}

std::string fixtureDtb(const std::string &name)
{
	const char *dir = std::getenv("VFIO_BROKER_DT_FIXTURES");
	INFO("VFIO_BROKER_DT_FIXTURES is set by meson test");
	REQUIRE(dir != nullptr);
	return std::string(dir) + "/" + name + ".dtb";
}

bool applyOverlay(const std::string &baseDtb, const std::vector<uint8_t> &dtbo, std::vector<uint8_t> *out,
		  std::string *error)
{
	TempDir dir;
	writeBytes(dir.file("ov.dtbo"), dtbo);
	auto r = runCommand({ "fdtoverlay", "-i", baseDtb, "-o", dir.file("out.dtb"), dir.file("ov.dtbo") });
	if (r.exitCode != 0) {
		*error = "fdtoverlay exit " + std::to_string(r.exitCode) + ": " + r.err;
		return false;
	}
	*out = readBytes(dir.file("out.dtb"));
	return true;
}

} // namespace vfio_broker::platform::test
