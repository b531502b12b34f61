"""What a handler decides to send: one JSON body, or a list of SSE events with their pacing."""

from __future__ import annotations

import random
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
import tiktoken

from . import text
from .config import SimulatorConfig

DONE = b"data: [DONE]\n\n"


def data_event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def named_event(kind: str, obj: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class ChunkFrame:
    """Serializes the fields every chunk of one stream shares once; per chunk only `choices` is new."""

    __slots__ = ("_head",)

    def __init__(self, shared: dict[str, Any]) -> None:
        self._head = b"data: " + orjson.dumps(shared)[:-1] + (b',"choices":' if shared else b'"choices":')

    def __call__(self, choices: list[Any]) -> bytes:
        return self._head + orjson.dumps(choices) + b"}\n\n"


@dataclass(slots=True)
class Event:
    data: bytes
    #: Paced by the per-token delay (content and tool-argument chunks); framing events are not.
    paced: bool = False


@dataclass(slots=True)
class Plan:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    #: Set for streams: the events, in order (the response is text/event-stream).
    events: list[Event] | None = None
    #: How many paced chunks a non-stream answer stands for (it waits that many token delays).
    paced_chunks: int = 0
    #: Tokens consumed, for the x-ratelimit-remaining-tokens window.
    tokens: int = 0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class StoredResponse:
    body: bytes
    input_items: list[Any]
    #: Input + output tokens of this turn: what a follow-up with previous_response_id re-reads.
    context_tokens: int


class BadRequest(Exception):
    """Invalid input: answered 400 with AOAI's error shape."""

    def __init__(self, message: str, code: str = "BadRequest", param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


@dataclass(slots=True)
class Context:
    """Per-request facts the builders share."""

    config: SimulatorConfig
    deployment: str
    model: str
    enc: tiktoken.Encoding
    rng: random.Random
    chunks: int
    #: Stream with Azure's asynchronous content filter (annotation frames after the content).
    async_filter: bool = False
    #: Bytes the middle content chunk of a chat answer grows to (0: off).
    large_chunk: int = 0
    #: The answer text forced by `x-sim-content` (None: the generated text).
    content: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    #: The raw body and its content type (multipart uploads are parsed from these).
    raw: bytes = b""
    content_type: str = ""
    #: `http://host:port` as the client reached us, for URLs we hand out (image URLs).
    base_url: str = ""
    #: Stored Responses API objects by id (for previous_response_id and GET/DELETE).
    responses: dict[str, StoredResponse] = field(default_factory=dict)

    def new_id(self, prefix: str, sep: str = "-") -> str:
        return f"{prefix}{sep}{self.rng.getrandbits(128):032x}"

    @property
    def fingerprint(self) -> str:
        return f"fp_{zlib.crc32(self.model.encode()):08x}"[:13]


def text_answer(ctx: Context, start: int, budget: int) -> text.Answer:
    """The answer for one choice: the forced `x-sim-content` text, else generated words from `start`."""
    if ctx.content is not None:
        return text.forced(ctx.enc, ctx.content, ctx.chunks)
    return text.answer(ctx.enc, start, budget, ctx.chunks)


def max_tokens(body: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = body.get(key)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadRequest(f"Invalid value for '{key}': expected a positive integer.", param=key)
            return value
    return None


def token_budget(ctx: Context, cap: int | None) -> tuple[int, bool]:
    """(answer length in tokens, whether the request's cap cut it short).

    The natural length is `completion_tokens`, stretched so every asked-for chunk has a token.
    """
    natural = max(ctx.config.completion_tokens, ctx.chunks)
    if cap is None or cap >= natural:
        return natural, False
    return cap, True
