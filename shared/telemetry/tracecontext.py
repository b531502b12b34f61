"""W3C Trace Context: the trace id a request belongs to, read from its `traceparent` header.

APIM (or the client) starts the trace; the proxy forwards `traceparent` to AOAI unchanged, so
APIM → gateway → AOAI is one trace, and the usage record keeps the trace id to join the two.
Parsing is strict (version 00 layout, lowercase hex, ids not all zero): a malformed header yields
no trace id rather than a wrong one.
"""

from __future__ import annotations

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
