#!/usr/bin/env bash
# Proves that every public header stops a pre-C++20 build with one clear message: each framework/include/mpx/*.hpp,
# included alone by a translation unit compiled with -std=c++17, must fail, its first error must be mpx's #error
# "mpx needs C++20", and the compilation must end there (no flood of follow-on errors from C++20 code).
#
# Usage: cxx20_guard.sh <source-include-dir> <generated-include-dir> <compiler> [compiler-args...]
#   The generated include dir holds mpx/version.hpp (build/framework/include). Meson runs it as the `cxx20_guard`
#   test with the project's C++ compiler (see tests/meson.build).
set -euo pipefail

die() {
  echo "cxx20_guard: $*" >&2
  exit 1
}

[[ $# -ge 3 ]] || die "usage: $0 <source-include-dir> <generated-include-dir> <compiler> [compiler-args...]"
src_inc=$1
gen_inc=$2
shift 2
compiler=("$@")
[[ -f "$src_inc/mpx/mpx.hpp" ]] || die "$src_inc/mpx/mpx.hpp not found"
[[ -f "$gen_inc/mpx/version.hpp" ]] || die "$gen_inc/mpx/version.hpp not found (is it the build's framework/include?)"
command -v "${compiler[0]}" >/dev/null 2>&1 || die "compiler '${compiler[0]}' not found"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpx-cxx20-guard.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

message='mpx needs C++20 or newer'
headers=("$src_inc"/mpx/*.hpp "$gen_inc/mpx/version.hpp")
failed=0
for header in "${headers[@]}"; do
  name=$(basename "$header")
  printf '#include <mpx/%s>\n' "$name" >"$tmp/tu.cpp"
  status=0
  "${compiler[@]}" -std=c++17 -DMSGPACK_NO_BOOST "-I$src_inc" "-I$gen_inc" -fsyntax-only "$tmp/tu.cpp" \
    >"$tmp/log" 2>&1 || status=$?
  errors=$(grep -E '(fatal )?error:' "$tmp/log" || true)
  first=$(head -n 1 <<<"$errors")
  count=$(grep -c . <<<"$errors" || true)
  if [[ $status -eq 0 ]]; then
    echo "FAIL $name: compiled with -std=c++17"
    failed=$((failed + 1))
  elif [[ "$first" != *"$message"* ]]; then
    echo "FAIL $name: the first error is not mpx's #error \"$message\" ($count errors):"
    head -n 5 "$tmp/log" | sed 's/^/    /'
    failed=$((failed + 1))
  elif [[ $count -gt 2 ]]; then
    # 2: the #error itself and the fatal missing include that ends the compilation.
    echo "FAIL $name: $count errors after mpx's #error; the compilation should have stopped there:"
    head -n 8 "$tmp/log" | sed 's/^/    /'
    failed=$((failed + 1))
  else
    echo "ok   $name: stopped by \"$message\""
  fi
done

echo "cxx20_guard: ${#headers[@]} headers, $failed failed"
[[ $failed -eq 0 ]]
