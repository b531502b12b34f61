"""Incremental event-stream (SSE) decoder that follows the WHATWG rules.

Feed network chunks as they arrive, get whole events; chunk boundaries never leak out. Lines end
with CR, LF or CRLF; `data:` lines are joined with newlines; `event:`, `id:`, `retry:` and comments
are understood. Every block (up to and including its blank line) comes back with its exact raw
bytes, so a proxy can forward or drop events byte for byte: the raw bytes add up to the input.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class SSEEvent:
    #: The joined `data:` lines, or None for a block without a data field (comments only): not an
    #: event by the spec, but its bytes are kept in `raw`.
    data: str | None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    raw: bytes = b""
    #: False for a trailing block the stream ended before its blank line (see `SSEDecoder.flush`).
    complete: bool = True

    @property
    def type(self) -> str:
        return self.event or "message"


class SSEDecoder:
    """Stateful decoder: `feed(chunk) -> events` as bytes arrive, `flush() -> events` at the end."""

    __slots__ = ("_buf", "_pos", "_skip_lf", "_started", "_data", "_event", "_id", "_retry")

    def __init__(self, *, mid_stream: bool = False) -> None:
        """`mid_stream`: the bytes start at a block boundary after the stream's start (no BOM there)."""
        self._buf = bytearray()  # raw bytes of the current, not yet dispatched block
        self._pos = 0  # start of the current line within _buf
        self._skip_lf = False  # the last byte seen was a CR: an LF next completes that CRLF
        self._started = mid_stream
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None  # the last event id persists across events, per the spec
        self._retry: int | None = None

    def decode(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf
        buf += chunk
        if not self._started:
            if len(buf) < 3 and _BOM.startswith(bytes(buf)):
                return []
            self._started = True
            if buf.startswith(_BOM):
                self._pos = 3
        events: list[SSEEvent] = []
        if self._pos == 0 and not self._skip_lf:
            self._single_data_lines(events)
        while True:
            pos = self._pos
            if self._skip_lf and pos < len(buf):
                self._skip_lf = False
                if buf[pos] == 0x0A:
                    pos = self._pos = pos + 1
            lf = buf.find(b"\n", pos)
            cr = buf.find(b"\r", pos, lf if lf != -1 else len(buf))
            if cr != -1:
                end, nxt = cr, cr + 1
                if nxt < len(buf):
                    if buf[nxt] == 0x0A:
                        nxt += 1
                else:
                    self._skip_lf = True
            elif lf != -1:
                end, nxt = lf, lf + 1
            else:
                return events
            self._pos = nxt
            if end == pos:
                events.append(self._dispatch(nxt, complete=True))
                if not self._skip_lf:
                    self._single_data_lines(events)
            else:
                self._field(bytes(buf[pos:end]))

    def _single_data_lines(self, events: list[SSEEvent]) -> None:
        """Fast path at a block boundary: whole one-line `data: ...` blocks (every AOAI event) in one step.

        The same events the line loop would give (one data field, no CR); anything else stops it.
        """
        buf = self._buf
        size, start, ident = len(buf), 0, self._id
        while buf.startswith(b"data: ", start):
            end = buf.find(b"\n", start)
            if end == -1 or end + 1 >= size or buf[end + 1] != 0x0A or buf.find(b"\r", start, end) != -1:
                break
            raw = bytes(buf[start : end + 2])
            events.append(SSEEvent(data=raw[6:-2].decode("utf-8", errors="replace"), id=ident, raw=raw))
            start = end + 2
        if start:
            del buf[:start]

    def flush(self) -> list[SSEEvent]:
        """End of stream. A trailing block without its blank line comes back with complete=False.

        The spec discards such a block; callers rebuilding a broken-off stream may still use it.
        """
        if self._pos < len(self._buf):
            self._field(bytes(self._buf[self._pos :]))
        if not self._buf:
            return []
        return [self._dispatch(len(self._buf), complete=False)]

    def _field(self, line_bytes: bytes) -> None:
        if line_bytes[:1] == b":":
            return
        line = line_bytes.decode("utf-8", errors="replace")
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)

    def _dispatch(self, end: int, *, complete: bool) -> SSEEvent:
        raw = bytes(self._buf[:end])
        del self._buf[:end]
        self._pos = 0
        event = SSEEvent(
            data="\n".join(self._data) if self._data else None,
            event=self._event,
            id=self._id,
            retry=self._retry,
            raw=raw,
            complete=complete,
        )
        self._data = []
        self._event = None
        self._retry = None
        return event


def decode_all(text: str | bytes) -> list[SSEEvent]:
    """Decode a whole stored stream (the exchange's `response.sse`), trailing partial block included."""
    decoder = SSEDecoder()
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return decoder.decode(raw) + decoder.flush()


def decode_text(text: str) -> list[tuple[str | None, str]]:
    """`(event, data)` for every event with data in a whole stored stream: the same events as
    `decode_all` (same line, field and BOM rules) without the raw bytes, several times faster.

    The parser consolidates thousands of stored events per exchange; it needs no raw bytes, and
    splitting the whole text at once avoids the incremental decoder's per-line buffer work.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[tuple[str | None, str]] = []
    for block in text.split("\n\n"):
        # The common block is one `data: ...` line: no field parsing needed.
        if block.startswith("data: ") and "\n" not in block:
            out.append((None, block[6:]))
        elif block:
            _decode_block(block, out)
    return out


def _decode_block(block: str, out: list[tuple[str | None, str]]) -> None:
    """Lines of a block that ended with a blank line (or the end of the stream)."""
    data: list[str] = []
    event: str | None = None
    for line in block.split("\n"):
        if not line:  # a blank line inside: runs of three or more line ends
            if data:
                out.append((event, "\n".join(data)))
                data = []
            event = None
        elif line.startswith("data:"):
            data.append(line[6:] if line[5:6] == " " else line[5:])
        elif line[0] != ":":
            name, sep, value = line.partition(":")
            if sep and value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
    if data:
        out.append((event, "\n".join(data)))
