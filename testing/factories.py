"""Builders for exchanges and AOAI-shaped event streams used by the parser tests and the bench."""

from __future__ import annotations

import json
from typing import Any

from shared.exchange import Attempt, CapturedRequest, CapturedResponse, Exchange, Identity, Timings

CHUNK_BASE = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1717430000,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_1",
}


def sse(*payloads: Any, done: bool = True) -> str:
    """An event stream of `data:` events (dicts are JSON-encoded), ending with [DONE] unless told."""
    out = [f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n" for p in payloads]
    if done:
        out.append("data: [DONE]\n\n")
    return "".join(out)


def responses_sse(*payloads: dict[str, Any]) -> str:
    return "".join(f"event: {p['type']}\ndata: {json.dumps(p)}\n\n" for p in payloads)


def chunk(choices: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    return {**CHUNK_BASE, "choices": choices if choices is not None else [], **fields}


def delta(index: int = 0, finish_reason: str | None = None, **d: Any) -> dict[str, Any]:
    return {"index": index, "delta": d, "finish_reason": finish_reason, "logprobs": None}


def text_stream(text_pieces: list[str], model: str = "gpt-4o-2024-08-06", *, usage: dict | None = None) -> str:
    base = {"model": model}
    chunks = [chunk([delta(role="assistant", content="")], **base)]
    chunks += [chunk([delta(content=p)], **base) for p in text_pieces]
    chunks.append(chunk([delta(finish_reason="stop")], **base))
    if usage is not None:
        chunks.append(chunk([], usage=usage, **base))
    return sse(*chunks)


def exchange(
    *,
    path: str = "/openai/deployments/gpt-4o/chat/completions",
    body: Any = None,
    status: int | None = 200,
    response_body: Any = None,
    sse_text: str | None = None,
    response_headers: dict[str, str] | None = None,
    request_id: str = "req-1",
    query: dict[str, str] | None = None,
    method: str = "POST",
    **extra: Any,
) -> Exchange:
    response = None
    if status is not None:
        response = CapturedResponse(
            status=status,
            headers=response_headers
            if response_headers is not None
            else {"content-type": "application/json", "x-ms-region": "East US"},
            body=response_body,
            body_encoding="json" if response_body is not None else "empty",
            sse=sse_text,
        )
    return Exchange(
        request_id=request_id,
        request=CapturedRequest(
            method=method,
            path=path,
            query=query if query is not None else {"api-version": "2024-10-21"},
            headers={
                "content-type": "application/json",
                "user-agent": "AzureOpenAI/Python 3.57.0",
                "api-key": "[REDACTED]",
            },
            body=body,
            body_encoding="json" if body is not None else "empty",
        ),
        timings=Timings(received_at="2026-11-27T04:00:00.000Z", upstream_first_byte_ms=120.5, last_byte_ms=900.0),
        identity=Identity(
            subscription_id="sub-a", subscription_name="Team A", product="standard", client_ip="203.0.113.7"
        ),
        response=response,
        backend="aoai-eastus",
        attempts=[Attempt(backend="aoai-eastus", status=status, duration_ms=880.0, outcome="served")],
        **extra,
    )
