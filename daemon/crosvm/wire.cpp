// SPDX-License-Identifier: Apache-2.0
// Encoding of attach mode's VmRequests and strict decoding of crosvm's VmResponses (see wire.h for the rules cited).
#include "crosvm/wire.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <optional>

#include "vfio_user/json.h"

namespace vfio_broker::crosvm {

using vfio_user::JsonValue;

namespace {

// A response is small: a variant name and a handful of scalars (VmResponse::ErrString carries
// crosvm's error text, the biggest of them).
const vfio_user::JsonLimits kResponseJsonLimits{ 8, 64 };

struct Variant {
	std::string name;
	const JsonValue *payload = nullptr; // nullptr: a unit variant ("Name")
};

Error protoError(const char *request, const std::string &what, std::string_view json)
{
	return makeError(EPROTO, "crosvm's answer to %s %s: \"%s\"", request, what.c_str(),
			 excerpt(json).c_str());
}

// serde's externally tagged enum: "Unit" or {"Variant": payload}, nothing else.
Result<Variant> splitVariant(const JsonValue &doc, const char *request, std::string_view json)
{
	if (doc.type() == JsonValue::Type::String)
		return Variant{ doc.string(), nullptr };
	if (!doc.isObject() || doc.object().size() != 1)
		return protoError(request, "is not a VmResponse (a variant name or an object with one member)", json);
	const auto &member = *doc.object().begin();
	return Variant{ member.first, &member.second };
}

// Err(errno) and ErrString(text) become our errors; anything else is not an error answer.
std::optional<Error> errorAnswer(const Variant &v, const char *request, std::string_view json)
{
	if (v.name == "Err") {
		std::optional<uint64_t> code = v.payload ? v.payload->asUint() : std::nullopt;
		if (!code || *code == 0 || *code > 4095)
			return protoError(request, "is Err without a valid errno", json);
		int err = static_cast<int>(*code);
		return makeError(err, "crosvm refused %s: %s (errno %d)", request, std::strerror(err), err);
	}
	if (v.name == "ErrString") {
		if (!v.payload || v.payload->type() != JsonValue::Type::String)
			return protoError(request, "is ErrString without a string", json);
		return makeError(EIO, "crosvm refused %s: %s", request, excerpt(v.payload->string(), 400).c_str());
	}
	return std::nullopt;
}

// The answer's variant when it is `expected`: crosvm's error variants become their errors, any
// other variant is a protocol error.
Result<Variant> expectVariant(const JsonValue &doc, const char *expected, const char *request,
			      std::string_view json)
{
	auto v = splitVariant(doc, request, json);
	if (!v)
		return v.takeError();
	if (auto err = errorAnswer(*v, request, json))
		return *err;
	if (v->name != expected)
		return protoError(request, "is " + v->name + ", not " + expected, json);
	return v;
}

// The struct variant's members must be exactly `names`, each present once.
Status requireMembers(const Variant &v, std::initializer_list<const char *> names, const char *request,
		     std::string_view json)
{
	if (!v.payload || !v.payload->isObject())
		return protoError(request, "has no fields in " + v.name, json);
	for (const char *n : names)
		if (!v.payload->find(n))
			return protoError(request, v.name + " lacks \"" + n + "\"", json);
	if (v.payload->object().size() != names.size())
		return protoError(request, v.name + " has unknown fields", json);
	return {};
}

Status requireNoFds(const std::vector<UniqueFd> &fds, const char *request)
{
	if (!fds.empty())
		return makeError(EPROTO, "crosvm's answer to %s came with %zu fd(s); it names none", request,
				 fds.size());
	return {};
}

Result<JsonValue> parse(std::string_view json, const char *request)
{
	if (json.size() > kMaxResponseBytes)
		return makeError(EMSGSIZE, "crosvm's answer to %s is %zu bytes, more than the %zu allowed",
				 request, json.size(), kMaxResponseBytes);
	auto doc = vfio_user::parseJson(json, kResponseJsonLimits);
	if (!doc)
		return makeError(EPROTO, "crosvm's answer to %s is not JSON (%s): \"%s\"", request,
				 doc.error().message.c_str(), excerpt(json).c_str());
	return doc;
}

} // namespace

std::string excerpt(std::string_view bytes, size_t max)
{
	std::string out;
	for (size_t i = 0; i < bytes.size() && i < max; i++) {
		unsigned char c = static_cast<unsigned char>(bytes[i]);
		if (c >= 0x20 && c < 0x7f && c != '\\') {
			out += static_cast<char>(c);
		} else {
			char hex[8];
			std::snprintf(hex, sizeof(hex), "\\x%02x", c);
			out += hex;
		}
	}
	if (bytes.size() > max)
		out += "...";
	return out;
}

std::string encodeGetVmDescriptor()
{
	return "\"GetVmDescriptor\"";
}

std::string encodeRegisterMemory(const RegisterMemoryRequest &r)
{
	return strFormat("{\"RegisterMemory\":{\"fd\":0,\"offset\":%" PRIu64 ",\"range_start\":%" PRIu64
			 ",\"range_end\":%" PRIu64 ",\"cache_coherent\":%s}}",
			 r.offset, r.rangeStart, r.rangeEnd, r.cacheCoherent ? "true" : "false");
}

std::string encodeUnregisterMemory(uint64_t regionId)
{
	return strFormat("{\"UnregisterMemory\":{\"region_id\":%" PRIu64 "}}", regionId);
}

Result<VmDescriptor> decodeVmDescriptor(std::string_view json, std::vector<UniqueFd> fds)
{
	const char *req = "GetVmDescriptor";
	auto doc = parse(json, req);
	if (!doc)
		return doc.takeError();
	auto v = expectVariant(*doc, "VmDescriptor", req, json);
	if (!v)
		return v.takeError();
	if (Status s = requireMembers(*v, { "hypervisor", "vm_fd" }, req, json); !s)
		return s.takeError();
	const JsonValue *hv = v->payload->find("hypervisor");
	if (hv->type() != JsonValue::Type::String || hv->string().empty() || hv->string().size() > 32)
		return protoError(req, "has a hypervisor that is not a HypervisorKind name", json);
	std::optional<uint64_t> index = v->payload->find("vm_fd")->asUint();
	if (!index)
		return protoError(req, "has a vm_fd that is not a descriptor index", json);
	// crosvm's deserializer takes each descriptor exactly once; a message naming one fd comes
	// with exactly one, so anything else is a broken or hostile peer.
	if (fds.size() != 1 || *index != 0)
		return makeError(EPROTO, "crosvm's VmDescriptor names descriptor %" PRIu64
				 " but came with %zu fd(s); expected exactly one, index 0", *index, fds.size());
	return VmDescriptor{ hv->string(), std::move(fds[0]) };
}

Result<uint64_t> decodeRegisterMemory(std::string_view json, std::vector<UniqueFd> fds)
{
	const char *req = "RegisterMemory";
	auto doc = parse(json, req);
	if (!doc)
		return doc.takeError();
	auto v = expectVariant(*doc, "RegisterMemory2", req, json);
	if (!v)
		return v.takeError();
	if (Status s = requireMembers(*v, { "region_id" }, req, json); !s)
		return s.takeError();
	std::optional<uint64_t> id = v->payload->find("region_id")->asUint();
	if (!id)
		return protoError(req, "has a region_id that is not a u64", json);
	if (Status s = requireNoFds(fds, req); !s)
		return s.takeError();
	return *id;
}

Status decodeUnregisterMemory(std::string_view json, std::vector<UniqueFd> fds)
{
	const char *req = "UnregisterMemory";
	auto doc = parse(json, req);
	if (!doc)
		return doc.takeError();
	auto v = expectVariant(*doc, "Ok", req, json);
	if (!v)
		return v.takeError();
	if (v->payload)
		return protoError(req, "is Ok with a payload", json);
	return requireNoFds(fds, req);
}

} // namespace vfio_broker::crosvm
