#!/usr/bin/env python3
"""libmpx.so exports the public API only: no symbol of an internal floor (wire, runtime, services, shm, topology,
the trace bus) may appear in its dynamic symbol table. A program linked with libmpx.so reaches what the public headers
declare; internal code is linked into tests and tools through the static library, never resolved from the .so.

Usage: check_exports.py <libmpx.so> <framework/include/mpx> [nm]
Meson runs it as the `exports` test (see tests/meson.build). Fails listing the leaked symbols.
"""
import pathlib
import re
import subprocess
import sys

# The floors below api: none of their namespaces is public.
INTERNAL_NAMESPACES = ("wire", "runtime", "services", "shm", "topology")


def public_trace_names(include_dir: pathlib.Path) -> set[str]:
    """mpx::trace is both a public namespace (mpx/trace.hpp and mpx/trace_options.hpp, which it includes) and the
    trace floor's: the names the public headers declare at namespace scope are the public ones."""
    text = (include_dir / "trace.hpp").read_text() + (include_dir / "trace_options.hpp").read_text()
    names = set(re.findall(r"^(?:struct|class|enum class|enum)\s+(?:MPX_API\s+)?(\w+)", text, re.M))
    names |= set(re.findall(r"^[A-Za-z][\w:<>, ]*?[\s&*](\w+)\(", text, re.M))
    return names


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    library, include_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    nm = sys.argv[3] if len(sys.argv) > 3 else "nm"
    symbols = subprocess.run([nm, "-D", "--defined-only", "-C", str(library)], check=True, capture_output=True,
                             text=True).stdout.splitlines()
    public_trace = public_trace_names(include_dir)
    if not public_trace:
        print(f"exports: found no declarations in {include_dir / 'trace.hpp'}", file=sys.stderr)
        return 2
    internal = re.compile(r"\bmpx::(?:" + "|".join(INTERNAL_NAMESPACES) + r")::")
    trace_name = re.compile(r"\bmpx::trace::(\w+)")
    leaked = []
    for line in symbols:
        name = line.split(" ", 2)[-1]
        if internal.search(name) or any(n not in public_trace for n in trace_name.findall(name)):
            leaked.append(name)
    exported = sum(1 for line in symbols if "mpx::" in line)
    if leaked:
        for name in leaked[:40]:
            print(f"exports: internal symbol exported: {name}", file=sys.stderr)
        print(f"exports: {library} exports {len(leaked)} internal symbols (of {exported} mpx symbols); mark the public "
              "API with MPX_API and build with hidden visibility", file=sys.stderr)
        return 1
    print(f"exports: {library} exports {exported} mpx symbols, none of an internal floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
