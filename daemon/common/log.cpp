// SPDX-License-Identifier: Apache-2.0
// Leveled stderr logging with a per-process prefix; one write(2) per line so lines never interleave.
#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace vfio_broker::log {

namespace {
std::atomic<Level> gLevel{ Level::Info };
std::mutex gPrefixLock;
std::string gPrefix = "vfio-broker";
} // namespace

void setLevel(Level l) { gLevel = l; }
Level level() { return gLevel; }

bool parseLevel(const std::string &name, Level *out)
{
	static const struct { const char *name; Level level; } names[] = {
		{ "debug", Level::Debug }, { "info", Level::Info },
		{ "warning", Level::Warning }, { "warn", Level::Warning },
		{ "error", Level::Error },
	};
	for (const auto &n : names) {
		if (name == n.name) {
			*out = n.level;
			return true;
		}
	}
	return false;
}

void setPrefix(const std::string &prefix)
{
	std::lock_guard<std::mutex> lock(gPrefixLock);
	gPrefix = prefix;
}

void write(Level l, const char *fmt, ...)
{
	static const char *tags[] = { "debug", "info", "warning", "error" };
	char line[1024];
	int n;
	{
		std::lock_guard<std::mutex> lock(gPrefixLock);
		n = std::snprintf(line, sizeof(line), "%s: %s: ", gPrefix.c_str(),
				  tags[static_cast<int>(l)]);
	}
	if (n < 0 || static_cast<size_t>(n) >= sizeof(line))
		n = 0;
	va_list ap;
	va_start(ap, fmt);
	int m = std::vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	size_t len = n + (m < 0 ? 0 : std::min<size_t>(m, sizeof(line) - n - 2));
	line[len++] = '\n';
	ssize_t ignored = ::write(STDERR_FILENO, line, len);
	(void)ignored;
}

} // namespace vfio_broker::log
