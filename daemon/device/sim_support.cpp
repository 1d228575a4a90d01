// SPDX-License-Identifier: Apache-2.0
// What the simulated devices share.
#include "device/sim_support.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace vfio_broker::device::sim {

void signalEventfd(const UniqueFd &fd)
{
	if (!fd)
		return;
	pollfd p{ fd.get(), POLLOUT, 0 };
	if (::poll(&p, 1, 0) == 1 && (p.revents & POLLOUT))
		(void)::eventfd_write(fd.get(), 1);
}

bool isEventfd(int fd)
{
	char path[40], target[40];
	std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = ::readlink(path, target, sizeof(target) - 1);
	if (n <= 0)
		return false;
	target[n] = '\0';
	return std::strcmp(target, "anon_inode:[eventfd]") == 0;
}

uint32_t accessWidth(uint64_t offset, uint32_t remaining)
{
	if (offset % 4 == 0 && remaining >= 4)
		return 4;
	if (offset % 2 == 0 && remaining >= 2)
		return 2;
	return 1;
}

Result<SealedMemfd> createSealedMemfd(const char *name, size_t size, const char *what)
{
	SealedMemfd out;
	out.fd.reset(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
	if (!out.fd)
		return errnoError(errno, std::string("memfd_create for ") + what);
	if (::ftruncate(out.fd.get(), static_cast<off_t>(size)) < 0)
		return errnoError(errno, std::string("ftruncate of ") + what);
	if (::fcntl(out.fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		return errnoError(errno, std::string("sealing ") + what);
	void *p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, out.fd.get(), 0);
	if (p == MAP_FAILED)
		return errnoError(errno, std::string("mmap of ") + what);
	out.map = p;
	return out;
}

} // namespace vfio_broker::device::sim
