#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Verify every unit in systemd/ with systemd-analyze (any output at all is a failure: unknown
# keys are only warnings there) and print its offline security exposure.
#   scripts/check-systemd.sh BUILDDIR
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:?usage: check-systemd.sh BUILDDIR}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze is not installed"; exit 77; }

# ExecStart must name an existing executable: point the units at this build's binaries.
status=0
for unit in "$root"/systemd/*.service; do
  name=$(basename "$unit")
  sed -e "s|/usr/sbin/vfio-broker-device|$build/daemon/vfio-broker-device|g" \
      -e "s|/usr/sbin/vfio-brokerd|$build/daemon/vfio-brokerd|g" "$unit" > "$work/$name"
  out=$(systemd-analyze verify "$work/$name" 2>&1) || true
  if [ -n "$out" ]; then
    echo "FAIL $name: systemd-analyze verify said:"
    echo "$out" | sed 's/^/    /'
    status=1
  else
    echo "ok   $name verifies cleanly"
  fi
  exposure=$(systemd-analyze security --offline=yes "$work/$name" 2>/dev/null | tail -1 || true)
  echo "     ${exposure#→ }"
done
exit $status
