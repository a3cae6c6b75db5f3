#!/usr/bin/env bash
# Compile-fail tests: every *.cpp here starts with a line `// expect: <fragment>`.
#   `// expect: ok`    the snippet must compile (a control: proves the flags and headers are right);
#   anything else      the snippet must NOT compile, and the compiler's stderr must contain <fragment>
#                      (one of mpx's readable static_assert messages).
#
# Usage: run.sh [include-dirs [compiler [compiler-args...]]]
#   include-dirs: one directory, or several separated by ':' (the build's framework/include holds the generated
#   mpx/version.hpp); it defaults to framework/include of this checkout and of its build/. The compiler defaults to
#   $CXX, then c++.
# Meson runs it as the `compile_fail` test with the project's C++ compiler (see tests/meson.build).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IFS=: read -r -a include_dirs <<<"${1:-$here/../../framework/include:$here/../../build/framework/include}"
include_dir=${include_dirs[0]}
shift || true
if [[ $# -gt 0 ]]; then
  compiler=("$@")
else
  read -r -a compiler <<<"${CXX:-c++}"
fi

if [[ ! -f "$include_dir/mpx/mpx.hpp" ]]; then
  echo "compile_fail: $include_dir/mpx/mpx.hpp not found (first argument must be mpx's include directory)" >&2
  exit 2
fi
if ! command -v "${compiler[0]}" >/dev/null 2>&1; then
  echo "compile_fail: compiler '${compiler[0]}' not found" >&2
  exit 2
fi

flags=(-std=c++20 -DMSGPACK_NO_BOOST -fsyntax-only)
for dir in "${include_dirs[@]}"; do
  flags+=("-I$dir")
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

shopt -s nullglob
snippets=("$here"/*.cpp)
if [[ ${#snippets[@]} -eq 0 ]]; then
  echo "compile_fail: no snippets in $here" >&2
  exit 2
fi

passed=0
failed=0
for snippet in "${snippets[@]}"; do
  name=$(basename "$snippet" .cpp)
  first=$(head -n 1 "$snippet")
  if [[ "$first" != "// expect: "* ]]; then
    echo "FAIL $name: first line must be '// expect: <fragment>' or '// expect: ok'"
    failed=$((failed + 1))
    continue
  fi
  expect=${first#"// expect: "}
  expect=${expect%$'\r'}
  log="$tmp/$name.log"
  status=0
  "${compiler[@]}" "${flags[@]}" "$snippet" >"$log" 2>&1 || status=$?

  if [[ "$expect" == "ok" ]]; then
    if [[ $status -eq 0 ]]; then
      echo "ok   $name: compiles, as it must"
      passed=$((passed + 1))
    else
      echo "FAIL $name: the control snippet must compile, but the compiler exited with $status:"
      sed 's/^/    /' "$log" | head -n 40
      failed=$((failed + 1))
    fi
  elif [[ $status -eq 0 ]]; then
    echo "FAIL $name: compiled, but it must be rejected with: $expect"
    failed=$((failed + 1))
  elif grep -qF -- "$expect" "$log"; then
    echo "ok   $name: rejected with \"$expect\""
    passed=$((passed + 1))
  else
    echo "FAIL $name: rejected, but the diagnostics lack \"$expect\":"
    sed 's/^/    /' "$log" | head -n 40
    failed=$((failed + 1))
  fi
done

echo "compile_fail: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
