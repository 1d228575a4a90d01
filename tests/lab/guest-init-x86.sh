#!/bin/busybox sh
# SPDX-License-Identifier: Apache-2.0
# /init of the x86 lab guest: binds QEMU's edu and e1000e to vfio-pci, runs one
# vfio-broker-device per device and vfio-broker-client against them, reports, powers off.
#
# Output contract, parsed by run-lab.sh on the host:
#   "[<tag>] PASS|FAIL|SKIP <step> <details>" and "[<tag>] RESULT: PASS n FAIL m" lines, where
#   <tag> is "lab" for this script's own steps or the name of one client run
#   (edu-1, edu-abort, edu-2, msix); "<name>| ..." lines are daemon logs and dmesg;
#   "LAB: ..." lines are progress; "LAB: done" is the final marker.
# busybox ash: no pipefail, no arrays; every step reports instead of exiting.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# /run and /tmp stay on the (writable) initramfs: a tmpfs there would hide the project
# binaries when the build dir lives below one of them.
# Only emergencies on the console: kernel messages (e.g. the DMAR fault that the
# dma-blocked-unmapped step provokes on purpose) would otherwise split our result lines.
# They stay in dmesg, which is printed at the end.
echo 1 >/proc/sys/kernel/printk

# DEVICE_BIN, CLIENT_BIN and LD_LIBRARY_PATH, written by run-lab.sh.
# shellcheck source=/dev/null
. /etc/lab.conf
export LD_LIBRARY_PATH

# Guest-side limits, so that one hung step still leaves time for the others and the logs.
# A healthy run needs a few seconds; the host's LAB_TIMEOUT (300 s) covers the worst case
# of both daemons timing out plus all four clients timing out.
READY_TIMEOUT=30    # seconds for a daemon to report READY=1
CLIENT_TIMEOUT=45   # seconds for one client run

uptime_s() { cut -d' ' -f1 /proc/uptime; }
pass() { echo "[lab] PASS $*"; }
fail() { echo "[lab] FAIL $*"; }

# finish: stop the daemons, dump their logs and the interesting part of dmesg, power off.
# Always ends with the "LAB: done" marker so the host can tell a complete run from a hang.
finish() {
    for name in e1000e edu; do stop_daemon "$name"; done
    for name in edu e1000e; do
        if [ -f "/run/$name-daemon.log" ]; then
            echo "LAB: $name daemon log:"
            sed "s/^/$name-daemon| /" "/run/$name-daemon.log"
        fi
    done
    echo "LAB: dmesg (vfio, DMAR faults, crashes):"
    dmesg | grep -E 'vfio|VFIO|IRQ remapping|DMAR: \[|DMAR: DRHD|segfault|traps:|BUG:|Oops:|Call Trace|WARNING:' |
        tail -n 40 | sed 's/^/dmesg| /'
    echo "LAB: done at $(uptime_s)s"
    sync
    poweroff -f
}

# bind_vfio NAME VENDOR DEVICE: bind the first PCI device with that ID to vfio-pci through
# driver_override + drivers_probe. Sets BDF and GROUP; reports bind-NAME.
bind_vfio() {
    name=$1; BDF=; GROUP=
    for d in /sys/bus/pci/devices/*; do
        if [ "$(cat "$d/vendor")" = "$2" ] && [ "$(cat "$d/device")" = "$3" ]; then BDF=${d##*/}; break; fi
    done
    if [ -z "$BDF" ]; then fail "bind-$name no PCI device $2:$3"; return 1; fi
    d=/sys/bus/pci/devices/$BDF
    if [ ! -e "$d/iommu_group" ]; then
        fail "bind-$name $BDF has no iommu_group (is the IOMMU enabled?)"
        return 1
    fi
    GROUP=$(basename "$(readlink "$d/iommu_group")")
    [ -e "$d/driver" ] && echo "$BDF" >"$d/driver/unbind"
    echo vfio-pci >"$d/driver_override"
    echo "$BDF" >/sys/bus/pci/drivers_probe
    drv=$(basename "$(readlink "$d/driver" 2>/dev/null)" 2>/dev/null)
    # devtmpfs creates the group node before the probe returns, so no waiting is needed.
    if [ "$drv" != vfio-pci ] || [ ! -c "/dev/vfio/$GROUP" ]; then
        fail "bind-$name $BDF driver='$drv' group node /dev/vfio/$GROUP missing?"
        return 1
    fi
    pass "bind-$name $BDF iommu group $GROUP (group members: $(echo "$d"/iommu_group/devices/* | sed 's|[^ ]*/||g'))"
}

# start_daemon NAME BDF: start vfio-broker-device on BDF with its readiness fd on a FIFO and
# block until it reports READY=1 (or exits, or READY_TIMEOUT passes). Reports NAME-daemon-ready.
start_daemon() {
    name=$1; fifo=/run/$name.ready
    mkfifo "$fifo"
    # The FIFO is opened for writing in the background child (the open blocks until we open
    # the read end below), so fd 3 of the daemon is its write end and nothing else holds it.
    "$DEVICE_BIN" --device "$2" --socket "/run/$name.sock" --ready-fd 3 \
        3>"$fifo" </dev/null >"/run/$name-daemon.log" 2>&1 &
    pid=$!
    eval "PID_$name=$pid"
    # EOF (the daemon exited without writing) gives an empty line.
    line=$(timeout "$READY_TIMEOUT" head -n 1 "$fifo")
    if [ "$line" = READY=1 ]; then
        pass "$name-daemon-ready pid $pid at $(uptime_s)s"
    else
        fail "$name-daemon-ready got '$line' instead of READY=1 (daemon died or timed out)"
        return 1
    fi
}

# stop_daemon NAME: check the daemon survived all clients, SIGTERM it and reap it.
stop_daemon() {
    eval "pid=\${PID_$1:-}"
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        pass "$1-daemon-alive"
    else
        fail "$1-daemon-alive the daemon exited before SIGTERM"
    fi
    kill -TERM "$pid" 2>/dev/null
    # A daemon that ignores SIGTERM must not hang the guest; the guard is not synchronisation.
    (sleep 10; kill -KILL "$pid" 2>/dev/null) &
    guard=$!
    wait "$pid"
    rc=$?
    kill $guard 2>/dev/null
    # 143 = killed by the SIGTERM itself (no handler); anything else non-zero is a crash or error.
    case $rc in
        0|143) pass "$1-daemon-exit status $rc" ;;
        *)     fail "$1-daemon-exit status $rc" ;;
    esac
    eval "PID_$1="
}

# run_client TAG ARGS...: run vfio-broker-client with its output prefixed by "[TAG] ";
# sets CLIENT_RC. The prefix keeps the runs apart for the host-side checks.
run_client() {
    tag=$1; shift
    echo "LAB: client $tag: $*"
    { timeout $CLIENT_TIMEOUT "$CLIENT_BIN" "$@" </dev/null 2>&1; echo $? >"/run/$tag.rc"; } |
        sed "s/^/[$tag] /"
    CLIENT_RC=$(cat "/run/$tag.rc")
    echo "LAB: client $tag exited with status $CLIENT_RC at $(uptime_s)s"
}

# expect_clean_exit TAG: the client must have exited 0 (no FAIL, not timed out or crashed).
expect_clean_exit() {
    case $CLIENT_RC in
        0)   pass "$1-exit status 0" ;;
        143) fail "$1-exit timed out after ${CLIENT_TIMEOUT}s (status 143)" ;;
        *)   fail "$1-exit status $CLIENT_RC" ;;
    esac
}

echo "LAB: guest up at $(uptime_s)s, kernel $(uname -r)"
echo "LAB: daemon $DEVICE_BIN, client $CLIENT_BIN"

mods_ok=1
read -r modules </lib/modules/load-order
for m in $modules; do
    insmod "/lib/modules/$m.ko" || { fail "modules insmod $m"; mods_ok=0; }
done
[ $mods_ok = 1 ] && pass "modules $modules"

# edu (1234:11e8): MMIO, INTx, MSI, DMA through the IOMMU.
if bind_vfio edu 0x1234 0x11e8 && start_daemon edu "$BDF"; then
    run_client edu-1 edu --socket /run/edu.sock --require-mmap
    expect_clean_exit edu-1
    # A client that dies abruptly (no cleanup: IRQs enabled, DMA still mapped) ...
    run_client edu-abort edu --socket /run/edu.sock --abort-after dma-map
    # ... must leave the daemon able to serve the next one: its DMA_MAP of the same IOVAs
    # would fail with EEXIST if the daemon had not removed the dead client's mappings.
    run_client edu-2 edu --socket /run/edu.sock --require-mmap
    expect_clean_exit edu-2
fi

# e1000e (8086:10d3): MSI-X, which edu lacks; a second daemon instance.
if bind_vfio e1000e 0x8086 0x10d3 && start_daemon e1000e "$BDF"; then
    run_client msix msix-e1000e --socket /run/e1000e.sock
    expect_clean_exit msix
fi

finish
