// SPDX-License-Identifier: Apache-2.0
// Golden messages for crosvm's control socket: the exact JSON and fd layout of each request, the answers we accept, and hostile answers.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <string>

#include "crosvm/control_socket.h"
#include "crosvm/wire.h"
#include "fake_crosvm.h"
#include "protocol/daemon_fixture.h"

using namespace vfio_broker;
using namespace vfio_broker::crosvm;
using namespace vfio_broker::test;

namespace {

size_t openFdCount()
{
	size_t n = 0;
	for ([[maybe_unused]] const auto &e : std::filesystem::directory_iterator("/proc/self/fd"))
		n++;
	return n;
}

} // namespace

// The goldens below are what serde_json::to_vec writes for these Rust values (google/crosvm
// main, vm_control/src/lib.rs at f1e797a6):
//   #[derive(Serialize, Deserialize, Debug)] pub enum VmRequest { ...
//       GetVmDescriptor,
//       RegisterMemory { fd: SafeDescriptor, offset: u64, range_start: u64, range_end: u64,
//                        cache_coherent: bool },
//       UnregisterMemory { region_id: u64 } }
// serde's default enum representation is externally tagged: a unit variant is its name as a JSON
// string, a struct variant is {"Name":{...}} with fields in declaration order; serde_json writes
// no whitespace. SafeDescriptor (base/src/descriptor.rs) is #[serde(transparent)] over
// with_raw_descriptor, which base/src/descriptor_reflection.rs serialises as the u32 index of
// the descriptor in the message's fd array, so our single fd is always 0.

TEST_CASE("GetVmDescriptor is the bare variant name, with no fds", "[crosvm_wire]")
{
	CHECK(encodeGetVmDescriptor() == "\"GetVmDescriptor\"");
}

TEST_CASE("RegisterMemory names fd index 0 and its fields in declaration order", "[crosvm_wire]")
{
	RegisterMemoryRequest r{ 0x10000, 0x100000000, 0x10000f000, true };
	CHECK(encodeRegisterMemory(r) ==
	      R"({"RegisterMemory":{"fd":0,"offset":65536,"range_start":4294967296,"range_end":4295028736,"cache_coherent":true}})");
	RegisterMemoryRequest extremes{ UINT64_MAX, 0, UINT64_MAX, false };
	CHECK(encodeRegisterMemory(extremes) ==
	      R"({"RegisterMemory":{"fd":0,"offset":18446744073709551615,"range_start":0,"range_end":18446744073709551615,"cache_coherent":false}})");
}

TEST_CASE("UnregisterMemory carries the region id crosvm returned", "[crosvm_wire]")
{
	CHECK(encodeUnregisterMemory(0x9100000) == R"({"UnregisterMemory":{"region_id":152043520}})");
}

// VmResponse (vm_control/src/lib.rs):
//   Ok, Err(SysError), ErrString(String), RegisterMemory2 { region_id: u64 },
//   VmDescriptor { hypervisor: HypervisorKind, vm_fd: SafeDescriptor }, ...
// base::Error (base/src/errno.rs) is #[serde(transparent)] over a positive i32 errno;
// HypervisorKind (hypervisor/src/lib.rs) is a unit-only enum, so a JSON string.

TEST_CASE("the answers crosvm gives are decoded", "[crosvm_wire]")
{
	auto id = decodeRegisterMemory(R"({"RegisterMemory2":{"region_id":4294967296}})", {});
	REQUIRE(id);
	CHECK(*id == 0x100000000);
	CHECK(decodeUnregisterMemory(R"("Ok")", {}));

	UniqueFd vm(::eventfd(0, EFD_CLOEXEC));
	ino_t ino = inodeOf(vm.get());
	std::vector<UniqueFd> fds;
	fds.push_back(std::move(vm));
	auto d = decodeVmDescriptor(R"({"VmDescriptor":{"hypervisor":"Kvm","vm_fd":0}})", std::move(fds));
	REQUIRE(d);
	CHECK(d->hypervisor == "Kvm");
	CHECK(inodeOf(d->vmFd.get()) == ino);
}

TEST_CASE("Err and ErrString become errors with crosvm's errno or text", "[crosvm_wire]")
{
	auto e = decodeRegisterMemory(R"({"Err":22})", {});
	REQUIRE_FALSE(e);
	CHECK(e.error().code == EINVAL);
	CHECK(e.error().message == "crosvm refused RegisterMemory: Invalid argument (errno 22)");

	auto s = decodeRegisterMemory(R"({"ErrString":"register memory failed: no \"slot\"\n"})", {});
	REQUIRE_FALSE(s);
	CHECK(s.error().code == EIO);
	CHECK(s.error().message == "crosvm refused RegisterMemory: register memory failed: no \"slot\"\\x0a");

	auto v = decodeVmDescriptor(R"({"Err":1})", {});
	REQUIRE_FALSE(v);
	CHECK(v.error().code == EPERM);
	CHECK(decodeUnregisterMemory(R"({"ErrString":"unregister memory failed"})", {}).error().message ==
	      "crosvm refused UnregisterMemory: unregister memory failed");
}

TEST_CASE("garbled or unexpected answers are EPROTO with a message, never a crash", "[crosvm_wire]")
{
	struct Case {
		const char *json;
		const char *says;
	};
	const Case cases[] = {
		{ R"({"RegisterMemory2":{"region_id":4)", "is not JSON" },
		{ "", "is not JSON" },
		{ "\x01\xff\xfe", "is not JSON" },
		{ R"("Ok")", "is Ok, not RegisterMemory2" },
		{ R"({"RegisterMemory":{"slot":3}})", "is RegisterMemory, not RegisterMemory2" },
		{ R"({"RegisterMemory2":{}})", "lacks \"region_id\"" },
		{ R"({"RegisterMemory2":{"region_id":1,"slot":2}})", "has unknown fields" },
		{ R"({"RegisterMemory2":{"region_id":-1}})", "not a u64" },
		{ R"({"RegisterMemory2":{"region_id":"1"}})", "not a u64" },
		{ R"({"RegisterMemory2":{"region_id":1.5}})", "not a u64" },
		{ R"({"RegisterMemory2":{"region_id":18446744073709551616}})", "" },
		{ R"({"RegisterMemory2":7})", "has no fields" },
		{ R"({"RegisterMemory2":{"region_id":1},"Ok":null})", "is not a VmResponse" },
		{ R"([1,2])", "is not a VmResponse" },
		{ R"(42)", "is not a VmResponse" },
		{ R"({"Err":0})", "Err without a valid errno" },
		{ R"({"Err":-22})", "Err without a valid errno" },
		{ R"({"Err":"EINVAL"})", "Err without a valid errno" },
		{ R"({"Err":99999})", "Err without a valid errno" },
		{ R"("Err")", "Err without a valid errno" },
		{ R"({"ErrString":5})", "ErrString without a string" },
		{ R"({"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":1}}}}}}}}}})", "is not JSON" },
	};
	for (const Case &c : cases) {
		INFO(c.json);
		auto r = decodeRegisterMemory(c.json, {});
		REQUIRE_FALSE(r);
		CHECK(r.error().code == EPROTO);
		CHECK_THAT(r.error().message, Catch::Contains("crosvm's answer to RegisterMemory"));
		CHECK_THAT(r.error().message, Catch::Contains(c.says));
	}
	auto ok = decodeUnregisterMemory(R"({"Ok":null})", {});
	REQUIRE_FALSE(ok);
	CHECK(ok.error().code == EPROTO);

	std::string huge(kMaxResponseBytes + 1, ' ');
	auto big = decodeUnregisterMemory(huge, {});
	REQUIRE_FALSE(big);
	CHECK(big.error().code == EMSGSIZE);
}

TEST_CASE("the fd count must match the descriptors the answer names, and spare fds are closed", "[crosvm_wire]")
{
	auto fdsOf = [](int n, std::vector<int> &numbers) {
		std::vector<UniqueFd> v;
		for (int i = 0; i < n; i++) {
			v.emplace_back(::eventfd(0, EFD_CLOEXEC));
			numbers.push_back(v.back().get());
		}
		return v;
	};
	const std::string desc = R"({"VmDescriptor":{"hypervisor":"Kvm","vm_fd":0}})";
	struct Case {
		std::string json;
		int fds;
		const char *says;
	};
	const Case cases[] = {
		{ desc, 0, "came with 0 fd(s)" },
		{ desc, 2, "came with 2 fd(s)" },
		{ R"({"VmDescriptor":{"hypervisor":"Kvm","vm_fd":1}})", 1, "names descriptor 1" },
		{ R"({"VmDescriptor":{"hypervisor":"Kvm"}})", 1, "lacks \"vm_fd\"" },
		{ R"({"VmDescriptor":{"hypervisor":7,"vm_fd":0}})", 1, "not a HypervisorKind" },
		{ R"({"VmDescriptor":{"hypervisor":"Kvm","vm_fd":"0"}})", 1, "not a descriptor index" },
		{ R"("Ok")", 1, "is Ok, not VmDescriptor" },
	};
	for (const Case &c : cases) {
		INFO(c.json << " with " << c.fds << " fd(s)");
		std::vector<int> numbers;
		auto r = decodeVmDescriptor(c.json, fdsOf(c.fds, numbers));
		REQUIRE_FALSE(r);
		CHECK(r.error().code == EPROTO);
		CHECK_THAT(r.error().message, Catch::Contains(c.says));
		for (int n : numbers)
			CHECK_FALSE(fdIsOpen(n));
	}
	std::vector<int> numbers;
	auto r = decodeRegisterMemory(R"({"RegisterMemory2":{"region_id":1}})", fdsOf(1, numbers));
	REQUIRE_FALSE(r);
	CHECK_THAT(r.error().message, Catch::Contains("came with 1 fd(s); it names none"));
	CHECK_FALSE(fdIsOpen(numbers[0]));
}

TEST_CASE("a request travels as one datagram with its fd in SCM_RIGHTS", "[crosvm_wire]")
{
	auto [peer, end] = FakeCrosvm::connectedPair();
	ControlSocket sock(std::move(end));
	UniqueFd region = makeMemfd(0x10000, "region");
	// crosvm answers each request in turn; queued ahead, the answer is waiting when asked for.
	peer.send(R"({"RegisterMemory2":{"region_id":4294967296}})");
	auto id = sock.registerMemory(region.get(), { 0x1000, 0x100000000, 0x10000f000, true });
	REQUIRE(id);
	CHECK(*id == 0x100000000);

	PeerMessage m = peer.receive();
	CHECK(m.json == R"({"RegisterMemory":{"fd":0,"offset":4096,"range_start":4294967296,"range_end":4295028736,"cache_coherent":true}})");
	REQUIRE(m.fds.size() == 1);
	CHECK(inodeOf(m.fds[0].get()) == inodeOf(region.get()));

	peer.send(R"("Ok")");
	CHECK(sock.unregisterMemory(0x100000000));
	m = peer.receive();
	CHECK(m.json == R"({"UnregisterMemory":{"region_id":4294967296}})");
	CHECK(m.fds.empty());
}

TEST_CASE("GetVmDescriptor receives the VM fd, close-on-exec", "[crosvm_wire]")
{
	auto [peer, end] = FakeCrosvm::connectedPair();
	ControlSocket sock(std::move(end));
	UniqueFd vm(::eventfd(0, 0));
	int fds[] = { vm.get() };
	peer.send(R"({"VmDescriptor":{"hypervisor":"Kvm","vm_fd":0}})", fds);
	auto d = sock.getVmDescriptor();
	REQUIRE(d);
	CHECK(d->hypervisor == "Kvm");
	CHECK(inodeOf(d->vmFd.get()) == inodeOf(vm.get()));
	CHECK((::fcntl(d->vmFd.get(), F_GETFD) & FD_CLOEXEC));
	PeerMessage m = peer.receive();
	CHECK(m.json == "\"GetVmDescriptor\"");
	CHECK(m.fds.empty());
}

TEST_CASE("hostile datagrams are refused, their fds closed, and the connection stays usable", "[crosvm_wire]")
{
	auto [peer, end] = FakeCrosvm::connectedPair();
	ControlLimits limits;
	limits.maxResponseBytes = 4096;
	ControlSocket sock(std::move(end), limits);
	UniqueFd region = makeMemfd(4096);
	size_t fdsBefore = openFdCount();

	SECTION("larger than the limit")
	{
		UniqueFd extra(::eventfd(0, 0));
		int fds[] = { extra.get() };
		peer.send(std::string(4097, 'x'), fds);
		auto r = sock.registerMemory(region.get(), { 0, 0, 4096, true });
		REQUIRE_FALSE(r);
		CHECK(r.error().code == EMSGSIZE);
		CHECK_THAT(r.error().message, Catch::Contains("larger than 4096 bytes"));
	}
	SECTION("more fds than the answer may carry")
	{
		UniqueFd a(::eventfd(0, 0)), b(::eventfd(0, 0));
		int fds[] = { a.get(), b.get(), a.get() };
		peer.send(R"({"VmDescriptor":{"hypervisor":"Kvm","vm_fd":0}})", fds);
		auto r = sock.getVmDescriptor();
		REQUIRE_FALSE(r);
		CHECK(r.error().code == EPROTO);
		CHECK_THAT(r.error().message, Catch::Contains("3 fds with one message"));
	}
	SECTION("no fd where the VM fd should be")
	{
		peer.send(R"({"VmDescriptor":{"hypervisor":"Kvm","vm_fd":0}})");
		auto r = sock.getVmDescriptor();
		REQUIRE_FALSE(r);
		CHECK_THAT(r.error().message, Catch::Contains("came with 0 fd(s)"));
	}
	SECTION("the wrong variant")
	{
		peer.send(R"({"VcpuPidTidResponse":{"pid_tid_map":{}}})");
		auto r = sock.registerMemory(region.get(), { 0, 0, 4096, true });
		REQUIRE_FALSE(r);
		CHECK_THAT(r.error().message, Catch::Contains("is VcpuPidTidResponse, not RegisterMemory2"));
	}
	// Whatever was refused, the next request and answer still pair up.
	(void)peer.receive();
	peer.send(R"("Ok")");
	CHECK(sock.unregisterMemory(1));
	CHECK(peer.receive().json == R"({"UnregisterMemory":{"region_id":1}})");
	// None of the fds that came with a refused datagram is still open here.
	CHECK(openFdCount() == fdsBefore);
}

TEST_CASE("a peer that hangs up or never answers is an error in bounded time", "[crosvm_wire]")
{
	SECTION("hang-up before the answer")
	{
		auto [peer, end] = FakeCrosvm::connectedPair();
		ControlSocket sock(std::move(end));
		peer.hangUp();
		auto r = sock.getVmDescriptor();
		REQUIRE_FALSE(r);
		// Either the send sees the closed peer (EPIPE) or the receive does (ECONNRESET).
		CHECK((r.error().code == ECONNRESET || r.error().code == EPIPE));
	}
	SECTION("a 0-byte datagram means hang-up, as in crosvm's Tube::recv")
	{
		auto [peer, end] = FakeCrosvm::connectedPair();
		ControlSocket sock(std::move(end));
		peer.send("");
		auto r = sock.getVmDescriptor();
		REQUIRE_FALSE(r);
		CHECK(r.error().code == ECONNRESET);
		CHECK_THAT(r.error().message, Catch::Contains("crosvm closed its control socket"));
	}
	SECTION("silence: crosvm does not answer a request it cannot parse")
	{
		auto [peer, end] = FakeCrosvm::connectedPair();
		ControlLimits limits;
		limits.timeoutMs = 50;
		ControlSocket sock(std::move(end), limits);
		auto r = sock.getVmDescriptor();
		REQUIRE_FALSE(r);
		CHECK(r.error().code == ETIMEDOUT);
		CHECK(r.error().message == "GetVmDescriptor: crosvm did not answer within 50 ms");
	}
}

TEST_CASE("connecting to something that is not crosvm's control socket says so", "[crosvm_wire]")
{
	TempDir dir;
	auto none = ControlSocket::connect(dir.file("missing.sock"));
	REQUIRE_FALSE(none);
	CHECK_THAT(none.error().message, Catch::Contains("is crosvm running with -s"));

	// A stream socket (a vfio-user socket, say) is the wrong kind.
	UniqueFd stream(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	std::string path = dir.file("stream.sock");
	std::memcpy(addr.sun_path, path.c_str(), path.size());
	REQUIRE(::bind(stream.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0);
	REQUIRE(::listen(stream.get(), 1) == 0);
	auto wrong = ControlSocket::connect(path);
	REQUIRE_FALSE(wrong);
	CHECK(wrong.error().code == EPROTOTYPE);
	CHECK_THAT(wrong.error().message, Catch::Contains("not a SOCK_SEQPACKET socket"));

	auto tooLong = ControlSocket::connect("/" + std::string(200, 'x'));
	REQUIRE_FALSE(tooLong);
	CHECK(tooLong.error().code == ENAMETOOLONG);
}
