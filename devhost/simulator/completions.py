"""Legacy text completions (`text_completion`): streamed chunks have the non-stream shape."""

from __future__ import annotations

from typing import Any

import orjson

from . import text, tokens
from .filters import SAFE_COMPLETION, prompt_filter_results
from .wire import DONE, BadRequest, Context, Event, Plan, data_event, max_tokens, text_answer, token_budget

#: The API's own default for max_tokens on completions.
DEFAULT_MAX_TOKENS = 16


def _prompts(prompt: Any) -> list[Any]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        return prompt
    raise BadRequest("'prompt' is a required property (a string, array of strings or token arrays).", param="prompt")


def build(body: dict[str, Any], ctx: Context, *, stream: bool) -> Plan:
    prompts = _prompts(body.get("prompt"))
    if body.get("stream_options") is not None and not stream:
        raise BadRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    n = body.get("n", 1) or 1
    if not isinstance(n, int) or not 1 <= n <= 128:
        raise BadRequest("Invalid value for 'n': must be an integer between 1 and 128.", param="n")
    prompt_tokens = tokens.prompt_text_tokens(ctx.enc, prompts)
    cap = max_tokens(body, "max_tokens") or DEFAULT_MAX_TOKENS
    budget, truncated = token_budget(ctx, cap)
    finish = "length" if truncated and ctx.content is None else "stop"
    chunks = ctx.chunks
    start = text.variant(ctx.config.seed, orjson.dumps(prompts))
    # One choice per prompt per n, indexed prompt-major as the API does.
    answers = [text_answer(ctx, start + 5 * p + 7 * i, budget) for p in range(len(prompts)) for i in range(n)]
    completion = sum(a.tokens for a in answers)
    usage = {
        "completion_tokens": completion,
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion,
    }
    cid = ctx.new_id("cmpl", "-")
    base = {"created": ctx.created, "id": cid, "model": ctx.model, "object": "text_completion"}
    if not stream:
        body_out = {
            **base,
            "choices": [
                {
                    "content_filter_results": SAFE_COMPLETION,
                    "finish_reason": finish,
                    "index": i,
                    "logprobs": None,
                    "text": a.text,
                }
                for i, a in enumerate(answers)
            ],
            "prompt_filter_results": prompt_filter_results(len(prompts)),
            "system_fingerprint": None,
            "usage": usage,
        }
        return Plan(body=orjson.dumps(body_out), paced_chunks=chunks, tokens=prompt_tokens + completion)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    extra = {"usage": None} if include_usage else {}
    events = [
        Event(
            data_event(
                {
                    "choices": [],
                    "created": 0,
                    "id": "",
                    "model": "",
                    "object": "",
                    "prompt_filter_results": prompt_filter_results(len(prompts)),
                }
            )
        )
    ]
    for k in range(max(len(a.chunks) for a in answers)):
        for i, a in enumerate(answers):
            if k < len(a.chunks):
                choice = {
                    "content_filter_results": SAFE_COMPLETION,
                    "finish_reason": None,
                    "index": i,
                    "logprobs": None,
                    "text": a.chunks[k],
                }
                events.append(Event(data_event({**base, **extra, "choices": [choice]}), paced=True))
    for i in range(len(answers)):
        choice = {"content_filter_results": {}, "finish_reason": finish, "index": i, "logprobs": None, "text": ""}
        events.append(Event(data_event({**base, **extra, "choices": [choice]})))
    if include_usage:
        events.append(Event(data_event({**base, "choices": [], "usage": usage})))
    events.append(Event(DONE))
    return Plan(events=events, content_type="text/event-stream", tokens=prompt_tokens + completion)
