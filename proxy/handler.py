"""The HTTP trigger's logic: one client request in, the chosen AOAI backend's answer out, captured once.

`Proxy.handle` composes the two halves: `proxy/call.py` (the request and its upstream leg) and
`proxy/relay.py` (the answer's way back and its end). The gateway's own answers (errors it raises
before anything reached the client) are written here, also captured once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from fastapi import Request, Response
from starlette.requests import ClientDisconnect

from proxy import telemetry
from proxy.audience import AudienceGate, filter_list
from proxy.budget_gate import BudgetGate
from proxy.cache import CACHE_HEADER, CacheGate
from proxy.call import REQUEST_ID_HEADER, ProxyCall, UpstreamLeg, identity_from, prepare
from proxy.capture import CaptureWriter
from proxy.credentials import Credentials
from proxy.ownership import Ownership, both, creates, listed_kind, referenced
from proxy.recorder import ExchangeRecorder
from proxy.relay import Relay, RelayResponse
from proxy.routing.affinity import ResponsePinning
from proxy.routing.backends import Backend, parse_backends
from proxy.routing.policy import RoutingPolicy
from proxy.routing.pool import BackendPool
from proxy.streams.safety import StreamSafety
from proxy.upstream import Timeouts, UpstreamClient, client_response_headers
from shared.audience import AudienceTable
from shared.errors import ErrorResponse
from shared.exchange import Exchange
from shared.ports import AffinityStore, OwnershipStore, Ports, ResponseCache
from shared.privacy.capture import CapturePrivacy
from shared.privacy.language import language_stage
from shared.privacy.pii import RECOGNIZERS, PiiRedactor
from shared.privacy.policy import CapturePolicy
from shared.settings import Settings

log = logging.getLogger(__name__)


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
        audience: AudienceTable | None = None,
        cache_store: Callable[[], ResponseCache | None] | None = None,
        budgets: BudgetGate | None = None,
        owners: Callable[[], OwnershipStore | None] | None = None,
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
        #: Budget admission before forwarding (None: no budgets).
        self.budgets = budgets
        #: Tenant isolation of stored objects (None: every caller reaches every id, as in unit tests).
        self.ownership = Ownership(owners) if owners is not None else None
        self.leg = UpstreamLeg(pool, upstream, credentials, self.pinning)
        #: Per-audience policy: allow-lists and the response cache (`AUDIENCE_POLICIES`).
        table = audience or AudienceTable.from_settings(
            settings.audience_policies_json, settings.extra.get("CAPTURE_LEVELS")
        )
        self.audience = AudienceGate(table)
        self.cache = CacheGate(table, cache_store or (lambda: None), capture)
        self._warm_up: asyncio.Task[None] | None = None

    async def warm_up(self) -> None:
        """First-request work off the hot path: managed-identity tokens, the spilled-exchange drain."""
        self.capture.start()
        await self.credentials.warm(self.backends)

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
            call = await prepare(self.settings, request, rec, path, header_items, first)
            resolved = self.audience.admit(call)
            refs = referenced(call.method, call.path, call.json_body) if self.ownership is not None else []
            if refs:
                await self.ownership.check(refs, identity.subscription_id)  # type: ignore[union-attr]
            plan = self.cache.plan(call, resolved, first) if resolved.value.cache is not None else None
            if plan is not None:
                entry = await self.cache.lookup(plan)
                if entry is not None:
                    return self.cache.serve(call, plan, entry)
            if self.budgets is not None:
                await self.budgets.admit(call)
            resp = await self.leg.attempt(call)
            if resp.status == 200 and self.audience.lists_to_filter(call, resolved):
                # A model or deployment list, cut to the caller's allow-list: read whole (small),
                # relayed as the head of the body.
                call.head = filter_list(call.head + await resp.read(), resolved.value)
                call.extra["body_rewritten"] = True
            if self.ownership is not None:
                await self._own_listing(call, resp, identity.subscription_id)
        except ErrorResponse as error:
            if rec.budget is not None:  # admitted, then no backend answered: the budget headers still go
                error.headers.update(call.extra.get("budget_headers", ()))
            return self._answer(rec, error)
        except ClientDisconnect:
            # The client left while sending its body: nobody reads an answer, and the record says 499.
            rec.client_disconnected = True
            self.capture.submit(rec.finish())
            return Response(status_code=499)
        except Exception as exc:  # a defect: still one exchange, still an AOAI-shaped answer
            log.exception("proxy failure for %s", rid)
            return self._answer(rec, ErrorResponse(f"The gateway failed to handle the request ({type(exc).__name__})."))

        headers = client_response_headers(resp.headers.items())  # without AOAI's framing headers
        headers.extend(call.gateway_headers.items())
        event_stream = resp.headers.get("content-type", "").startswith("text/event-stream")
        headers.extend(call.extra.get("budget_headers", ()))
        if call.filter_usage and not event_stream:
            call.filter_usage = False  # an error answer (JSON): nothing to hold back
        rec.set_response(resp.status, headers)
        length = str(len(call.head)) if call.extra.get("body_rewritten") else resp.headers.get("content-length")
        if length is not None and not event_stream and "content-encoding" not in resp.headers:
            # A JSON answer is relayed byte for byte (or was read whole and rewritten): send its
            # length, so the server writes it as is (no chunked framing, no closing empty chunk)
            # and a cut body is seen as cut.
            headers.append(("content-length", length))
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
        if plan is not None:
            headers.append((CACHE_HEADER, self.cache.header_for(plan, resp.status)))
            call.before_capture = self.cache.after(plan, rec, resp.status, resp.headers.get("content-type", ""))
        if self.ownership is not None and creates(
            call.method, call.path, resp.status, any(r.via == "path" for r in refs), call.json_body
        ):
            stream = resp.headers.get("content-type", "").startswith("text/event-stream")
            call.created_id_tap = both(
                call.created_id_tap, self.ownership.tap(identity.subscription_id, stream, rec.chunks, call.path)
            )
        headers.append((REQUEST_ID_HEADER, rid))
        headers.append(telemetry.stamp_overhead(rec, rec.first_byte or rec.elapsed_ms()))
        relay = Relay(call, resp, upstream=self.upstream, pool=self.pool, capture=self.capture, safety=self.safety)
        return RelayResponse(
            relay, resp.status, [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        )

    async def _own_listing(self, call: ProxyCall, resp: aiohttp.ClientResponse, subscription: str) -> None:
        """A listing of files or batches keeps only the caller's: read whole (a page is small), filtered."""
        kind = listed_kind(call.method, call.path)
        if kind is None or not 200 <= resp.status < 300 or "json" not in resp.headers.get("content-type", ""):
            return
        assert self.ownership is not None
        try:
            async with asyncio.timeout(self.upstream.timeouts.idle):
                body = call.head + await resp.read()
            call.head = await self.ownership.filter_list(body, kind, subscription)
        except BaseException:
            resp.close()
            raise
        call.extra["body_rewritten"] = True

    def _answer(self, rec: ExchangeRecorder, error: ErrorResponse) -> Response:
        body = rec.answer_error(error)
        name, value = telemetry.stamp_overhead(rec, rec.elapsed_ms())
        self.capture.submit(rec)  # finished in the capture task, which never gives up on it
        headers = {**error.headers, REQUEST_ID_HEADER: rec.request_id, name: value}
        return Response(content=body, status_code=error.status, headers=headers, media_type="application/json")

    async def aclose(self) -> None:
        """Finish pending captures and close upstream connections (host shutdown)."""
        if self._warm_up is not None and not self._warm_up.done():
            self._warm_up.cancel()
        await self.capture.aclose()
        if self.pinning is not None:
            await self.pinning.drain()
        if self.ownership is not None:
            await self.ownership.drain()
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
        CaptureWriter(ports, outbox, privacy=capture_privacy(settings), record_in_place=_in_place(settings, ports)),
        affinity=lambda: ports().affinity,
        safety=StreamSafety.from_settings(settings),
        cache_store=lambda: ports().cache,
        budgets=BudgetGate(lambda: ports().budgets),
        owners=lambda: ports().owners,
    )


def capture_privacy(settings: Settings) -> CapturePrivacy | None:
    """CAPTURE_LEVELS, or None when every audience is captured in `full` (nothing to apply)."""
    policy = CapturePolicy.parse(settings.capture_levels_json)
    if not policy.table and policy.default == "full":
        return None
    stage = language_stage(settings.pii_language_endpoint, settings.pii_language_key)
    return CapturePrivacy(policy, PiiRedactor((*RECOGNIZERS, stage), secrets=False) if stage else None)


def _in_place(settings: Settings, ports: Callable[[], Ports]) -> Callable[[Exchange], Awaitable[object]]:
    """The parser's record step for exchanges that are never stored (capture level `none`)."""
    enricher = None

    async def record(exchange: Exchange) -> object:
        nonlocal enricher
        from parser.enrich import Enricher
        from parser.handler import record_in_place

        enricher = enricher or Enricher.from_settings(settings)
        return await record_in_place(exchange, ports(), enricher=enricher)

    return record
