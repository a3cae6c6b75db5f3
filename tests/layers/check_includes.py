#!/usr/bin/env python3
"""The layering of framework/ holds: no #include points up, and no compiled file calls up.

Usage: check_includes.py FRAMEWORK_DIR [LIBMPX_STATIC_ARCHIVE]

Every file of framework/src/<floor>/ belongs to <floor>; every public header of framework/include/mpx/ belongs to
the floor PUBLIC_HEADER_FLOORS gives it, else to api. A file may include its own floor and the floors below it
(FLOORS). With the static archive (libmpx.a), it also reads each object's undefined symbols with nm and fails when
a symbol is defined only in objects of floors above the one that uses it: an include that is fine can still hide a
call up (a core header declaring a function compiled in api/).

Prints every violation as file:line (or object: symbol) and exits 1 if there is any, 0 otherwise. Meson runs it as
the `layers` test (tests/meson.build). Python 3 stdlib only.
"""
import os
import re
import subprocess
import sys

# The floors, lowest first: each one may use only itself and the floors before it. trace sits on shm because the
# trace bus keeps the per-queue lane rings in shared-memory segments (trace/lane_ring.hpp maps shm/segment.hpp);
# shm never records traces, so it needs nothing of trace.
FLOORS = ["core", "wire", "shm", "trace", "runtime", "services", "topology", "api"]
RANK = {floor: rank for rank, floor in enumerate(FLOORS)}
# Folders of framework/src/ named otherwise than their floor. Every other folder is the floor of its name.
FOLDER_FLOORS = {
    # The Manager: its server (its own ROUTER, not a coordinator service) and its direct stream, built on Listener and
    # Client as Python's managers are built on multiprocessing.connection: the api floor, in a folder of its own.
    "manager": "api",
}


def floor_of_folder(folder):
    """The floor of a folder of framework/src/, or None when it is neither a floor nor in FOLDER_FLOORS."""
    floor = FOLDER_FLOORS.get(folder, folder)
    return floor if floor in RANK else None

# The public headers that floors below api use (paths below framework/include/), each with its floor: the floor its
# compiled code lives in, or for plain data types the lowest floor that uses them. Such a header includes only
# public headers of its own floor or below, the standard library, msgpack and zmq. Every other public header is api.
PUBLIC_HEADER_FLOORS = {
    "mpx/version.hpp": "core",  # generated from version.hpp.in
    "mpx/errors.hpp": "core",
    "mpx/object.hpp": "core",
    "mpx/function.hpp": "core",
    "mpx/start_method.hpp": "core",
    "mpx/detail/export.hpp": "core",  # MPX_API, on every floor's public declarations
    "mpx/detail/msgpack_codec.hpp": "core",  # the bounded decode behind Object (core/object.cpp)
    "mpx/trace_options.hpp": "trace",  # Options::parse and compiled_in are compiled in src/trace/options.cpp
    "mpx/metrics_snapshot.hpp": "runtime",  # the coordinator fills the snapshot
    "mpx/topology_status.hpp": "topology",  # the supervisor fills the statuses
}

# Calls up that are known and scheduled to go, as (floor of the caller, demangled symbol prefix). Keep it empty
# except for what the issue that allows it names.
ALLOWED_CALLS_UP = []

SOURCE_SUFFIXES = (".hpp", ".cpp", ".h", ".hpp.in")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def floor_of_public(header):
    """The floor of a public header given as "mpx/...", or None when it is not one of mpx's."""
    if not header.startswith("mpx/"):
        return None
    return PUBLIC_HEADER_FLOORS.get(header, "api")


def source_files(framework):
    """(path relative to framework/, floor, name a public header is included by or None) for every file checked."""
    src = os.path.join(framework, "src")
    for folder in sorted(os.listdir(src)):
        if not os.path.isdir(os.path.join(src, folder)):
            continue
        floor = floor_of_folder(folder)
        if floor is None:
            raise SystemExit(f"layers: framework/src/{folder}/ has no floor; add it to FLOORS or FOLDER_FLOORS in "
                             f"{__file__}")
        for root, _, names in os.walk(os.path.join(src, folder)):
            for name in sorted(names):
                if name.endswith(SOURCE_SUFFIXES):
                    yield os.path.relpath(os.path.join(root, name), framework), floor
    include = os.path.join(framework, "include")
    for root, _, names in os.walk(os.path.join(include, "mpx")):
        for name in sorted(names):
            if name.endswith(SOURCE_SUFFIXES):
                header = os.path.relpath(os.path.join(root, name), include)
                if header.endswith(".in"):
                    header = header[: -len(".in")]
                yield os.path.relpath(os.path.join(root, name), framework), floor_of_public(header)


def included_floor(framework, path, bracket, target):
    """The floor of what `path` includes, None for a file outside mpx; raises ValueError if it cannot tell."""
    if bracket == "<":
        return floor_of_public(target)
    # Quoted includes are relative to framework/src (the private include directory), else to the including file.
    for base in (os.path.join(framework, "src"), os.path.dirname(os.path.join(framework, path))):
        candidate = os.path.normpath(os.path.join(base, target))
        if os.path.isfile(candidate):
            relative = os.path.relpath(candidate, os.path.join(framework, "src"))
            if relative.startswith(".."):
                break
            floor = floor_of_folder(relative.split(os.sep)[0])
            if floor is None:
                break
            return floor
    if target.startswith("mpx/"):
        return floor_of_public(target)
    raise ValueError(f'cannot find "{target}" below framework/src')


def include_violations(framework):
    found = []
    for path, floor in source_files(framework):
        with open(os.path.join(framework, path), encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                match = INCLUDE.match(line)
                if not match:
                    continue
                bracket, target = match.groups()
                try:
                    target_floor = included_floor(framework, path, bracket, target)
                except ValueError as e:
                    found.append(f"framework/{path}:{line_number}: {e}")
                    continue
                if target_floor is not None and RANK[target_floor] > RANK[floor]:
                    found.append(f"framework/{path}:{line_number}: {floor} includes {target} ({target_floor})")
    return found


NM_LINE = re.compile(r"^(?:[^:]*):([^:]+\.o):\s*(?:[0-9a-fA-F]+)?\s+(\S)\s+(.+)$")
OBJECT_FLOOR = re.compile(r"^src_([a-z]+)_")


def call_violations(archive):
    """Undefined symbols of an object that only objects of higher floors define. Only mpx's own symbols count:
    runtime interposes the C library's __cxa_atexit, which every floor's static objects call without knowing."""
    nm = subprocess.run(["nm", "-A", "-C", archive], check=True, capture_output=True, text=True).stdout
    definers = {}  # symbol -> floors of the objects that define it (weak definitions included)
    uses = []  # (object, floor, symbol)
    for line in nm.splitlines():
        match = NM_LINE.match(line)
        if not match:
            continue
        obj, kind, symbol = match.groups()
        floor_match = OBJECT_FLOOR.match(obj)
        floor = floor_of_folder(floor_match.group(1)) if floor_match else None
        if floor is None:
            raise SystemExit(f"layers: cannot tell the floor of {obj} in {archive}")
        if "mpx" not in symbol:
            continue
        if kind == "U":
            uses.append((obj, floor, symbol))
        elif kind.isupper() or kind in "uiv":
            definers.setdefault(symbol, set()).add(floor)
    found = []
    for obj, floor, symbol in uses:
        floors = definers.get(symbol)
        if not floors or min(RANK[f] for f in floors) <= RANK[floor]:
            continue
        if any(floor == allowed_floor and symbol.startswith(prefix) for allowed_floor, prefix in ALLOWED_CALLS_UP):
            continue
        lowest = min(floors, key=RANK.get)
        found.append(f"{obj}: {floor} calls {symbol} (compiled in {lowest})")
    return sorted(set(found))


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    framework = argv[1]
    violations = include_violations(framework)
    if len(argv) == 3:
        violations += call_violations(argv[2])
    print("layers: " + " < ".join(FLOORS))
    for violation in violations:
        print(violation)
    if violations:
        print(f"layers: {len(violations)} uses point up", file=sys.stderr)
        return 1
    print("layers: no include or call points up")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
