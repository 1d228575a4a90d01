#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Count meson test results from one or more meson-logs/testlog.json files and print the
single closing line CI reads: "N passed, N failed[, N skipped]". Exit 1 if anything failed
or a log is missing (a build that never ran its tests is a failure, not a pass)."""
import json
import sys

PASSED = {"OK", "EXPECTEDFAIL"}
SKIPPED = {"SKIP"}


def main(paths):
    passed = failed = skipped = 0
    for path in paths:
        try:
            with open(path) as log:
                for line in log:
                    if not line.strip():
                        continue
                    entry = json.loads(line)
                    result = entry.get("result")
                    if result in PASSED:
                        passed += 1
                    elif result in SKIPPED:
                        skipped += 1
                        print(f"skipped: {entry.get('name')}: "
                              f"{(entry.get('stdout') or '').strip().splitlines()[-1:]}",
                              file=sys.stderr)
                    else:
                        failed += 1
                        print(f"failed: {entry.get('name')} ({result})", file=sys.stderr)
        except FileNotFoundError:
            print(f"missing test log {path}: the tests did not run", file=sys.stderr)
            failed += 1
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
