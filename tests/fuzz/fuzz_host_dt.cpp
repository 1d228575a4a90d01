// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: host device-tree blobs (the live tree or a DTB file is untrusted input):
// load, decode every node, list passthrough nodes and build a guest overlay from them.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "platform/guest_overlay.h"
#include "platform/host_dt.h"

extern "C" {
#include <libfdt.h>
}

using namespace vfio_broker::platform;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	auto tree = HostDeviceTree::fromBlob(std::vector<uint8_t>(data, data + size));
	if (!tree)
		return 0;
	const void *fdt = tree->blob().data();
	int budget = 256; // nodes decoded per input, so one input cannot run for long
	for (int off = 0; off >= 0 && budget-- > 0; off = fdt_next_node(fdt, off, nullptr)) {
		char path[512];
		if (fdt_get_path(fdt, off, path, sizeof(path)) == 0)
			(void)tree->node(path);
	}
	auto marked = tree->passthroughNodes();
	if (!marked)
		return 0;
	std::vector<GuestDeviceRequest> requests;
	for (auto &node : *marked) {
		GuestDeviceRequest r;
		r.host = std::move(node);
		r.identity = requests.size() % 2 == 1;
		requests.push_back(std::move(r));
	}
	OverlayOptions options;
	options.guestMmioBase = 0x100000000ull;
	options.guestMmioSize = 0x40000000;
	options.firstGuestSpi = 32;
	options.dmaPoolBase = 0xfc000000;
	options.dmaPoolSize = 0x100000;
	if (auto ov = buildOverlay(requests, options); ov)
		(void)crosvmArguments(requests, "fuzz.dtbo");
	return 0;
}
