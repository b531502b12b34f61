"""Span ids chosen before the span exists.

The proxy sends each upstream attempt a `traceparent` naming a fresh span id as AOAI's parent; the
parser emits that attempt's CLIENT span later, and it must carry exactly that id. The SDK draws ids
from its provider's `IdGenerator`, so `PresetSpanIds` wraps it: inside `preset_span_id(...)` the
next span id is the given one, everywhere else the wrapped generator decides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

_PRESET: ContextVar[int | None] = ContextVar("preset_span_id", default=None)


class PresetSpanIds:
    """An `opentelemetry.sdk.trace.id_generator.IdGenerator` that honours `preset_span_id`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def generate_span_id(self) -> int:
        preset = _PRESET.get()
        return preset if preset is not None else int(self.inner.generate_span_id())

    def generate_trace_id(self) -> int:
        return int(self.inner.generate_trace_id())

    def is_trace_id_random(self) -> bool:
        check = getattr(self.inner, "is_trace_id_random", None)
        return bool(check()) if check is not None else False


def install(tracer_provider: Any) -> None:
    """Make `tracer_provider` (an SDK TracerProvider) honour preset ids; tracers from it made after."""
    current = getattr(tracer_provider, "id_generator", None)
    if current is not None and not isinstance(current, PresetSpanIds):
        tracer_provider.id_generator = PresetSpanIds(current)


@contextlib.contextmanager
def preset_span_id(span_id: str | None) -> Iterator[None]:
    """The next span started in this block gets `span_id` (16 hex digits); None changes nothing."""
    if not span_id:
        yield
        return
    try:
        value = int(span_id, 16)
    except ValueError:
        yield
        return
    token = _PRESET.set(value if value else None)
    try:
        yield
    finally:
        _PRESET.reset(token)
