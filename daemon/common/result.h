// SPDX-License-Identifier: Apache-2.0
// Result<T>: a value or an error (errno + message with context), returned across module boundaries.
#pragma once

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <utility>
#include <variant>

namespace vfio_broker {

struct Error {
	int code = EIO;      // a positive errno value
	std::string message; // what failed, with context; no trailing newline
};

std::string strFormat(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Build an Error with a printf-style message.
Error makeError(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// An Error from errno with "what: strerror(errno)".
Error errnoError(const char *what);
Error errnoError(int code, const std::string &what);

// Prefix context onto an error: "ctx: original message".
Error withContext(Error err, const std::string &ctx);

template<typename T>
class [[nodiscard]] Result
{
public:
	Result(T value) : v_(std::move(value)) {}
	Result(Error err) : v_(std::move(err)) {}

	bool ok() const { return v_.index() == 0; }
	explicit operator bool() const { return ok(); }

	T &value() & { return std::get<0>(v_); }
	const T &value() const & { return std::get<0>(v_); }
	T &&value() && { return std::get<0>(std::move(v_)); }
	T &operator*() & { return value(); }
	const T &operator*() const & { return value(); }
	T *operator->() { return &value(); }
	const T *operator->() const { return &value(); }

	const Error &error() const { return std::get<1>(v_); }
	Error &&takeError() { return std::get<1>(std::move(v_)); }

private:
	std::variant<T, Error> v_;
};

template<>
class [[nodiscard]] Result<void>
{
public:
	Result() = default;
	Result(Error err) : err_(std::move(err)), failed_(true) {}

	bool ok() const { return !failed_; }
	explicit operator bool() const { return ok(); }
	const Error &error() const { return err_; }
	Error &&takeError() { return std::move(err_); }

private:
	Error err_;
	bool failed_ = false;
};

using Status = Result<void>;

} // namespace vfio_broker
