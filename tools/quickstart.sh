#!/usr/bin/env bash
# Quickstart 1: install the dependencies, build mpx in ./build, and run the flagship demo
# (build/examples/flagship: Process under each start method). Exits with the demo's status.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=build

bash tools/install-deps.sh

if [[ -f "$build/build.ninja" && -f "$build/meson-private/coredata.dat" ]]; then
  : # configured already; ninja regenerates by itself if a meson.build changed
elif [[ -f "$build/meson-private/coredata.dat" ]]; then
  # A half-configured build dir (an earlier setup failed): reconfigure it, or start over if that fails too.
  meson setup --reconfigure "$build" || meson setup --wipe "$build"
else
  meson setup "$build"
fi

meson compile -C "$build"

demo="$build/examples/flagship"
if [[ ! -x "$demo" ]]; then
  echo "quickstart: $demo was not built (is examples/flagship.cpp listed in examples/meson.build?)" >&2
  exit 1
fi
echo "quickstart: running $demo"
status=0
"$demo" || status=$?
exit "$status"
