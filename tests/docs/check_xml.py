#!/usr/bin/env python3
"""Finds public declarations of mpx's headers that have no documentation, in doxygen's XML output.

Doxygen 1.9.4's WARN_IF_UNDOCUMENTED misses some: a class with no members of its own (most exception types), a
concept, a deleted or defaulted special member is never reported. This reads every compound doxygen wrote and reports
each public or protected declaration without a comment. Enumerators count as documented when their enum is (the
one-line enums describe their values in the enum's comment).

Usage: check_xml.py XML_DIR   (doxygen's xml/ output). Prints one line per undocumented declaration, exits 1 if any.
"""

import os
import sys
import xml.etree.ElementTree as ET

CHECKED_KINDS = {"class", "struct", "union", "namespace", "concept", "file"}


def documented(element):
    """True if the element has a brief, detailed or in-body description with some text."""
    for tag in ("briefdescription", "detaileddescription", "inbodydescription"):
        node = element.find(tag)
        if node is not None and "".join(node.itertext()).strip():
            return True
    return False


def internal(name):
    """Names in a detail namespace, and msgpack's adaptors, are not API."""
    parts = name.split("::")
    return "detail" in parts or parts[0] == "msgpack" or parts[0] == "std"


def location(element):
    loc = element.find("location")
    if loc is None:
        return "?"
    return "%s:%s" % (loc.get("file", "?"), loc.get("line", "?"))


def check(xml_dir):
    problems = []
    index = ET.parse(os.path.join(xml_dir, "index.xml")).getroot()
    for compound in index.findall("compound"):
        if compound.get("kind") not in CHECKED_KINDS:
            continue
        tree = ET.parse(os.path.join(xml_dir, compound.get("refid") + ".xml")).getroot()
        for definition in tree.findall("compounddef"):
            name = definition.findtext("compoundname", "")
            kind = definition.get("kind")
            if internal(name) or definition.get("prot") == "private":
                continue
            if kind != "file" and not documented(definition):
                problems.append("%s: %s %s" % (location(definition), kind, name))
            for section in definition.findall("sectiondef"):
                section_kind = section.get("kind", "")
                if section_kind.startswith("private") or section_kind in ("friend", "related"):
                    continue
                for member in section.findall("memberdef"):
                    if member.get("prot") == "private" or member.get("kind") == "friend":
                        continue
                    if kind == "file" and member.get("kind") != "define":
                        continue  # namespace members are checked in their namespace
                    member_name = name + "::" + member.findtext("name", "")
                    if internal(member_name) or member.findtext("argsstring", "").rstrip().endswith("=delete"):
                        continue
                    enum_documented = documented(member)
                    if not enum_documented:
                        problems.append("%s: %s %s%s" % (location(member), member.get("kind"), member_name,
                                                         member.findtext("argsstring", "")))
                    if member.get("kind") == "enum" and not enum_documented:
                        for value in member.findall("enumvalue"):
                            if not documented(value):
                                problems.append("%s: enumvalue %s::%s" % (location(member), member_name,
                                                                         value.findtext("name", "")))
    return problems


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems = sorted(set(check(sys.argv[1])))
    for p in problems:
        print("undocumented: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
