#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# run-lab.sh - boot a QEMU TCG guest with real kernel VFIO and run the project's own
# vfio-broker-device and vfio-broker-client in it against emulated devices.
#
# Usage:
#   run-lab.sh x86 --build-dir DIR --cache-dir DIR [--device-bin PATH] [--client-bin PATH]
#              [--brokerd-bin PATH --launch-bin PATH]
#   run-lab.sh arm64 --cache-dir DIR [--build-dir DIR] [--device-bin PATH --client-bin PATH]
#
#   x86           q35 TCG + intel-iommu (type1) + edu + e1000e, Debian's current amd64 kernel.
#   arm64         virt TCG (GICv3): the PL031 RTC through vfio-amba and a virtio-mmio transport
#                 through vfio-platform, no-IOMMU; Debian's current arm64 kernel with VFIO
#                 platform modules cross-built from Debian's linux-source, and the project
#                 cross-built for aarch64 (static) in <cache-dir>/arm64/cross.
#   --build-dir   meson build dir. x86: the binaries default to DIR/daemon/vfio-broker-device
#                 and DIR/client/vfio-broker-client. arm64: not used.
#   --cache-dir   downloads, the unpacked kernel, the initramfs and the logs (created if missing;
#                 safe to delete, and safe to share between runs: it is flock-ed).
#   --device-bin, --client-bin
#                 explicit binaries (meson passes the targets' full_path()); for arm64, static
#                 aarch64 binaries used instead of the cross build (both or neither).
#   --brokerd-bin, --launch-bin
#                 x86: vfio-brokerd and vfio-broker-launch, for the broker part of the lab (both or
#                 neither; default DIR/daemon/vfio-brokerd and DIR/client/vfio-broker-launch when
#                 both exist). Without them the guest skips that part and says so.
#
# Environment knobs: LAB_TIMEOUT (QEMU wall-clock limit, seconds, default 300),
#                    LAB_SMP (guest CPUs, default 2), LAB_MEM (guest RAM, default 512M).
#
# Exit status: 0 every check passed, 1 a check failed (or the harness broke),
#              77 the lab cannot run on this host (one-line reason printed; meson: SKIP), 2 usage.
#
# Logs: <cache-dir>/<lab>/serial.log (whole guest console) and <cache-dir>/<lab>/qemu.stderr.
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

# ------------------------------------------------------------------ arm64 lab

# Debian's arm64 kernels (bookworm 6.1) build neither VFIO_PLATFORM/VFIO_AMBA nor VFIO_NOIOMMU, and
# QEMU's virt machine has no IOMMU in front of its platform devices. So the lab cross-builds vfio.ko
# (with no-IOMMU), vfio-platform-base.ko, vfio-platform.ko and vfio-amba.ko from Debian's
# linux-source of the very same version, against Debian's linux-headers for that ABI, and loads
# them into the stock kernel (the stock vfio_virqfd.ko is reused). Packages come through a private
# apt state (APT::Architecture=arm64), so the host's dpkg architecture list is never touched.

# What an arm64 kernel directory holds; bump it when fetch_arm64_kernel or the module build changes.
readonly ARM64_LAYOUT="arm64 layout 1: vmlinuz busybox vfio_virqfd vfio(noiommu) vfio-platform-base vfio-platform vfio-amba reset_required-fix"

# arm64_apt ARGS...: apt-get with the private state in $CACHE/apt-arm64 (arm64 first, amd64 for the
# host-side kbuild tools); arm64_apt_cache ARGS...: the same for apt-cache.
arm64_apt_opts() {
    local a=$CACHE/apt-arm64
    APT_OPTS=(-o "Dir::State=$a/state" -o "Dir::State::status=$a/state/status" -o "Dir::Cache=$a/cache"
              -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o APT::Architectures::=amd64
              -o Debug::NoLocking=1 -o Acquire::Retries=2 -o Acquire::http::Timeout=30)
}
arm64_apt() { local APT_OPTS; arm64_apt_opts; apt-get "${APT_OPTS[@]}" "$@"; }
arm64_apt_cache() { local APT_OPTS; arm64_apt_opts; apt-cache "${APT_OPTS[@]}" "$@"; }

# arm64_apt_update: fetch the package lists into the private state; non-zero when offline.
arm64_apt_update() {
    local a=$CACHE/apt-arm64 t0
    mkdir -p "$a/state/lists/partial" "$a/cache/archives/partial"
    touch "$a/state/status"
    t0=$(now)
    if ! arm64_apt update -q >"$a/update.log" 2>&1; then
        tail -n 3 "$a/update.log" >&2 || true
        return 1
    fi
    log "arm64 package lists updated in $(elapsed "$t0") s"
}

# arm64_download PKG[:ARCH][=VERSION] FILE: download one package as FILE (nothing to do when FILE exists).
arm64_download() {
    local spec=$1 out=$2 tmp
    [ -s "$out" ] && return 0
    tmp=$(dirname "$out")/.partial.$$
    rm -rf "$tmp"; mkdir -p "$tmp"
    # Unprivileged is fine; as root apt warns about the _apt sandbox (harmless).
    if ! (cd "$tmp" && arm64_apt download "$spec" >download.log 2>&1); then
        tail -n 3 "$tmp/download.log" >&2 || true
        rm -rf "$tmp"
        return 1
    fi
    mv "$tmp"/*.deb "$out"
    rm -rf "$tmp"
}

# fetch_arm64_kernel: make sure $CACHE/kernel-arm64/<release> holds the arm64 kernel, the guest's
# busybox, the stock vfio_virqfd.ko and the cross-built VFIO platform modules. Sets KVER and KDIR.
fetch_arm64_kernel() {
    local kpkg
    if ! compgen -G "$CACHE/apt-arm64/state/lists/*_Packages*" >/dev/null; then
        arm64_apt_update || true
    fi
    kpkg=$({ arm64_apt_cache depends linux-image-arm64 2>/dev/null || true; } |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    if [ -z "$kpkg" ]; then
        # Offline: the newest kernel already prepared in the cache.
        KDIR=$(find "$CACHE/kernel-arm64" -mindepth 2 -maxdepth 2 -name .complete 2>/dev/null | sort -V | tail -n 1 || true)
        [ -n "$KDIR" ] || skip "cannot resolve linux-image-arm64 (offline?) and no arm64 kernel is cached in $CACHE/kernel-arm64"
        KDIR=${KDIR%/.complete}; KVER=${KDIR##*/}
        log "cannot resolve linux-image-arm64; using cached kernel $KVER"
        return 0
    fi
    KVER=${kpkg#linux-image-}                 # 6.1.0-56-arm64
    KDIR=$CACHE/kernel-arm64/$KVER
    [ "$(cat "$KDIR/.complete" 2>/dev/null)" = "$ARM64_LAYOUT" ] && return 0

    local abi=${KVER%-arm64} ver series
    series=${abi%%.0-*}                       # 6.1
    ver=$({ arm64_apt_cache show "$kpkg:arm64" 2>/dev/null || true; } | awk '/^Version:/ { print $2; exit }')
    [ -n "$ver" ] || skip "the private apt state has no version of $kpkg"
    # Everything at the kernel's own version, so the modules match the running ABI exactly.
    local debs=$CACHE/debs-arm64 t0 p file
    mkdir -p "$debs"
    local -A want=(
        [image]="$kpkg:arm64=$ver"
        [headers]="linux-headers-$KVER:arm64=$ver"
        [common]="linux-headers-$abi-common=$ver"
        [kbuild]="linux-kbuild-$series:amd64=$ver"
        [source]="linux-source-$series=$ver"
        [busybox]="busybox-static:arm64"
    )
    t0=$(now)
    for p in image headers common kbuild source busybox; do
        file=$debs/${want[$p]//[:=\/]/_}.deb
        if ! arm64_download "${want[$p]}" "$file"; then
            # Stale lists name a version the archive no longer has: refresh once and retry.
            log "download of ${want[$p]} failed; refreshing the arm64 package lists"
            arm64_apt_update || skip "cannot download ${want[$p]} (offline?)"
            arm64_download "${want[$p]}" "$file" || skip "cannot download ${want[$p]}"
        fi
        DEB[$p]=$file
    done
    log "arm64 packages ready in $(elapsed "$t0") s ($(du -sh "$debs" | cut -f1) cached)"

    t0=$(now)
    local stage=$KDIR.partial ko
    rm -rf "$stage" "$KDIR"; mkdir -p "$stage/x"
    dpkg-deb --fsys-tarfile "${DEB[image]}" |
        tar -x -C "$stage/x" --wildcards "./boot/vmlinuz-$KVER" '*/kernel/drivers/vfio/vfio_virqfd.ko*'
    mv "$stage/x/boot/vmlinuz-$KVER" "$stage/vmlinuz"
    ko=$(find "$stage/x" -name 'vfio_virqfd.ko*' -type f | head -n 1)
    [ -n "$ko" ] || die "$kpkg has no vfio_virqfd module"
    case $ko in
        *.ko.xz)  xz -dc "$ko" >"$stage/vfio_virqfd.ko" ;;
        *.ko.zst) zstd -q -dc "$ko" >"$stage/vfio_virqfd.ko" ;;
        *)        cp "$ko" "$stage/vfio_virqfd.ko" ;;
    esac
    dpkg-deb --fsys-tarfile "${DEB[busybox]}" | tar -x -C "$stage/x" ./bin/busybox
    mv "$stage/x/bin/busybox" "$stage/busybox"
    rm -rf "$stage/x"
    build_vfio_platform_modules "$stage" "$abi" "$series"
    echo "$ARM64_LAYOUT" >"$stage/.complete"
    mv "$stage" "$KDIR"
    log "arm64 kernel $KVER and its VFIO platform modules ready in $(elapsed "$t0") s"
}

# build_vfio_platform_modules OUT ABI SERIES: cross-build the VFIO core (with no-IOMMU) and the
# platform/AMBA drivers out of tree, from the linux-source and linux-headers in DEB, into OUT.
build_vfio_platform_modules() {
    local out=$1 abi=$2 series=$3 b=$1/kbuild d
    mkdir -p "$b/kroot" "$b/src"
    for d in kbuild common headers; do dpkg -x "${DEB[$d]}" "$b/kroot"; done
    local hdr=$b/kroot/usr/src/linux-headers-$KVER
    [ -f "$hdr/Makefile" ] || die "linux-headers-$KVER has no Makefile"
    # Debian's per-flavour Makefile includes the common headers by absolute path.
    sed -i "s|/usr/src/linux-headers-$abi-common|$b/kroot/usr/src/linux-headers-$abi-common|g" "$hdr/Makefile"
    dpkg-deb --fsys-tarfile "${DEB[source]}" |
        tar -xO "./usr/src/linux-source-$series.tar.xz" | xz -dc |
        tar -x -C "$b/src" --strip-components=1 "linux-source-$series/drivers/vfio"

    local m=$b/mod
    mkdir -p "$m/platform"
    cp "$b/src/drivers/vfio/"{vfio_main.c,iova_bitmap.c,container.c,vfio.h} "$m/"
    cp "$b/src/drivers/vfio/platform/"*.[ch] "$m/platform/"
    # Linux 6.1.y before upstream 168a9c91fe0a ("vfio: platform: ignore missing reset if disabled
    # at module init"; Debian's 6.1.192 lacks it): vfio_platform_init_common() ends with the error
    # of the reset lookup even when reset_required is off, so vfio-amba (which never requires a
    # reset) and vfio-platform reset_required=0 fail every probe of a device without a reset
    # handler with ENOENT. The function's last statement is its only one-tab "return ret;".
    local common=$m/platform/vfio_platform_common.c
    if ! grep -q 'reset_required ? ret : 0' "$common"; then
        sed -i '/^int vfio_platform_init_common(/,/^}/ s/^\treturn ret;$/\treturn vdev->reset_required ? ret : 0;/' "$common"
        [ "$(sed -n '/^int vfio_platform_init_common(/,/^}/p' "$common" | grep -c 'reset_required ? ret : 0')" -eq 1 ] ||
            die "the reset_required fix did not apply to linux-source-$series (fixed upstream already? see $common)"
    fi
    {
        echo "# Generated by run-lab.sh: the VFIO core with no-IOMMU, the platform and AMBA drivers."
        echo "ccflags-y += -DCONFIG_VFIO_NOIOMMU=1 -DCONFIG_VFIO_PLATFORM=1 -DCONFIG_VFIO_AMBA=1"
        echo "obj-m += vfio.o vfio-platform-base.o vfio-platform.o vfio-amba.o"
        echo "vfio-y := vfio_main.o iova_bitmap.o container.o"
        echo "vfio-platform-base-y := platform/vfio_platform_common.o platform/vfio_platform_irq.o"
        echo "vfio-platform-y := platform/vfio_platform.o"
        echo "vfio-amba-y := platform/vfio_amba.o"
    } >"$m/Kbuild"
    local t0 k
    t0=$(now)
    if ! make -s -C "$hdr" M="$m" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- \
            -j"$(nproc 2>/dev/null || echo 2)" modules >"$b/make.log" 2>&1; then
        grep -v 'Skipping BTF' "$b/make.log" | tail -n 20 >&2 || true
        die "building the VFIO platform modules failed (log: $b/make.log)"
    fi
    for k in vfio vfio-platform-base vfio-platform vfio-amba; do
        [ -f "$m/$k.ko" ] || die "module $k.ko was not built"
        # The stock kernel loads only modules of its exact release.
        # (grep -c reads to the end: with -q, strings could die of SIGPIPE and fail the pipeline.)
        [ "$(strings -a "$m/$k.ko" | grep -c "^vermagic=$KVER ")" -ge 1 ] || die "$k.ko: vermagic is not $KVER"
        aarch64-linux-gnu-strip --strip-debug -o "$out/$k.ko" "$m/$k.ko"
    done
    [ "$(strings -a "$out/vfio.ko" | grep -c '^parm=enable_unsafe_noiommu_mode')" -ge 1 ] ||
        die "vfio.ko was built without no-IOMMU support"
    log "VFIO platform modules built in $(elapsed "$t0") s"
    rm -rf "$b"
}

# cross_build_arm64: the project's vfio-broker-device and vfio-broker-client for aarch64, static,
# in $WORK/cross (kept between runs: ninja rebuilds only what changed). Sets DEVICE_BIN, CLIENT_BIN.
cross_build_arm64() {
    local src bdir=$WORK/cross t0 b leaked elf
    src=$(cd "$SCRIPT_DIR/../.." && pwd)
    t0=$(now)
    # Boost.Asio is header-only: the cross compiler is given /usr/include/boost through this
    # directory and nothing else of the host's /usr/include.
    mkdir -p "$WORK/boost-include" "$WORK/boost-lib"
    ln -sfn /usr/include/boost "$WORK/boost-include/boost"
    {
        echo "# Generated by run-lab.sh: where the host's header-only Boost is."
        echo "[properties]"
        echo "boost_includedir = '$WORK/boost-include'"
        echo "boost_librarydir = '$WORK/boost-lib'"
    } >"$WORK/cross-local.ini"
    # A build dir configured from another checkout is set up again.
    [ "$(cat "$bdir/.vb-source" 2>/dev/null)" = "$src" ] || rm -rf "$bdir"
    if [ ! -f "$bdir/build.ninja" ]; then
        rm -rf "$bdir"
        if ! meson setup "$bdir" "$src" --cross-file "$SCRIPT_DIR/cross-aarch64.ini" \
                --cross-file "$WORK/cross-local.ini" -Dbuildtype=release -Db_ndebug=false \
                -Dcontrol=disabled -Dtests=disabled -Dlab=disabled -Dfuzz=disabled \
                >"$WORK/cross-setup.log" 2>&1; then
            tail -n 20 "$WORK/cross-setup.log" >&2 || true
            die "meson setup of the aarch64 cross build failed (log: $WORK/cross-setup.log)"
        fi
        echo "$src" >"$bdir/.vb-source"
    fi
    if ! ninja -C "$bdir" daemon/vfio-broker-device client/vfio-broker-client >"$WORK/cross-build.log" 2>&1; then
        grep -E 'error|FAILED' "$WORK/cross-build.log" | head -n 20 >&2 || true
        die "the aarch64 cross build failed (log: $WORK/cross-build.log)"
    fi
    DEVICE_BIN=$bdir/daemon/vfio-broker-device CLIENT_BIN=$bdir/client/vfio-broker-client
    for b in "$DEVICE_BIN" "$CLIENT_BIN"; do
        # Static (the initramfs has no aarch64 libraries) and aarch64.
        elf=$(LC_ALL=C readelf -hlW "$b")
        if grep -q 'program interpreter' <<<"$elf"; then die "$b is not static"; fi
        grep -q 'Machine:.*AArch64' <<<"$elf" || die "$b is not an aarch64 binary"
    done
    # Debian's cross gcc searches /usr/include last: make sure no host header was used.
    leaked=$(ninja -C "$bdir" -t deps | awk '$1 ~ /^\/usr\/include\// { print $1 }' | sort -u | head -n 5)
    [ -z "$leaked" ] || die "host headers used by the aarch64 build: $leaked"
    log "aarch64 cross build up to date in $(elapsed "$t0") s"
}

# build_initramfs_arm64 OUT: the arm64 busybox, guest-init-arm64.sh as /init, the modules with their
# load order and parameters, and the two static binaries.
build_initramfs_arm64() {
    local out=$1 root=$WORK/root k
    rm -rf "$root"
    mkdir -p "$root"/{bin,dev,proc,sys,run,tmp,etc,lib/modules}
    install -m 0755 "$KDIR/busybox" "$root/bin/busybox"
    install -m 0755 "$SCRIPT_DIR/guest-init-arm64.sh" "$root/init"
    install -m 0755 "$DEVICE_BIN" "$root/bin/vfio-broker-device"
    install -m 0755 "$CLIENT_BIN" "$root/bin/vfio-broker-client"
    for k in vfio vfio_virqfd vfio-platform-base vfio-platform vfio-amba; do
        cp "$KDIR/$k.ko" "$root/lib/modules/"
    done
    # One module a line, with its parameters: no-IOMMU for the core (nothing translates for virt's
    # platform devices), and no reset handler required (none exists for these devices).
    printf '%s\n' "vfio enable_unsafe_noiommu_mode=1" vfio_virqfd vfio-platform-base \
        "vfio-platform reset_required=0" vfio-amba >"$root/lib/modules/load-order"
    printf '%s\n' "# generated by run-lab.sh" "DEVICE_BIN='/bin/vfio-broker-device'" \
        "CLIENT_BIN='/bin/vfio-broker-client'" >"$root/etc/lab.conf"
    (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$out"
    log "initramfs $(du -h "$out" | cut -f1)"
}

# Steps of the PL031 and virtio-mmio client runs that the lab must see PASS.
readonly PL031_STEPS="version device-info region-info primecell-id-trapped primecell-id-mmap rtc-data
    irq-info irq-eventfd irq-unmask-reasserted irq-rearmed dma-refused"
readonly VIRTIO_MMIO_STEPS="version device-info region-info region-trapped magic version-ids irq-info
    irq-loopback dma-refused"

expect_arm64() {
    expect_pass lab modules bind-pl031 bind-virtio-mmio pl031-daemon-ready virtio-mmio-daemon-ready \
        pl031-1-exit pl031-2-exit virtio-mmio-exit pl031-daemon-alive virtio-mmio-daemon-alive \
        pl031-daemon-exit virtio-mmio-daemon-exit
    # shellcheck disable=SC2086 # word splitting of the step lists is intended
    expect_pass pl031-1 $PL031_STEPS
    expect_result pl031-1
    # The aborted client dies with the match asserted and the line automasked ...
    expect_pass pl031-abort irq-eventfd
    # ... and the next client must still get every interrupt: the daemon unmasked it on cleanup.
    # shellcheck disable=SC2086
    expect_pass pl031-2 $PL031_STEPS
    expect_result pl031-2
    # shellcheck disable=SC2086
    expect_pass virtio-mmio $VIRTIO_MMIO_STEPS
    expect_result virtio-mmio
}

lab_arm64() {
    # The kernel modules are built with Debian's amd64 kbuild tools (linux-kbuild:amd64).
    [ "$(uname -m)" = x86_64 ] ||
        skip "the arm64 lab builds its guest's VFIO modules with Debian's amd64 kbuild tools; this host is $(uname -m)"
    ensure_packages qemu-system-arm busybox-static cpio xz-utils zstd gzip make binutils \
        gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross meson ninja-build
    WORK=$CACHE/arm64
    mkdir -p "$WORK"
    local -A DEB=()
    fetch_arm64_kernel
    if [ -z "$DEVICE_BIN" ]; then
        cross_build_arm64
    else
        log "using the given aarch64 binaries $DEVICE_BIN and $CLIENT_BIN"
    fi
    build_initramfs_arm64 "$WORK/initrd.gz"
    log "preparation took $(elapsed "$T_START") s"

    # virt's PL031 (0x9010000) is an AMBA PrimeCell; its virtio-mmio transports (0xa000000 and up)
    # are platform devices, all unused: the guest never loads the virtio_mmio module.
    boot_guest qemu-system-aarch64 \
        -machine virt,accel=tcg,gic-version=3 -cpu cortex-a57 -smp "$SMP" -m "$MEM" \
        -nodefaults -display none -no-reboot \
        -kernel "$KDIR/vmlinuz" -initrd "$WORK/initrd.gz" \
        -append "console=ttyAMA0 panic=-1 loglevel=4"
    report_and_check expect_arm64
}

# ------------------------------------------------------------------ main

# resolve_host_binaries BUILD_DIR: the x86 lab runs the host's own binaries (and libraries): default
# them from the build dir, pair the broker binaries, check they exist.
resolve_host_binaries() {
    local build_dir=$1 b
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
    for b in "$DEVICE_BIN" "$CLIENT_BIN" ${BROKERD_BIN:+"$BROKERD_BIN" "$LAUNCH_BIN"}; do
        [ -x "$b" ] || die "$b is missing or not executable (build the project first)"
        case $b in *"'"*) die "path with a single quote is not supported: $b" ;; esac
    done
}

# resolve_arm64_binaries: the arm64 lab cross-builds its binaries unless both are given (aarch64,
# static); it runs no broker.
resolve_arm64_binaries() {
    if [ -n "$DEVICE_BIN" ] || [ -n "$CLIENT_BIN" ]; then
        if [ -z "$DEVICE_BIN" ] || [ -z "$CLIENT_BIN" ]; then
            log "arm64: --device-bin and --client-bin go together (or neither: cross-build them)"; usage
        fi
        DEVICE_BIN=$(realpath -m "$DEVICE_BIN") CLIENT_BIN=$(realpath -m "$CLIENT_BIN")
        local b
        for b in "$DEVICE_BIN" "$CLIENT_BIN"; do
            [ -x "$b" ] || die "$b is missing or not executable"
        done
    fi
    if [ -n "$BROKERD_BIN" ] || [ -n "$LAUNCH_BIN" ]; then
        log "the arm64 lab runs no broker; ignoring --brokerd-bin/--launch-bin"
        BROKERD_BIN='' LAUNCH_BIN=''
    fi
}


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
    case $lab in
        arm64) resolve_arm64_binaries ;;
        *)     resolve_host_binaries "$build_dir" ;;
    esac

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
