#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Install every Debian package that building, running and testing vfio-broker needs.
# Idempotent; waits on the dpkg lock instead of failing when another apt holds it.
set -euo pipefail

PKGS=(
  # build
  g++ meson ninja-build pkg-config python3
  libboost-dev libfdt-dev linux-libc-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc grpc-proto
  catch2 clang libclang-rt-14-dev
  # tests and tools
  systemd device-tree-compiler util-linux
  # lab: QEMU TCG guests with real kernel VFIO
  qemu-system-x86 qemu-system-arm busybox-static cpio xz-utils zstd
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross make
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} Debian packages present"
else
  SUDO=
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  APT=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -y -q)
  echo "install-deps: installing ${missing[*]}"
  "${APT[@]}" update
  # Never install Debian's npm: it conflicts with the preinstalled nodesource nodejs.
  "${APT[@]}" install --no-install-recommends "${missing[@]}"
fi

# buf (grpcurl-style `buf curl`, `buf lint`) from the npm registry, local to the checkout.
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "$root/.tools/node_modules/.bin/buf" ] && command -v npm >/dev/null; then
  echo "install-deps: installing @bufbuild/buf into .tools/"
  npm install --silent --no-audit --no-fund --prefix "$root/.tools" @bufbuild/buf@1.75.0 >/dev/null
fi
