#!/usr/bin/env bash
# Builds the API reference with doxygen into a temporary directory and fails on any doxygen warning, or on any
# public declaration of framework/include/mpx/*.hpp without a comment that doxygen does not warn about (check_xml.py
# reads its XML output). Exits 77 (skipped) only when doxygen is not installed.
#
# Usage: run.sh <Doxyfile> [<doxygen>]   (meson passes the configured Doxyfile and doxygen's path, empty if not found)
# Meson runs it as the `docs` test (see tests/meson.build).
set -euo pipefail

[[ $# -ge 1 && -f "$1" ]] || { echo "docs: usage: $0 <Doxyfile> [<doxygen>]" >&2; exit 1; }
doxyfile=$1
doxygen=${2:-}
if [[ -z "$doxygen" || ! -x "$doxygen" ]]; then
  echo "docs: doxygen is not installed; skipped (tools/install-deps.sh installs it)"
  exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpx-docs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Doxygen reads the configuration from stdin ("-"); a later assignment overrides the Doxyfile's, so this run writes
# into $tmp and never races `meson compile docs` over build/framework/docs/api.
status=0
{ cat "$doxyfile"; echo "OUTPUT_DIRECTORY = $tmp"; echo "GENERATE_XML = YES"; } |
  "$doxygen" - 2>"$tmp/warnings" >/dev/null || status=$?
# WARN_AS_ERROR=FAIL_ON_WARNINGS makes the status non-zero; counting the lines too keeps the check honest with a
# doxygen that ignores that value.
warnings=$(grep -c -E '(warning|error):' "$tmp/warnings" || true)
cat "$tmp/warnings" >&2
if [[ $status -ne 0 || $warnings -ne 0 ]]; then
  echo "docs: doxygen failed (status $status, $warnings warnings): document every public declaration" >&2
  exit 1
fi
if ! python3 "$(dirname "${BASH_SOURCE[0]}")/check_xml.py" "$tmp/xml" >&2; then
  echo "docs: document every public declaration listed above (a /// comment above it, or ///< after it)" >&2
  exit 1
fi
echo "docs: the API reference builds without warnings and documents every public declaration"
