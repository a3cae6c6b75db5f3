#!/usr/bin/env bash
# A user's build: the library, tools and examples compile with `--buildtype=release` and the default options (no
# -Werror, tests off), so a warning that only -O3 shows (GCC's maybe-uninitialized inside std::variant, say) can never
# break a user's build again. Meson runs it as the `release_build` test (see tests/meson.build).
# Usage: release_build.sh <mpx-source-root>
set -euo pipefail
src=$(cd "$1" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpx-release.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
meson setup "$tmp/build" "$src" --buildtype=release -Dtests=false >"$tmp/setup.log" 2>&1 || {
  cat "$tmp/setup.log" >&2
  echo "release_build: meson setup --buildtype=release failed" >&2
  exit 1
}
if ! meson compile -C "$tmp/build" >"$tmp/compile.log" 2>&1; then
  tail -n 60 "$tmp/compile.log" >&2
  echo "release_build: the release build failed" >&2
  exit 1
fi
echo "release_build: library, tools and examples built with --buildtype=release"
