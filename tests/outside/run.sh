#!/usr/bin/env bash
# Proves that a project outside the mpx tree can use mpx, and that an installed mpx works from its prefix:
#   (a) installed, through dependency('mpx') and the installed mpx.pc (pkg-config), from a Meson project;
#   (c) installed, through find_package(mpx) and the imported target mpx::mpx, from a CMake project (CMakeLists.txt);
#   (d) the installed tools and example topologies: mpx-run, mpx-trace, mpx-bench print the version (--version) and
#       run without LD_LIBRARY_PATH (their rpath is relative to themselves), and the installed mpx-run and
#       topology_app run installed topologies whose actor programs are installed too, without PATH pointing at them;
#   (b) as a subproject (subprojects/mpx -> this source tree), through the dependency fallback.
# Cases (a) and (c) build tests/outside (main.cpp: init, one Process under fork, join, exitcode()==0) and expect
# "outside ok".
#
# Usage: run.sh <mpx-source-root> [<mpx-build-dir>]
#   With a configured build dir, the install cases install that build with --destdir into a temporary directory.
#   Without one, they configure a fresh build of mpx (-Dtests=false) with a temporary --prefix and install it.
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
for f in meson.build CMakeLists.txt main.cpp; do
  [[ -f "$here/$f" ]] || die "$here/$f missing"
done
command -v meson >/dev/null 2>&1 || die "meson not found"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpx-outside.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The outside project is copied, so that its build never writes into the source tree.
copy_project() {
  mkdir -p "$1"
  cp "$here/meson.build" "$here/CMakeLists.txt" "$here/main.cpp" "$1/"
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
  local label=$1 exe=$2 dir=$3 line resolved
  line=$(ldd "$exe" | grep -E 'libmpx\.so' || true)
  [[ -n "$line" ]] || die "$label: $exe does not link libmpx.so dynamically (ldd: $(ldd "$exe" | tr '\n' ' '))"
  # An rpath of $ORIGIN/../lib shows as bin/../lib: compare the resolved paths.
  resolved=$(sed -n 's/.*=> \(.*\) (0x[0-9a-f]*)$/\1/p' <<<"$line")
  [[ -n "$resolved" && "$(realpath "$resolved")" == "$(realpath "$dir")"/* ]] \
    || die "$label: libmpx resolves to '$line', expected a library under $dir"
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
includedir=$(PKG_CONFIG_PATH="$pcdir" pkg-config --variable=includedir mpx)
[[ -f "$includedir/mpx/mpx.hpp" ]] || die "(a) mpx/mpx.hpp not installed under the includedir of $pc"
[[ -f "$includedir/mpx/version.hpp" ]] || die "(a) the generated mpx/version.hpp is not installed in $includedir/mpx"
for f in meson.build version.hpp.in; do
  [[ ! -e "$includedir/mpx/$f" ]] || die "(a) the build file $f was installed among the headers in $includedir/mpx"
done
version=$(sed -n 's/^#define MPX_VERSION_STRING "\(.*\)"$/\1/p' "$includedir/mpx/version.hpp")
[[ -n "$version" ]] || die "(a) $includedir/mpx/version.hpp defines no MPX_VERSION_STRING"

copy_project "$tmp/installed-src"
# nofallback: the dependency must come from pkg-config, never from a subproject.
PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
  quiet meson setup "$tmp/installed-build" "$tmp/installed-src" --wrap-mode=nofallback -Dbuildtype=plain
quiet meson compile -C "$tmp/installed-build"
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
check_linked_from "(a)" "$tmp/installed-build/outside" "$libdir"
check_program "(a)" "$tmp/installed-build/outside"

# A plain compiler line, with no -std of its own: mpx.pc's Cflags must make it a C++20 build.
PKG_CONFIG_PATH="$pcdir" quiet sh -c "c++ -o '$tmp/plain' '$here/main.cpp' \$(pkg-config --cflags --libs mpx)"
check_program "(a) c++ and pkg-config" "$tmp/plain"
unset LD_LIBRARY_PATH

# ---- (c) installed mpx, found with CMake ------------------------------------------------------------------------
echo "outside_project: (c) installed mpx through CMake's find_package(mpx)"
command -v cmake >/dev/null 2>&1 || die "(c) cmake not found (tools/install-deps.sh installs it)"
config=$(find "$root" -name mpxConfig.cmake -path '*/cmake/mpx/*' | head -n 1)
[[ -n "$config" ]] || die "(c) no cmake/mpx/mpxConfig.cmake was installed under $root"
[[ -f "$(dirname "$config")/mpxConfigVersion.cmake" ]] || die "(c) mpxConfigVersion.cmake missing next to $config"
copy_project "$tmp/cmake-src"
quiet cmake -S "$tmp/cmake-src" -B "$tmp/cmake-build" -G Ninja -DCMAKE_PREFIX_PATH="$root" \
  -DMPX_EXPECTED_VERSION="$version"
quiet cmake --build "$tmp/cmake-build"
# No LD_LIBRARY_PATH: CMake gives the program an rpath to the imported library's directory.
check_linked_from "(c)" "$tmp/cmake-build/outside" "$libdir"
check_program "(c)" "$tmp/cmake-build/outside"

# ---- (d) installed tools and example topologies ------------------------------------------------------------------
echo "outside_project: (d) installed tools and example topologies"
# Neither LD_LIBRARY_PATH nor a PATH that reaches the build tree: what an installed program finds, it finds by itself.
installed() {
  env -u LD_LIBRARY_PATH PATH=/usr/bin:/bin "$@"
}
installed_program() {
  local path
  path=$(find "$root" -name "$1" -type f -perm -u+x | head -n 1)
  [[ -n "$path" ]] || die "(d) $1 was not installed under $root"
  printf '%s\n' "$path"
}
for tool in mpx-run mpx-trace mpx-bench; do
  path=$(installed_program "$tool")
  status=0
  out=$(installed "$path" --version 2>&1) || status=$?
  [[ $status -eq 0 ]] || die "(d) $tool --version exited with status $status: $out"
  [[ "$out" == "$tool (mpx) $version" ]] || die "(d) $tool --version printed '$out', expected '$tool (mpx) $version'"
  echo "  [(d)] $out"
done
mpx_run=$(installed_program mpx-run)
topology_app=$(installed_program topology_app)
for program in "$mpx_run" "$(installed_program mpx-bench)" "$(installed_program topology_actors)" "$topology_app"; do
  check_linked_from "(d)" "$program" "$libdir"
done

# Runs an installed program on an installed topology from an unrelated directory, and checks it printed `expect`.
run_topology() {
  local runner=$1 file=$2 expect=$3 out status=0
  local topology
  topology=$(find "$root" -name "$file" -path '*/mpx/topologies/*' | head -n 1)
  [[ -n "$topology" ]] || die "(d) $file was not installed under $root/.../mpx/topologies"
  out=$(cd "$tmp" && installed timeout 120 "$runner" "$topology" 2>&1) || status=$?
  printf '%s\n' "$out" | sed "s/^/  [(d) $file] /"
  [[ $status -eq 0 ]] || die "(d) $(basename "$runner") $file exited with status $status"
  grep -q -- "$expect" <<<"$out" || die "(d) $(basename "$runner") $file did not print '$expect'"
}
# exec actors: the installed file names the installed topology_actors by a path relative to itself.
run_topology "$mpx_run" fan_out_in.toml 'collector: 4 partial sums after the barrier: total .* (correct)'
# task actors: functions of topology_app, which offers mpx-run's command line.
run_topology "$topology_app" app_tasks.toml 'printer: hello from greeter replica 2 of 3'

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

echo "outside_project: ok (pkg-config, CMake, installed tools and topologies, subproject)"
