#!/usr/bin/env python3
"""Checks that framework/PROTOCOL.md's kinds tables list every kind of wire/kinds.inc, with the same id and arity.

Usage: check_kinds.py PRINT_KINDS_EXE PROTOCOL.md
A kinds table is a Markdown table whose header row starts `| kind | id |` and has a `body` column. A row's arity is
read from the forms its body cell starts with: `nil` or `[a, b, ...]` (its top-level element count), several joined by
`,` or `or`, with parenthesised notes between them. A row whose body cell names a direction instead (a pushed kind,
`coordinator → reader`) has its body at the start of the reply cell. `depends on the request` is any body.
"""
import subprocess
import sys


def split_row(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def element_count(form):
    inner = form[1:-1].strip()
    if not inner:
        return 0
    depth, count = 0, 1
    for ch in inner:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            count += 1
    return count


def leading_forms(cell):
    """The `nil` / `[...]` forms a cell starts with, in order."""
    forms, i = [], 0
    while i < len(cell):
        if cell[i] in " ,":
            i += 1
        elif cell.startswith("or ", i):
            i += 3
        elif cell[i] == "(" and forms:  # a note about the form before it
            depth = 0
            while i < len(cell):
                depth += {"(": 1, ")": -1}.get(cell[i], 0)
                i += 1
                if depth == 0:
                    break
        elif cell[i] == "`":
            end = cell.find("`", i + 1)
            if end < 0:
                break
            token = cell[i + 1:end]
            if token != "nil" and not (token.startswith("[") and token.endswith("]")):
                break
            forms.append(token)
            i = end + 1
        else:
            break
    return forms


def arity_text(forms):
    nil = "nil" in forms
    counts = sorted({element_count(f) for f in forms if f != "nil"})
    if counts and counts != list(range(counts[0], counts[-1] + 1)):
        return None  # not a range: the code cannot say it either
    array = "" if not counts else str(counts[0]) if len(counts) == 1 else f"{counts[0]}..{counts[-1]}"
    if not nil:
        return array
    return "nil or " + array if array else "nil"


def documented_kinds(path):
    kinds, problems = {}, []
    columns = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.startswith("|"):
                columns = None
                continue
            cells = split_row(line)
            if columns is None:
                columns = cells if cells[:2] == ["kind", "id"] and "body" in cells else []
                continue
            if not columns or set(line.strip()) <= set("|-: "):
                continue
            row = dict(zip(columns, cells))
            name = row["kind"].strip("`")
            where = f"{path}:{number}"
            if name in kinds:
                problems.append(f"{where}: `{name}` is listed twice (also at line {kinds[name][2]})")
                continue
            if row["body"] == "depends on the request":
                arity = "any"
            else:
                forms = leading_forms(row["body"]) or leading_forms(row.get("reply", ""))
                arity = arity_text(forms) if forms else None
                if arity is None:
                    problems.append(f"{where}: cannot read the body arity of `{name}` from {row['body']!r}")
                    continue
            kinds[name] = (row["id"], arity, number)
    return kinds, problems


def main():
    printer, protocol = sys.argv[1], sys.argv[2]
    code = {}
    for line in subprocess.run([printer], check=True, capture_output=True, text=True).stdout.splitlines():
        kind_id, name, arity = line.split(" ", 2)
        code[name] = (kind_id, arity)
    doc, problems = documented_kinds(protocol)
    for name, (kind_id, arity) in code.items():
        if name not in doc:
            problems.append(f"{protocol}: kind `{name}` ({kind_id}) is not in any kinds table")
            continue
        doc_id, doc_arity, number = doc[name]
        if doc_id != kind_id:
            problems.append(f"{protocol}:{number}: `{name}` has id {doc_id}; wire/kinds.inc says {kind_id}")
        if doc_arity != arity:
            problems.append(f"{protocol}:{number}: `{name}` body arity is {doc_arity}; wire/kinds.inc says {arity}")
    for name, (_, _, number) in doc.items():
        if name not in code:
            problems.append(f"{protocol}:{number}: `{name}` is not a kind of wire/kinds.inc")
    for p in problems:
        print(p)
    print(f"{len(code)} kinds in the code, {len(doc)} in {protocol}: {'OK' if not problems else 'MISMATCH'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
