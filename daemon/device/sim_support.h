// SPDX-License-Identifier: Apache-2.0
// What the simulated devices share: eventfd signalling, vfio-style access splitting, sealed
// memfd-backed regions.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/result.h"
#include "common/unique_fd.h"

namespace vfio_broker::device::sim {

// Signal an eventfd without blocking: a write blocks only when the counter is at its maximum,
// which only the client that owns the eventfd can arrange; the signal is then lost, as the
// kernel's eventfd_signal saturates instead of waiting. No-op for an empty fd.
void signalEventfd(const UniqueFd &fd);

// The kernel takes only eventfds in SET_IRQS (eventfd_ctx_fdget); so do the simulations.
bool isEventfd(int fd);

// Width of the next piece when vfio-pci / vfio-platform split a trapped access: the widest of
// 4, 2, 1 that is aligned and fits.
uint32_t accessWidth(uint64_t offset, uint32_t remaining);

// A memfd of `size` bytes, size-sealed (a client that maps it cannot shrink it under our
// mapping and make our accesses fault), mapped shared read-write. `what` names it in errors.
struct SealedMemfd {
	UniqueFd fd;
	void *map = nullptr;
};
Result<SealedMemfd> createSealedMemfd(const char *name, size_t size, const char *what);

} // namespace vfio_broker::device::sim
