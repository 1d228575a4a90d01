// SPDX-License-Identifier: Apache-2.0
// vfio-brokerd configuration: the daemon config and the board policy, protobuf text format.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "vfio_broker/v1/config.pb.h"

namespace vfio_broker::control {

namespace pb = ::vfio_broker::v1;

// Parse a DaemonConfig (text format) and fill in defaults. Errors name the file, line and field:
// "brokerd.conf:7:3: unknown field \"contol_socket\"" or
// "brokerd.conf:12: daemon_ready_timeout_ms: must be between 100 and 600000".
Result<pb::DaemonConfig> parseDaemonConfig(std::string_view text, const std::string &fileName);
Result<pb::DaemonConfig> loadDaemonConfig(const std::string &path);

// Parse a BoardPolicy and check every rule: at least one matcher, well-formed PCI addresses
// ("0000:01:00.0"), vendor:device ("8086:10d3"), absolute paths, "sim:" names, unique rule names.
// Errors name file, line and field as above.
Result<pb::BoardPolicy> parsePolicy(std::string_view text, const std::string &fileName);
Result<pb::BoardPolicy> loadPolicy(const std::string &path);

// Defaults applied to a DaemonConfig (exposed for tests and --print-config).
void applyDefaults(pb::DaemonConfig &config);

} // namespace vfio_broker::control
