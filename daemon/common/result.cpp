// SPDX-License-Identifier: Apache-2.0
// Formatting helpers for Result errors.
#include "common/result.h"

#include <cstring>
#include <vector>

namespace vfio_broker {

static std::string vformat(const char *fmt, va_list ap)
{
	va_list copy;
	va_copy(copy, ap);
	char small[256];
	int n = std::vsnprintf(small, sizeof(small), fmt, copy);
	va_end(copy);
	if (n < 0)
		return fmt;
	if (static_cast<size_t>(n) < sizeof(small))
		return std::string(small, n);
	std::vector<char> big(n + 1);
	std::vsnprintf(big.data(), big.size(), fmt, ap);
	return std::string(big.data(), n);
}

std::string strFormat(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	std::string s = vformat(fmt, ap);
	va_end(ap);
	return s;
}

Error makeError(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	Error e{ code, vformat(fmt, ap) };
	va_end(ap);
	return e;
}

Error errnoError(const char *what)
{
	int code = errno;
	return errnoError(code, what);
}

Error errnoError(int code, const std::string &what)
{
	return Error{ code, what + ": " + std::strerror(code) };
}

Error withContext(Error err, const std::string &ctx)
{
	err.message = ctx + ": " + err.message;
	return err;
}

} // namespace vfio_broker
