// SPDX-License-Identifier: Apache-2.0
// Recursive-descent JSON parser with depth and size limits; errors name the byte offset.
#include "vfio_user/json.h"

#include <cstring>

namespace vfio_broker::vfio_user {

std::optional<uint64_t> JsonValue::asUint() const
{
	if (type_ != Type::Number || !integral_)
		return std::nullopt;
	return uint_;
}

const JsonValue *JsonValue::find(const std::string &key) const
{
	if (type_ != Type::Object)
		return nullptr;
	auto it = object_.find(key);
	return it == object_.end() ? nullptr : &it->second;
}

class JsonParser
{
public:
	JsonParser(std::string_view text, const JsonLimits &limits) : s_(text), limits_(limits) {}

	Result<JsonValue> parseDocument()
	{
		JsonValue v;
		if (!parseValue(v, 0))
			return fail();
		skipSpace();
		if (pos_ != s_.size()) {
			err_ = "trailing characters";
			return fail();
		}
		return v;
	}

private:
	Error fail() const
	{
		return makeError(EINVAL, "invalid JSON at byte %zu: %s", pos_, err_);
	}

	void skipSpace()
	{
		while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' ||
					    s_[pos_] == '\n' || s_[pos_] == '\r'))
			pos_++;
	}

	bool literal(const char *word)
	{
		size_t n = std::strlen(word);
		if (s_.substr(pos_, n) != word) {
			err_ = "unknown literal";
			return false;
		}
		pos_ += n;
		return true;
	}

	bool countMember()
	{
		if (++members_ > limits_.maxMembers) {
			err_ = "too many members";
			return false;
		}
		return true;
	}

	bool parseValue(JsonValue &v, size_t depth)
	{
		skipSpace();
		if (pos_ >= s_.size()) {
			err_ = "unexpected end";
			return false;
		}
		char c = s_[pos_];
		switch (c) {
		case '{':
			return parseObject(v, depth + 1);
		case '[':
			return parseArray(v, depth + 1);
		case '"':
			v.type_ = JsonValue::Type::String;
			return parseString(v.string_);
		case 't':
			v.type_ = JsonValue::Type::Bool;
			v.bool_ = true;
			return literal("true");
		case 'f':
			v.type_ = JsonValue::Type::Bool;
			return literal("false");
		case 'n':
			return literal("null");
		default:
			if (c == '-' || (c >= '0' && c <= '9'))
				return parseNumber(v);
			err_ = "unexpected character";
			return false;
		}
	}

	bool parseObject(JsonValue &v, size_t depth)
	{
		if (depth > limits_.maxDepth) {
			err_ = "nested too deeply";
			return false;
		}
		v.type_ = JsonValue::Type::Object;
		pos_++; // '{'
		skipSpace();
		if (pos_ < s_.size() && s_[pos_] == '}') {
			pos_++;
			return true;
		}
		for (;;) {
			skipSpace();
			if (pos_ >= s_.size() || s_[pos_] != '"') {
				err_ = "expected member name";
				return false;
			}
			std::string key;
			if (!parseString(key) || !countMember())
				return false;
			skipSpace();
			if (pos_ >= s_.size() || s_[pos_] != ':') {
				err_ = "expected ':'";
				return false;
			}
			pos_++;
			JsonValue member;
			if (!parseValue(member, depth))
				return false;
			if (v.object_.count(key)) {
				err_ = "duplicate member name";
				return false;
			}
			v.object_.emplace(std::move(key), std::move(member));
			skipSpace();
			if (pos_ < s_.size() && s_[pos_] == ',') {
				pos_++;
				continue;
			}
			if (pos_ < s_.size() && s_[pos_] == '}') {
				pos_++;
				return true;
			}
			err_ = "expected ',' or '}'";
			return false;
		}
	}

	bool parseArray(JsonValue &v, size_t depth)
	{
		if (depth > limits_.maxDepth) {
			err_ = "nested too deeply";
			return false;
		}
		v.type_ = JsonValue::Type::Array;
		pos_++; // '['
		skipSpace();
		if (pos_ < s_.size() && s_[pos_] == ']') {
			pos_++;
			return true;
		}
		for (;;) {
			JsonValue element;
			if (!countMember() || !parseValue(element, depth))
				return false;
			v.array_.push_back(std::move(element));
			skipSpace();
			if (pos_ < s_.size() && s_[pos_] == ',') {
				pos_++;
				continue;
			}
			if (pos_ < s_.size() && s_[pos_] == ']') {
				pos_++;
				return true;
			}
			err_ = "expected ',' or ']'";
			return false;
		}
	}

	static void appendUtf8(std::string &out, uint32_t cp)
	{
		if (cp < 0x80) {
			out += static_cast<char>(cp);
		} else if (cp < 0x800) {
			out += static_cast<char>(0xc0 | (cp >> 6));
			out += static_cast<char>(0x80 | (cp & 0x3f));
		} else if (cp < 0x10000) {
			out += static_cast<char>(0xe0 | (cp >> 12));
			out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
			out += static_cast<char>(0x80 | (cp & 0x3f));
		} else {
			out += static_cast<char>(0xf0 | (cp >> 18));
			out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
			out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
			out += static_cast<char>(0x80 | (cp & 0x3f));
		}
	}

	bool parseHex4(uint32_t &out)
	{
		if (s_.size() - pos_ < 4) {
			err_ = "short \\u escape";
			return false;
		}
		out = 0;
		for (int i = 0; i < 4; i++) {
			char h = s_[pos_++];
			out <<= 4;
			if (h >= '0' && h <= '9')
				out |= h - '0';
			else if (h >= 'a' && h <= 'f')
				out |= h - 'a' + 10;
			else if (h >= 'A' && h <= 'F')
				out |= h - 'A' + 10;
			else {
				err_ = "bad \\u escape";
				return false;
			}
		}
		return true;
	}

	// One UTF-8 sequence starting at pos_ (RFC 3629: no overlongs, surrogates or > U+10FFFF).
	bool copyUtf8(std::string &out)
	{
		unsigned char c = s_[pos_];
		size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
		if (n == 0 || c > 0xf4 || c == 0xc0 || c == 0xc1 || s_.size() - pos_ < n) {
			err_ = "invalid UTF-8";
			return false;
		}
		uint32_t cp = c & (0xff >> (n + 1));
		for (size_t i = 1; i < n; i++) {
			unsigned char cc = s_[pos_ + i];
			if ((cc & 0xc0) != 0x80) {
				err_ = "invalid UTF-8";
				return false;
			}
			cp = (cp << 6) | (cc & 0x3f);
		}
		static const uint32_t minimum[] = { 0, 0, 0x80, 0x800, 0x10000 };
		if (cp < minimum[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
			err_ = "invalid UTF-8";
			return false;
		}
		out.append(s_.substr(pos_, n));
		pos_ += n;
		return true;
	}

	bool parseString(std::string &out)
	{
		pos_++; // opening quote
		while (pos_ < s_.size()) {
			unsigned char c = s_[pos_++];
			if (c == '"')
				return true;
			if (c < 0x20) {
				pos_--; // report the offending byte itself
				err_ = "control character in string";
				return false;
			}
			if (c >= 0x80) {
				pos_--;
				if (!copyUtf8(out))
					return false;
				continue;
			}
			if (c != '\\') {
				out += static_cast<char>(c);
				continue;
			}
			if (pos_ >= s_.size())
				break;
			char e = s_[pos_++];
			switch (e) {
			case '"': out += '"'; break;
			case '\\': out += '\\'; break;
			case '/': out += '/'; break;
			case 'b': out += '\b'; break;
			case 'f': out += '\f'; break;
			case 'n': out += '\n'; break;
			case 'r': out += '\r'; break;
			case 't': out += '\t'; break;
			case 'u': {
				uint32_t cp;
				if (!parseHex4(cp))
					return false;
				if (cp >= 0xd800 && cp <= 0xdbff) {
					uint32_t lo;
					if (s_.substr(pos_, 2) != "\\u") {
						err_ = "lone surrogate";
						return false;
					}
					pos_ += 2;
					if (!parseHex4(lo) || lo < 0xdc00 || lo > 0xdfff) {
						err_ = "bad surrogate pair";
						return false;
					}
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				} else if (cp >= 0xdc00 && cp <= 0xdfff) {
					err_ = "lone surrogate";
					return false;
				}
				appendUtf8(out, cp);
				break;
			}
			default:
				err_ = "bad escape";
				return false;
			}
		}
		err_ = "unterminated string";
		return false;
	}

	bool parseNumber(JsonValue &v)
	{
		size_t start = pos_;
		bool negative = false, fraction = false;
		if (s_[pos_] == '-') {
			negative = true;
			pos_++;
		}
		if (pos_ >= s_.size() || s_[pos_] < '0' || s_[pos_] > '9') {
			err_ = "bad number";
			return false;
		}
		if (s_[pos_] == '0' && pos_ + 1 < s_.size() && s_[pos_ + 1] >= '0' && s_[pos_ + 1] <= '9') {
			err_ = "leading zero";
			return false;
		}
		bool overflow = false;
		uint64_t value = 0;
		while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
			uint64_t digit = s_[pos_++] - '0';
			if (value > (UINT64_MAX - digit) / 10)
				overflow = true;
			value = value * 10 + digit;
		}
		if (pos_ < s_.size() && s_[pos_] == '.') {
			fraction = true;
			pos_++;
			size_t digits = pos_;
			while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9')
				pos_++;
			if (pos_ == digits) {
				err_ = "bad fraction";
				return false;
			}
		}
		if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
			fraction = true;
			pos_++;
			if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-'))
				pos_++;
			size_t digits = pos_;
			while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9')
				pos_++;
			if (pos_ == digits) {
				err_ = "bad exponent";
				return false;
			}
		}
		v.type_ = JsonValue::Type::Number;
		v.string_ = std::string(s_.substr(start, pos_ - start));
		v.integral_ = !negative && !fraction && !overflow;
		v.uint_ = value;
		return true;
	}

	std::string_view s_;
	JsonLimits limits_;
	size_t pos_ = 0;
	size_t members_ = 0;
	const char *err_ = "";
};

Result<JsonValue> parseJson(std::string_view text, const JsonLimits &limits)
{
	JsonParser parser(text, limits);
	return parser.parseDocument();
}

} // namespace vfio_broker::vfio_user
