#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Install, build and run every test tier (unit, protocol, control, integration, platform, crosvm,
# static, the x86 and arm64 QEMU labs) in the main (gcc) build, then unit, protocol, platform,
# crosvm and the libFuzzer targets in a clang ASan+UBSan build.
# Ends with one line "N passed, N failed" and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }

logs=()
run_suites() { # BUILDDIR [meson setup options...] -- [meson test options...]
  local dir=$1; shift
  local setup=() testargs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do setup+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  testargs=("$@")
  logs+=("$dir/meson-logs/testlog.json")
  rm -f "$dir/meson-logs/testlog.json"
  if ! ./scripts/build.sh "$dir" "${setup[@]}"; then
    echo "build of $dir failed" >&2
    return
  fi
  meson test -C "$dir" --print-errorlogs --num-processes 2 "${testargs[@]}" || true
}

run_suites build
CXX=clang++ run_suites build-san -Db_sanitize=address,undefined -Db_lundef=false -Dlab=disabled \
  -Dfuzz=enabled -Dcpp_args=-fsanitize=fuzzer-no-link -- --suite unit --suite protocol --suite platform --suite crosvm --suite fuzz
python3 scripts/test-summary.py "${logs[@]}"
