// SPDX-License-Identifier: Apache-2.0
// Walk-throughs for SoC devices passed through with vfio-amba/vfio-platform: QEMU virt's PL031 RTC and a virtio-mmio transport.
#pragma once

#include "client/edu_sequence.h"
#include "client/vfio_user_client.h"

namespace vfio_broker::client {

struct SocOptions {
	bool requireMmap = false; // PL031: its 4 KiB register page must come with an fd to mmap
	std::string abortAfter;   // _exit() right after this step, leaving the interrupt set up (and masked)
	std::function<void(const StepReport &)> report;
	// Upper bound for one interrupt. The RTC match fires at the next one-second tick of the RTC.
	int irqTimeoutMs = 5000;
};

// The ARM PrimeCell PL031 RTC (QEMU virt: 0x9010000, vfio-amba): PrimeCell IDs through the mmap'd region
// and trapped, the level-triggered match interrupt on our eventfd, re-fired by an unmask while still asserted
// (so it was automasked), cleared, unmasked and fired again; DMA refused in no-IOMMU mode.
EduSummary runPl031Sequence(Client &client, const SocOptions &options);

// An unused virtio-mmio transport (QEMU virt: 0xa000000 and up, vfio-platform): its 0x200-byte region is
// reported without MMAP and read trapped (magic, version, device and vendor IDs); the interrupt path is
// checked with a DATA_BOOL trigger loopback through the kernel's handler.
EduSummary runVirtioMmioSequence(Client &client, const SocOptions &options);

} // namespace vfio_broker::client
