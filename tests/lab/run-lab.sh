#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# run-lab.sh - boot a QEMU TCG guest with real kernel VFIO and run the project's own
# vfio-broker-device and vfio-broker-client in it against emulated PCI devices.
#
# Usage:
#   run-lab.sh x86 --build-dir DIR --cache-dir DIR [--device-bin PATH] [--client-bin PATH]
#              [--brokerd-bin PATH --launch-bin PATH]
#
#   x86           q35 TCG + intel-iommu (type1) + edu + e1000e, Debian's current amd64 kernel.
#                 ("arm64" is reserved for a later lab; see lab_arm64 below.)
#   --build-dir   meson build dir. The binaries default to DIR/daemon/vfio-broker-device and
#                 DIR/client/vfio-broker-client.
#   --cache-dir   downloads, the unpacked kernel, the initramfs and the logs (created if missing;
#                 safe to delete, and safe to share between runs: it is flock-ed).
#   --device-bin, --client-bin
#                 explicit binaries (meson passes the targets' full_path()).
#   --brokerd-bin, --launch-bin
#                 vfio-brokerd and vfio-broker-launch, for the broker part of the lab (both or
#                 neither; default DIR/daemon/vfio-brokerd and DIR/client/vfio-broker-launch when
#                 both exist). Without them the guest skips that part and says so.
#
# Environment knobs: LAB_TIMEOUT (QEMU wall-clock limit, seconds, default 300),
#                    LAB_SMP (guest CPUs, default 2), LAB_MEM (guest RAM, default 512M).
#
# Exit status: 0 every check passed, 1 a check failed (or the harness broke),
#              77 the lab cannot run on this host (one-line reason printed; meson: SKIP), 2 usage.
#
# Logs: <cache-dir>/x86/serial.log (whole guest console) and <cache-dir>/x86/qemu.stderr.
set -Eeuo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
readonly TIMEOUT=${LAB_TIMEOUT:-300}
readonly SMP=${LAB_SMP:-2}
readonly MEM=${LAB_MEM:-512M}

log() { echo "[run-lab] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# The reason goes to stdout and stderr: meson shows stdout, a terminal user sees either.
skip() { echo "SKIP: $*"; echo "[run-lab] SKIP: $*" >&2; exit 77; }
usage() { awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "${BASH_SOURCE[0]}" >&2; exit 2; }
# Any unexpected command failure is a harness failure (status 1), never a stray 77.
trap 'log "internal error at line $LINENO (status $?)"; exit 1' ERR

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ------------------------------------------------------------------ host packages

# ensure_packages PKG...: install the Debian packages that are not installed yet.
ensure_packages() {
    if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
        skip "not a Debian-like host (no dpkg-query/apt-get)"
    fi
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo -n true 2>/dev/null || skip "packages ${missing[*]} are missing and we cannot install them (not root, no sudo)"
        sudo=(sudo -n)
    fi
    # Never add Debian's npm to any list here: it conflicts with the preinstalled nodesource nodejs.
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -y -q)
    log "installing ${missing[*]}"
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -print -quit 2>/dev/null)" ]; then
        "${apt[@]}" update >&2 || skip "apt-get update failed (offline?); cannot install ${missing[*]}"
    fi
    "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2 ||
        skip "apt-get install ${missing[*]} failed"
}

# ------------------------------------------------------------------ kernel

# fetch_kernel META ARCH: make sure the kernel that Debian's META package (e.g. linux-image-amd64)
# depends on is downloaded and unpacked in the cache. Sets KVER and KDIR; KDIR holds vmlinuz,
# vmlinux (PVH ELF, when extractable) and modules/<name>.ko, and is complete iff KDIR/.complete exists.
fetch_kernel() {
    local meta=$1 arch=$2 kpkg ver
    kpkg=$(resolve_kernel_pkg "$meta")
    if [ -z "$kpkg" ] && [ "$(id -u)" -eq 0 ]; then
        log "apt cannot resolve $meta; running apt-get update"
        apt-get -o DPkg::Lock::Timeout=900 -q update >&2 || true
        kpkg=$(resolve_kernel_pkg "$meta")
    fi
    if [ -z "$kpkg" ]; then
        # Offline: fall back to the newest kernel already unpacked in the cache.
        KDIR=$(find "$CACHE/kernel" -mindepth 2 -maxdepth 2 -name .complete 2>/dev/null | sort -V | tail -n 1 || true)
        [ -n "$KDIR" ] || skip "apt cannot resolve $meta and no kernel is cached in $CACHE/kernel"
        KDIR=${KDIR%/.complete}; KVER=${KDIR##*/}
        log "apt cannot resolve $meta; using cached kernel $KVER"
        return 0
    fi
    KVER=${kpkg#linux-image-}
    KDIR=$CACHE/kernel/$KVER
    # A directory unpacked with an older module list is unpacked again (from the cached .deb).
    [ "$(cat "$KDIR/.complete" 2>/dev/null)" = "$KERNEL_LAYOUT" ] && return 0

    ver=$({ apt-cache policy "$kpkg" 2>/dev/null || true; } | awk '/Candidate:/ { print $2 }')
    if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then skip "apt has no candidate version of $kpkg"; fi
    local debs=$CACHE/debs deb
    deb=$debs/${kpkg}_${ver//:/%3a}_${arch}.deb
    mkdir -p "$debs"
    if [ ! -s "$deb" ]; then
        log "downloading $kpkg $ver"
        local t0 tmp=$debs/.partial.$$
        t0=$(now)
        rm -rf "$tmp"; mkdir -p "$tmp"
        # apt-get download works unprivileged; as root it warns about the _apt sandbox (harmless).
        # Short network timeouts: an offline CI runner should skip quickly, not hang in apt.
        if ! (cd "$tmp" && apt-get -o Acquire::Retries=2 -o Acquire::http::Timeout=30 \
                download "$kpkg=$ver" >download.log 2>&1); then
            tail -n 5 "$tmp/download.log" >&2 || true
            rm -rf "$tmp"
            skip "cannot download $kpkg $ver (offline?)"
        fi
        mv "$tmp"/*.deb "$deb"
        rm -rf "$tmp"
        log "downloaded $(du -h "$deb" | cut -f1) in $(elapsed "$t0") s"
    fi

    log "unpacking $kpkg"
    local t0 stage=$KDIR.partial
    t0=$(now)
    rm -rf "$stage" "$KDIR"; mkdir -p "$stage/x" "$stage/modules"
    # Only the kernel image and the modules the labs load: the full tree is ~400 MB.
    dpkg-deb --fsys-tarfile "$deb" |
        tar -x -C "$stage/x" --wildcards '*/boot/vmlinuz-*' '*/kernel/drivers/vfio/*' \
            '*/kernel/virt/lib/irqbypass.ko*' '*/kernel/drivers/pci/pci-stub.ko*'
    mv "$stage/x/boot/vmlinuz-$KVER" "$stage/vmlinuz"
    local ko name
    while IFS= read -r ko; do
        name=${ko##*/}
        case $ko in
            *.ko.xz)  xz -dc "$ko" >"$stage/modules/${name%.xz}" ;;
            *.ko.zst) zstd -q -dc "$ko" >"$stage/modules/${name%.zst}" ;;
            *)        cp "$ko" "$stage/modules/$name" ;;
        esac
    done < <(find "$stage/x" -name '*.ko*' -type f)
    rm -rf "$stage/x"
    extract_vmlinux "$stage/vmlinuz" "$stage/vmlinux"
    echo "$KERNEL_LAYOUT" >"$stage/.complete"
    mv "$stage" "$KDIR"
    log "kernel $KVER ready in $(elapsed "$t0") s"
}

# What an unpacked kernel directory holds; bump it when the tar patterns above change.
readonly KERNEL_LAYOUT="layout 2: vmlinuz vmlinux vfio irqbypass pci-stub"

resolve_kernel_pkg() {
    { apt-cache depends "$1" 2>/dev/null || true; } | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# extract_vmlinux BZIMAGE OUT: pull the ELF vmlinux out of a bzImage. Booting it through QEMU's
# PVH entry point (Debian kernels have CONFIG_PVH=y) skips the guest-side decompression, which
# costs ~6-7 s under TCG. Leaves no OUT when no payload is found (we then boot the bzImage).
extract_vmlinux() {
    local bz=$1 out=$2 off magic tool
    for magic in xz zstd; do
        case $magic in
            xz)   off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$bz" | head -n 1 | cut -d: -f1 || true); tool=(xz -dc) ;;
            zstd) off=$(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "$bz" | head -n 1 | cut -d: -f1 || true); tool=(zstd -q -dc) ;;
        esac
        [ -n "$off" ] || continue
        # The payload is followed by trailing bzImage data, so the decompressor complains at the end.
        tail -c +$((off + 1)) "$bz" | "${tool[@]}" >"$out" 2>/dev/null || true
        if [ "$(head -c 4 "$out" | od -An -c | tr -d ' ')" = '177ELF' ]; then return 0; fi
        rm -f "$out"
    done
    log "WARNING: no ELF payload found in $bz; will boot the (slower) bzImage"
}

# ------------------------------------------------------------------ initramfs

# copy_elf ROOT FILE [--strip-debug]: copy an executable into ROOT at the same absolute path,
# plus every shared library ldd lists and the ELF interpreter, so the exact host binary runs in
# the guest. --strip-debug drops its DWARF (symbols stay, so backtraces still name functions):
# the gRPC daemon's debug info alone is ~17 MB the guest kernel would have to unpack under TCG.
# Appends the library directories to LIB_DIRS.
copy_elf() {
    local root=$1 f=$2 out dep
    install -D -m 0755 "$f" "$root$f"
    if [ "${3:-}" = --strip-debug ] && command -v objcopy >/dev/null; then
        objcopy --strip-debug "$root$f" || die "objcopy --strip-debug $f failed"
    fi
    if ! out=$(LC_ALL=C ldd "$f" 2>&1); then
        case $out in
            *"not a dynamic executable"*) return 0 ;;
            *) die "ldd $f failed: $out" ;;
        esac
    fi
    if grep -q 'not found' <<<"$out"; then die "$f has unresolved libraries: $(grep 'not found' <<<"$out" | tr -s '\t\n' '  ')"; fi
    # "libfoo.so.1 => /path (0x..)" and "/lib64/ld-linux-x86-64.so.2 (0x..)": the first absolute path.
    while IFS= read -r dep; do
        [ -e "$root$dep" ] || install -D -m 0755 "$(readlink -f "$dep")" "$root$dep"
        LIB_DIRS+=("${dep%/*}")
    done < <(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) { print $i; break } }' <<<"$out")
}

# build_initramfs OUT INIT MODULES...: busybox, INIT as /init, the modules (loaded in the given
# order), and the project's binaries with their libraries; /etc/lab.conf tells /init where they are.
build_initramfs() {
    local out=$1 init=$2; shift 2
    local root=$WORK/root m order=()
    rm -rf "$root"
    mkdir -p "$root"/{bin,dev,proc,sys,run,tmp,etc,lib/modules}
    LIB_DIRS=()
    copy_elf "$root" /bin/busybox    # busybox-static: normally no libraries at all
    install -m 0755 "$init" "$root/init"
    for m in "$@"; do
        if [ -f "$KDIR/modules/$m.ko" ]; then
            cp "$KDIR/modules/$m.ko" "$root/lib/modules/"
            order+=("$m")
        else
            log "WARNING: module $m not in kernel $KVER; not loading it"
        fi
    done
    echo "${order[*]}" >"$root/lib/modules/load-order"
    local b
    for b in "$DEVICE_BIN" "$CLIENT_BIN" "$BROKERD_BIN" "$LAUNCH_BIN"; do
        [ -z "$b" ] || copy_elf "$root" "$b" --strip-debug
    done
    local libpath
    libpath=$(printf '%s\n' "${LIB_DIRS[@]}" | sort -u | paste -sd: -)
    cat >"$root/etc/lab.conf" <<EOF
# generated by run-lab.sh
DEVICE_BIN='$DEVICE_BIN'
CLIENT_BIN='$CLIENT_BIN'
BROKERD_BIN='$BROKERD_BIN'
LAUNCH_BIN='$LAUNCH_BIN'
LD_LIBRARY_PATH='$libpath'
EOF
    (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$out"
    log "initramfs $(du -h "$out" | cut -f1) (modules: ${order[*]})"
}

# ------------------------------------------------------------------ boot and check

# boot_guest QEMU-ARGV...: run QEMU under a wall-clock limit with the console in $WORK/serial.log.
# Sets QEMU_RC.
boot_guest() {
    local t0 qpid
    rm -f "$WORK/serial.log" "$WORK/qemu.stderr"
    log "booting: $*"
    t0=$(now)
    timeout --kill-after=10 "$TIMEOUT" "$@" -serial "file:$WORK/serial.log" \
        2>"$WORK/qemu.stderr" </dev/null &
    qpid=$!
    # If we are interrupted (meson timeout, ^C), take QEMU down with us.
    trap 'log "interrupted; stopping QEMU"; kill -TERM $qpid 2>/dev/null; exit 1' INT TERM
    QEMU_RC=0
    wait "$qpid" || QEMU_RC=$?
    trap - INT TERM
    log "qemu exited with status $QEMU_RC after $(elapsed "$t0") s"
    if [ "$QEMU_RC" -eq 124 ]; then log "guest hit the ${TIMEOUT} s wall-clock limit (LAB_TIMEOUT)"; fi
    if [ "$QEMU_RC" -ne 0 ]; then
        log "qemu stderr ($WORK/qemu.stderr), last lines:"
        grep -v -e '^vtd_' -e 'New fault is not recorded' -e 'has no peer' "$WORK/qemu.stderr" |
            tail -n 8 >&2 || true
    fi
}

# Checks against the guest's result lines: "[tag] PASS|FAIL|SKIP step ..." and "[tag] RESULT: ...".
CHECK_ERRORS=()
SERIAL_TEXT=
expect_pass() { # expect_pass TAG STEP...
    local tag=$1 step; shift
    if ! grep -q "^\[$tag\] " <<<"$SERIAL_TEXT"; then
        CHECK_ERRORS+=("no output at all from [$tag] (expected PASS $*)")
        return 0
    fi
    for step in "$@"; do
        grep -qE "^\[$tag\] PASS $step( |\$)" <<<"$SERIAL_TEXT" ||
            CHECK_ERRORS+=("missing: [$tag] PASS $step")
    done
}
expect_result() { # expect_result TAG: a "RESULT: PASS n FAIL 0" line from that client run
    grep -q "^\[$1\] " <<<"$SERIAL_TEXT" || return 0   # already reported by expect_pass
    # The client may append more counters ("... FAIL 0 SKIP 1").
    grep -qE "^\[$1\] RESULT: PASS [0-9]+ FAIL 0( |\$)" <<<"$SERIAL_TEXT" ||
        CHECK_ERRORS+=("missing: [$1] RESULT: PASS n FAIL 0")
}

# report_and_check EXPECT_FN: print the relevant serial lines, run the lab's expectations,
# print a verdict. Sets LAB_OK=1 iff everything passed.
report_and_check() {
    local expect_fn=$1 serial=$WORK/serial.log
    [ -f "$serial" ] || { log "no serial log (QEMU did not start?)"; return 0; }
    SERIAL_TEXT=$(tr -d '\r' <"$serial")
    # [tag] result lines, LAB: progress lines, "name| " daemon log and dmesg lines.
    local relevant='^(\[[a-z0-9-]+\] |LAB: |[a-z0-9-]+\| )'
    echo "----- guest results and logs ($serial) -----"
    grep -E "$relevant" <<<"$SERIAL_TEXT" || true
    echo "----- end of guest output -----"

    "$expect_fn"
    grep -qE '^LAB: done' <<<"$SERIAL_TEXT" || CHECK_ERRORS+=("guest did not reach its final 'LAB: done' marker")
    local fails
    fails=$(grep -E '^\[[a-z0-9-]+\] FAIL' <<<"$SERIAL_TEXT" || true)
    [ -z "$fails" ] || CHECK_ERRORS+=("FAIL lines present:"$'\n'"$fails")
    # Also sees the dmesg| section, where an Oops ends up while printk keeps the console quiet.
    local trouble='Kernel panic|BUG:|Oops:|general protection fault'
    if grep -qE "$trouble" <<<"$SERIAL_TEXT"; then
        CHECK_ERRORS+=("guest kernel trouble: $(grep -m 1 -E "$trouble" <<<"$SERIAL_TEXT")")
    fi
    [ "$QEMU_RC" -eq 0 ] || CHECK_ERRORS+=("qemu exited with status $QEMU_RC")

    if [ ${#CHECK_ERRORS[@]} -eq 0 ]; then
        log "ALL CHECKS PASSED"
        LAB_OK=1
        return 0
    fi
    if ! grep -qE '^LAB: done' <<<"$SERIAL_TEXT"; then
        # Whatever else reached the console: boot messages, a panic before or during /init.
        echo "----- other console lines (last 30) -----"
        grep -vE "$relevant" <<<"$SERIAL_TEXT" | tail -n 30 || true
    fi
    local e
    for e in "${CHECK_ERRORS[@]}"; do log "CHECK FAILED: $e"; done
    log "full console: $serial"
}

# ------------------------------------------------------------------ x86 lab

# Steps of a full "vfio-broker-client edu" run that the lab must see PASS.
readonly EDU_STEPS="version device-info region-info identify-trapped identify-mmap liveness
    factorial intx msi dma-map dma-roundtrip dma-done-irq dma-unmap dma-blocked-unmapped"

expect_x86() {
    # /init's own steps (binding, daemon readiness, client exit codes, daemon shutdown).
    expect_pass lab modules bind-edu bind-e1000e edu-daemon-ready e1000e-daemon-ready \
        edu-1-exit edu-2-exit msix-exit edu-daemon-alive e1000e-daemon-alive \
        edu-daemon-exit e1000e-daemon-exit
    # shellcheck disable=SC2086 # word splitting of the step list is intended
    expect_pass edu-1 $EDU_STEPS
    expect_result edu-1
    # The aborted client must at least have mapped DMA before dying.
    expect_pass edu-abort dma-map
    # The second full run re-maps the same IOVAs: it passes only if the daemon cleaned up.
    # shellcheck disable=SC2086
    expect_pass edu-2 $EDU_STEPS
    expect_result edu-2
    expect_pass msix msix-set-irqs msix-eventfd
    expect_result msix
    [ -n "$BROKERD_BIN" ] || return 0
    # The real vfio-brokerd takes edu from pci-stub (or no driver) to vfio-pci and back.
    expect_pass lab broker-original-binding brokerd-check-config brokerd-daemon-ready broker-assign \
        broker-assign-driver broker-edu-exit broker-deassign broker-deassign-restores \
        broker-deassign-override broker-deassign-daemon-gone brokerd-daemon-alive brokerd-daemon-exit
    # shellcheck disable=SC2086
    expect_pass broker-edu $EDU_STEPS
    expect_result broker-edu
}

lab_x86() {
    [ "$(uname -m)" = x86_64 ] ||
        skip "the x86 lab runs the host-built binaries in an x86_64 guest; this host is $(uname -m)"
    ensure_packages qemu-system-x86 busybox-static cpio xz-utils zstd gzip
    qemu-system-x86_64 -device help 2>&1 | grep -q '"edu"' || skip "qemu-system-x86_64 has no edu device"

    WORK=$CACHE/x86
    mkdir -p "$WORK"
    fetch_kernel linux-image-amd64 amd64
    build_initramfs "$WORK/initrd.gz" "$SCRIPT_DIR/guest-init-x86.sh" \
        irqbypass vfio vfio_iommu_type1 vfio_virqfd vfio-pci-core vfio-pci pci-stub
    log "preparation took $(elapsed "$T_START") s"

    local kernel=$KDIR/vmlinux
    [ -s "$kernel" ] || kernel=$KDIR/vmlinuz
    # intremap=on: type1 refuses to work without interrupt remapping (EPERM at VFIO_SET_IOMMU).
    # e1000e,romfile=: no dependency on the ipxe-qemu option ROM package (edu has no MSI-X).
    boot_guest qemu-system-x86_64 \
        -machine q35,accel=tcg,kernel-irqchip=split -cpu max -smp "$SMP" -m "$MEM" \
        -device intel-iommu,intremap=on,caching-mode=on -device edu -device e1000e,romfile= \
        -nodefaults -display none -no-reboot \
        -kernel "$kernel" -initrd "$WORK/initrd.gz" \
        -append "console=ttyS0 intel_iommu=on iommu=pt panic=-1 loglevel=4"
    report_and_check expect_x86
}

# An arm64 lab fits the same shape: ensure_packages (qemu-system-arm, ...), fetch_kernel
# linux-image-arm64 arm64 (through a private apt state with APT::Architecture=arm64), cross-built
# binaries (copy_elf then needs the cross sysroot instead of host ldd), build_initramfs with its
# own guest-init-arm64.sh, boot_guest qemu-system-aarch64 ..., report_and_check expect_arm64.
lab_arm64() {
    die "the arm64 lab is not implemented yet"
}

# ------------------------------------------------------------------ main

main() {
    [ $# -ge 1 ] || usage
    local lab=$1 build_dir='' cache_dir=''; shift
    DEVICE_BIN='' CLIENT_BIN='' BROKERD_BIN='' LAUNCH_BIN=''
    while [ $# -gt 0 ]; do
        case $1 in
            --build-dir)  build_dir=${2:?}; shift 2 ;;
            --cache-dir)  cache_dir=${2:?}; shift 2 ;;
            --device-bin) DEVICE_BIN=${2:?}; shift 2 ;;
            --client-bin) CLIENT_BIN=${2:?}; shift 2 ;;
            --brokerd-bin) BROKERD_BIN=${2:?}; shift 2 ;;
            --launch-bin) LAUNCH_BIN=${2:?}; shift 2 ;;
            -h|--help)    usage ;;
            *)            log "unknown argument: $1"; usage ;;
        esac
    done
    [ -n "$cache_dir" ] || { log "--cache-dir is required"; usage; }
    if [ -z "$build_dir" ] && { [ -z "$DEVICE_BIN" ] || [ -z "$CLIENT_BIN" ]; }; then
        log "--build-dir is required unless both binaries are given"; usage
    fi
    DEVICE_BIN=$(realpath -m "${DEVICE_BIN:-$build_dir/daemon/vfio-broker-device}")
    CLIENT_BIN=$(realpath -m "${CLIENT_BIN:-$build_dir/client/vfio-broker-client}")
    if [ -n "$BROKERD_BIN" ] || [ -n "$LAUNCH_BIN" ]; then
        if [ -z "$BROKERD_BIN" ] || [ -z "$LAUNCH_BIN" ]; then
            log "--brokerd-bin and --launch-bin go together"; usage
        fi
    elif [ -n "$build_dir" ] && [ -x "$build_dir/daemon/vfio-brokerd" ] &&
         [ -x "$build_dir/client/vfio-broker-launch" ]; then
        BROKERD_BIN=$build_dir/daemon/vfio-brokerd LAUNCH_BIN=$build_dir/client/vfio-broker-launch
    fi
    if [ -n "$BROKERD_BIN" ]; then
        BROKERD_BIN=$(realpath -m "$BROKERD_BIN") LAUNCH_BIN=$(realpath -m "$LAUNCH_BIN")
    else
        log "no vfio-brokerd/vfio-broker-launch (built without gRPC?): the guest skips the broker part"
    fi
    local b
    for b in "$DEVICE_BIN" "$CLIENT_BIN" ${BROKERD_BIN:+"$BROKERD_BIN" "$LAUNCH_BIN"}; do
        [ -x "$b" ] || die "$b is missing or not executable (build the project first)"
        case $b in *"'"*) die "path with a single quote is not supported: $b" ;; esac
    done

    mkdir -p "$cache_dir"
    CACHE=$(realpath "$cache_dir")
    # One lab at a time per cache: the kernel unpack and $CACHE/<lab> are shared state.
    exec 9>"$CACHE/.lock"
    flock -w 1200 9 || die "timed out waiting for the lock on $CACHE"

    # Labs set LAB_OK rather than returning non-zero: a function called as "f || ..." would
    # run with errexit silently disabled.
    T_START=$(now)
    LAB_OK=0
    case $lab in
        x86|x86_64) lab_x86 ;;
        arm64)      lab_arm64 ;;
        *)          log "unknown lab: $lab"; usage ;;
    esac
    log "total $(elapsed "$T_START") s"
    [ "$LAB_OK" -eq 1 ] || exit 1
}

main "$@"
