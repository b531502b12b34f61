"""A small structural reader for TMDL, enough to check what the Power BI model declares.

Not a full TMDL parser: it checks tab indentation (one level deeper at most per line, tabs only),
and collects the objects the tests care about (table, column, measure, partition, expression) with
their properties and the partition's M source text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_DECL = re.compile(
    r"^(table|column|measure|partition|expression|model|database|queryGroup|ref table|annotation|relationship|dataAccessOptions)\b\s*(.*)$"
)
_NAME = re.compile(r"^('(?:[^']|'')+'|[^\s=]+)")


class TmdlError(ValueError):
    pass


@dataclass
class Node:
    kind: str
    name: str
    value: str | None
    depth: int
    properties: dict[str, str] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    source: str | None = None  # partition M expression (the lines under `source =`)


def _name(rest: str) -> tuple[str, str | None]:
    m = _NAME.match(rest)
    if not m:
        return "", None
    raw = m.group(1)
    name = raw[1:-1].replace("''", "'") if raw.startswith("'") else raw
    tail = rest[m.end() :].strip()
    return name, (tail[1:].strip() if tail.startswith("=") else None)


def parse(text: str) -> list[Node]:
    roots: list[Node] = []
    stack: list[Node] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip("\t"))
        if line[indent : indent + 1] == " ":
            raise TmdlError(f"line {i}: indentation must be tabs: {line!r}")
        body = line.strip()
        while stack and stack[-1].depth >= indent:
            stack.pop()
        parent = stack[-1] if stack else None
        if parent is None and indent:
            raise TmdlError(f"line {i}: indented line without a parent: {line!r}")
        if parent is not None and indent > parent.depth + 1 + (1 if parent.kind == "measure" else 0):
            raise TmdlError(f"line {i}: indented more than one level under {parent.kind} {parent.name!r}")
        decl = _DECL.match(body)
        if decl and (
            parent is None or decl.group(1) in {"column", "measure", "partition", "annotation", "dataAccessOptions"}
        ):
            name, value = _name(decl.group(2))
            node = Node(decl.group(1), name, value, indent)
            (parent.children if parent else roots).append(node)
            stack.append(node)
            continue
        if parent is None:
            raise TmdlError(f"line {i}: not a declaration: {line!r}")
        if body in {"source =", "source="} and parent.kind == "partition":
            src = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("\t" * (indent + 1))):
                src.append(lines[i][indent + 2 :] if lines[i].strip() else "")
                i += 1
            parent.source = "\n".join(src).strip("\n")
            continue
        key, sep, val = body.partition(":")
        parent.properties[key.strip()] = val.strip() if sep else ""
    return roots


def m_literal(expression: str, binding: str) -> str:
    """The text of the M string literal bound to `binding = "..."` in an M let expression."""
    m = re.search(rf'\b{re.escape(binding)}\s*=\s*"((?:[^"]|"")*)"', expression)
    if not m:
        raise TmdlError(f"no string literal bound to {binding}")
    text = m.group(1).replace('""', '"')
    return re.sub(r"#\((lf|cr|tab)\)", lambda e: {"lf": "\n", "cr": "\r", "tab": "\t"}[e.group(1)], text)
