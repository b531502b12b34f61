"""`python -m parser replay FILE...`: re-parse stored exchanges offline and print their usage records.

Each FILE holds one exchange (JSON), a JSON list of exchanges, or JSON lines, in the format of
docs/exchange-format.md (a store item with `exchange` is accepted too). One record per exchange is
printed to stdout as a JSON line; a line that is not an exchange is reported on stderr with its
file and line number, and the exit code is 1 when anything could not be parsed or validated.

Records are priced with the current price book and DEPLOYMENT_MODELS, and checked by Content
Safety when CONTENT_SAFETY_ENDPOINT is set, exactly as the parser function does (app settings are
read from the environment).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from parser.enrich import Enricher
from parser.handler import make_record
from shared.exchange import Exchange
from shared.normalize.record import UsageRecord
from shared.safety.client import ContentSafety
from shared.settings import Settings
from shared.wiring import build_content_safety


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


def replay(
    paths: Sequence[str],
    out: TextIO,
    err: TextIO,
    *,
    details: bool = False,
    settings: Settings | None = None,
    concurrency: int | None = None,
) -> int:
    """Print one record per exchange in `paths`; 0 when all parsed cleanly, else 1.

    `settings` (default: the environment) choose the price book mapping and content safety;
    `concurrency` exchanges are enriched at once (default PARSER_MAX_CONCURRENCY), printed in order.
    """
    settings = settings or Settings.from_env()
    return asyncio.run(_replay(paths, out, err, details, settings, concurrency or settings.parser_max_concurrency))


async def _replay(
    paths: Sequence[str], out: TextIO, err: TextIO, details: bool, settings: Settings, concurrency: int
) -> int:
    enricher = Enricher.from_settings(settings)
    safety = build_content_safety(settings)
    try:
        status = 0
        for name in paths:
            status |= await _replay_file(Path(name), out, err, details, enricher, safety, concurrency)
        return status
    finally:
        if safety is not None:
            await safety.close()


async def _replay_file(
    path: Path,
    out: TextIO,
    err: TextIO,
    details: bool,
    enricher: Enricher,
    safety: ContentSafety | None,
    concurrency: int,
) -> int:
    try:
        documents = list(_documents(path))
    except OSError as exc:
        print(f"{path}: cannot read: {exc}", file=err)
        return 1
    limit = asyncio.Semaphore(max(1, concurrency))

    async def record_of(doc: Any) -> tuple[UsageRecord, dict[str, Any]] | str:
        try:
            exchange = _exchange(doc)
        except Exception as exc:
            return f"not an exchange: {type(exc).__name__}: {exc}"
        try:
            async with limit:
                return await make_record(exchange, enricher, safety)
        except Exception as exc:  # e.g. a record that cannot be made valid
            return f"no valid record: {type(exc).__name__}: {exc}"

    outcomes = await asyncio.gather(*(record_of(doc) for _, doc in documents))
    status = 0
    for (where, _), outcome in zip(documents, outcomes, strict=False):
        if isinstance(outcome, str):
            print(f"{where}: {outcome}", file=err)
            status = 1
            continue
        record, record_details = outcome
        if record.get("parse_error"):
            print(f"{where}: parse_error: {record['parse_error']}", file=err)
            status = 1
        line = {"record": record, "details": record_details} if details else record
        out.write(orjson.dumps(line).decode() + "\n")
    return status


def _exchange(doc: Any) -> Exchange:
    if isinstance(doc, Exception):
        raise ValueError(f"not JSON: {doc}")
    if isinstance(doc, dict) and "exchange" in doc and "request_id" not in doc:
        doc = doc["exchange"]  # a stored item
    if not isinstance(doc, dict):
        raise ValueError(f"expected an exchange object, got {type(doc).__name__}")
    return Exchange.from_dict(doc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parser", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("replay", help="print the usage record of each exchange in FILE... as JSON lines")
    rp.add_argument("files", nargs="+", metavar="FILE")
    rp.add_argument(
        "--details", action="store_true", help="print {record, details} (normalized request, consolidated response)"
    )
    args = parser.parse_args(argv)
    return replay(args.files, sys.stdout, sys.stderr, details=args.details)


if __name__ == "__main__":
    sys.exit(main())
