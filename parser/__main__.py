"""`python -m parser replay FILE...`: re-parse stored exchanges offline and print their usage records.

Each FILE holds one exchange (JSON), a JSON list of exchanges, or JSON lines, in the format of
docs/exchange-format.md (a store item with `exchange` is accepted too). One record per exchange is
printed to stdout as a JSON line; a line that is not an exchange is reported on stderr with its
file and line number, and the exit code is 1 when anything could not be parsed or validated.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from parser.handler import build_record
from shared.exchange import Exchange


def _documents(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, parsed JSON or the exception) for each exchange document in a file."""
    text = path.read_text(encoding="utf-8")
    try:
        whole = orjson.loads(text)
    except orjson.JSONDecodeError:
        whole = None
    else:
        items = whole if isinstance(whole, list) else [whole]
        for i, item in enumerate(items):
            yield (f"{path}[{i}]" if isinstance(whole, list) else str(path)), item
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield f"{path}:{number}", exc


def replay(paths: Sequence[str], out: TextIO, err: TextIO, *, details: bool = False) -> int:
    status = 0
    for name in paths:
        path = Path(name)
        try:
            documents = list(_documents(path))
        except OSError as exc:
            print(f"{name}: cannot read: {exc}", file=err)
            status = 1
            continue
        for where, doc in documents:
            try:
                if isinstance(doc, Exception):
                    raise ValueError(f"not JSON: {doc}")
                if isinstance(doc, dict) and "exchange" in doc and "request_id" not in doc:
                    doc = doc["exchange"]  # a stored item
                if not isinstance(doc, dict):
                    raise ValueError(f"expected an exchange object, got {type(doc).__name__}")
                exchange = Exchange.from_dict(doc)
            except Exception as exc:
                print(f"{where}: not an exchange: {type(exc).__name__}: {exc}", file=err)
                status = 1
                continue
            try:
                record, record_details = build_record(exchange)
            except Exception as exc:  # e.g. a record that cannot be made valid
                print(f"{where}: no valid record: {type(exc).__name__}: {exc}", file=err)
                status = 1
                continue
            if record.get("parse_error"):
                print(f"{where}: parse_error: {record['parse_error']}", file=err)
                status = 1
            line = {"record": record, "details": record_details} if details else record
            out.write(orjson.dumps(line).decode() + "\n")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parser", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("replay", help="print the usage record of each exchange in FILE... as JSON lines")
    rp.add_argument("files", nargs="+", metavar="FILE")
    rp.add_argument("--details", action="store_true", help="print {record, details} (normalized request, consolidated response)")
    args = parser.parse_args(argv)
    return replay(args.files, sys.stdout, sys.stderr, details=args.details)


if __name__ == "__main__":
    sys.exit(main())
