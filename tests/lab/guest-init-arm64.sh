#!/bin/busybox sh
# SPDX-License-Identifier: Apache-2.0
# /init of the arm64 lab guest: loads the VFIO platform modules (no-IOMMU), binds virt's PL031 to
# vfio-amba and a virtio-mmio transport to vfio-platform, runs one vfio-broker-device per device
# and vfio-broker-client against them; reports, powers off.
#
# Output contract, parsed by run-lab.sh on the host (the same as the x86 lab's):
#   "[<tag>] PASS|FAIL|SKIP <step> <details>" and "[<tag>] RESULT: PASS n FAIL m" lines, where
#   <tag> is "lab" for this script's own steps or the name of one client run
#   (pl031-1, pl031-abort, pl031-2, virtio-mmio); "<name>| ..." lines are daemon logs and dmesg;
#   "LAB: ..." lines are progress; "LAB: done" is the final marker.
# busybox ash: no pipefail, no arrays; every step reports instead of exiting.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Only emergencies on the console, so kernel messages (the no-IOMMU taint warnings) cannot split
# our result lines; they stay in dmesg, which is printed at the end.
echo 1 >/proc/sys/kernel/printk

# DEVICE_BIN and CLIENT_BIN, written by run-lab.sh.
# shellcheck source=/dev/null
. /etc/lab.conf

# Guest-side limits, so that one hung step still leaves time for the others and the logs.
READY_TIMEOUT=30    # seconds for a daemon to report READY=1
CLIENT_TIMEOUT=45   # seconds for one client run

uptime_s() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.2f", b - a }'; }
pass() { echo "[lab] PASS $*"; }
fail() { echo "[lab] FAIL $*"; }

# finish: stop the daemons, dump their logs and the interesting part of dmesg, power off.
finish() {
    for name in pl031 virtio-mmio; do stop_daemon "$name"; done
    for name in pl031 virtio-mmio; do
        if [ -f "/run/$name-daemon.log" ]; then
            echo "LAB: $name daemon log:"
            sed "s/^/$name-daemon| /" "/run/$name-daemon.log"
        fi
    done
    echo "LAB: dmesg (vfio, no-IOMMU, crashes):"
    dmesg | grep -E 'vfio|VFIO|noiommu|taint|segfault|traps:|BUG:|Oops:|Call Trace|WARNING:' |
        tail -n 40 | sed 's/^/dmesg| /'
    echo "LAB: done at $(uptime_s)s"
    sync
    poweroff -f
}

# load_modules: insmod each line of /lib/modules/load-order ("name [param=value...]").
load_modules() {
    ok=1; names=
    while read -r m params; do
        [ -n "$m" ] || continue
        # shellcheck disable=SC2086 # the parameters are separate words
        insmod "/lib/modules/$m.ko" $params || { fail "modules insmod $m $params"; ok=0; }
        names="$names $m"
    done </lib/modules/load-order
    noiommu=$(cat /sys/module/vfio/parameters/enable_unsafe_noiommu_mode 2>/dev/null)
    if [ $ok = 1 ] && [ "$noiommu" = Y ]; then
        pass "modules$names (vfio enable_unsafe_noiommu_mode=$noiommu)"
    elif [ $ok = 1 ]; then
        fail "modules loaded, but vfio enable_unsafe_noiommu_mode is '$noiommu'"
    fi
}

# bind_vfio NAME BUS PATTERN DRIVER: bind the first device of /sys/bus/BUS/devices matching PATTERN
# to DRIVER through driver_override + drivers_probe (unbinding its host driver first). Sets DEV
# (its name) and GROUP; reports bind-NAME.
bind_vfio() {
    name=$1 bus=$2 drv=$4; DEV=; GROUP=
    for d in /sys/bus/$bus/devices/$3; do
        [ -e "$d" ] && { DEV=${d##*/}; break; }
    done
    if [ -z "$DEV" ]; then fail "bind-$name no $bus device matches $3"; return 1; fi
    d=/sys/bus/$bus/devices/$DEV
    host=$(basename "$(readlink "$d/driver" 2>/dev/null)" 2>/dev/null)
    [ -n "$host" ] && echo "$DEV" >"$d/driver/unbind"
    echo "$drv" >"$d/driver_override"
    echo "$DEV" >"/sys/bus/$bus/drivers_probe"
    now=$(basename "$(readlink "$d/driver" 2>/dev/null)" 2>/dev/null)
    # vfio creates the no-IOMMU group (and its node) while probing, so none exists before.
    GROUP=$(basename "$(readlink "$d/iommu_group" 2>/dev/null)" 2>/dev/null)
    if [ "$now" != "$drv" ] || [ -z "$GROUP" ] || [ ! -c "/dev/vfio/noiommu-$GROUP" ]; then
        fail "bind-$name $DEV driver '$now' (want $drv), group '$GROUP', no /dev/vfio/noiommu-$GROUP? (dmesg: $(dmesg | grep "$DEV" | tail -n 1))"
        return 1
    fi
    pass "bind-$name $DEV ($bus bus) from ${host:-no driver} to $drv, no-IOMMU group $GROUP ($(cat "$d/iommu_group/name" 2>/dev/null))"
}

# start_daemon NAME SPEC: start vfio-broker-device on SPEC with its readiness fd on a FIFO and block
# until it reports READY=1 (or exits, or READY_TIMEOUT passes). Reports NAME-daemon-ready.
start_daemon() {
    name=$1; fifo=/run/$name.ready
    mkfifo "$fifo"
    t0=$(uptime_s)
    "$DEVICE_BIN" --device "$2" --socket "/run/$name.sock" --ready-fd 3 \
        3>"$fifo" </dev/null >"/run/$name-daemon.log" 2>&1 &
    pid=$!
    eval "PID_$(echo "$name" | tr - _)=$pid"
    # EOF (the daemon exited without writing) gives an empty line.
    line=$(timeout "$READY_TIMEOUT" head -n 1 "$fifo")
    if [ "$line" = READY=1 ]; then
        pass "$name-daemon-ready pid $pid, --device $2, at $(uptime_s)s ($(since "$t0")s after exec)"
    else
        fail "$name-daemon-ready got '$line' instead of READY=1 (daemon died or timed out): $(tail -n 3 "/run/$name-daemon.log" | tr '\n' ' ')"
        return 1
    fi
}

# stop_daemon NAME: check the daemon survived all clients, SIGTERM it and reap it: status 0, as
# the daemon handles SIGTERM and cleans up (143 would mean the default action killed it).
stop_daemon() {
    var=PID_$(echo "$1" | tr - _)
    eval "pid=\${$var:-}"
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
    case $rc in
        0) pass "$1-daemon-exit status $rc" ;;
        *)     fail "$1-daemon-exit status $rc" ;;
    esac
    eval "$var="
}

# run_client TAG ARGS...: run vfio-broker-client with its output prefixed by "[TAG] "; sets CLIENT_RC.
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
load_modules

# PL031 RTC at 0x9010000: an AMBA PrimeCell, so vfio-amba; the built-in rtc-pl031 lets go of it.
# Given as a /sys/bus/amba/devices path: the daemon resolves it to the device and its bus.
if bind_vfio pl031 amba '*.pl031' vfio-amba && start_daemon pl031 "/sys/bus/amba/devices/$DEV"; then
    run_client pl031-1 pl031 --socket /run/pl031.sock --require-mmap
    expect_clean_exit pl031-1
    # A client that dies right after the first interrupt: the match still asserted, the line
    # automasked, the trigger set ...
    run_client pl031-abort pl031 --socket /run/pl031.sock --abort-after irq-eventfd
    # ... must leave the daemon able to serve the next one with working interrupts.
    run_client pl031-2 pl031 --socket /run/pl031.sock --require-mmap
    expect_clean_exit pl031-2
fi

# The first virtio-mmio transport at 0xa000000: a platform device; the guest never loads
# virtio_mmio, so it is unbound. Given by its id, platform:NAME.
if bind_vfio virtio-mmio platform '*.virtio_mmio' vfio-platform &&
    start_daemon virtio-mmio "platform:$DEV"; then
    run_client virtio-mmio virtio-mmio --socket /run/virtio-mmio.sock
    expect_clean_exit virtio-mmio
fi
finish
