// SPDX-License-Identifier: Apache-2.0
// Internal: a small wrapper over libfdt's sequential-write API whose first error sticks, and
// big-endian cell encoding, shared by the sim:platform tree and the overlay generator.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

extern "C" {
#include <libfdt.h>
}

namespace vfio_broker::platform::detail {

inline void appendCell(std::string &buf, uint32_t cell)
{
	fdt32_t be = cpu_to_fdt32(cell);
	buf.append(reinterpret_cast<const char *>(&be), sizeof(be));
}

inline void appendCells(std::string &buf, std::initializer_list<uint32_t> cells)
{
	for (uint32_t c : cells)
		appendCell(buf, c);
}

// A 64-bit number as two cells (high first).
inline void appendU64(std::string &buf, uint64_t v)
{
	appendCells(buf, { static_cast<uint32_t>(v >> 32), static_cast<uint32_t>(v) });
}

class FdtWriter
{
public:
	explicit FdtWriter(std::vector<uint8_t> &buf) : buf_(buf)
	{
		check(fdt_create(buf_.data(), static_cast<int>(buf_.size())));
		check(fdt_finish_reservemap(buf_.data()));
	}
	void check(int err)
	{
		if (err_ == 0 && err < 0)
			err_ = err;
	}
	void begin(const std::string &name) { check(err_ ? err_ : fdt_begin_node(buf_.data(), name.c_str())); }
	void end() { check(err_ ? err_ : fdt_end_node(buf_.data())); }
	void str(const char *name, const std::string &value)
	{
		check(err_ ? err_ : fdt_property(buf_.data(), name, value.c_str(), static_cast<int>(value.size() + 1)));
	}
	void u32(const char *name, uint32_t value) { check(err_ ? err_ : fdt_property_u32(buf_.data(), name, value)); }
	void empty(const char *name) { check(err_ ? err_ : fdt_property(buf_.data(), name, nullptr, 0)); }
	void raw(const char *name, const void *data, size_t len)
	{
		check(err_ ? err_ : fdt_property(buf_.data(), name, data, static_cast<int>(len)));
	}
	void raw(const char *name, const std::string &bytes) { raw(name, bytes.data(), bytes.size()); }
	// Finish the blob and trim the buffer to its size; returns the libfdt error (0 = ok).
	int finish()
	{
		check(err_ ? err_ : fdt_finish(buf_.data()));
		if (err_ == 0)
			buf_.resize(fdt_totalsize(buf_.data()));
		return err_;
	}
	int error() const { return err_; }

private:
	std::vector<uint8_t> &buf_;
	int err_ = 0;
};

} // namespace vfio_broker::platform::detail
