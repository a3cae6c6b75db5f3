#!/usr/bin/env bash
# Quickstart 1: install the dependencies, build mpx in ./build, and run the flagship demo: the pipeline topology
# (examples/topologies/pipeline.toml: producer -> bounded queue -> 4 workers -> sink, printing throughput) through
# mpx-run. Exits with mpx-run's status.
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

runner="$build/tools/mpx-run"
actors="$build/examples/topology_actors"
topology=examples/topologies/pipeline.toml
for program in "$runner" "$actors"; do
  if [[ ! -x "$program" ]]; then
    echo "quickstart: $program was not built (is it listed in tools/meson.build or examples/meson.build?)" >&2
    exit 1
  fi
done
# The topology's exec actors (topology_actors) are found through PATH.
export PATH="$root/$build/examples:$PATH"
echo "quickstart: $runner --check $topology"
"$runner" --check "$topology"
echo "quickstart: running $runner $topology"
status=0
"$runner" "$topology" || status=$?
exit "$status"
