#!/usr/bin/env python3
"""Sums Catch2 test cases over the meson tests of one `meson test` run.

Reads build/meson-logs/testlog.json (one JSON object per line, written by `meson test`), and for each meson test:
  - if its output holds a Catch2 v2 console summary, counts the Catch2 test cases it reports;
    if meson's result is not OK although Catch2 reports no failure (a crash after the summary, a timeout),
    counts one extra failure;
  - otherwise (a script test, or a crash before the summary) counts the meson test itself as one test case:
    passed if meson's result is OK, failed otherwise.
Prints one line per meson test, then, as the last line, exactly "N passed, N failed".
Exits 0 only if nothing failed.

Usage: summarize.py [testlog.json] [--meson-status N]
  --meson-status: the exit status of `meson test`; if it is not 0 but nothing above failed, one failure is counted.
"""

import argparse
import json
import re
import sys

PASS_RESULTS = {"OK", "EXPECTEDFAIL"}
SKIP_RESULTS = {"SKIP"}

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ALL_PASSED = re.compile(r"All tests passed \((\d+) assertions? in (\d+) test cases?\)")
TEST_CASES = re.compile(r"^test cases:(.*)$", re.MULTILINE)
NO_TESTS = re.compile(r"^No tests ran$", re.MULTILINE)
COLUMN = re.compile(r"^\s*(\d+)\s+(passed|failed as expected|failed)\s*$")


def catch2_counts(output):
    """Returns (passed, failed) from the last Catch2 v2 summary in `output`, or None if there is none."""
    output = ANSI.sub("", output)
    found = []  # (position, (passed, failed))
    for m in ALL_PASSED.finditer(output):
        found.append((m.start(), (int(m.group(2)), 0)))
    for m in TEST_CASES.finditer(output):
        # "test cases: 5 | 4 passed | 1 failed", "test cases: 2 | 2 failed", "... | 1 failed as expected"
        columns = m.group(1).split("|")
        passed = failed = 0
        recognized = False
        for column in columns[1:]:
            c = COLUMN.match(column)
            if not c:
                continue
            recognized = True
            count, label = int(c.group(1)), c.group(2)
            if label == "failed":
                failed += count
            else:  # "passed" and "failed as expected" (a [!shouldfail] test case that failed) both count as passing
                passed += count
        if recognized:
            found.append((m.start(), (passed, failed)))
    for m in NO_TESTS.finditer(output):
        found.append((m.start(), (0, 0)))
    if not found:
        return None
    # A forked child that flushes a copy of the parent's stdout could repeat an earlier summary: the last one wins.
    return max(found)[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("testlog", nargs="?", default="build/meson-logs/testlog.json")
    parser.add_argument("--meson-status", type=int, default=0)
    args = parser.parse_args()

    total_passed = total_failed = 0
    try:
        with open(args.testlog, encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if line.strip()]
    except OSError as e:
        print(f"summarize: cannot read {args.testlog}: {e.strerror} (did meson test run?)", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1

    entries = []
    for number, line in enumerate(lines, 1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as e:
            print(f"summarize: {args.testlog}:{number}: not JSON ({e}); counted as a failure", file=sys.stderr)
            total_failed += 1

    width = max((len(str(e.get("name", "?"))) for e in entries), default=10)
    for entry in entries:
        name = str(entry.get("name", "?"))
        result = str(entry.get("result", "?"))
        output = (entry.get("stdout") or "") + "\n" + (entry.get("stderr") or "")
        counts = catch2_counts(output)
        note = ""
        if result in SKIP_RESULTS:
            print(f"  {name:<{width}}  {result:<8}  skipped (not counted)")
            continue
        if counts is None:
            passed, failed = (1, 0) if result in PASS_RESULTS else (0, 1)
            source = "no Catch2 summary: counted as one test"
        else:
            passed, failed = counts
            source = "Catch2 test cases"
            if result not in PASS_RESULTS and failed == 0:
                failed += 1
                note = f"; +1 failure: meson result {result} but Catch2 reported no failure"
        total_passed += passed
        total_failed += failed
        print(f"  {name:<{width}}  {result:<8}  {passed} passed, {failed} failed ({source}{note})")

    if args.meson_status != 0 and total_failed == 0:
        print(f"  meson test exited with status {args.meson_status} although no test failed: counted as one failure")
        total_failed += 1
    if not entries and total_failed == 0:
        print("  no tests were run: counted as one failure")
        total_failed += 1

    print(f"{total_passed} passed, {total_failed} failed")
    return 0 if total_failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
