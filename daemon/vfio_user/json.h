// SPDX-License-Identifier: Apache-2.0
// A small strict JSON reader (RFC 8259) for the vfio-user VERSION capabilities, bounded for hostile input.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace vfio_broker::vfio_user {

class JsonValue
{
public:
	enum class Type { Null, Bool, Number, String, Array, Object };

	Type type() const { return type_; }
	bool isObject() const { return type_ == Type::Object; }

	bool boolean() const { return bool_; }
	const std::string &string() const { return string_; }
	const std::vector<JsonValue> &array() const { return array_; }
	const std::map<std::string, JsonValue> &object() const { return object_; }

	// The number as an unsigned integer, when it is one exactly (no fraction, exponent or sign).
	std::optional<uint64_t> asUint() const;

	// Object member lookup; nullptr when absent or when this is not an object.
	const JsonValue *find(const std::string &key) const;

private:
	friend class JsonParser;
	Type type_ = Type::Null;
	bool bool_ = false;
	bool integral_ = false;
	uint64_t uint_ = 0;
	std::string string_; // String, or the number's text
	std::vector<JsonValue> array_;
	std::map<std::string, JsonValue> object_;
};

struct JsonLimits {
	size_t maxDepth = 16;
	size_t maxMembers = 256; // object members + array elements in the whole document
};

Result<JsonValue> parseJson(std::string_view text, const JsonLimits &limits = {});

} // namespace vfio_broker::vfio_user
