"""In-stream content-safety enforcement: an async iterator transformer for the client-bound stream.

In `monitor` mode the upstream chunks pass untouched. In `enforce` mode streamed text (chat
`delta.content` per choice, completions `text`, Responses `response.output_text.delta`) is held back
and analysed in windows of `window_chars` (each repeating the last `overlap_chars` already cleared, so
a phrase cut at a boundary is still seen whole). An event is released, as its exact upstream bytes and
in order, once every window that holds its text is cleared; events without text wait only for those
before them. Upstream reading never waits for the analyser: events are buffered meanwhile.

On a violation (a category at or above the product's threshold, a blocklist hit, AOAI's own
`filtered: true` / `finish_reason: "content_filter"` annotation, or an analyser failure when the
product fails closed) the held events are dropped and the client gets an honest end in its API's
format: a chunk with `finish_reason: "content_filter"` and `data: [DONE]` (chat, completions), or an
`event: response.incomplete` with `incomplete_details.reason = "content_filter"` (Responses).

Upstream closing: when this iterator stops it calls `aclose()` on `upstream_events` (if it has one).
The proxy should therefore produce `upstream_events` from an async generator that releases the
upstream HTTP response in its `finally` (or `async with`), so a cut stream also ends the AOAI call.

One module because one stream's run state (held events, open windows, verdicts in flight) is what
every step reads and writes; split, each part would reach into the others' internals.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from shared.normalize.sse import SSEDecoder, SSEEvent
from shared.safety.analysis import most_severe, over_threshold
from shared.safety.client import ContentSafety, TextAnalysis
from shared.safety.config import StreamPolicy
from shared.safety.windows import MAX_WINDOW_CHARS, split_windows

#: The APIs whose streams carry text this module understands; others always pass untouched.
TEXT_APIS = frozenset({"chat.completions", "completions", "responses"})

Action = Literal["released", "blocked", "aborted"]
Source = Literal["content_safety", "blocklist", "aoai", "analyser_error"]


@dataclass(slots=True)
class EnforcementOutcome:
    """What enforcement did to one stream; `to_record()` is the usage record's `safety.enforcement`."""

    action: Action = "released"
    source: Source | None = None
    #: The window that violated (0-based, in the order windows were cut), when one did.
    window_index: int | None = None
    #: Categories at or above threshold in the violating window, with their severity.
    categories: dict[str, int] = field(default_factory=dict)
    #: Per category, the most severe over all windows analysed.
    severities: dict[str, int] = field(default_factory=dict)
    blocklist_hits: list[dict[str, Any]] = field(default_factory=list)
    windows_analyzed: int = 0
    characters_analyzed: int = 0
    characters_released: int = 0
    errors: list[str] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        return {
            "mode": "enforce",
            "action": self.action,
            "source": self.source,
            "window_index": self.window_index,
            "categories": self.categories,
            "severities": self.severities,
            "blocklist_hits": self.blocklist_hits,
            "windows_analyzed": self.windows_analyzed,
            "characters_analyzed": self.characters_analyzed,
            "characters_released": self.characters_released,
            "errors": self.errors,
        }


async def enforce(
    upstream_events: AsyncIterator[bytes],
    *,
    api: str,
    analyser: ContentSafety | None,
    config: StreamPolicy,
    on_verdict: Callable[[EnforcementOutcome], None],
) -> AsyncIterator[bytes]:
    """The client-bound byte stream for `upstream_events` under `config` (one product's policy).

    `on_verdict` is called once, when the stream ends (released, blocked, or aborted by the
    consumer or an upstream error), in enforce mode only.
    """
    if config.mode != "enforce" or api not in TEXT_APIS or analyser is None:
        async for chunk in upstream_events:
            yield chunk
        return

    run = _Run(api, analyser, config)
    # The pump reads upstream on its own, so a window being analysed (or a slow client) never stalls
    # the AOAI read; it feeds the decoder and wakes this loop, as finished analyses do.
    pump = asyncio.ensure_future(_pump(upstream_events, run))
    try:
        while True:
            await run.wake.wait()
            run.wake.clear()
            if pump.done() and pump.exception() is not None:
                raise pump.exception()  # type: ignore[misc]  # an upstream failure surfaces as without enforcement
            run.apply_finished()
            out = run.take_output()
            if out:
                yield out
            if run.finished:
                break
        run.completed = True
    finally:
        if not pump.done():
            pump.cancel()
        with contextlib.suppress(BaseException):
            await pump
        run.cancel_windows()
        aclose = getattr(upstream_events, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        on_verdict(run.outcome_for_end())


async def _pump(upstream_events: AsyncIterator[bytes], run: _Run) -> None:
    try:
        async for chunk in upstream_events:
            run.decode(chunk)
            run.wake.set()
            if run.blocked:
                return
        run.flush()
    finally:
        run.wake.set()


@dataclass(slots=True)
class _Held:
    raw: bytes
    #: track key -> the end of this event's text in that track; released once cleared up to there.
    needs: dict[Hashable, int]
    chars: int = 0
    #: choices this event finishes (chat/completions), so the final chunk does not end them twice.
    finishes: tuple[int, ...] = ()
    #: Responses `sequence_number`: the end event continues from the last one the client got.
    sequence_number: int | None = None


@dataclass(slots=True)
class _Track:
    """The streamed text of one choice (or one Responses content part)."""

    length: int = 0
    cut: int = 0  # text up to here is in a window (scheduled or applied)
    cleared: int = 0  # text up to here is cleared and may be released
    pending: list[str] = field(default_factory=list)  # text after `cut`
    tail: str = ""  # the last `overlap` characters before `cut`, repeated at the next window's start


@dataclass(slots=True)
class _Window:
    index: int
    key: Hashable
    end: int
    text: str
    task: asyncio.Task[TextAnalysis] | None = None


class _Run:
    """State of one enforced stream. Pure bookkeeping plus analyser tasks; no I/O of its own."""

    def __init__(self, api: str, analyser: ContentSafety, policy: StreamPolicy) -> None:
        self.api = api
        self.analyser = analyser
        self.policy = policy
        self.step = policy.window_chars - policy.overlap_chars
        self.decoder = SSEDecoder()
        self.tracks: dict[Hashable, _Track] = {}
        self.held: deque[_Held] = deque()
        self.windows: deque[_Window] = deque()
        self.window_count = 0
        self.running = 0
        self.out: list[bytes] = []
        self.outcome = EnforcementOutcome()
        self.wake = asyncio.Event()
        self.eof = False
        self.blocked = False
        self.completed = False
        self.line_end = b"\n"
        self.first_event = True
        # What the final chunk / event must repeat.
        self.chunk_meta: dict[str, Any] = {}
        self.choices_seen: set[int] = set()
        self.choices_finished: set[int] = set()
        self.response: dict[str, Any] | None = None
        self.sequence_number: int | None = None

    # --- input ----------------------------------------------------------------------------------

    def decode(self, chunk: bytes) -> None:
        for event in self.decoder.decode(chunk):
            self._event(event)

    def flush(self) -> None:
        for event in self.decoder.flush():
            self._event(event)
        self.eof = True
        for key in list(self.tracks):
            self._cut(key)
        self._start_windows()

    def _event(self, event: SSEEvent) -> None:
        if self.blocked:
            return
        if self.first_event and event.raw.endswith(b"\r\n\r\n"):
            self.line_end = b"\r\n"
        self.first_event = False
        held = _Held(event.raw, {})
        obj = _json(event.data)
        flush: list[Hashable] = []
        if obj is not None and self.api == "responses":
            flush = self._responses_event(obj, held)
        elif obj is not None:
            flush = self._chunk_event(obj, held)
            if self.blocked:
                return
        elif event.data == "[DONE]":
            flush = list(self.tracks)  # the stream is over: analyse every partial window now
        self.held.append(held)
        for key in flush:
            self._cut(key)
        self._start_windows()

    def _add_text(self, key: Hashable, text: str, held: _Held) -> None:
        track = self.tracks.setdefault(key, _Track())
        track.pending.append(text)
        track.length += len(text)
        held.needs[key] = track.length
        held.chars += len(text)
        if track.length - track.cut >= self.step:
            self._cut(key)

    def _chunk_event(self, obj: dict[str, Any], held: _Held) -> list[Hashable]:
        if obj.get("id") and not self.chunk_meta:
            self.chunk_meta = {
                k: obj[k] for k in ("id", "object", "created", "model", "system_fingerprint") if k in obj
            }
        flush: list[Hashable] = []
        finishes: list[int] = []
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            self.choices_seen.add(index)
            if choice.get("finish_reason") == "content_filter" or _filtered(choice.get("content_filter_results")):
                self._block("aoai")
                return []
            if self.api == "chat.completions":
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else None
            else:
                text = choice.get("text")
            if isinstance(text, str) and text:
                self._add_text(index, text, held)
            if choice.get("finish_reason"):
                finishes.append(index)
                flush.append(index)
        held.finishes = tuple(finishes)
        return flush

    def _responses_event(self, obj: dict[str, Any], held: _Held) -> list[Hashable]:
        kind = obj.get("type")
        if isinstance(obj.get("sequence_number"), int):
            held.sequence_number = obj["sequence_number"]
        if kind == "response.created" and isinstance(obj.get("response"), dict):
            self.response = obj["response"]
        key = (obj.get("output_index", 0), obj.get("content_index", 0))
        if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str) and obj["delta"]:
            self._add_text(key, obj["delta"], held)
        elif kind == "response.output_text.done":
            # Carries the whole part's text again: it may go only once all of that text is cleared.
            track = self.tracks.setdefault(key, _Track())
            held.needs[key] = track.length
            return [key]
        return []

    # --- windows --------------------------------------------------------------------------------

    def _cut(self, key: Hashable) -> None:
        track = self.tracks[key]
        if not track.pending:
            return
        new = "".join(track.pending)
        track.pending.clear()
        self.windows.append(_Window(self.window_count, key, track.length, track.tail + new))
        self.window_count += 1
        track.cut = track.length
        if self.policy.overlap_chars:
            track.tail = (track.tail + new)[-self.policy.overlap_chars :]

    def _start_windows(self) -> None:
        for window in self.windows:
            if self.running >= self.policy.max_concurrency:
                return
            if window.task is None:
                window.task = asyncio.ensure_future(self._analyse(window.text))
                window.task.add_done_callback(self._wake)
                self.running += 1

    async def _analyse(self, text: str) -> TextAnalysis:
        # A window can exceed the service limit only if one event carried that much text.
        parts = split_windows(text, MAX_WINDOW_CHARS, 0)
        if len(parts) == 1:
            return await self.analyser.analyze_text(text, self.policy.blocklists)
        results = await asyncio.gather(*(self.analyser.analyze_text(p.text, self.policy.blocklists) for p in parts))
        return TextAnalysis(most_severe(r.categories for r in results), [h for r in results for h in r.blocklist_hits])

    def _wake(self, _task: object) -> None:
        self.wake.set()

    def apply_finished(self) -> None:
        """Apply window verdicts in window order, as far as they are in."""
        while self.windows and not self.blocked:
            window = self.windows[0]
            if window.task is None or not window.task.done():
                break
            self.windows.popleft()
            self.running -= 1
            self._verdict(window)
        if not self.blocked:
            self._start_windows()
            self._release()

    def _verdict(self, window: _Window) -> None:
        outcome = self.outcome
        assert window.task is not None
        try:
            analysis = window.task.result()
        except Exception as exc:  # the client's retries are over: the product's failure policy decides
            outcome.errors.append(str(exc)[:300] or type(exc).__name__)
            if self.policy.fail == "closed":
                outcome.window_index = window.index
                self._block("analyser_error")
                return
            self.tracks[window.key].cleared = window.end
            return
        outcome.windows_analyzed += 1
        outcome.characters_analyzed += len(window.text)
        outcome.severities = most_severe([outcome.severities, analysis.categories])
        over = over_threshold(analysis.categories, self.policy.thresholds)
        if over or analysis.blocklist_hits:
            outcome.window_index = window.index
            outcome.categories = over
            outcome.blocklist_hits = list(analysis.blocklist_hits)
            self._block("content_safety" if over else "blocklist")
            return
        self.tracks[window.key].cleared = window.end

    # --- output ---------------------------------------------------------------------------------

    def _release(self) -> None:
        while self.held:
            head = self.held[0]
            if any(self.tracks[k].cleared < end for k, end in head.needs.items()):
                return
            self.held.popleft()
            self.out.append(head.raw)
            self.outcome.characters_released += head.chars
            self.choices_finished.update(head.finishes)
            if head.sequence_number is not None:
                self.sequence_number = head.sequence_number

    def _block(self, source: Source) -> None:
        self._release()  # what is already cleared still goes out, in order; the rest never does
        self.blocked = True
        self.outcome.action = "blocked"
        self.outcome.source = source
        self.held.clear()
        self.cancel_windows()
        self.out.append(self._final_bytes())

    def _final_bytes(self) -> bytes:
        end = self.line_end
        if self.api == "responses":
            response = dict(self.response or {})
            response.update(status="incomplete", incomplete_details={"reason": "content_filter"}, output=[])
            event: dict[str, Any] = {"type": "response.incomplete", "response": response}
            if self.sequence_number is not None:
                event["sequence_number"] = self.sequence_number + 1
            return b"event: response.incomplete" + end + b"data: " + orjson.dumps(event) + end + end
        meta = dict(self.chunk_meta)
        meta.setdefault("id", "")
        meta.setdefault("object", "chat.completion.chunk" if self.api == "chat.completions" else "text_completion")
        meta.setdefault("created", 0)
        meta.setdefault("model", "")
        open_choices = sorted(self.choices_seen - self.choices_finished) or [0]
        if self.api == "chat.completions":
            choices: list[dict[str, Any]] = [
                {"index": i, "delta": {}, "logprobs": None, "finish_reason": "content_filter"} for i in open_choices
            ]
        else:
            choices = [
                {"index": i, "text": "", "logprobs": None, "finish_reason": "content_filter"} for i in open_choices
            ]
        chunk = {**meta, "choices": choices}
        return b"data: " + orjson.dumps(chunk) + end + end + b"data: [DONE]" + end + end

    def take_output(self) -> bytes:
        out = b"".join(self.out)
        self.out.clear()
        return out

    @property
    def finished(self) -> bool:
        return self.blocked or (self.eof and not self.held and not self.windows)

    def cancel_windows(self) -> None:
        for window in self.windows:
            if window.task is not None and not window.task.done():
                window.task.cancel()
        self.windows.clear()
        self.running = 0

    def outcome_for_end(self) -> EnforcementOutcome:
        if not self.blocked and not self.completed:
            self.outcome.action = "aborted"
        return self.outcome


def _json(data: str | None) -> dict[str, Any] | None:
    if not data or data[0] != "{":
        return None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _filtered(results: Any) -> bool:
    """AOAI's `content_filter_results`: does any category (or blocklist) say `filtered: true`?"""
    if isinstance(results, dict):
        return results.get("filtered") is True or any(_filtered(v) for v in results.values())
    if isinstance(results, list):
        return any(_filtered(v) for v in results)
    return False
