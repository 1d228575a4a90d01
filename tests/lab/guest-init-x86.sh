#!/bin/busybox sh
# SPDX-License-Identifier: Apache-2.0
# /init of the x86 lab guest: binds QEMU's edu and e1000e to vfio-pci, runs one
# vfio-broker-device per device and vfio-broker-client against them; then gives edu back to
# pci-stub and lets the real vfio-brokerd assign it (through vfio-broker-launch) and restore
# it; reports, powers off.
#
# Output contract, parsed by run-lab.sh on the host:
#   "[<tag>] PASS|FAIL|SKIP <step> <details>" and "[<tag>] RESULT: PASS n FAIL m" lines, where
#   <tag> is "lab" for this script's own steps or the name of one client run
#   (edu-1, edu-abort, edu-2, msix, broker-edu); "<name>| ..." lines are daemon logs and dmesg;
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

# DEVICE_BIN, CLIENT_BIN, BROKERD_BIN, LAUNCH_BIN (empty: no broker part) and LD_LIBRARY_PATH,
# written by run-lab.sh.
# shellcheck source=/dev/null
. /etc/lab.conf
export LD_LIBRARY_PATH

# Guest-side limits, so that one hung step still leaves time for the others and the logs.
# A healthy run needs a few seconds. The host's LAB_TIMEOUT (300 s) covers a hung daemon start
# and a few hung clients, not everything hanging at once (the host then reports the timeout).
READY_TIMEOUT=30    # seconds for a daemon to report READY=1
CLIENT_TIMEOUT=45   # seconds for one client run or one vfio-broker-launch call

uptime_s() { cut -d' ' -f1 /proc/uptime; }
# since T0: seconds from the uptime T0 until now, two decimals.
since() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.2f", b - a }'; }
pass() { echo "[lab] PASS $*"; }
fail() { echo "[lab] FAIL $*"; }

# finish: stop the daemons, dump their logs and the interesting part of dmesg, power off.
# Always ends with the "LAB: done" marker so the host can tell a complete run from a hang.
finish() {
    for name in brokerd e1000e edu; do stop_daemon "$name"; done
    for name in edu e1000e brokerd; do
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
    SPAWN_T0=$(uptime_s)
    # The FIFO is opened for writing in the background child (the open blocks until we open
    # the read end below), so fd 3 of the daemon is its write end and nothing else holds it.
    "$DEVICE_BIN" --device "$2" --socket "/run/$name.sock" --ready-fd 3 \
        3>"$fifo" </dev/null >"/run/$name-daemon.log" 2>&1 &
    await_ready "$name" $!
}

# await_ready NAME PID: record PID as NAME's daemon and block until it writes READY=1 to the
# FIFO /run/NAME.ready (or exits, or READY_TIMEOUT passes). Reports NAME-daemon-ready, with the
# time since SPAWN_T0 (the uptime just before the daemon was started).
await_ready() {
    eval "PID_$1=$2"
    # EOF (the daemon exited without writing) gives an empty line.
    line=$(timeout "$READY_TIMEOUT" head -n 1 "/run/$1.ready")
    if [ "$line" = READY=1 ]; then
        pass "$1-daemon-ready pid $2 at $(uptime_s)s ($(since "$SPAWN_T0")s after exec)"
    else
        fail "$1-daemon-ready got '$line' instead of READY=1 (daemon died or timed out)"
        return 1
    fi
}

# stop_daemon NAME [STATUSES]: check the daemon survived all clients, SIGTERM it and reap it.
# STATUSES are the accepted exit statuses (default "0": the daemon handles SIGTERM and cleans up;
# 143 would mean the default action killed it before its handler ran).
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
    # Anything else is a crash or an error.
    case " ${2:-0} " in
        *" $rc "*) pass "$1-daemon-exit status $rc" ;;
        *)         fail "$1-daemon-exit status $rc" ;;
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

# driver_of BDF: the bound driver's name, empty when none.
driver_of() {
    basename "$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null)" 2>/dev/null
}

# override_of BDF: driver_override as the kernel prints it ("(null)" when cleared).
override_of() {
    cat "/sys/bus/pci/devices/$1/driver_override"
}

# original_binding BDF: give edu the host binding the broker must later restore: pci-stub by
# dynamic id (the way a host reserves a device), with driver_override cleared. Sets ORIG_DRIVER
# ("" = no driver, when this kernel has no pci-stub). Reports broker-original-binding.
original_binding() {
    d=/sys/bus/pci/devices/$1
    drv=$(driver_of "$1")
    [ -n "$drv" ] && echo "$1" >"$d/driver/unbind"
    # echo writes a lone "\n", which clears the override (an empty write never reaches the kernel).
    echo >"$d/driver_override"
    ORIG_DRIVER=
    if [ -d /sys/bus/pci/drivers/pci-stub ]; then
        # A new id makes the driver probe every unbound device that matches: edu binds now.
        echo "1234 11e8" >/sys/bus/pci/drivers/pci-stub/new_id
        ORIG_DRIVER=pci-stub
    else
        echo "LAB: no pci-stub in this kernel: edu stays unbound, and 'no driver' is what the broker must restore"
    fi
    now=$(driver_of "$1")
    ovr=$(override_of "$1")
    if [ "$now" = "$ORIG_DRIVER" ] && [ "$ovr" = "(null)" ]; then
        pass "broker-original-binding $1 from ${drv:-no driver} to ${ORIG_DRIVER:-no driver}, driver_override $ovr"
    else
        fail "broker-original-binding $1 driver '$now' (want '$ORIG_DRIVER'), driver_override '$ovr'"
        return 1
    fi
}

# launch TAG ARGS...: run vfio-broker-launch against the lab's broker; its output goes to
# /run/TAG.out and to the console as "LAB: TAG| ..." lines. Sets LAUNCH_RC and LAUNCH_TIME
# (seconds, for the reports).
launch() {
    tag=$1; shift
    t0=$(uptime_s)
    timeout $CLIENT_TIMEOUT "$LAUNCH_BIN" --control "$BROKER_CTL" "$@" </dev/null >"/run/$tag.out" 2>&1
    LAUNCH_RC=$?
    LAUNCH_TIME=$(since "$t0")
    sed "s/^/LAB: $tag| /" "/run/$tag.out"
}

# write_broker_config: brokerd.conf and policy.conf for the lab, below /etc/vfio-broker.
write_broker_config() {
    mkdir -p /etc/vfio-broker
    cat >/etc/vfio-broker/brokerd.conf <<CONF
# written by the lab's /init (guest-init-x86.sh)
control_socket: "$BROKER_CTL"
state_dir: "/run/vfio-broker-state"
runtime_dir: "/run/vfio-broker"
policy_file: "/etc/vfio-broker/policy.conf"
device_daemon: "$DEVICE_BIN"
launch_method: LAUNCH_METHOD_SPAWN
# TCG on a loaded host is slow: these are upper limits, not waits.
daemon_ready_timeout_ms: 20000
bind_timeout_ms: 5000
CONF
    cat >/etc/vfio-broker/policy.conf <<CONF
board: "qemu-q35-lab"
rules {
  name: "lab-edu"
  vendor_device: "1234:11e8"
  allowed_vms: "lab"
}
CONF
}

# broker_part: the real vfio-brokerd assigns edu to VM "lab" (vfio-broker-launch), a client
# drives it through the broker's device daemon, and Deassign gives it back.
BROKER_CTL=/run/vfio-broker/control.sock
broker_part() {
    if [ -z "$BROKERD_BIN" ]; then
        echo "[lab] SKIP broker this build has no vfio-brokerd (no gRPC)"
        return 0
    fi
    if [ -z "$EDU_BDF" ]; then
        fail "broker-original-binding no edu device to assign"
        return 1
    fi
    echo "LAB: broker part at $(uptime_s)s: $BROKERD_BIN, $LAUNCH_BIN"
    original_binding "$EDU_BDF" || return 1

    write_broker_config
    t0=$(uptime_s)
    if out=$("$BROKERD_BIN" --config /etc/vfio-broker/brokerd.conf --check-config 2>&1); then
        pass "brokerd-check-config $(echo "$out" | tr '\n' ' ')($(since "$t0")s)"
    else
        fail "brokerd-check-config $(echo "$out" | tr '\n' ' ')"
        return 1
    fi

    # Readiness exactly as for the device daemons: --ready-fd 3 on a FIFO, no polling.
    mkfifo /run/brokerd.ready
    SPAWN_T0=$(uptime_s)
    "$BROKERD_BIN" --config /etc/vfio-broker/brokerd.conf --ready-fd 3 \
        3>/run/brokerd.ready </dev/null >/run/brokerd-daemon.log 2>&1 &
    await_ready brokerd $! || return 1

    # Assign returns once the device daemon's socket answers: "<device id> <socket>".
    launch assign --vm lab --device "$EDU_BDF"
    sock=$(awk 'NR == 1 { print $2 }' /run/assign.out)
    if [ "$LAUNCH_RC" = 0 ] && [ -S "$sock" ]; then
        pass "broker-assign $(head -n 1 /run/assign.out) (vfio-broker-launch took ${LAUNCH_TIME}s)"
    else
        fail "broker-assign status $LAUNCH_RC, socket '$sock'"
        return 1
    fi
    now=$(driver_of "$EDU_BDF")
    ovr=$(override_of "$EDU_BDF")
    group=$(basename "$(readlink "/sys/bus/pci/devices/$EDU_BDF/iommu_group")")
    if [ "$now" = vfio-pci ] && [ "$ovr" = vfio-pci ] && [ -c "/dev/vfio/$group" ]; then
        pass "broker-assign-driver $EDU_BDF on $now (was ${ORIG_DRIVER:-no driver}), driver_override $ovr, /dev/vfio/$group"
    else
        fail "broker-assign-driver $EDU_BDF driver '$now', driver_override '$ovr', group '$group'"
    fi

    run_client broker-edu edu --socket "$sock" --require-mmap
    expect_clean_exit broker-edu

    launch deassign --deassign --vm lab --device "$EDU_BDF"
    if [ "$LAUNCH_RC" = 0 ]; then
        pass "broker-deassign status 0 (vfio-broker-launch --deassign took ${LAUNCH_TIME}s)"
    else
        fail "broker-deassign status $LAUNCH_RC"
    fi
    now=$(driver_of "$EDU_BDF")
    ovr=$(override_of "$EDU_BDF")
    if [ "$now" = "$ORIG_DRIVER" ]; then
        pass "broker-deassign-restores $EDU_BDF back on ${now:-no driver}"
    else
        fail "broker-deassign-restores $EDU_BDF on '$now', want '$ORIG_DRIVER'"
    fi
    if [ "$ovr" = "(null)" ]; then
        pass "broker-deassign-override driver_override $ovr"
    else
        fail "broker-deassign-override driver_override '$ovr', want (null)"
    fi
    # Deassign returns after the device daemon exited, and the daemon removes its socket.
    if [ ! -e "$sock" ] && ! pidof "${DEVICE_BIN##*/}" >/dev/null; then
        pass "broker-deassign-daemon-gone no $sock, no ${DEVICE_BIN##*/} process"
    else
        fail "broker-deassign-daemon-gone socket: $(ls -l "$sock" 2>&1); pids: $(pidof "${DEVICE_BIN##*/}")"
    fi

    # vfio-brokerd handles SIGTERM itself: only status 0 is a clean exit.
    stop_daemon brokerd 0
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
EDU_BDF=
if bind_vfio edu 0x1234 0x11e8 && EDU_BDF=$BDF && start_daemon edu "$BDF"; then
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
# The device-daemon part is over; the edu daemon must let go of edu before the broker takes it.
for name in e1000e edu; do stop_daemon "$name"; done

broker_part
finish
