"""The usage-record JSON Schema, loaded and compiled once, and validation against it."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker

from shared.errors import InvalidRecord

SCHEMA_PATH = Path(__file__).parent / "schema" / "usage-record.schema.json"


@functools.cache
def schema() -> dict[str, Any]:
    loaded = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(loaded)
    return loaded


@functools.cache
def validator() -> Draft202012Validator:
    """The validator, over the schema with its local `$ref`s inlined.

    Resolving `#/$defs/...` references on every record made validation the slowest step of the
    parser (about 3x); inlining gives the same verdicts (a test checks both forms agree).
    """
    return Draft202012Validator(inline_refs(schema()), format_checker=FormatChecker())


def inline_refs(node: Any, defs: dict[str, Any] | None = None) -> Any:
    """The schema with every `{"$ref": "#/$defs/name", ...}` replaced by that definition (+ siblings)."""
    if defs is None:
        defs = node.get("$defs", {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
            return {**target, **{k: inline_refs(v, defs) for k, v in node.items() if k != "$ref"}}
        return {k: inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [inline_refs(v, defs) for v in node]
    return node


@functools.cache
def fast_validator() -> jsonschema_rs.Draft202012Validator:
    """The same schema compiled by jsonschema-rs (Rust): about 20x faster on a valid record.

    `format` is not asserted, as with `validator()` (jsonschema checks date-time only with an
    optional package): the two give the same verdicts, which a test checks on valid and broken records.
    """
    return jsonschema_rs.Draft202012Validator(schema(), validate_formats=False)


def errors(record: Any) -> list[str]:
    """Every violation as `path: message`, empty when the record is valid.

    Valid records (nearly all) take the fast validator's verdict; an invalid one gets jsonschema's
    messages (or the fast validator's own, should only it object).
    """
    fast = fast_validator()
    if fast.is_valid(record):
        return []
    found = [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(record)'}: {e.message}"
        for e in sorted(validator().iter_errors(record), key=lambda e: list(e.absolute_path))
    ]
    return found or [
        f"{'/'.join(str(p) for p in e.instance_path) or '(record)'}: {e.message}" for e in fast.iter_errors(record)
    ]


@functools.cache
def field_validator(name: str) -> Draft202012Validator:
    """A validator for one top-level field of the record (its schema, `$ref`s inlined)."""
    return Draft202012Validator(validator().schema["properties"][name], format_checker=FormatChecker())


def field_errors(name: str, value: Any) -> list[str]:
    """Every violation of one top-level field's schema, as `name/path: message`."""
    return [
        f"{'/'.join([name, *(str(p) for p in e.absolute_path)])}: {e.message}"
        for e in sorted(field_validator(name).iter_errors(value), key=lambda e: list(e.absolute_path))
    ]


def validate(record: Any) -> None:
    problems = errors(record)
    if problems:
        raise InvalidRecord("; ".join(problems))
