#!/usr/bin/env bash
# Each tool's --version prints "<tool> (mpx) <version>" with the project version from meson.build, and exits 0.
# Usage: tool_versions.sh <version> <tool>...   Meson runs it as the `tool_versions` test (see tests/meson.build).
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 <version> <tool>..." >&2; exit 2; }
version=$1
shift
failed=0
for tool in "$@"; do
  name=$(basename "$tool")
  status=0
  out=$("$tool" --version 2>&1) || status=$?
  if [[ $status -ne 0 ]]; then
    echo "FAIL $name --version: exit status $status: $out"
    failed=$((failed + 1))
  elif [[ "$out" != "$name (mpx) $version" ]]; then
    echo "FAIL $name --version: printed '$out', expected '$name (mpx) $version'"
    failed=$((failed + 1))
  else
    echo "ok   $out"
  fi
done
[[ $failed -eq 0 ]]
