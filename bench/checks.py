"""Response completeness checks: a fast wrong answer counts as an error.

Every arm (direct, this gateway, the peer) is checked the same way against a reference answer taken
once from the simulator: for a stream, the number of content events, the text they carry (multibyte
included), the one large chunk arriving whole in a single event, the finish reason and the final
`data: [DONE]`; for a non-stream answer, the JSON message content and finish reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from shared.normalize.sse import SSEDecoder


@dataclass(frozen=True, slots=True)
class Expected:
    """What a complete answer holds (derived from one reference response)."""

    text: str
    #: Stream only: how many events carry non-empty `delta.content`, and the largest such piece.
    content_events: int = 0
    large_piece: str = ""


def stream_contents(body: bytes) -> tuple[list[str], list[str | None], str | None]:
    """(content pieces, finish reasons, data of the last event) of a chat completion event stream."""
    decoder = SSEDecoder()
    events = decoder.decode(body) + decoder.flush()
    pieces: list[str] = []
    finishes: list[str | None] = []
    for event in events:
        if event.data is None or event.data == "[DONE]":
            continue
        payload = orjson.loads(event.data)
        for choice in payload.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                pieces.append(content)
            if choice.get("finish_reason"):
                finishes.append(choice["finish_reason"])
    last = events[-1].data if events else None
    return pieces, finishes, last


def expected_from_stream(body: bytes) -> Expected:
    pieces, _, _ = stream_contents(body)
    return Expected(text="".join(pieces), content_events=len(pieces), large_piece=max(pieces, key=len, default=""))


def expected_from_chat(body: bytes) -> Expected:
    return Expected(text=orjson.loads(body)["choices"][0]["message"]["content"])


def check_stream(status: int, body: bytes, expected: Expected) -> str | None:
    """None when the stream is complete and intact, else why not."""
    if status != 200:
        return f"status {status}"
    try:
        pieces, finishes, last = stream_contents(body)
    except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
        return f"malformed event: {type(exc).__name__}"
    if last != "[DONE]":
        return "no final [DONE]"
    if finishes != ["stop"]:
        return f"finish reasons {finishes}"
    if len(pieces) != expected.content_events:
        return f"{len(pieces)} content events, expected {expected.content_events}"
    if expected.large_piece and expected.large_piece not in pieces:
        return "the large chunk did not arrive whole in one event"
    if "".join(pieces) != expected.text:
        return "content text differs"
    return None


def check_chat(status: int, body: bytes, expected: Expected) -> str | None:
    """None when the non-stream answer carries the expected message, else why not."""
    if status != 200:
        return f"status {status}"
    try:
        choice = orjson.loads(body)["choices"][0]
        content, finish = choice["message"]["content"], choice["finish_reason"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        return f"malformed body: {type(exc).__name__}"
    if finish != "stop":
        return f"finish reason {finish}"
    if content != expected.text:
        return "content differs"
    return None
