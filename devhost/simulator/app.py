"""The aiohttp application: one catch-all handler that authenticates, injects faults and answers.

Paths are classified with `shared.normalize.apis.classify` (the same rules the gateway uses), so the
simulator serves exactly the AOAI URL shapes the gateway forwards.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from shared.normalize.apis import ApiRoute, classify

from . import audio, batches, catalog, chat, completions, embeddings, errors, images, responses
from .config import SimulatorConfig
from .models import encoding_for, model_for
from .state import LoggedRequest, SimulatorState
from .wire import BadRequest, Context, Event, Plan

STATE: web.AppKey[SimulatorState] = web.AppKey("simulator_state", SimulatorState)

Builder = Callable[[dict[str, Any], Context, bool], Plan]

_OPERATION_NAMES = {
    "chat.completions": "ChatCompletions_Create",
    "completions": "Completions_Create",
    "embeddings": "Embeddings_Create",
    "images.generations": "ImageGenerations_Create",
    "audio.transcriptions": "Transcriptions_Create",
    "audio.translations": "Translations_Create",
    "audio.speech": "Speech_Create",
    "responses": "Responses_Create",
}
_CONTENT_FILTER_MARKER = b"SIMULATE_CONTENT_FILTER"
_JAILBREAK_MARKER = b"SIMULATE_JAILBREAK"


def create_app(config: SimulatorConfig | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = SimulatorState(config or SimulatorConfig())
    app.router.add_get(images.IMAGE_PATH + "{name}", _image)
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app


class _Reply(Exception):
    """Answer now with this status and body (errors and faults short-circuit the handler)."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


def _header_number(request: web.Request, name: str) -> float | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise _Reply(400, errors.error_body("BadRequest", f"Header {name} must be a number.")) from None


def _flag(raw: str | None, default: bool) -> bool:
    return default if raw is None else raw.strip().lower() in ("1", "true", "yes", "on")


def _content(raw: str | None) -> str | None:
    """`x-sim-content`: the answer text, percent-encoded UTF-8 (headers are ASCII); None when absent."""
    if raw is None:
        return None
    content = unquote(raw)
    if not content:
        raise _Reply(400, errors.error_body("BadRequest", "Header x-sim-content must not be empty."))
    return content


def _check_auth(request: web.Request, config: SimulatorConfig) -> None:
    key = request.headers.get("api-key", "")
    if not key:
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not key or (config.api_key is not None and key != config.api_key):
        raise _Reply(401, errors.status_body(401))


@dataclass(slots=True)
class _Pacing:
    """How this request is paced and whether it is cut: config values, overridden by x-sim-* headers."""

    ttft: float  # seconds
    delay: float  # seconds per paced chunk
    drop_after: int | None

    @classmethod
    def of(cls, request: web.Request, config: SimulatorConfig) -> _Pacing:
        ttft = _header_number(request, "x-sim-ttft-ms")
        delay = _header_number(request, "x-sim-token-delay-ms")
        drop = _header_number(request, "x-sim-drop-after")
        return cls(
            ttft=(config.ttft_ms if ttft is None else ttft) / 1000.0,
            delay=(config.token_delay_ms if delay is None else delay) / 1000.0,
            drop_after=None if drop is None else int(drop),
        )


async def _handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    config = state.config
    started = time.monotonic()
    body = await request.read()
    record: LoggedRequest | None = None
    if config.log_requests:
        record = LoggedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
            received=started,
        )
        state.requests.append(record)
    headers = {
        "apim-request-id": str(uuid.UUID(int=state.rng.getrandbits(128), version=4)),
        "x-request-id": str(uuid.UUID(int=state.rng.getrandbits(128), version=4)),
        "x-ms-region": config.region,
    }
    if "x-ms-client-request-id" in request.headers:
        headers["x-ms-client-request-id"] = request.headers["x-ms-client-request-id"]
    api: str | None = None
    pacing = _Pacing(0.0, 0.0, None)
    try:
        pacing = _Pacing.of(request, config)
        plan, api = await _plan(request, state, body, headers)
    except _Reply as reply:
        plan = Plan(status=reply.status, body=reply.body, headers=reply.headers)
    except BadRequest as exc:
        plan = Plan(status=400, body=errors.error_body(exc.code, exc.message, param=exc.param, type=None))
    deployment = headers.get("x-ms-deployment-name", "")
    remaining_requests, remaining_tokens = state.spend(deployment, plan.tokens, counted=plan.status != 429)
    if plan.status == 429:
        remaining_requests, remaining_tokens = 0, 0  # what a throttled deployment advertises
    limit_requests, limit_tokens = state.limits(deployment)
    headers["x-ratelimit-limit-requests"] = str(limit_requests)
    headers["x-ratelimit-limit-tokens"] = str(limit_tokens)
    headers["x-ratelimit-remaining-requests"] = str(remaining_requests)
    headers["x-ratelimit-remaining-tokens"] = str(remaining_tokens)
    headers.update(plan.headers)
    if plan.status != 200:
        pacing = _Pacing(0.0, 0.0, None)  # errors come back at once
    elif pacing.drop_after is None and api is not None and state.roll(config.drop_rate):
        # Streams are cut halfway through their content; non-stream answers before any byte.
        pacing.drop_after = sum(1 for e in plan.events or () if e.paced) // 2

    if plan.events is None:
        return await _send_body(request, plan, headers, pacing, started, record)
    return await _send_stream(request, plan, plan.events, headers, pacing, started, record)


async def _send_body(
    request: web.Request,
    plan: Plan,
    headers: dict[str, str],
    pacing: _Pacing,
    started: float,
    record: LoggedRequest | None,
) -> web.StreamResponse:
    # A non-stream answer takes as long as its stream would have: ttft plus a delay per chunk.
    wait = pacing.ttft + pacing.delay * plan.paced_chunks
    if wait > 0:
        await asyncio.sleep(wait)
    if pacing.drop_after is not None:
        return _drop(request, record)
    headers["openai-processing-ms"] = f"{(time.monotonic() - started) * 1000:.4f}"
    headers["Content-Type"] = plan.content_type
    if record is not None:
        record.status, record.response, record.response_headers = plan.status, plan.body, headers
        record.finished = time.monotonic()
    return web.Response(status=plan.status, body=plan.body, headers=headers)


async def _send_stream(
    request: web.Request,
    plan: Plan,
    events: list[Event],
    headers: dict[str, str],
    pacing: _Pacing,
    started: float,
    record: LoggedRequest | None,
) -> web.StreamResponse:
    if pacing.ttft > 0:
        await asyncio.sleep(pacing.ttft)
    headers["openai-processing-ms"] = f"{(time.monotonic() - started) * 1000:.4f}"
    headers["Content-Type"] = "text/event-stream; charset=utf-8"
    headers["Cache-Control"] = "no-cache"
    response = web.StreamResponse(status=plan.status, headers=headers)
    response.enable_chunked_encoding()
    sent: list[bytes] = []
    if record is not None:
        record.status, record.response_headers = plan.status, headers
    paced = 0
    try:
        await response.prepare(request)
        for event in events:
            if event.paced:
                if pacing.drop_after is not None and paced >= pacing.drop_after:
                    if record is not None:
                        record.response = b"".join(sent)
                    return _drop(request, record)
                paced += 1
                if pacing.delay > 0:
                    await asyncio.sleep(pacing.delay)
            # Each event is its own write, handed to the socket as soon as it is produced.
            await response.write(event.data)
            if record is not None:
                sent.append(event.data)
        await response.write_eof()
    except ConnectionError:
        # The client went away mid-stream: keep what was sent, like a backend would not notice.
        if record is not None:
            record.client_disconnected = True
    if record is not None:
        record.response = b"".join(sent)
        record.finished = time.monotonic()
    return response


def _drop(request: web.Request, record: LoggedRequest | None) -> web.StreamResponse:
    """Cut the connection without finishing the response, like a backend dying mid-request."""
    if record is not None:
        record.dropped = True
        record.finished = time.monotonic()
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError


async def _plan(
    request: web.Request, state: SimulatorState, body: bytes, headers: dict[str, str]
) -> tuple[Plan, str | None]:
    config = state.config
    _check_auth(request, config)
    route = classify(request.path)
    if route is None:
        raise _Reply(404, errors.status_body(404))
    return await _dispatch(request, state, route, body, headers)


async def _dispatch(
    request: web.Request, state: SimulatorState, route: ApiRoute, body: bytes, headers: dict[str, str]
) -> tuple[Plan, str | None]:
    config = state.config
    version = request.query.get("api-version", "")
    # Dated surfaces need a known api-version; only /openai/v1/... works without one.
    v1 = route.surface != "deployments" and request.path.startswith("/openai/v1/")
    problem = catalog.api_version_problem(version, v1=v1)
    if problem is not None:
        refused, code, message = problem
        raise _Reply(refused, errors.error_body(code, message))
    parts = [p for p in request.path.removeprefix("/openai/").removeprefix("v1/").split("/") if p]
    if route.surface == "v1" and parts and parts[0] in ("files", "batches"):
        make = batches.context_factory(config, state.rng, f"{request.scheme}://{request.host}")
        try:
            return batches.handle(
                request.method, parts, body, request.headers.get("Content-Type", ""), state.files, make
            ), None
        except batches.NotFound:
            raise _Reply(
                404,
                errors.error_body(
                    "NotFound",
                    f"The {parts[0][:-1]} '{parts[1] if len(parts) > 1 else ''}' was not found.",
                    param=None,
                    type="invalid_request_error",
                ),
            ) from None
    if route.api == "realtime" and request.method == "POST" and parts[1:] == ["client_secrets"]:
        # WebRTC session creation: an ephemeral key for the browser (the media goes elsewhere).
        session = orjson.loads(body or b"{}").get("session") or {}
        secret = {
            "value": f"ek_{state.rng.getrandbits(128):032x}",
            "expires_at": int(time.time()) + 600,
            "session": {"type": "realtime", "object": "realtime.session", "model": session.get("model")},
        }
        return Plan(body=orjson.dumps(secret)), None
    if request.method != "POST":
        return _read(request, state, route), None
    builder = _BUILDERS.get(route.api)
    if builder is None:
        raise _Reply(404, errors.status_body(404))
    parsed: dict[str, Any] = {}
    if body[:1] in (b"{", b" ", b"\n", b"\r", b"\t") or request.content_type == "application/json":
        try:
            loaded = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _Reply(
                400,
                errors.error_body(
                    "BadRequest", "We could not parse the JSON body of your request.", param=None, type=None
                ),
            ) from None
        if not isinstance(loaded, dict):
            raise _Reply(400, errors.error_body("BadRequest", "The request body must be a JSON object."))
        parsed = loaded
    model_field = parsed.get("model")
    if route.deployment is None and request.content_type == "multipart/form-data":
        model_field = audio.form_fields(request.headers.get("Content-Type", ""), body).get("model")
    deployment = route.deployment or (model_field if isinstance(model_field, str) else "") or ""
    if deployment:
        headers["x-ms-deployment-name"] = deployment
    if route.surface == "v1" and not deployment:
        raise BadRequest("'model' is a required property.", param="model")
    spec = None
    if state.served is not None:
        spec = state.served.get(deployment)
        if spec is None:
            raise _Reply(404, errors.DEPLOYMENT_NOT_FOUND)
    operation = _OPERATION_NAMES.get(route.api, "Operation")
    limited = state.throttled(deployment)
    if limited is not None:
        kind, wait = limited
        seconds = max(1, math.ceil(wait))
        raise _Reply(
            429,
            errors.rate_limited_body(kind, operation=operation, version=version, seconds=seconds),
            {"retry-after": str(seconds), "retry-after-ms": str(max(1, math.ceil(wait * 1000)))},
        )
    if parsed.get("stream_options") is not None and route.api in ("chat.completions", "completions"):
        known = v1 or catalog.version_at_least(version, catalog.STREAM_OPTIONS_SINCE)
        if not known or (spec is not None and not spec.stream_usage):
            raise _Reply(400, errors.STREAM_OPTIONS_UNRECOGNIZED)

    forced = _header_number(request, "x-sim-status")
    status = int(forced) if forced is not None else None
    if status is None and state.roll(config.throttle_rate):
        status = 429
    if status is None:
        status = state.next_fail_status()
    if status is not None and status != 200:
        seconds = max(1, round(config.retry_after_ms / 1000))
        extra = {}
        if status == 429:
            extra = {"retry-after": str(seconds), "retry-after-ms": str(config.retry_after_ms)}
        raise _Reply(status, errors.status_body(status, operation=operation, version=version, seconds=seconds), extra)
    if _JAILBREAK_MARKER in body:
        raise _Reply(400, errors.JAILBREAK_RESPONSES if route.api == "responses" else errors.JAILBREAK)
    if _CONTENT_FILTER_MARKER in body:
        raise _Reply(400, errors.CONTENT_FILTER_RESPONSES if route.api == "responses" else errors.CONTENT_FILTER)

    if spec is None or deployment in config.models:
        model = model_for(deployment, config.models)
    else:
        model = spec.reported_model
    chunks = _header_number(request, "x-sim-chunks")
    large = _header_number(request, "x-sim-large-chunk")
    ctx = Context(
        config=config,
        deployment=deployment,
        model=model,
        enc=encoding_for(model),
        rng=state.rng,
        chunks=max(1, int(chunks if chunks is not None else config.stream_chunks)),
        async_filter=_flag(request.headers.get("x-sim-async-filter"), config.async_filter),
        large_chunk=int(large if large is not None else config.large_chunk_bytes),
        content=_content(request.headers.get("x-sim-content")),
        raw=body,
        content_type=request.headers.get("Content-Type", ""),
        base_url=f"{request.scheme}://{request.host}",
        responses=state.responses,
    )
    stream = bool(parsed.get("stream"))
    return builder(parsed, ctx, stream), route.api


def _read(request: web.Request, state: SimulatorState, route: ApiRoute) -> Plan:
    """GET/DELETE: stored responses (and their input items) and the model list."""
    if route.api == "responses" and route.response_id is not None:
        stored = state.responses.get(route.response_id)
        if stored is None:
            raise _Reply(
                404,
                errors.error_body(
                    "NotFound",
                    f"Response with id '{route.response_id}' not found.",
                    param=None,
                    type="invalid_request_error",
                ),
            )
        if request.method == "DELETE" and request.path.rstrip("/").endswith(route.response_id):
            del state.responses[route.response_id]
            return Plan(body=orjson.dumps({"id": route.response_id, "object": "response.deleted", "deleted": True}))
        if request.method == "GET":
            if request.path.rstrip("/").endswith("/input_items"):
                return Plan(body=responses.input_items_page(stored))
            if request.path.rstrip("/").endswith(route.response_id):
                return Plan(body=stored.body)
    if route.api in ("other", "models") and request.method == "GET" and request.path.rstrip("/").endswith("/models"):
        served = state.served or catalog.DEFAULT_DEPLOYMENTS
        data = [
            {
                "id": state.config.models.get(n) or served[n].reported_model,
                "object": "model",
                "created": 0,
                "owned_by": "system",
            }
            for n in served
        ]
        return Plan(body=orjson.dumps({"object": "list", "data": data}))
    if route.api == "other" and request.method == "GET" and request.path.rstrip("/") == "/openai/deployments":
        names = list(state.config.deployments or ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "text-embedding-3-small"))
        data = [
            {
                "id": n,
                "model": model_for(n, state.config.models),
                "object": "deployment",
                "status": "succeeded",
                "created_at": 0,
                "updated_at": 0,
                "owner": "organization-owner",
            }
            for n in names
        ]
        return Plan(body=orjson.dumps({"object": "list", "data": data}))
    raise _Reply(404, errors.status_body(404))


async def _image(request: web.Request) -> web.Response:
    png = images.image_bytes(request.match_info["name"])
    if png is None:
        return web.Response(status=404, body=errors.status_body(404), content_type="application/json")
    return web.Response(body=png, content_type="image/png")


_BUILDERS: dict[str, Builder] = {
    "chat.completions": lambda body, ctx, stream: chat.build(body, ctx, stream=stream),
    "completions": lambda body, ctx, stream: completions.build(body, ctx, stream=stream),
    "embeddings": lambda body, ctx, stream: embeddings.build(body, ctx, stream=False),
    "images.generations": lambda body, ctx, stream: images.build(body, ctx, stream=False),
    "audio.transcriptions": lambda body, ctx, stream: audio.transcribe(ctx, translate=False),
    "audio.translations": lambda body, ctx, stream: audio.transcribe(ctx, translate=True),
    "audio.speech": lambda body, ctx, stream: audio.speech(body, ctx),
    "responses": lambda body, ctx, stream: responses.build(body, ctx, stream=stream),
}
