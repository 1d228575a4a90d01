#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Run buf (npm @bufbuild/buf, installed by install-deps.sh into .tools/) with the given args.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.tools/node_modules/@bufbuild/buf-linux-x64/bin/buf"
[ -x "$bin" ] || bin="$root/.tools/node_modules/.bin/buf"
if [ ! -x "$bin" ]; then
  echo "SKIP: buf is not installed (scripts/install-deps.sh installs it with npm)"
  exit 77
fi
exec "$bin" "$@"
