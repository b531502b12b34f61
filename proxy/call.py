"""One client request on its way upstream: who asks, for what, and the upstream leg that answers it.

`prepare` turns the HTTP request into a `ProxyCall` (resolved path, route, body, deployment, usage
injection); `UpstreamLeg.attempt` runs affinity, backend selection and failover and returns the open
upstream response. Nothing has reached the client while either runs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import orjson
from fastapi import Request

from proxy.credentials import Credentials
from proxy.ownership import AnswerTap
from proxy.recorder import ExchangeRecorder
from proxy.routing.affinity import ResponsePinning
from proxy.routing.backends import Backend
from proxy.routing.failover import AiohttpAnswer, read_answer, run_failover
from proxy.routing.pool import BackendPool
from proxy.streams import usage as stream_usage
from proxy.upstream import UpstreamClient, upstream_request_headers
from shared.errors import BadRequest, HeadersTooLarge, NotFound, PayloadTooLarge, RealtimeNotSupported, RequestTimeout
from shared.exchange import Identity
from shared.normalize.apis import ApiRoute, classify, deployment_for, resolve_path
from shared.redaction import forwardable_query
from shared.settings import Settings
from shared.telemetry.tracecontext import child_traceparent

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-gateway-request-id"
#: The answer to a Realtime API WebSocket upgrade (docs/apim.md, "Realtime API").
REALTIME_REFUSAL = (
    "The Realtime API needs a WebSocket, which this gateway (an HTTP-triggered function) cannot hold. "
    "Connect the WebSocket to the API Management realtime API instead: wss://<your APIM host>/openai/realtime "
    "(or /openai/v1/realtime) with the same subscription key. WebRTC session creation "
    "(POST /openai/v1/realtime/client_secrets) works through this gateway."
)
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def identity_from(headers: Mapping[str, str]) -> tuple[str, Identity]:
    """Request id and caller identity from the `x-gateway-*` headers APIM sets (fresh id otherwise)."""
    rid = headers.get(REQUEST_ID_HEADER) or ""
    if not _SAFE_REQUEST_ID.match(rid):
        rid = str(uuid.uuid4())
    return rid, Identity(
        subscription_id=headers.get("x-gateway-subscription-id") or "unknown",
        subscription_name=headers.get("x-gateway-subscription-name") or "unknown",
        product=headers.get("x-gateway-product") or "unknown",
        user_id=headers.get("x-gateway-user-id") or None,
        client_ip=headers.get("x-gateway-client-ip") or None,
    )


async def read_body(request: Request, limit: int, declared: str | None = None, timeout: float | None = None) -> bytes:
    """The whole request body, refusing (413) as soon as it exceeds `limit` bytes, and (408) when
    it has not all arrived within `timeout` seconds: a body trickled a byte at a time must not
    hold a connection and a task for ever.

    `declared` is the request's content-length when the caller already looked it up."""
    if declared is None:
        declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than the gateway's limit of {limit} bytes.")
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                buf += chunk
                if len(buf) > limit:
                    raise PayloadTooLarge(f"The request body is larger than the gateway's limit of {limit} bytes.")
    except TimeoutError:
        log.warning("request body not received within %gs (%d bytes so far): answered 408", timeout, len(buf))
        raise RequestTimeout(f"The request body did not arrive within {timeout:g} seconds.") from None
    return bytes(buf)


def check_header_size(header_items: list[tuple[str, str]], limit: int) -> None:
    """Refuse (431) headers that would go upstream beyond `limit` bytes: a client must not make the
    gateway send AOAI what AOAI's own front end would refuse, nor store it."""
    size = 0
    for name, value in header_items:
        size += len(name) + len(value) + 4
        if size > limit:
            raise HeadersTooLarge(f"The request headers are larger than the gateway's limit of {limit} bytes.")


def json_body_of(body: bytes, content_type: str | None) -> Any:
    if not body or (content_type and "json" not in content_type.lower()):
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


@dataclass(slots=True)
class ProxyCall:
    """Everything known about one call on its way upstream."""

    request_id: str
    recorder: ExchangeRecorder
    method: str
    path: str
    route: ApiRoute
    query: dict[str, str]
    params: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    json_body: Any
    deployment: str | None
    filter_usage: bool = False
    backend: Backend | None = None
    #: `x-gateway-backend` / `x-gateway-attempts` for the client, set by `attempt`.
    gateway_headers: dict[str, str] = field(default_factory=dict)
    #: Watches an answer for the ids it created (Responses API affinity, owners of stored objects;
    #: None for every other call).
    created_id_tap: AnswerTap | None = None
    #: Body bytes `attempt` already read from the response it returns (e.g. a whole error body
    #: that failover inspected); relayed before the rest of the body.
    head: bytes = b""
    #: Runs in the capture task before the exchange is built (storing a complete answer in the cache).
    before_capture: Callable[[], Awaitable[None]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def prepare(
    settings: Settings,
    request: Request,
    rec: ExchangeRecorder,
    path: str,
    header_items: list[tuple[str, str]],
    first: dict[str, str],
) -> ProxyCall:
    """The call to forward, or a `ErrorResponse` (400 outside the API surface, 404, 413)."""
    resolved = resolve_path(path)
    if resolved is None:
        raise BadRequest("Invalid URL: the path is not an Azure OpenAI data-plane path.")
    path = resolved  # from here on, the only path: the upstream URL is built from it
    route = classify(path)
    if route is None or (path == "/openai/deployments" and request.method != "GET"):  # the list is read-only
        raise NotFound(f"Resource not found: {path} is not an Azure OpenAI data-plane path.")
    if route.api == "realtime" and first.get("upgrade", "").lower() == "websocket":
        raise RealtimeNotSupported(REALTIME_REFUSAL)
    check_header_size(header_items, settings.max_request_header_bytes)
    body = await read_body(
        request, settings.max_request_body_bytes, first.get("content-length", ""), settings.request_body_timeout_seconds
    )
    pairs = request.query_params.multi_items()
    rec.set_request(request.method, path, pairs, header_items, body)
    content_type = first.get("content-type")
    # The body is parsed only when the deployment lives there (v1) or usage injection may apply.
    needs_json = route.deployment is None or (settings.inject_stream_usage and route.api in stream_usage.APIS)
    json_body = json_body_of(body, content_type) if needs_json and request.method == "POST" else None
    query = dict(pairs)
    call = ProxyCall(
        request_id=rec.request_id,
        recorder=rec,
        method=request.method,
        path=path,
        route=route,
        query=query,
        params=forwardable_query(pairs),
        headers=upstream_request_headers(header_items),
        body=body,
        json_body=json_body,
        deployment=deployment_for(route, json_body),
    )
    if settings.inject_stream_usage and stream_usage.should_inject(route, query, json_body):
        injected = stream_usage.inject(cast(dict[str, Any], json_body))  # should_inject: a JSON object
        if injected is not None:
            call.body = injected
            call.filter_usage = True
            rec.usage_injected = True
    return call


class UpstreamLeg:
    """Affinity, then backends in the pool's order until one answers for good."""

    def __init__(
        self,
        pool: BackendPool,
        upstream: UpstreamClient,
        credentials: Credentials,
        pinning: ResponsePinning | None,
    ) -> None:
        self.pool = pool
        self.upstream = upstream
        self.credentials = credentials
        self.pinning = pinning

    def upstream_url(self, backend: Backend, call: ProxyCall) -> str:
        path = call.path
        if call.route.surface == "deployments" and call.deployment:
            mapped = backend.upstream_deployment(call.deployment)
            if mapped != call.deployment:
                path = path.replace(f"/deployments/{call.deployment}/", f"/deployments/{mapped}/", 1)
        return backend.endpoint + path

    def upstream_body(self, backend: Backend, call: ProxyCall) -> bytes:
        """The request bytes for `backend`: the client's (as prepared), replayed unchanged, except
        that on the v1 surface a `deployment_map` entry renames the body's `model` (the deployment)."""
        if call.route.surface != "v1" or not call.deployment or not isinstance(call.json_body, dict):
            return call.body
        mapped = backend.upstream_deployment(call.deployment)
        if mapped == call.deployment:
            return call.body
        bodies: dict[str, bytes] = call.extra.setdefault("mapped_bodies", {})
        body = bodies.get(mapped)
        if body is None:
            body = bodies[mapped] = orjson.dumps({**orjson.loads(call.body), "model": mapped})
        return body

    async def attempt(self, call: ProxyCall) -> aiohttp.ClientResponse:
        """The upstream leg: affinity, then backends in the pool's order until one answers for good.

        Nothing has reached the client while this runs, so trying another backend is safe. Every
        try is recorded on the exchange; the gateway's own answers (429 when every backend is
        cooling down, 502/504 when none answered, 404 when none serves the deployment) are raised.
        """
        pinned = await self.pinning.lookup(call.route, call.json_body) if self.pinning is not None else None
        idle = self.upstream.timeouts.idle
        traceparent = call.headers.get("traceparent")
        span_ids: list[str | None] = []  # one per send, in the order run_failover records attempts

        async def send(backend: Backend) -> AiohttpAnswer:
            headers = {**call.headers, **await self.credentials.headers_for(backend)}
            child = child_traceparent(traceparent) if traceparent else None
            span_ids.append(child[1] if child else None)
            if child:
                headers["traceparent"] = child[0]
            resp = await self.upstream.send(
                call.method,
                self.upstream_url(backend, call),
                headers=headers,
                params=call.params,
                body=self.upstream_body(backend, call),
            )
            # An error body is read whole (to judge a 404); it is small, but bounded all the same.
            async with asyncio.timeout(idle):
                return await read_answer(resp)

        result = await run_failover(send, self.pool, call.deployment, pinned=pinned)
        for attempt, span_id in zip(result.attempts, span_ids, strict=False):
            attempt.span_id = span_id
        call.recorder.attempts = result.attempts
        call.gateway_headers = result.response_headers()
        error = result.gateway_error()
        if error is not None:
            if result.error is not None:
                log.warning(
                    "no backend answered %s: %s", call.request_id, result.attempts[-1].error if result.attempts else ""
                )
            error.headers.update(call.gateway_headers)
            raise error
        answer = result.answer
        assert answer is not None and result.backend is not None
        call.backend = result.backend
        call.recorder.backend = result.backend.name
        call.head = answer.head
        return answer.response
