// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the VERSION capabilities JSON reader on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "vfio_user/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	std::string_view text(reinterpret_cast<const char *>(data), size);
	auto doc = vfio_broker::vfio_user::parseJson(text);
	if (doc) {
		if (const auto *caps = doc->find("capabilities"))
			(void)caps->find("max_msg_fds");
		(void)doc->asUint();
	}
	return 0;
}
