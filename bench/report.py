"""Turns load-generator results into per-arm statistics and the `latest.md` / `latest.json` files."""

from __future__ import annotations

import math
from typing import Any

PERCENTILES = (50, 95, 99)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (no interpolation: every reported value was measured)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Percentiles, requests/s and errors of one load-generator run (the raw samples are dropped)."""
    out = {k: result[k] for k in ("sent", "ok", "errors", "error_reasons", "stopped_by_time_limit", "wall_s")}
    out["rps"] = result["sent"] / result["wall_s"] if result["wall_s"] else 0.0
    for metric in ("ttfb_ms", "total_ms"):
        out[metric] = {f"p{p}": percentile(result[metric], p) for p in PERCENTILES}
    return out


def added(arm: dict[str, Any], direct: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Latency an arm adds to direct, per percentile (p99 of the arm minus p99 of direct, and so on)."""
    out: dict[str, dict[str, float | None]] = {}
    for metric in ("ttfb_ms", "total_ms"):
        out[metric] = {}
        for key, value in arm[metric].items():
            base = direct[metric][key]
            out[metric][key] = None if value is None or base is None else value - base
    return out


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def matrix_table(cells: list[dict[str, Any]]) -> str:
    """One row per workload × concurrency × arm."""
    head = (
        "| workload | conc. | arm | req/s | errors | TTFB p50 / p95 / p99 ms | added TTFB p50 / p95 / p99 ms "
        "| total p50 / p95 / p99 ms | added total p50 / p95 / p99 ms |"
    )
    lines = [head, "|" + "---|" * 9]
    for c in cells:
        s, a = c["stats"], c.get("added")
        ttfb = " / ".join(_ms(s["ttfb_ms"][f"p{p}"]) for p in PERCENTILES)
        total = " / ".join(_ms(s["total_ms"][f"p{p}"]) for p in PERCENTILES)
        add_t = " / ".join(_signed(a["ttfb_ms"][f"p{p}"]) for p in PERCENTILES) if a else ""
        add_l = " / ".join(_signed(a["total_ms"][f"p{p}"]) for p in PERCENTILES) if a else ""
        errors = f"{s['errors']}" + (" (time limit)" if s["stopped_by_time_limit"] else "")
        lines.append(
            f"| {c['workload']} | {c['concurrency']} | {c['arm']} | {s['rps']:.0f} | {errors} | {ttfb} | {add_t} "
            f"| {total} | {add_l} |"
        )
    return "\n".join(lines)
