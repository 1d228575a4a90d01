// SPDX-License-Identifier: Apache-2.0
// Minimal leveled logging to stderr (journald picks it up under systemd). Only top layers log.
#pragma once

#include <string>

namespace vfio_broker::log {

enum class Level { Debug = 0, Info = 1, Warning = 2, Error = 3 };

void setLevel(Level level);
Level level();
bool parseLevel(const std::string &name, Level *out);
void setPrefix(const std::string &prefix);

void write(Level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

} // namespace vfio_broker::log

#define VB_LOG(lvl, ...)                                                         \
	do {                                                                     \
		if (::vfio_broker::log::Level::lvl >= ::vfio_broker::log::level()) \
			::vfio_broker::log::write(::vfio_broker::log::Level::lvl, __VA_ARGS__); \
	} while (0)
#define LOG_DEBUG(...) VB_LOG(Debug, __VA_ARGS__)
#define LOG_INFO(...) VB_LOG(Info, __VA_ARGS__)
#define LOG_WARN(...) VB_LOG(Warning, __VA_ARGS__)
#define LOG_ERROR(...) VB_LOG(Error, __VA_ARGS__)
