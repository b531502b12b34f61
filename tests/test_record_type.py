"""The `UsageRecord` type and the record's JSON Schema describe the same fields, types and values."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest

from shared.normalize.record import UsageRecord
from shared.normalize.record_schema import schema

SCHEMA = schema()
HINTS = get_type_hints(UsageRecord)


def _resolve(spec: dict[str, Any]) -> dict[str, Any]:
    ref = spec.get("$ref")
    if ref:
        return {**SCHEMA["$defs"][ref.rsplit("/", 1)[1]], **{k: v for k, v in spec.items() if k != "$ref"}}
    return spec


def _python_types(spec: dict[str, Any]) -> set[Any]:
    """The Python types a JSON Schema property admits (object/array by their origin)."""
    spec = _resolve(spec)
    if "enum" in spec:
        return {Literal[tuple(spec["enum"])]}  # type: ignore[misc]
    names = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    table = {
        "string": str,
        "integer": int,
        "number": float,
        "boolean": bool,
        "null": type(None),
        "object": dict,
        "array": list,
    }
    return {table[n] for n in names}


def _hint_types(hint: Any) -> set[Any]:
    if get_origin(hint) in (typing.Union, types.UnionType):
        return set().union(*(_hint_types(a) for a in get_args(hint)))
    if get_origin(hint) is Literal:
        return {Literal[get_args(hint)]}  # type: ignore[misc]
    if typing.is_typeddict(hint):
        return {dict}
    origin = get_origin(hint)
    return {origin if origin is not None else hint}


def test_the_type_has_exactly_the_schema_fields():
    assert set(HINTS) == set(SCHEMA["properties"])


def test_required_fields_agree():
    assert UsageRecord.__required_keys__ == frozenset(SCHEMA["required"])


@pytest.mark.parametrize("name", sorted(SCHEMA["properties"]))
def test_each_field_has_the_schema_type(name: str):
    assert _hint_types(HINTS[name]) == _python_types(SCHEMA["properties"][name]), name


def test_a_wrong_type_would_be_seen():
    """The comparison itself can fail: a string field typed as int differs."""
    assert _hint_types(int) != _python_types(SCHEMA["properties"]["request_id"])
