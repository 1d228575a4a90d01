// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: a byte stream from a hostile VMM into a real Session driving sim:edu —
// framing, every request handler, the device model and cleanup. The input is prefixed with a
// valid VERSION so the fuzzer reaches the handlers behind negotiation.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "device/sim_edu.h"
#include "server/session.h"
#include "vfio_user/protocol.h"

using namespace vfio_broker;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 64 * 1024)
		return 0;
	static auto device = device::SimEdu::create();
	if (!device)
		__builtin_trap();

	int sv[2];
	if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	UniqueFd ours(sv[0]);
	server::ServerLimits limits;
	limits.maxDataXfer = 4096;
	limits.maxDmaMaps = 8;
	server::Session session(**device, UniqueFd(sv[1]), limits);

	// Replies are drained on another thread so the session never blocks on a full socket.
	std::thread drain([fd = ours.get()] {
		char buf[65536];
		while (::read(fd, buf, sizeof(buf)) > 0) {
		}
	});
	std::thread writer([fd = ours.get(), data, size] {
		vfio_user::Header h{ 1, static_cast<uint16_t>(vfio_user::Command::Version),
				     sizeof(vfio_user::Header) + 4, 0, 0 };
		uint8_t version[sizeof(h) + 4];
		std::memcpy(version, &h, sizeof(h));
		version[16] = 0; version[17] = 0; version[18] = 2; version[19] = 0;
		(void)::send(fd, version, sizeof(version), MSG_NOSIGNAL);
		(void)::send(fd, data, size, MSG_NOSIGNAL);
		::shutdown(fd, SHUT_WR);
	});
	(void)session.run();
	::shutdown(ours.get(), SHUT_RDWR);
	writer.join();
	drain.join();
	return 0;
}
