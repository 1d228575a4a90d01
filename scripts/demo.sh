#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The main job on any machine: install, build, serve the simulated edu device with
# vfio-broker-device and drive it with the client library, one step per line.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh >/dev/null
./scripts/build.sh build >/dev/null

work=$(mktemp -d)
cleanup() {
  [ -n "${daemon:-}" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== vfio-broker demo: a simulated QEMU 'edu' PCI device served over vfio-user"
echo "   daemon: build/daemon/vfio-broker-device --device sim:edu --socket $work/edu.sock"
mkfifo "$work/ready"
build/daemon/vfio-broker-device --device sim:edu --socket "$work/edu.sock" --ready-fd 3 \
  3>"$work/ready" 2>"$work/daemon.log" &
daemon=$!
# Blocks until the daemon reports that it is listening (it writes READY=1 and closes).
read -r ready <"$work/ready"
echo "   daemon ready ($ready), pid $daemon"
echo
echo "== the device as a VMM sees it (vfio-broker-client info)"
build/client/vfio-broker-client info --socket "$work/edu.sock" | sed 's/^/   /'
echo
echo "== the edu walk-through (vfio-broker-client edu): each line is one step"
status=0
build/client/vfio-broker-client edu --socket "$work/edu.sock" || status=$?
echo
echo "== daemon log"
kill -TERM "$daemon"
wait "$daemon" || status=$?
daemon=
sed 's/^/   /' "$work/daemon.log"

# sim:platform: the same daemon and client on a platform-bus device (no PCI): an mmap'd
# register page with PrimeCell-style IDs, trapped sub-page control registers, and a level
# interrupt that is automasked when it fires and re-armed by UNMASK or an unmask eventfd.
echo
echo "== sim:platform: a simulated SoC timer block served over vfio-user"
echo "   daemon: build/daemon/vfio-broker-device --device sim:platform --socket $work/platform.sock"
mkfifo "$work/platform-ready"
build/daemon/vfio-broker-device --device sim:platform --socket "$work/platform.sock" --ready-fd 3 \
  3>"$work/platform-ready" 2>"$work/platform-daemon.log" &
daemon=$!
read -r ready <"$work/platform-ready"
echo "   daemon ready ($ready), pid $daemon"
echo
echo "== the platform device as a VMM sees it (vfio-broker-client info)"
build/client/vfio-broker-client info --socket "$work/platform.sock" | sed 's/^/   /'
echo
echo "== the sim:platform walk-through (vfio-broker-client sim-platform): each line is one step"
build/client/vfio-broker-client sim-platform --socket "$work/platform.sock" || status=$?
echo
echo "== sim:platform daemon log"
kill -TERM "$daemon"
wait "$daemon" || status=$?
daemon=
sed 's/^/   /' "$work/platform-daemon.log"

# The guest side of sim:platform: its host device-tree node, the overlay a crosvm guest gets
# (relocated into crosvm's platform MMIO window, SPI remapped), and the crosvm arguments.
echo
echo "== sim:platform in the host device tree (vfio-broker-dt show)"
if [ -x build/daemon/platform/vfio-broker-dt ]; then
  build/daemon/platform/vfio-broker-dt show --sim-platform | sed 's/^/   /' || status=$?
  echo
  echo "== guest overlay and crosvm arguments (vfio-broker-dt overlay ... --crosvm-args)"
  build/daemon/platform/vfio-broker-dt overlay --sim-platform --mmio-base 0x100000000 \
    --mmio-size 0x40000000 --first-spi 32 -o "$work/sim-platform.dtbo" --crosvm-args \
    >"$work/crosvm-args" || status=$?
  sed 's/^/   /' "$work/crosvm-args"
  echo "   crosvm run --disable-sandbox $(grep -v '^#' "$work/crosvm-args" | tr '\n' ' ')..."
  if command -v dtc >/dev/null; then
    echo
    echo "== the overlay (dtc -I dtb -O dts)"
    dtc -q -I dtb -O dts "$work/sim-platform.dtbo" | sed 's/^/   /' || status=$?
  fi
else
  echo "   (vfio-broker-dt was not built: libfdt is missing)"
fi
exit $status
