"""W3C Trace Context: the trace id a request belongs to, read from its `traceparent` header.

APIM (or the client) starts the trace. Each upstream attempt is sent with a `traceparent` of the same
trace whose parent is that attempt's own span id (`child_traceparent`); the parser later emits the
attempt's CLIENT span with exactly that id, so APIM → gateway → attempt → AOAI is one tree. The
usage record keeps the trace id to join it to the trace.
Parsing is strict (version 00 layout, lowercase hex, ids not all zero): a malformed header yields
no trace id rather than a wrong one.
"""

from __future__ import annotations

import os
import re

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def trace_id_from(traceparent: str | None) -> str | None:
    """The 32-hex trace id of a valid `traceparent`, else None."""
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.strip())
    if match is None:
        return None
    version, trace_id, span_id, _flags, rest = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if version == "00" and rest is not None:
        return None  # version 00 has exactly four fields
    return trace_id


def child_traceparent(traceparent: str | None) -> tuple[str, str] | None:
    """(`traceparent` for an upstream attempt, that attempt's new span id), in the caller's trace
    with its sampling flag; None when the caller sent no valid trace context."""
    trace_id = trace_id_from(traceparent)
    if trace_id is None:
        return None
    assert traceparent is not None
    flags = traceparent.strip()[53:55]
    span_id = os.urandom(8).hex()
    if span_id == _ZERO_SPAN:  # one chance in 2**64; still never send an invalid id
        span_id = "0" * 15 + "1"
    return f"00-{trace_id}-{span_id}-{flags}", span_id
