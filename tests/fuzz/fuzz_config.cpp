// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the daemon config and board policy parsers (text format plus our semantic
// checks) on arbitrary bytes — a config file is input we must refuse cleanly, never crash on.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "control/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	std::string_view text(reinterpret_cast<const char *>(data), size);
	auto config = vfio_broker::control::parseDaemonConfig(text, "fuzz.conf");
	if (!config && config.error().message.empty())
		__builtin_trap(); // every refusal must say why
	auto policy = vfio_broker::control::parsePolicy(text, "fuzz-policy.conf");
	if (!policy && policy.error().message.empty())
		__builtin_trap();
	return 0;
}
