"""Deterministic answer text, cut into stream chunks.

The words deliberately include what breaks naive proxies: multibyte UTF-8 (accents, CJK, emoji
with a skin-tone modifier), characters JSON must escape (quotes, backslashes, newlines, tabs) and
the literal text `data: ` inside content, which a line-based SSE reader could mistake for a field.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import tiktoken

from .tokens import count

WORDS: tuple[str, ...] = (
    "The",
    " gateway",
    " forwards",
    " every",
    " token",
    " unchanged",
    ":",
    " café",
    " naïve",
    " résumé",
    " 東京",
    " 你好",
    " 🚀",
    " 👋🏽",
    ",",
    ' "quoted"',
    " back\\slash",
    ".\n",
    " data: ",
    " not",
    " a",
    " field",
    ";",
    " tab\there",
    " Zoë",
    " über",
    " größer",
    " ünïcödé",
    " señor",
    " 日本語",
    " テスト",
    " ✓",
    " {json}",
    " </script>",
    " 100%",
    " done",
    ".",
)


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    tokens: int
    #: The text cut into stream chunks; "".join(chunks) == text.
    chunks: tuple[str, ...]


def variant(seed: int, key: bytes) -> int:
    """Where in the word list an answer starts: a pure function of the seed and the request."""
    return zlib.crc32(key, seed & 0xFFFFFFFF) % len(WORDS)


@functools.lru_cache(maxsize=4096)
def answer(enc: tiktoken.Encoding, start: int, max_tokens: int, chunks: int) -> Answer:
    """Words from the list, starting at `start`, up to `max_tokens` tokens, cut into up to `chunks` chunks.

    Never longer than `max_tokens` (callers pass the request's cap), so the usage it implies is
    honest; fewer chunks come back when the budget holds fewer words than chunks asked for.
    """
    words: list[str] = []
    used = 0
    i = start
    while used < max_tokens:
        candidate = WORDS[i % len(WORDS)]
        grown = count(enc, "".join(words) + candidate)
        if grown > max_tokens:
            if words:
                break
            candidate, grown = "Hi", count(enc, "Hi")  # one token in every encoding
        words.append(candidate)
        used = grown
        i += 1
    text = "".join(words)
    return Answer(text=text, tokens=count(enc, text), chunks=split(words, chunks))


def forced(enc: tiktoken.Encoding, content: str, chunks: int) -> Answer:
    """A given answer text (the `x-sim-content` header), cut into up to `chunks` near-equal character runs.

    Tests use it to put a known word at a known position of a stream; the request's token cap does
    not cut it, and usage counts exactly this text.
    """
    return Answer(text=content, tokens=count(enc, content), chunks=split_text(content, chunks))


def split(pieces: list[str], chunks: int) -> tuple[str, ...]:
    """Group pieces into `chunks` runs of near-equal length (order kept, none empty)."""
    chunks = max(1, min(chunks, len(pieces)))
    size, extra = divmod(len(pieces), chunks)
    out, pos = [], 0
    for k in range(chunks):
        n = size + (1 if k < extra else 0)
        out.append("".join(pieces[pos : pos + n]))
        pos += n
    return tuple(out)


def split_text(text: str, chunks: int) -> tuple[str, ...]:
    """Cut a string (tool-call arguments) into `chunks` non-empty character runs."""
    return split(list(text), chunks) if text else ("",)


def enlarge(enc: tiktoken.Encoding, whole: Answer, nbytes: int) -> Answer:
    """The answer with its middle chunk grown (by more words) to at least `nbytes` bytes of UTF-8.

    Benchmarks use one big chunk to check that a proxy passes a long event intact; the usage stays
    honest because the tokens are counted again over the grown text.
    """
    if nbytes <= 0 or not whole.chunks:
        return whole
    k = len(whole.chunks) // 2
    piece, i = whole.chunks[k], 0
    size = len(piece.encode())
    grown = [piece]
    while size < nbytes:
        word = WORDS[i % len(WORDS)]
        grown.append(word)
        size += len(word.encode())
        i += 1
    chunks = (*whole.chunks[:k], "".join(grown), *whole.chunks[k + 1 :])
    text = "".join(chunks)
    return Answer(text=text, tokens=count(enc, text), chunks=chunks)


def cut(enc: tiktoken.Encoding, whole: Answer, keep: int) -> Answer:
    """The first `keep` chunks of an answer (a filtered completion stops early)."""
    chunks = whole.chunks[:keep]
    text = "".join(chunks)
    return Answer(text=text, tokens=count(enc, text), chunks=chunks)
