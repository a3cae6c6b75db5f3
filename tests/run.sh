#!/usr/bin/env bash
# Quickstart 2: install the dependencies, build ./build with -Dwerror=true, run every meson test, and sum the
# Catch2 test cases (tests/summarize.py). The last line of output is "N passed, N failed". Exits 0 only if
# nothing failed. Works from a fresh clone (no build dir) and on an existing build dir.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=build

bash tools/install-deps.sh

# The value of werror in a configured build dir ("true"/"false"), or empty if it cannot be read.
werror_of() {
  meson introspect --buildoptions "$1" 2>/dev/null | python3 -c '
import json, sys
for option in json.load(sys.stdin):
    if option["name"] == "werror":
        print("true" if option["value"] else "false")
' 2>/dev/null || true
}

if [[ -f "$build/build.ninja" && -f "$build/meson-private/coredata.dat" ]]; then
  if [[ "$(werror_of "$build")" != "true" ]]; then
    meson configure "$build" -Dwerror=true
  fi
elif [[ -f "$build/meson-private/coredata.dat" ]]; then
  # A half-configured build dir (an earlier setup failed): reconfigure it, or start over if that fails too.
  meson setup --reconfigure "$build" -Dwerror=true || meson setup --wipe "$build" -Dwerror=true
else
  meson setup "$build" -Dwerror=true
fi

if ! meson compile -C "$build"; then
  echo "tests/run.sh: the build failed (with -Dwerror=true); no tests were run" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

testlog="$build/meson-logs/testlog.json"
rm -f "$testlog"  # never summarize a previous run
meson_status=0
meson test -C "$build" --print-errorlogs --num-processes 2 || meson_status=$?

echo
echo "Summary (Catch2 test cases; a meson test without a Catch2 summary counts as one):"
exec python3 tests/summarize.py "$testlog" --meson-status "$meson_status"
