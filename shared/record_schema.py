"""The usage-record JSON Schema, loaded and compiled once, and validation against it."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

SCHEMA_PATH = Path(__file__).parent / "schema" / "usage-record.schema.json"


class InvalidRecord(ValueError):
    """A usage record that does not match the schema; the message lists every violation."""


@functools.cache
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def errors(record: Any) -> list[str]:
    """Every violation as `path: message`, empty when the record is valid."""
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(record)'}: {e.message}"
        for e in sorted(validator().iter_errors(record), key=lambda e: list(e.absolute_path))
    ]


def validate(record: Any) -> None:
    problems = errors(record)
    if problems:
        raise InvalidRecord("; ".join(problems))
