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
    "The", " gateway", " forwards", " every", " token", " unchanged", ":", " café", " naïve",
    " résumé", " 東京", " 你好", " 🚀", " 👋🏽", ",", ' "quoted"', " back\\slash", ".\n",
    " data: ", " not", " a", " field", ";", " tab\there", " Zoë", " über", " größer", " ünïcödé",
    " señor", " 日本語", " テスト", " ✓", " {json}", " </script>", " 100%", " done", ".",
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
    """At most `max_tokens` tokens (and at least `chunks` words, so every chunk has text)."""
    words: list[str] = []
    i = start
    # Words are mostly one or a few tokens; grow until the budget or the chunk count is met.
    while True:
        candidate = WORDS[i % len(WORDS)]
        if words and count(enc, "".join(words) + candidate) > max_tokens and len(words) >= chunks:
            break
        words.append(candidate)
        i += 1
        if len(words) >= chunks and count(enc, "".join(words)) >= max_tokens:
            break
    text = "".join(words)
    return Answer(text=text, tokens=count(enc, text), chunks=split(words, chunks))


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
