// SPDX-License-Identifier: Apache-2.0
// Unit tests for the strict JSON reader used for VERSION capabilities: what it accepts, what it refuses and where.
#include <catch2/catch.hpp>

#include <cstdio>
#include <random>
#include <string>

#include "vfio_user/json.h"

using namespace vfio_broker;
using namespace vfio_broker::vfio_user;

namespace {

// The byte offset an error message names ("invalid JSON at byte N: ..."), or -1 when it names none.
long errorOffset(const Error &err)
{
	size_t at = err.message.find("at byte ");
	if (at == std::string::npos)
		return -1;
	return std::strtol(err.message.c_str() + at + 8, nullptr, 10);
}

// Parse text that must be refused; returns the offset the error names.
long refusedAt(std::string_view text, const JsonLimits &limits = {})
{
	auto r = parseJson(text, limits);
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().code == EINVAL);
	INFO(r.error().message);
	long off = errorOffset(r.error());
	CHECK(off >= 0);
	CHECK(off <= static_cast<long>(text.size()));
	return off;
}

JsonValue parsed(std::string_view text)
{
	auto r = parseJson(text);
	INFO(text);
	if (!r)
		FAIL(r.error().message);
	return std::move(r).value();
}

std::string nested(char open, char close, size_t depth)
{
	return std::string(depth, open) + std::string(depth, close);
}

} // namespace

TEST_CASE("a VERSION capabilities document is read into nested objects", "[json]")
{
	JsonValue doc = parsed(R"( {"capabilities": {"max_msg_fds": 16, "pgsizes": 4096,
		"migration": {"pgsize": 4096, "flags": [true, false, null]}}} )");
	REQUIRE(doc.isObject());
	const JsonValue *caps = doc.find("capabilities");
	REQUIRE(caps);
	REQUIRE(caps->isObject());
	CHECK(caps->find("max_msg_fds")->asUint() == 16u);
	CHECK(caps->find("pgsizes")->asUint() == 4096u);
	const JsonValue *flags = caps->find("migration")->find("flags");
	REQUIRE(flags);
	REQUIRE(flags->type() == JsonValue::Type::Array);
	REQUIRE(flags->array().size() == 3);
	CHECK(flags->array()[0].type() == JsonValue::Type::Bool);
	CHECK(flags->array()[0].boolean());
	CHECK_FALSE(flags->array()[1].boolean());
	CHECK(flags->array()[2].type() == JsonValue::Type::Null);
	CHECK(doc.find("absent") == nullptr);
	CHECK(flags->find("x") == nullptr); // find on a non-object is a miss, not a crash
}

TEST_CASE("scalars at the top level are documents too", "[json]")
{
	CHECK(parsed("null").type() == JsonValue::Type::Null);
	CHECK(parsed(" true ").boolean());
	CHECK(parsed("\"s\"").string() == "s");
	CHECK(parsed("[]").array().empty());
	CHECK(parsed("{}").object().empty());
	CHECK(parsed("\t\r\n 7 \n").asUint() == 7u);
}

TEST_CASE("string escapes decode to their characters", "[json]")
{
	CHECK(parsed(R"("\"\\\/\b\f\n\r\t")").string() == "\"\\/\b\f\n\r\t");
	CHECK(parsed(R"("\u0041\u00e9\u20AC")").string() == "A\xc3\xa9\xe2\x82\xac");
	CHECK(parsed(R"("\u0000")").string() == std::string(1, '\0'));
}

TEST_CASE("a \\u surrogate pair decodes to one 4-byte UTF-8 character", "[json]")
{
	CHECK(parsed(R"("\ud83d\ude00")").string() == "\xf0\x9f\x98\x80");   // U+1F600
	CHECK(parsed(R"("\uD800\uDC00")").string() == "\xf0\x90\x80\x80");   // U+10000, the first
	CHECK(parsed(R"("\udbff\udfff")").string() == "\xf4\x8f\xbf\xbf");   // U+10FFFF, the last
}

TEST_CASE("asUint answers only for exact non-negative integers", "[json]")
{
	CHECK(parsed("0").asUint() == 0u);
	CHECK(parsed("4096").asUint() == 4096u);
	CHECK(parsed("18446744073709551615").asUint() == UINT64_MAX);
	CHECK_FALSE(parsed("18446744073709551616").asUint());  // one past: overflow
	CHECK_FALSE(parsed("99999999999999999999999").asUint());
	CHECK_FALSE(parsed("-1").asUint());
	CHECK_FALSE(parsed("-0").asUint());
	CHECK_FALSE(parsed("1.0").asUint());
	CHECK_FALSE(parsed("1e3").asUint());
	CHECK_FALSE(parsed("1E+3").asUint());
	CHECK_FALSE(parsed("\"5\"").asUint());
	CHECK_FALSE(parsed("true").asUint());
	// A number that is not a uint is still a number, with its text kept.
	JsonValue v = parsed("-12.5e-3");
	CHECK(v.type() == JsonValue::Type::Number);
	CHECK(v.string() == "-12.5e-3");
}

TEST_CASE("empty and blank input is refused at its end", "[json]")
{
	CHECK(refusedAt("") == 0);
	CHECK(refusedAt("  \n") == 3);
}

TEST_CASE("trailing characters after the document are refused where they start", "[json]")
{
	CHECK(refusedAt("{} x") == 3);
	CHECK(refusedAt("1 2") == 2);
	CHECK(refusedAt("{}{}") == 2);
	CHECK(refusedAt("[1]]") == 3);
}

TEST_CASE("a duplicate member name is refused at that member", "[json]")
{
	//                 0123456789012
	std::string text = R"({"a":1,"a":2})";
	long off = refusedAt(text);
	// Anywhere inside the second "a" member (its name starts at 7, its value ends at 12).
	CHECK(off >= 7);
	CHECK(off <= 12);
	auto r = parseJson(text);
	CHECK(r.error().message.find("duplicate") != std::string::npos);
	// The same name in different objects is fine.
	CHECK(parseJson(R"({"a":{"a":1},"b":{"a":2}})").ok());
}

TEST_CASE("an unterminated string is refused at the end of the input", "[json]")
{
	CHECK(refusedAt("\"abc") == 4);
	CHECK(refusedAt("{\"key") == 5);
	CHECK(refusedAt("\"abc\\") == 5); // a backslash as the last byte
	CHECK(refusedAt("\"\\u12") == 3); // short \u escape: where its digits start
}

// A raw control character must be escaped; the error points at the offending byte itself.
TEST_CASE("a raw control character in a string is refused at that character", "[json]")
{
	//                            0 1 2   3 4
	CHECK(refusedAt(std::string("\"a\x01" "b\"")) == 2);
	CHECK(refusedAt(std::string("\"\t\"")) == 1);
}

TEST_CASE("raw control characters in strings are refused", "[json]")
{
	for (int c = 0; c < 0x20; c++) {
		std::string text = "\"a";
		text += static_cast<char>(c);
		text += "\"";
		INFO("control character " << c);
		auto r = parseJson(text);
		REQUIRE_FALSE(r.ok());
		CHECK(r.error().message.find("control character") != std::string::npos);
	}
	CHECK(parseJson("\"\x7f\"").ok()); // DEL is not a control character to JSON
}

TEST_CASE("lone or mismatched surrogates are refused", "[json]")
{
	for (const char *text : { R"("\ud800")", R"("\ud800x")", R"("\ud800\u0041")", R"("\ud800\ud800")",
				  R"("\udc00")", R"("\udfff\ud800")", R"("\ud800\n")" }) {
		INFO(text);
		auto r = parseJson(text);
		REQUIRE_FALSE(r.ok());
		CHECK(r.error().message.find("surrogate") != std::string::npos);
		CHECK(errorOffset(r.error()) > 0);
	}
}

TEST_CASE("bad escapes and bad \\u digits are refused", "[json]")
{
	CHECK(refusedAt(R"("\q")") > 0);
	CHECK(refusedAt(R"("\x41")") > 0);
	CHECK(refusedAt(R"("\u00g0")") > 0);
	CHECK(refusedAt(R"("\U0041")") > 0);
}

TEST_CASE("numbers with leading zeros are refused at the number", "[json]")
{
	CHECK(refusedAt("01") == 0);
	CHECK(refusedAt("-01") == 1);
	CHECK(refusedAt("[1, 007]") == 4);
	CHECK(parseJson("0").ok());
	CHECK(parseJson("0.5").ok());
	CHECK(parseJson("-0").ok());
	CHECK(parseJson("0e1").ok());
}

TEST_CASE("malformed numbers are refused", "[json]")
{
	CHECK(refusedAt("-") == 1);
	CHECK(refusedAt("[-]") == 2);
	CHECK(refusedAt("- 1") == 1);
	CHECK(refusedAt("1.") == 2);
	CHECK(refusedAt("1.e5") == 2);
	CHECK(refusedAt("1e") == 2);
	CHECK(refusedAt("1e+") == 3);
	CHECK(refusedAt(".5") == 0);
	CHECK(refusedAt("+1") == 0);
	CHECK(refusedAt("0x10") == 1);
}

TEST_CASE("unknown literals and structural mistakes are refused", "[json]")
{
	CHECK(refusedAt("tru") == 0);
	CHECK(refusedAt("nul") == 0);
	CHECK(refusedAt("True") == 0);
	CHECK(refusedAt("[1,]") == 3);
	CHECK(refusedAt("[1 2]") == 3);
	CHECK(refusedAt("{\"a\" 1}") == 5);
	CHECK(refusedAt("{\"a\":1,}") == 7);
	CHECK(refusedAt("{a:1}") == 1);
	CHECK(refusedAt("{\"a\":}") == 5);
	CHECK(refusedAt("[") == 1);
	CHECK(refusedAt("{") == 1);
	CHECK(refusedAt("'a'") == 0);
}

TEST_CASE("nesting deeper than maxDepth is refused", "[json]")
{
	JsonLimits limits;
	limits.maxDepth = 4;
	CHECK(parseJson(nested('[', ']', 4), limits).ok());
	CHECK(refusedAt(nested('[', ']', 5), limits) == 4);
	CHECK(parseJson(R"({"a":{"b":{"c":{}}}})", limits).ok());
	CHECK(refusedAt(R"({"a":{"b":{"c":{"d":{}}}}})", limits) > 0);
	// The default limit holds against input that would exhaust the stack without one.
	auto r = parseJson(nested('[', ']', 100000));
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().message.find("deep") != std::string::npos);
	CHECK(errorOffset(r.error()) == static_cast<long>(JsonLimits{}.maxDepth));
}

TEST_CASE("more members than maxMembers are refused, counted over the whole document", "[json]")
{
	JsonLimits limits;
	limits.maxMembers = 4;
	CHECK(parseJson("[1,2,3,4]", limits).ok());
	CHECK(refusedAt("[1,2,3,4,5]", limits) > 0);
	CHECK(parseJson(R"({"a":1,"b":[2,3],"c":4})", limits).ok() == false); // a, b, 2, 3, c: five
	CHECK(parseJson(R"({"a":1,"b":[2],"c":4})", limits).ok());
	auto r = parseJson(R"({"a":1,"b":2,"c":3,"d":4,"e":5})", limits);
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().message.find("members") != std::string::npos);
}

TEST_CASE("an error message names the byte offset and the reason", "[json]")
{
	auto r = parseJson("{\"a\":1,}");
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().message == "invalid JSON at byte 7: expected member name");
}

TEST_CASE("random mutations of a valid document never crash the parser", "[json]")
{
	const std::string seed = R"({"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,)"
				 R"("pgsizes":4096,"migration":{"pgsize":4096,"flags":[true,false,null]},)"
				 R"("name":"\u00e9\ud83d\ude00\n","neg":-1.5e-3}})";
	REQUIRE(parseJson(seed).ok());
	const std::string alphabet = "{}[]\":,\\u0123456789abcdefABCDEF-+.eE tfnrl\x01\x7f\xff";

	std::mt19937_64 rng(0x5eed);
	size_t accepted = 0, refused = 0;
	for (int iteration = 0; iteration < 20000; iteration++) {
		std::string text = seed;
		int mutations = 1 + static_cast<int>(rng() % 4);
		for (int m = 0; m < mutations && !text.empty(); m++) {
			size_t at = rng() % text.size();
			switch (rng() % 6) {
			case 0: text[at] = alphabet[rng() % alphabet.size()]; break;
			case 1: text.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
			case 2: text.erase(at, 1 + rng() % 8); break;
			case 3: text.resize(at); break;
			case 4: text.insert(at, text.substr(rng() % text.size(), rng() % 32)); break;
			case 5: text[at] = static_cast<char>(rng() & 0xff); break;
			}
		}
		JsonLimits limits;
		limits.maxMembers = 1 + rng() % 32;
		limits.maxDepth = 1 + rng() % 8;
		auto r = parseJson(text, limits);
		if (r.ok()) {
			accepted++;
			continue;
		}
		refused++;
		INFO(text);
		REQUIRE(r.error().code == EINVAL);
		long off = errorOffset(r.error());
		REQUIRE(off >= 0);
		REQUIRE(off <= static_cast<long>(text.size()));
	}
	// The loop explored both sides of the grammar.
	CHECK(accepted > 0);
	CHECK(refused > 0);
}
