// SPDX-License-Identifier: Apache-2.0
// Helpers for the platform tests: DTBs written in code (libfdt sequential write), compiled
// fixtures, temp directories and running dtc/fdtoverlay/vfio-broker-dt as subprocesses.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "platform/host_dt.h"

namespace vfio_broker::platform::test {

// A flattened tree written node by node; finish() returns the blob (REQUIREs libfdt success).
class DtbBuilder
{
public:
	DtbBuilder();
	DtbBuilder &begin(const std::string &name);
	DtbBuilder &end();
	DtbBuilder &cells(const char *name, std::initializer_list<uint32_t> values);
	DtbBuilder &cells(const char *name, const std::vector<uint32_t> &values);
	DtbBuilder &str(const char *name, const std::string &value);
	DtbBuilder &strings(const char *name, std::initializer_list<std::string> values);
	DtbBuilder &empty(const char *name);
	DtbBuilder &raw(const char *name, const std::vector<uint8_t> &bytes);
	std::vector<uint8_t> finish();

private:
	std::vector<uint8_t> buf_;
};

HostDeviceTree treeOf(std::vector<uint8_t> blob);

struct CommandResult {
	int exitCode = -1; // -1: could not run, or killed
	std::string out;
	std::string err;
};

// Runs argv[0] (a path, or a name looked up in PATH) to completion, collecting stdout/stderr.
CommandResult runCommand(const std::vector<std::string> &argv);

// Full path of a program in PATH, "" when absent.
std::string findProgram(const std::string &name);

class TempDir
{
public:
	TempDir();
	~TempDir();
	TempDir(const TempDir &) = delete;
	TempDir &operator=(const TempDir &) = delete;
	const std::string &path() const { return path_; }
	std::string file(const std::string &name) const { return path_ + "/" + name; }

private:
	std::string path_;
};

std::vector<uint8_t> readBytes(const std::string &path);
void writeBytes(const std::string &path, const std::vector<uint8_t> &data);

// A fixture compiled at build time with `dtc -@`: $VFIO_BROKER_DT_FIXTURES/<name>.dtb.
std::string fixtureDtb(const std::string &name);

// `fdtoverlay -i base -o out overlay`; the applied tree, or the tool's stderr in *error.
bool applyOverlay(const std::string &baseDtb, const std::vector<uint8_t> &dtbo, std::vector<uint8_t> *out,
		  std::string *error);

} // namespace vfio_broker::platform::test
