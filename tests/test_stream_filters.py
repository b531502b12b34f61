"""`through` composes byte filters: pieces forwarded as soon as the last filter lets them out, held
bytes flushed through the filters after the one that held them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from proxy.streams.filters import through
from proxy.streams.usage import UsageChunkFilter


class HoldUntilNewline:
    """A test filter: keeps bytes until a newline, like an event decoder does."""

    def __init__(self) -> None:
        self.buf = b""

    def decode(self, chunk: bytes) -> bytes:
        self.buf += chunk
        head, sep, tail = self.buf.rpartition(b"\n")
        if not sep:
            return b""
        self.buf = tail
        return head + sep

    def flush(self) -> bytes:
        out, self.buf = self.buf, b""
        return out


class Upper:
    def decode(self, chunk: bytes) -> bytes:
        return chunk.upper()

    def flush(self) -> bytes:
        return b""


async def _source(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def _collect(pieces: list[bytes], filters) -> list[bytes]:
    return [chunk async for chunk in through(_source(pieces), filters)]


async def test_pieces_pass_in_order_and_held_bytes_are_flushed_through_later_filters():
    out = await _collect([b"ab", b"c\nde", b"f"], [HoldUntilNewline(), Upper()])
    assert out == [b"ABC\n", b"DEF"]  # "def" was held by the first filter, then upper-cased at the end


async def test_nothing_is_yielded_for_a_piece_a_filter_holds():
    out = await _collect([b"no newline yet"], [HoldUntilNewline()])
    assert out == [b"no newline yet"]  # only from flush


async def test_the_usage_filter_composes():
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\n'
    content = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    out = await _collect([content[:7], content[7:] + usage[:9], usage[9:], b"data: [DONE]\n\n"], [UsageChunkFilter()])
    assert b"".join(out) == content + b"data: [DONE]\n\n"
