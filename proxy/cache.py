"""The exact response cache around one call: decide, look up, serve a hit, store a complete answer.

Rules (key, repeatable requests, what is storable, stream <-> body conversion) are pure, in
`shared/response_cache.py`. Here: the audience's cache policy and capture level, the client's
`Cache-Control`, the `x-gateway-cache` header, and the store behind `Ports.cache`. Nothing is held
in memory beyond the one entry being served or stored: the store (SQLite locally, Cosmos DB with
per-item TTL in Azure) is the cache. A store that fails is a miss, never an error for the client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from fastapi import Response
from fastapi.responses import StreamingResponse

from proxy import telemetry
from proxy.call import REQUEST_ID_HEADER, ProxyCall, json_body_of
from proxy.capture import CaptureWriter
from proxy.recorder import ExchangeRecorder
from shared import response_cache
from shared.audience import BODILESS_CAPTURE_LEVELS, AudiencePolicy, AudienceTable, CachePolicy, Resolved
from shared.ports import ResponseCache

log = logging.getLogger(__name__)

CACHE_HEADER = "x-gateway-cache"
_STREAM_TYPE = "text/event-stream; charset=utf-8"
_JSON_TYPE = "application/json"


@dataclass(slots=True)
class CachePlan:
    """What the cache does for one call: `status` is `lookup` (then hit, miss or store) or `bypass`."""

    status: str
    policy: CachePolicy
    key: str = ""
    reason: str | None = None
    api: str = ""


def cache_control(value: str | None) -> set[str]:
    """The request's `Cache-Control` directives, lower-cased, without arguments."""
    if not value:
        return set()
    return {part.split("=", 1)[0].strip().lower() for part in value.split(",") if part.strip()}


class CacheGate:
    """One per process: the audience table, the store (from the ports, on first use) and a clock."""

    def __init__(
        self,
        table: AudienceTable,
        store: Callable[[], ResponseCache | None],
        capture: CaptureWriter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self._store = store
        self._capture = capture
        self._clock = clock

    def plan(
        self, call: ProxyCall, resolved: Resolved[AudiencePolicy], request_headers: dict[str, str]
    ) -> CachePlan | None:
        """None when the audience has no cache (no header, no record field); else the plan, noted on the exchange."""
        policy = resolved.value.cache
        if policy is None:
            return None
        plan = self._decide(call, policy, request_headers)
        call.recorder.cache = {"status": plan.status, "reason": plan.reason, "key": plan.key[:16] or None}
        return plan

    def _decide(self, call: ProxyCall, policy: CachePolicy, request_headers: dict[str, str]) -> CachePlan:
        identity = call.recorder.identity
        level = self.table.capture_level(identity.product, identity.subscription_id)
        if level in BODILESS_CAPTURE_LEVELS:
            return CachePlan("bypass", policy, reason=f"capture level {level} forbids storing bodies")
        if call.method != "POST" or not call.deployment:
            return CachePlan("bypass", policy, reason="not a model call")
        if call.json_body is None:  # parsed only when needed so far (the v1 surface, usage injection)
            call.json_body = json_body_of(call.body, request_headers.get("content-type"))
        directives = cache_control(request_headers.get("cache-control"))
        if "no-cache" in directives or "no-store" in directives:
            return CachePlan("bypass", policy, reason="Cache-Control: " + ", ".join(sorted(directives)))
        why = response_cache.repeatable(call.route.api, call.json_body)
        if why is not None:
            return CachePlan("bypass", policy, reason=why)
        scope = f"product:{identity.product}" if policy.shared else f"subscription:{identity.subscription_id}"
        key = response_cache.cache_key(
            scope, call.deployment, call.route.api, call.query.get("api-version"), call.json_body
        )
        return CachePlan("lookup", policy, key=key, api=call.route.api)

    async def lookup(self, plan: CachePlan) -> response_cache.Entry | None:
        store = self._store()
        if store is None or plan.status != "lookup":
            return None
        try:
            raw = await store.get(plan.key)
        except Exception as exc:  # a cache that is down is a miss
            log.warning("response cache lookup failed: %s", type(exc).__name__)
            return None
        return response_cache.Entry.from_bytes(raw) if raw is not None else None

    def serve(self, call: ProxyCall, plan: CachePlan, entry: response_cache.Entry) -> Response:
        """The stored answer in the form the client asked for, recorded as a hit (no upstream call)."""
        rec = call.recorder
        body = call.json_body if isinstance(call.json_body, dict) else {}
        stream = response_cache.wants_stream(body)
        if stream:
            payload = response_cache.as_stream(entry, response_cache.wants_usage(body))
            content_type = _STREAM_TYPE
        else:
            payload = response_cache.as_body(entry)
            content_type = _JSON_TYPE
        headers = [("content-type", content_type), (CACHE_HEADER, "hit")]
        rec.set_response(200, headers)
        rec.chunks = [payload]
        rec.usage_injected = False  # nothing went upstream: the client got exactly what it asked for
        rec.cache = {
            "status": "hit",
            "reason": None,
            "key": plan.key[:16],
            "age_seconds": round(max(0.0, self._clock() - entry.stored_at), 3),
            "usage": entry.usage,
        }
        headers.append((REQUEST_ID_HEADER, rec.request_id))
        headers.append(telemetry.stamp_overhead(rec, rec.first_byte or rec.elapsed_ms()))
        rec.last_byte = rec.elapsed_ms()
        self._capture.submit(rec)
        if not stream:
            return Response(content=payload, status_code=200, headers=dict(headers[1:]), media_type=content_type)
        return StreamingResponse(_events(payload), status_code=200, headers=dict(headers[1:]), media_type=content_type)

    def header_for(self, plan: CachePlan, status: int) -> str:
        """`x-gateway-cache` for a live answer: `store` when AOAI's answer may be stored, else `miss`/`bypass`."""
        if plan.status == "bypass":
            return "bypass"
        return "store" if status == 200 else "miss"

    def after(
        self, plan: CachePlan, rec: ExchangeRecorder, status: int, content_type: str
    ) -> Callable[[], Awaitable[None]] | None:
        """The step the capture runs before building the exchange: store a complete answer."""
        if rec.cache is None or plan.status != "lookup":
            return None
        rec.cache["status"] = self.header_for(plan, status)
        if status != 200:
            rec.cache["stored"] = False
            rec.cache["reason"] = f"status {status}"
            return None
        rec.cache["stored"] = False
        rec.cache["reason"] = "the answer did not reach the client whole"

        async def store() -> None:
            await self._put(plan, rec, status, content_type)

        return store

    async def _put(self, plan: CachePlan, rec: ExchangeRecorder, status: int, content_type: str) -> None:
        cache = rec.cache
        assert cache is not None
        if rec.enforcement is not None and rec.enforcement.get("action") != "released":
            cache["reason"] = "in-stream enforcement stopped the answer"
            return
        raw = b"".join(rec.chunks)
        if len(raw) > plan.policy.max_entry_bytes:
            cache["reason"] = f"the answer is larger than {plan.policy.max_entry_bytes} bytes"
            return
        entry, why = response_cache.storable(plan.api, status, content_type, raw, self._clock())
        if entry is None:
            cache["reason"] = why
            return
        store = self._store()
        if store is None:
            cache["reason"] = "no cache store"
            return
        try:
            await store.put(plan.key, entry.to_bytes(), plan.policy.ttl_seconds)
        except Exception as exc:
            log.warning("response cache store failed: %s", type(exc).__name__)
            cache["reason"] = f"the cache store failed ({type(exc).__name__})"
            return
        cache["stored"], cache["reason"] = True, None


async def _events(payload: bytes) -> AsyncIterator[bytes]:
    """A stored stream, event by event, as AOAI sends it."""
    start = 0
    while start < len(payload):
        end = payload.find(b"\n\n", start)
        end = len(payload) if end == -1 else end + 2
        yield payload[start:end]
        start = end
