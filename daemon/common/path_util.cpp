// SPDX-License-Identifier: Apache-2.0
// Path helpers for sysfs walks.
#include "common/path_util.h"

#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace vfio_broker::path {

std::string stripTrailingSlashes(std::string path)
{
	while (path.size() > 1 && path.back() == '/')
		path.pop_back();
	return path;
}

bool isWithin(const std::string &path, const std::string &dir)
{
	if (dir == "/")
		return !path.empty() && path[0] == '/';
	return path.compare(0, dir.size(), dir) == 0 && (path.size() == dir.size() || path[dir.size()] == '/');
}

std::string baseName(const std::string &path)
{
	size_t slash = path.rfind('/');
	return slash == std::string::npos ? path : path.substr(slash + 1);
}

Result<std::string> canonicalPath(const std::string &path)
{
	char *resolved = ::realpath(path.c_str(), nullptr);
	if (!resolved)
		return errnoError(errno, "cannot resolve " + path);
	std::string out(resolved);
	std::free(resolved);
	return out;
}

Result<std::optional<std::string>> readLink(const std::string &path)
{
	char buf[PATH_MAX];
	ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf));
	if (n < 0) {
		if (errno == ENOENT)
			return std::optional<std::string>();
		return errnoError(errno, "cannot read link " + path);
	}
	if (static_cast<size_t>(n) == sizeof(buf))
		return makeError(ENAMETOOLONG, "link %s is too long", path.c_str());
	return std::optional<std::string>(std::string(buf, static_cast<size_t>(n)));
}

} // namespace vfio_broker::path
