"""AOAI content-filter results (`content_filter_results`), merged to the most severe per category.

Streams report them piecemeal (prompt annotation frames, per-chunk results, asynchronous-filter
annotation frames after the stop chunk); the record keeps every category AOAI sends, including
jailbreak, protected material, profanity and custom blocklists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_SEVERITY = {"safe": 0, "low": 1, "medium": 2, "high": 3}


def merge(into: dict[str, Any], results: Any) -> dict[str, Any]:
    """Merge one `content_filter_results` object into `into` (mutated and returned)."""
    if not isinstance(results, Mapping):
        return into
    for category, verdict in results.items():
        into[category] = _merge_value(into.get(category), verdict)
    return into


def _merge_value(old: Any, new: Any) -> Any:
    if old is None:
        return _copy(new)
    if isinstance(old, dict) and isinstance(new, Mapping):
        for key, value in new.items():
            current = old.get(key)
            if key in ("filtered", "detected") and isinstance(value, bool):
                old[key] = bool(current) or value
            elif key == "severity" and isinstance(value, str):
                if current is None or _SEVERITY.get(value, -1) > _SEVERITY.get(str(current), -1):
                    old[key] = value
            elif isinstance(current, list) and isinstance(value, list):
                old[key] = _merge_list(current, value)
            elif current is None or isinstance(value, Mapping):
                old[key] = _merge_value(current, value)
        return old
    if isinstance(old, list) and isinstance(new, list):
        return _merge_list(old, new)
    return _copy(new)


def _merge_list(old: list[Any], new: list[Any]) -> list[Any]:
    """Lists of blocklist hits / details, merged by `id` when items have one."""
    by_id = {item.get("id"): item for item in old if isinstance(item, dict) and "id" in item}
    for item in new:
        if isinstance(item, Mapping) and "id" in item and item["id"] in by_id:
            _merge_value(by_id[item["id"]], item)
        elif item not in old:
            old.append(_copy(item))
            if isinstance(old[-1], dict) and "id" in old[-1]:
                by_id[old[-1]["id"]] = old[-1]
    return old


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def any_filtered(results: Any) -> bool:
    """True when any category (or nested detail) says `filtered: true`."""
    if isinstance(results, Mapping):
        return results.get("filtered") is True or any(any_filtered(v) for v in results.values())
    if isinstance(results, list):
        return any(any_filtered(v) for v in results)
    return False
