// SPDX-License-Identifier: Apache-2.0
// Path helpers for sysfs walks: canonical paths, containment, link targets.
#pragma once

#include <optional>
#include <string>

#include "common/result.h"

namespace vfio_broker::path {

// "/sys/" -> "/sys"; "/" stays "/".
std::string stripTrailingSlashes(std::string path);

// True when path is dir itself or lies below it (a plain prefix test would accept "/sysfoo").
bool isWithin(const std::string &path, const std::string &dir);

// The last component: "/sys/bus/pci/drivers/vfio-pci" -> "vfio-pci".
std::string baseName(const std::string &path);

// realpath(3): every symlink resolved; the errno of the failure otherwise.
Result<std::string> canonicalPath(const std::string &path);

// The target of a symlink as stored; nullopt when the link does not exist. ENAMETOOLONG when
// the target does not fit PATH_MAX.
Result<std::optional<std::string>> readLink(const std::string &path);

} // namespace vfio_broker::path
