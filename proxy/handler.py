"""The streaming proxy: one client request in, the chosen AOAI backend's answer out, captured once.

Hook points for later issues (keep them as they are, replace or wrap them):
- `Proxy.attempt`          the whole upstream leg: affinity, backend selection and failover
                           (`proxy/failover.run_failover` over the app's `BackendPool`),
                           authenticate, send; it returns an open upstream response;
- `Proxy.client_stream`    the client-bound byte stream as a composable async iterator
                           (content-safety enforcement wraps it).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import orjson
from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from proxy import telemetry
from proxy.capture import CaptureWriter, ExchangeRecorder
from proxy.credentials import Credentials
from proxy.routing.backends import Backend, parse_backends
from proxy.routing.failover import AiohttpAnswer, read_answer, run_failover
from proxy.routing.outcomes import Outcome
from proxy.routing.pinning import CreatedIdTap, ResponsePinning
from proxy.routing.policy import RoutingPolicy
from proxy.routing.pool import BackendPool
from proxy.streams import usage as stream_usage
from proxy.streams.broken import UpstreamBroken
from proxy.streams.safety import StreamSafety
from proxy.upstream import Timeouts, UpstreamClient, client_response_headers, upstream_request_headers
from shared.errors import BadRequest, GatewayError, NotFound, PayloadTooLarge
from shared.exchange import Identity
from shared.normalize.apis import ApiRoute, classify, deployment_for, resolve_path
from shared.ports import AffinityStore, Ports
from shared.redaction import forwardable_query
from shared.settings import Settings

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-gateway-request-id"
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


async def read_body(request: Request, limit: int, declared: str | None = None) -> bytes:
    """The whole request body, refusing (413) as soon as it exceeds `limit` bytes.

    `declared` is the request's content-length when the caller already looked it up."""
    if declared is None:
        declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than the gateway's limit of {limit} bytes.")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise PayloadTooLarge(f"The request body is larger than the gateway's limit of {limit} bytes.")
    return bytes(buf)


def _json_body(body: bytes, content_type: str | None) -> Any:
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
    #: Watches a Responses API answer for the id it created (None for every other call).
    created_id_tap: CreatedIdTap | None = None
    #: Body bytes `attempt` already read from the response it returns (e.g. a whole error body
    #: that failover inspected); relayed before the rest of the body.
    head: bytes = b""
    #: Set once the exchange was handed to the capture writer (exactly once per call).
    captured: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class RelayResponse(StreamingResponse):
    """A StreamingResponse that still finishes the capture when its body is never fully iterated.

    If the client goes away before the body generator starts (or while it is parked at a `yield`
    and the server stops iterating), the generator's `finally` may never run; `on_abandoned` does.

    Cheaper than Starlette's own `__call__` per request (the profile's largest single item): the
    headers arrive pre-encoded, and on ASGI servers below spec 2.4 (uvicorn) the body is sent from
    the calling task while one plain asyncio task waits for `http.disconnect` and cancels it, where
    Starlette runs an anyio task group with two tasks. Same semantics: a disconnect cancels the
    body iteration at once, and the response then returns normally.
    """

    def __init__(
        self,
        content: AsyncIterator[bytes],
        status_code: int,
        on_abandoned: Callable[[], None],
        raw_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if raw_headers is None:
            super().__init__(content, status_code=status_code)
        else:  # what StreamingResponse.__init__ sets, without building headers twice
            self.body_iterator = content
            self.status_code = status_code
            self.background = None
            self.raw_headers = raw_headers
        self._on_abandoned = on_abandoned

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            if scope["type"] == "http" and scope.get("asgi", {}).get("spec_version", "2.0") in _SPECS_BEFORE_2_4:
                await self._stream_until_disconnect(receive, send)
            else:
                await super().__call__(scope, receive, send)
        finally:
            self._on_abandoned()

    async def _stream_until_disconnect(self, receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        state = {"streaming": True, "disconnected": False}

        def client_left(listener: asyncio.Task[None]) -> None:
            if listener.cancelled() or listener.exception() is not None or not state["streaming"]:
                return
            state["disconnected"] = True
            task.cancel()

        listener = asyncio.get_running_loop().create_task(self.listen_for_disconnect(receive))
        listener.add_done_callback(client_left)
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if state["disconnected"] and task.uncancel() == 0:
                return  # the client went away: not an error, as with Starlette's task group
            raise
        finally:
            state["streaming"] = False
            listener.cancel()


#: ASGI spec versions for which Starlette listens for `http.disconnect` while streaming.
_SPECS_BEFORE_2_4 = frozenset({"2.0", "2.1", "2.2", "2.3"})


class Proxy:
    """The HTTP trigger's logic, with its collaborators injected (see `function_app.py`)."""

    def __init__(
        self,
        settings: Settings,
        upstream: UpstreamClient,
        credentials: Credentials,
        capture: CaptureWriter,
        backends: tuple[Backend, ...] | None = None,
        *,
        pool: BackendPool | None = None,
        affinity: Callable[[], AffinityStore] | None = None,
        safety: StreamSafety | None = None,
    ) -> None:
        self.settings = settings
        #: One pool per process: health, cooldowns and circuits are shared by every request.
        if pool is None:
            configured = backends if backends is not None else parse_backends(settings.backends_json)
            pool = BackendPool(configured, policy=RoutingPolicy.from_settings(settings))
        self.pool = pool
        self.backends = pool.backends
        #: Responses API affinity (None: no store, every request is routed normally).
        self.pinning = ResponsePinning(affinity, settings.responses_affinity_ttl_seconds) if affinity else None
        self.upstream = upstream
        self.credentials = credentials
        self.capture = capture
        self.safety = safety or StreamSafety.off()
        self._warm_up: asyncio.Task[None] | None = None

    async def warm_up(self) -> None:
        """First-request work off the hot path: managed-identity tokens, outbox replay."""
        await self.credentials.warm(self.backends)
        replayed = await self.capture.replay_outbox()
        if replayed:
            log.info("replayed %d spilled exchanges from %s", replayed, self.capture.outbox_dir)

    # ----------------------------------------------------------------------------- entry point
    async def handle(self, request: Request) -> Response:
        if self._warm_up is None:
            self._warm_up = asyncio.create_task(self.warm_up())
        # The headers decoded once; Starlette's `request.headers.get` decodes and scans on every call.
        header_items = request.headers.items()
        first = dict(reversed(header_items))  # name -> first value, as `Headers.get` answers
        rid, identity = identity_from(first)
        rec = ExchangeRecorder(rid, identity)
        tail = request.path_params.get("path")
        path = f"/openai/{tail}" if tail is not None else request.url.path
        rec.set_request(request.method, path, request.query_params.multi_items(), header_items, b"")
        try:
            call = await self._prepare(request, rec, path, header_items, first)
            resp = await self.attempt(call)
        except GatewayError as error:
            return self._answer(rec, error)
        except Exception as exc:  # a defect: still one exchange, still an AOAI-shaped answer
            log.exception("proxy failure for %s", rid)
            return self._answer(rec, GatewayError(f"The gateway failed to handle the request ({type(exc).__name__})."))

        headers = client_response_headers(resp.headers.items())
        headers.extend(call.gateway_headers.items())
        if call.filter_usage and not resp.headers.get("content-type", "").startswith("text/event-stream"):
            call.filter_usage = False  # an error answer (JSON): nothing to hold back
        rec.set_response(resp.status, headers)
        if self.pinning is not None and call.backend is not None:
            call.created_id_tap = self.pinning.tap(
                call.route,
                call.method,
                call.json_body,
                resp.status,
                resp.headers.get("content-type", ""),
                call.backend.name,
                rec.chunks,
            )
        headers.append((REQUEST_ID_HEADER, rid))
        headers.append(telemetry.stamp_overhead(rec, rec.first_byte or rec.elapsed_ms()))
        return RelayResponse(
            self._relay(call, resp),
            resp.status,
            lambda: self._finish(call, resp, completed=False),
            [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        )

    # ----------------------------------------------------------------------------- request side
    async def _prepare(
        self,
        request: Request,
        rec: ExchangeRecorder,
        path: str,
        header_items: list[tuple[str, str]],
        first: dict[str, str],
    ) -> ProxyCall:
        resolved = resolve_path(path)
        if resolved is None:
            raise BadRequest("Invalid URL: the path is not an Azure OpenAI data-plane path.")
        path = resolved  # from here on, the only path: the upstream URL is built from it
        route = classify(path)
        if route is None:
            raise NotFound(f"Resource not found: {path} is not an Azure OpenAI data-plane path.")
        body = await read_body(request, self.settings.max_request_body_bytes, first.get("content-length", ""))
        pairs = request.query_params.multi_items()
        rec.set_request(request.method, path, pairs, header_items, body)
        content_type = first.get("content-type")
        # The body is parsed only when the deployment lives there (v1) or usage injection may apply.
        needs_json = route.deployment is None or (self.settings.inject_stream_usage and route.api in stream_usage.APIS)
        json_body = _json_body(body, content_type) if needs_json and request.method == "POST" else None
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
        if self.settings.inject_stream_usage and stream_usage.should_inject(route, query, json_body):
            call.body = stream_usage.inject(cast(dict[str, Any], json_body))  # should_inject: a JSON object
            call.filter_usage = True
            rec.usage_injected = True
        return call

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

        async def send(backend: Backend) -> AiohttpAnswer:
            headers = {**call.headers, **await self.credentials.headers_for(backend)}
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

    # ----------------------------------------------------------------------------- response side
    async def upstream_chunks(self, call: ProxyCall, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """AOAI's body as it arrives; each piece is kept for the exchange (bytes appended, no parsing)."""
        chunks = call.recorder.chunks
        read = self.upstream.read
        tap = call.created_id_tap
        if call.head:
            chunks.append(call.head)
            if tap is not None:
                tap.feed(call.head)
            yield call.head
        if resp.content.at_eof():
            # `attempt` read the whole body (an error answer; one held during failover is released,
            # and reading a released response raises): nothing more to relay.
            if tap is not None:
                await tap.close()
            return
        while True:
            chunk = await read(resp)
            if not chunk:
                if tap is not None:
                    await tap.close()
                return
            chunks.append(chunk)
            if tap is not None:
                tap.feed(chunk)
            yield chunk

    def client_stream(self, call: ProxyCall, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """What the client receives: the upstream bytes, minus the injected usage chunk.

        Content safety (issue 7) wraps this iterator in `_relay` (`StreamSafety.wrap`). Without a
        usage chunk to hide it is `source` itself: no generator layer (a resumption per chunk) for nothing.
        """
        return self._without_usage_chunk(source) if call.filter_usage else source

    async def _without_usage_chunk(self, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        usage_filter = stream_usage.UsageChunkFilter()
        async for chunk in source:
            out = usage_filter.feed(chunk)
            if out:
                yield out
        tail = usage_filter.flush()
        if tail:
            yield tail

    async def _relay(self, call: ProxyCall, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        rec = call.recorder
        completed = False
        try:
            # Content safety (issue 7) composes here, around what the client would get (after the usage filter).
            stream = self.safety.wrap(call, resp, self.client_stream(call, self.upstream_chunks(call, resp)))
            async for chunk in stream:
                yield chunk
            completed = True
        except TimeoutError as exc:
            call.extra["upstream_failed"] = True
            rec.attempts[-1].error = "stream idle timeout"
            self._stream_failed(call, Outcome.failed("timeout"))
            log.warning("upstream stream idle timeout for %s", call.request_id)
            # Cut the client's connection as AOAI would have: a clean end would look complete.
            raise UpstreamBroken(call.request_id, "idle timeout") from exc
        except aiohttp.ClientError as exc:
            call.extra["upstream_failed"] = True
            rec.attempts[-1].error = f"stream broken: {type(exc).__name__}"
            self._stream_failed(call, Outcome.failed("connect_error"))
            log.warning("upstream stream broken for %s: %s", call.request_id, type(exc).__name__)
            raise UpstreamBroken(call.request_id, type(exc).__name__) from exc
        finally:
            self._finish(call, resp, completed)

    def _stream_failed(self, call: ProxyCall, outcome: Outcome) -> None:
        """A body that broke after its first byte counts against the backend's health (no retry:
        the client already has part of the answer)."""
        if call.backend is not None:
            self.pool.record(call.backend, outcome, deployment=call.deployment)

    def _finish(self, call: ProxyCall, resp: aiohttp.ClientResponse, completed: bool) -> None:
        """End of the response, whichever way it ended: release upstream, capture once."""
        if call.captured:
            return
        call.captured = True
        rec = call.recorder
        rec.last_byte = rec.elapsed_ms()
        if completed:
            resp.release()
        else:
            # Not every byte reached the client: it went away (an upstream failure is recorded on
            # the attempt instead). Closing drops the connection so AOAI stops generating.
            rec.client_disconnected = rec.client_disconnected or not call.extra.get("upstream_failed", False)
            resp.close()
        self.capture.submit(rec)  # finished (joined, redacted) in the capture task, off this response

    def _answer(self, rec: ExchangeRecorder, error: GatewayError) -> Response:
        body = rec.answer_error(error)
        name, value = telemetry.stamp_overhead(rec, rec.elapsed_ms())
        self.capture.submit(rec.finish())
        headers = {**error.headers, REQUEST_ID_HEADER: rec.request_id, name: value}
        return Response(content=body, status_code=error.status, headers=headers, media_type="application/json")

    async def aclose(self) -> None:
        """Finish pending captures and close upstream connections (host shutdown)."""
        if self._warm_up is not None and not self._warm_up.done():
            self._warm_up.cancel()
        await self.capture.drain()
        if self.pinning is not None:
            await self.pinning.drain()
        await self.safety.aclose()
        await self.upstream.close()
        await self.credentials.close()


def build_proxy(settings: Settings, ports: Callable[[], Ports]) -> Proxy:
    """The proxy with its real collaborators, from app settings."""
    outbox = Path(settings.capture_outbox_dir) if settings.capture_outbox_dir else None
    return Proxy(
        settings,
        UpstreamClient(Timeouts.from_settings(settings), settings.upstream_max_connections),
        Credentials(settings.extra),
        CaptureWriter(ports, outbox),
        affinity=lambda: ports().affinity,
        safety=StreamSafety.from_settings(settings),
    )
