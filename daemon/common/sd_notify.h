// SPDX-License-Identifier: Apache-2.0
// Readiness notification: systemd's $NOTIFY_SOCKET protocol and a launcher's --ready-fd.
#pragma once

#include <string>

#include "common/result.h"

namespace vfio_broker {

// Send a state string ("READY=1\nSTATUS=...") to $NOTIFY_SOCKET when it is set; success
// (and nothing sent) when it is not.
Status sdNotify(const std::string &state);

// Write "READY=1\n" to fd and close it (a launcher blocks reading the other end).
Status notifyReadyFd(int fd);

} // namespace vfio_broker
