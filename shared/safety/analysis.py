"""Post-hoc content-safety verdict for one exchange: the usage record's `safety` object.

The parser calls `analyze` with the prompt and completion text (from `shared.normalize.texts`). Long text is
analysed in windows (at most 10,000 code points each, with overlap), a bounded number at a time;
per category the most severe window wins. A Content Safety outage never raises: after the client's
retries the record says `status: "error"` and why, so no record is lost or held up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from shared.errors import ContentSafetyError
from shared.safety.client import ContentSafety, TextAnalysis
from shared.safety.config import SafetyConfig
from shared.safety.windows import MAX_WINDOW_CHARS, split_windows


async def analyze(
    prompt_text: str | None,
    completion_text: str | None,
    *,
    product: str | None,
    config: SafetyConfig,
    client: ContentSafety | None,
    documents: Sequence[str] = (),
) -> dict[str, Any]:
    """The record's `safety` object (see `shared/normalize/schema/usage-record.schema.json`). Never raises.

    `documents` are grounding texts for Prompt Shields' indirect-attack check (optional).
    """
    if not config.enabled or client is None:
        return {"status": "skipped"}
    sides: dict[str, str] = {}
    if config.analyze_prompt and prompt_text:
        sides["prompt"] = prompt_text
    if completion_text:
        sides["completion"] = completion_text
    shield = config.prompt_shields and bool(prompt_text)
    if not sides and not shield:
        return {"status": "skipped"}

    started = time.perf_counter()
    limit = asyncio.Semaphore(config.max_concurrency)
    errors: list[str] = []

    async def analyse_side(text: str) -> tuple[dict[str, int], list[dict[str, Any]]] | None:
        windows = split_windows(text, config.window_chars, config.window_overlap)
        results = await asyncio.gather(
            *(_bounded(limit, client.analyze_text(w.text, config.blocklists)) for w in windows), return_exceptions=True
        )
        analyses = [r for r in results if isinstance(r, TextAnalysis)]
        errors.extend(_reason(r) for r in results if isinstance(r, BaseException))
        if not analyses:
            return None
        # Some windows may have failed: what was seen is still recorded (and `error` says the rest).
        return most_severe(a.categories for a in analyses), _hits(analyses)

    async def shield_prompt() -> bool | None:
        assert prompt_text is not None
        windows = split_windows(prompt_text, MAX_WINDOW_CHARS, config.window_overlap)
        docs = [d[:MAX_WINDOW_CHARS] for d in documents][:5]
        results = await asyncio.gather(
            *(_bounded(limit, client.shield_prompt(w.text, docs if w.index == 0 else ())) for w in windows),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        errors.extend(_reason(r) for r in failures)
        found = [r for r in results if not isinstance(r, BaseException)]
        attack = any(r.prompt_attack or any(r.document_attacks) for r in found)
        return True if attack else (None if failures else False)

    names = list(sides)
    tasks: list[Any] = [analyse_side(sides[n]) for n in names]
    if shield:
        tasks.append(shield_prompt())
    try:
        outcomes = await asyncio.gather(*tasks)
    except Exception as exc:  # a defect here must not lose the record either
        errors.append(_reason(exc))
        outcomes = [None] * len(tasks)

    safety: dict[str, Any] = {}
    flagged_by: list[str] = []
    hits: list[dict[str, Any]] = []
    thresholds = config.thresholds_for(product)
    for name, outcome in zip(names, outcomes, strict=False):
        if outcome is None:
            continue
        severities, side_hits = outcome
        safety[name] = severities
        hits.extend(side_hits)
        if any(severities.get(c, 0) >= t for c, t in thresholds.items()) and "content_safety" not in flagged_by:
            flagged_by.append("content_safety")
    if hits:
        flagged_by.append("blocklist")
    if shield:
        attack = outcomes[-1]
        safety["prompt_attack"] = attack
        if attack:
            flagged_by.append("prompt_shields")

    safety["status"] = "flagged" if flagged_by else ("error" if errors else "ok")
    safety["flagged_by"] = flagged_by
    safety["blocklist_hits"] = hits
    analysed = dict(sides)
    if shield:
        analysed["prompt"] = prompt_text or ""
    safety["characters_analyzed"] = sum(len(t) for t in analysed.values())
    safety["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
    safety["error"] = "; ".join(dict.fromkeys(errors)) if errors else None
    return dict(sorted(safety.items(), key=lambda kv: _ORDER.index(kv[0])))


_ORDER = (
    "status",
    "flagged_by",
    "prompt",
    "completion",
    "prompt_attack",
    "blocklist_hits",
    "characters_analyzed",
    "latency_ms",
    "error",
    "enforcement",
)


def most_severe(analyses: Any) -> dict[str, int]:
    """Per category, the highest severity over all windows."""
    merged: dict[str, int] = {}
    for categories in analyses:
        for category, severity in categories.items():
            merged[category] = max(merged.get(category, 0), severity)
    return merged


def over_threshold(severities: Mapping[str, int], thresholds: Mapping[str, int]) -> dict[str, int]:
    """The categories at or above their threshold, with their severity."""
    return {c: s for c, s in severities.items() if c in thresholds and s >= thresholds[c]}


def merge_aoai_verdicts(safety: Mapping[str, Any], content_filter: Mapping[str, Any] | None) -> dict[str, Any]:
    """`safety` with AOAI's own filter verdict folded in: when AOAI filtered (the record's
    `content_filter.filtered`), the record is `flagged` and `flagged_by` names `aoai`. Pure."""
    merged = dict(safety)
    if content_filter and content_filter.get("filtered"):
        flagged_by = list(merged.get("flagged_by") or [])
        if "aoai" not in flagged_by:
            flagged_by.append("aoai")
        merged["flagged_by"] = flagged_by
        merged["status"] = "flagged"
    return merged


def merge_enforcement(safety: Mapping[str, Any], enforcement: Mapping[str, Any] | None) -> dict[str, Any]:
    """`safety` with the proxy's in-stream enforcement outcome (`EnforcementOutcome.to_record()`); a
    stream the proxy cut makes the record `flagged` by `enforcement`. Pure."""
    merged = dict(safety)
    if enforcement is None:
        return merged
    merged["enforcement"] = dict(enforcement)
    if enforcement.get("action") == "blocked":
        flagged_by = list(merged.get("flagged_by") or [])
        if "enforcement" not in flagged_by:
            flagged_by.append("enforcement")
        merged["flagged_by"] = flagged_by
        merged["status"] = "flagged"
    return merged


async def _bounded(limit: asyncio.Semaphore, call: Any) -> Any:
    async with limit:
        return await call


def _hits(analyses: list[TextAnalysis]) -> list[dict[str, Any]]:
    seen: dict[tuple[Any, Any], dict[str, Any]] = {}
    for analysis in analyses:
        for hit in analysis.blocklist_hits:
            seen.setdefault((hit.get("blocklistName"), hit.get("blocklistItemId")), hit)
    return list(seen.values())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ContentSafetyError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:500]
