#!/usr/bin/env bash
# Proves that a Meson project outside the mpx tree can use mpx
#   (a) installed, through dependency('mpx') and the installed mpx.pc (pkg-config), and
#   (b) as a subproject (subprojects/mpx -> this source tree), through the dependency fallback.
# Each case builds tests/outside (main.cpp: init, one Process under fork, join, exitcode()==0) and expects
# "outside ok".
#
# Usage: run.sh <mpx-source-root> [<mpx-build-dir>]
#   With a configured build dir, case (a) installs that build with --destdir into a temporary directory (no rebuild).
#   Without one, it configures a fresh build of mpx (-Dtests=false) with a temporary --prefix and installs it.
# Meson runs it as the `outside_project` test (see tests/meson.build).
set -euo pipefail

die() {
  echo "outside_project: $*" >&2
  exit 1
}

[[ $# -ge 1 ]] || die "usage: $0 <mpx-source-root> [<mpx-build-dir>]"
src=$(cd "$1" && pwd) || die "source root '$1' not found"
build=${2:-}
[[ -f "$src/meson.build" && -d "$src/framework/include/mpx" ]] || die "'$src' is not the mpx source root"
here="$src/tests/outside"
for f in meson.build main.cpp; do
  [[ -f "$here/$f" ]] || die "$here/$f missing"
done
command -v meson >/dev/null 2>&1 || die "meson not found"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpx-outside.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The outside project is copied, so that its build never writes into the source tree.
copy_project() {
  mkdir -p "$1"
  cp "$here/meson.build" "$here/main.cpp" "$1/"
}

# Runs the built program and checks its output and status.
check_program() {
  local label=$1 exe=$2 out status=0
  [[ -x "$exe" ]] || die "$label: $exe was not built"
  out=$("$exe" 2>&1) || status=$?
  printf '%s\n' "$out" | sed "s/^/  [$label] /"
  [[ $status -eq 0 ]] || die "$label: the program exited with status $status"
  grep -qx 'outside ok' <<<"$out" || die "$label: the program did not print 'outside ok'"
}

# Checks that the program loads libmpx from the expected directory, not from some other installed copy.
check_linked_from() {
  local label=$1 exe=$2 dir=$3 line
  line=$(ldd "$exe" | grep -E 'libmpx\.so' || true)
  [[ -n "$line" ]] || die "$label: $exe does not link libmpx.so dynamically (ldd: $(ldd "$exe" | tr '\n' ' '))"
  [[ "$line" == *"$dir"* ]] || die "$label: libmpx resolves to '$line', expected a library under $dir"
}

quiet() {
  local log="$tmp/step.log"
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    die "command failed: $*"
  fi
}

# ---- (a) installed mpx, found with pkg-config -------------------------------------------------------------------
echo "outside_project: (a) installed mpx through pkg-config"
if [[ -n "$build" && -f "$build/meson-private/coredata.dat" ]]; then
  destdir="$tmp/destdir"
  quiet meson install -C "$build" --destdir "$destdir"
  pc=$(find "$destdir" -name mpx.pc -path '*/pkgconfig/*' | head -n 1)
  [[ -n "$pc" ]] || die "(a) no mpx.pc was installed under $destdir"
  # The .pc names the configured prefix (e.g. /usr/local); point it at the staged copy.
  old_prefix=$(sed -n 's/^prefix=//p' "$pc")
  [[ -n "$old_prefix" ]] || die "(a) $pc has no prefix= line"
  sed -i "s|^prefix=.*|prefix=$destdir$old_prefix|" "$pc"
  root="$destdir$old_prefix"
else
  root="$tmp/prefix"
  quiet meson setup "$tmp/mpx-build" "$src" --prefix="$root" --libdir=lib -Dbuildtype=plain -Dtests=false
  quiet meson install -C "$tmp/mpx-build"
  pc=$(find "$root" -name mpx.pc -path '*/pkgconfig/*' | head -n 1)
  [[ -n "$pc" ]] || die "(a) no mpx.pc was installed under $root"
fi
pcdir=$(dirname "$pc")
libdir=$(PKG_CONFIG_PATH="$pcdir" pkg-config --variable=libdir mpx)
[[ -f "$libdir/libmpx.so" ]] || die "(a) $libdir/libmpx.so not installed (from $pc)"
[[ -f "$(PKG_CONFIG_PATH="$pcdir" pkg-config --variable=includedir mpx)/mpx/mpx.hpp" ]] \
  || die "(a) mpx/mpx.hpp not installed under the includedir of $pc"

copy_project "$tmp/installed-src"
# nofallback: the dependency must come from pkg-config, never from a subproject.
PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
  quiet meson setup "$tmp/installed-build" "$tmp/installed-src" --wrap-mode=nofallback -Dbuildtype=plain
quiet meson compile -C "$tmp/installed-build"
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
check_linked_from "(a)" "$tmp/installed-build/outside" "$libdir"
check_program "(a)" "$tmp/installed-build/outside"
unset LD_LIBRARY_PATH

# ---- (b) mpx as a subproject ------------------------------------------------------------------------------------
echo "outside_project: (b) mpx as a subproject"
copy_project "$tmp/sub-src"
mkdir -p "$tmp/sub-src/subprojects"
ln -s "$src" "$tmp/sub-src/subprojects/mpx"
# forcefallback: use the subproject even if an mpx is installed on this machine.
quiet meson setup "$tmp/sub-build" "$tmp/sub-src" --wrap-mode=forcefallback -Dbuildtype=plain -Dmpx:tests=false
quiet meson compile -C "$tmp/sub-build"
check_linked_from "(b)" "$tmp/sub-build/outside" "$tmp/sub-build/subprojects/mpx"
check_program "(b)" "$tmp/sub-build/outside"

echo "outside_project: ok (installed and subproject)"
