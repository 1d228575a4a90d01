// SPDX-License-Identifier: Apache-2.0
// Copies to/from memory a client gave us (a mapped fd it can shrink under us) without dying of SIGBUS.
#pragma once

#include <cstddef>

namespace vfio_broker {

// Install the process-wide SIGBUS handler once. Idempotent and thread-safe.
void installSigbusGuard();

// memcpy that returns false instead of crashing when a page of src or dst raises SIGBUS
// (e.g. the client truncated the memfd behind a DMA mapping). Needs installSigbusGuard().
bool guardedCopy(void *dst, const void *src, size_t len);

} // namespace vfio_broker
