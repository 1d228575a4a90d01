// SPDX-License-Identifier: Apache-2.0
// The JSON crosvm's control socket speaks: encoders for the VmRequests attach mode sends, strict decoders for their VmResponses.
#pragma once

// What crosvm expects, from its own source (google/crosvm main, checked at f1e797a6, 2026-08):
//  - vm_control/src/lib.rs: `enum VmRequest` and `enum VmResponse` derive serde's Serialize and
//    Deserialize with no renames, so serde_json writes them externally tagged: a unit variant is
//    the JSON string "Name", a struct variant is {"Name":{fields in declaration order}}, a newtype
//    variant is {"Name":value}.
//  - base/src/descriptor.rs: SafeDescriptor is #[serde(transparent)] over with_raw_descriptor, and
//    base/src/descriptor_reflection.rs serialises a descriptor as its u32 index into the fd array
//    that travels with the message (SCM_RIGHTS), in the order the serialiser met them.
//  - base/src/errno.rs: base::Error (VmResponse::Err) is #[serde(transparent)] over a positive i32.
//  - base/src/sys/unix/tube.rs: one message = one SOCK_SEQPACKET datagram of serde_json bytes,
//    its descriptors in one SCM_RIGHTS control message; a 0-byte read means the peer hung up.
//
// The requests (VmRequest variants; GetVmDescriptor since ff305000 2025-03-04, RegisterMemory and
// UnregisterMemory since 6c8d30c0 2025-11-03):
//   GetVmDescriptor                                     -> VmDescriptor { hypervisor, vm_fd }
//   RegisterMemory { fd, offset, range_start, range_end, cache_coherent }
//                                                       -> RegisterMemory2 { region_id }
//   UnregisterMemory { region_id }                      -> Ok
// Any of them may instead be answered with Err(errno) or ErrString(text).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace vfio_broker::crosvm {

// VmRequest::RegisterMemory. crosvm maps [range_start, range_end) of guest physical address space
// to `offset` in the one fd sent with the request, always read-write (src/crosvm/sys/linux.rs
// builds VmMemorySource::Descriptor with Protection::read_write()); cache_coherent false asks for
// KVM_MEM_NON_COHERENT_DMA, which only ChromeOS kernels know.
struct RegisterMemoryRequest {
	uint64_t offset = 0;     // in the fd
	uint64_t rangeStart = 0; // guest physical, inclusive
	uint64_t rangeEnd = 0;   // guest physical, exclusive
	bool cacheCoherent = true;
};

// The request bodies, byte for byte what serde_json::to_vec writes for the same Rust value.
std::string encodeGetVmDescriptor();
std::string encodeRegisterMemory(const RegisterMemoryRequest &request); // the fd is index 0
std::string encodeUnregisterMemory(uint64_t regionId);

// VmResponse::VmDescriptor: the hypervisor's name (HypervisorKind: "Kvm", "Gunyah", ...) and the
// VM fd crosvm sent with it.
struct VmDescriptor {
	std::string hypervisor;
	UniqueFd vmFd;
};

// Bounds on what a response may make us parse.
constexpr size_t kMaxResponseBytes = 64 * 1024;

// Decoders for the answer to each request. They take ownership of the fds that came with the
// datagram, so every fd we do not keep is closed whatever the outcome. An Err/ErrString answer
// becomes an Error carrying crosvm's errno or text; anything else unexpected (invalid JSON,
// another variant, missing or extra fields, wrong types, an fd count that does not match the
// descriptors the JSON names) is EPROTO with a message that says what was wrong.
Result<VmDescriptor> decodeVmDescriptor(std::string_view json, std::vector<UniqueFd> fds);
Result<uint64_t> decodeRegisterMemory(std::string_view json, std::vector<UniqueFd> fds);
Status decodeUnregisterMemory(std::string_view json, std::vector<UniqueFd> fds);

// For messages: printable, bounded excerpt of a peer's bytes.
std::string excerpt(std::string_view bytes, size_t max = 120);

} // namespace vfio_broker::crosvm
