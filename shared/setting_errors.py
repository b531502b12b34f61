"""One-line messages for settings that do not validate: `NAME[0] ('east'): 'weight' must be >= 1, got 0`.

pydantic reports where a value failed and why; these turn its first error into the line a person
reads at start-up, naming the setting (and, inside JSON, the entry and key), never a secret's value.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

_ADAPTERS: dict[int, TypeAdapter[Any]] = {}


def adapter(shape: Any) -> TypeAdapter[Any]:
    found = _ADAPTERS.get(id(shape))
    if found is None:
        found = _ADAPTERS[id(shape)] = TypeAdapter(shape)
    return found


_PHRASES = {
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "int_type": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "missing": "is required",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
}


#: Range errors: the constraint's name in the error context, and how the message says it.
_BOUNDS = {
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
}


def _phrase(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind in _PHRASES:
        return _PHRASES[kind]
    ctx = error.get("ctx") or {}
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind][1]} {ctx.get(_BOUNDS[kind][0])}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    if kind == "union_tag_invalid":
        return f"must be one of {ctx.get('expected_tags', '')}, got {ctx.get('tag', '')!r}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    message = str(error["msg"])
    return "must be " + message[len("Input should be ") :] if message.startswith("Input should be ") else message


def _shown(value: Any) -> str:
    return f", got {value!r}" if isinstance(value, str | int | float) and not isinstance(value, bool) else ""


def json_problem(shape: Any, text: str) -> str | None:
    """What is wrong with the JSON `text` for `shape`, as the tail of a one-line message, or None."""
    try:
        data = orjson.loads(text or "null")
    except orjson.JSONDecodeError as exc:
        return f": not valid JSON: {exc}"
    try:
        adapter(shape).validate_python(data, strict=False)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # A misspelt key also makes the right one "missing": name the misspelling first.
        error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        return _located(error, data, shape)
    return None


def _located(error: Mapping[str, Any], data: Any, shape: Any) -> str:
    """`[0] ('name'): 'key' must be ...` for a list of named entries, `['a']['b']: must be ...` otherwise."""
    loc = [p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    phrase, shown = _phrase(error), _shown(error.get("input"))
    if "auth" in loc:  # an api_key backend's `value` is a key: never echoed
        shown = ""
    if error["type"] == "extra_forbidden":
        unknown = str(loc[-1])
        phrase = f"unknown key {unknown!r}" + _closest(unknown, _fields_at(shape, loc[:-1]))
        loc, shown = loc[:-1], ""
    elif error["type"] == "union_tag_invalid":
        loc, shown = [*loc, str((error.get("ctx") or {}).get("discriminator", "")).strip("'")], ""
    elif loc and loc[-1] == "[key]":
        loc, phrase, shown = loc[:-2], f"key {error['input']!r} {phrase}", ""
    if loc and isinstance(loc[0], int) and isinstance(data, list):
        index = loc.pop(0)
        item = data[index] if index < len(data) else None
        name = item.get("name") if isinstance(item, dict) else None
        head = f"[{index}]" + (f" ({name!r})" if isinstance(name, str) and name else "")
        keys = [str(p) for p in loc if not _is_tag(p)]
        return f"{head}: " + (f"'{'.'.join(keys)}' " if keys else "") + phrase + shown
    return "".join(f"[{p!r}]" for p in loc if not _is_tag(p)) + f": {phrase}{shown}"


def _is_tag(part: Any) -> bool:
    """A discriminated union's tag in an error location (`auth` -> `api_key` -> `setting`)."""
    return part in {"managed_identity", "api_key"}


def _fields_at(shape: Any, loc: list[Any]) -> list[str]:
    """The keys the object at `loc` inside a value of `shape` may hold (for a suggestion)."""

    def bare(t: Any) -> Any:
        while get_origin(t) is Annotated:
            t = get_args(t)[0]
        return t

    for part in loc:
        shape = bare(shape)
        args = get_args(shape)
        if get_origin(shape) in (list, dict):
            shape = args[-1]
        elif isinstance(shape, type) and issubclass(shape, BaseModel):
            if part not in shape.model_fields:
                return []
            shape = shape.model_fields[part].annotation
        elif args:  # a tagged union: the member whose `type` is the tag
            shape = next((a for a in args if a.model_fields["type"].annotation == Literal[part]), args[0])
    shape = bare(shape)
    return list(shape.model_fields) if isinstance(shape, type) and issubclass(shape, BaseModel) else []


def _closest(name: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def describe(exc: ValidationError, model: type[BaseModel]) -> str:
    """The first error as one line naming the setting (secrets' values never shown)."""
    error = exc.errors(include_url=False)[0]
    field_name = str(error["loc"][0]) if error["loc"] else ""
    info = _field_by_alias(model, field_name)
    name = (info.alias if info is not None else None) or field_name
    secret = bool(info is not None and (info.json_schema_extra or {}).get("secret"))  # type: ignore[union-attr]
    if error["type"] == "value_error" and str(error.get("ctx", {}).get("error", "")).startswith(("[", ":")):
        return f"{name}{error['ctx']['error']}"
    return f"{name}: {_phrase(error)}" + ("" if secret else _shown(error.get("input")))


def _field_by_alias(model: type[BaseModel], key: str) -> FieldInfo | None:
    for field_name, info in model.model_fields.items():
        if key in (field_name, info.alias):
            return info
    return None
