"""Exchange capture: record one request and its answer, then store it and announce it off the hot path.

`ExchangeRecorder` collects what the handler sees (chunks are appended as bytes, nothing is parsed
while streaming); `finish()` turns it into one `shared.exchange.Exchange` with secrets redacted
(headers, query, credentials in a JSON request body).
`CaptureWriter` stores then publishes each exchange in a tracked background task, retrying the
store with backoff; if the store stays down the exchange is spilled to a JSON file in the outbox
directory and replayed on the next start, so nothing is lost and the stream never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from shared.background import BackgroundTasks
from shared.errors import ErrorResponse
from shared.exchange import (
    Attempt,
    CapturedRequest,
    CapturedResponse,
    Exchange,
    Identity,
    Timings,
    encode_body,
    utc_now_iso,
)
from shared.ports import Ports
from shared.privacy.capture import CapturePrivacy, reduce, without_bodies
from shared.redaction import Redactor, request_secrets

log = logging.getLogger(__name__)


class ExchangeRecorder:
    """What one request did, gathered as it happens (timings from a monotonic clock)."""

    __slots__ = (
        "request_id",
        "identity",
        "request",
        "started",
        "received_at",
        "status",
        "response_headers",
        "content_type",
        "chunks",
        "first_byte",
        "last_byte",
        "overhead_ms",
        "backend",
        "attempts",
        "client_disconnected",
        "gateway_error",
        "usage_injected",
        "enforcement",
        "audience",
        "cache",
        "_raw_request",
    )

    def __init__(self, request_id: str, identity: Identity) -> None:
        self.request_id = request_id
        self.identity = identity
        self.started = time.perf_counter()
        self.received_at = utc_now_iso()
        self.request = CapturedRequest(method="", path="", query={}, headers={})
        self._raw_request: tuple[str, str, list[tuple[str, str]], list[tuple[str, str]], bytes] | None = None
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self.content_type: str | None = None
        self.chunks: list[bytes] = []
        self.first_byte: float | None = None
        self.last_byte: float | None = None
        #: Sent as `x-gateway-overhead-ms` and kept for the record.
        self.overhead_ms: float | None = None
        self.backend: str | None = None
        self.attempts: list[Attempt] = []
        self.client_disconnected = False
        self.gateway_error: dict[str, str] | None = None
        self.usage_injected = False
        #: In-stream enforcement outcome (`EnforcementOutcome.to_record()`) when the product enforces.
        self.enforcement: dict[str, Any] | None = None
        #: The audience rule that applied, and the response cache's part (see `shared.exchange.Exchange`).
        self.audience: dict[str, Any] | None = None
        self.cache: dict[str, Any] | None = None

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def set_request(
        self,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]],
        headers: Iterable[tuple[str, str]],
        body: bytes,
    ) -> None:
        """Keep references only: redaction and body encoding happen in `finish()`, after the stream."""
        self._raw_request = (method, path, list(query), list(headers), body)

    def set_response(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        self.status = status
        self.response_headers = headers  # type: ignore[assignment]  # redacted in finish()
        if self.first_byte is None:
            self.first_byte = self.elapsed_ms()

    def add_attempt(self, backend: str, status: int | None, outcome: str, error: str | None = None) -> None:
        self.attempts.append(
            Attempt(backend=backend, status=status, duration_ms=self.elapsed_ms(), outcome=outcome, error=error)
        )

    def answer_error(self, error: ErrorResponse) -> bytes:
        """Record that the gateway answered by itself; returns the body it sends."""
        body = error.to_bytes()
        self.gateway_error = {"code": error.code, "message": error.message}
        self.set_response(error.status, [("content-type", "application/json"), *error.headers.items()])
        self.chunks = [body]
        self.last_byte = self.elapsed_ms()
        return body

    def _redactor(self) -> Redactor:
        """The one redaction policy (shared/redaction.py), knowing this caller's own key so that an
        answer echoing it is redacted too."""
        if self._raw_request is None:
            return Redactor()
        _, _, query, headers, _ = self._raw_request
        return Redactor(request_secrets(headers, query))

    def _captured_request(self, redactor: Redactor) -> CapturedRequest:
        if self._raw_request is None:
            return self.request
        method, path, query, headers, body = self._raw_request
        redacted = redactor.headers(headers)
        content_type = redacted.get("content-type")
        stored, encoding = encode_body(body, content_type)
        # Credentials in the body (On Your Data keys, connection strings, form fields) stay out of
        # the store; upstream got the bytes as sent.
        if encoding == "json":
            stored = redactor.json(stored)
        elif encoding == "base64":
            clean = redactor.raw_body(body, content_type)
            if clean is not body:
                stored, encoding = encode_body(clean, "application/octet-stream")
        return CapturedRequest(
            method=method,
            path=redactor.path(path),
            query=redactor.query(query),
            headers=redacted,
            body=stored,
            body_encoding=encoding,
            body_bytes=len(body),
        )

    def finish(self) -> Exchange:
        if self.last_byte is None and self.status is not None:
            self.last_byte = self.elapsed_ms()
        response = None
        redactor = self._redactor()
        if self.status is not None:
            self.response_headers = redactor.headers(self.response_headers)
            self.content_type = self.response_headers.get("content-type")
            raw = b"".join(self.chunks)
            if self.content_type and self.content_type.lower().startswith("text/event-stream"):
                response = CapturedResponse(
                    status=self.status,
                    headers=self.response_headers,
                    body_bytes=len(raw),
                    sse=redactor.event_text(raw.decode("utf-8", errors="replace")),
                )
            else:
                body, encoding = encode_body(raw, self.content_type)
                # An answer can echo request configuration (a Responses API `tools` entry with its
                # headers) or a key: the same rules as for request bodies.
                if encoding == "json":
                    body = redactor.json(body)
                elif encoding == "base64":
                    clean = redactor.raw_body(raw, self.content_type)
                    if clean is not raw:
                        body, encoding = encode_body(clean, "application/octet-stream")
                response = CapturedResponse(
                    status=self.status,
                    headers=self.response_headers,
                    body=body,
                    body_encoding=encoding,
                    body_bytes=len(raw),
                )
        gateway_error = self.gateway_error
        if gateway_error is not None:
            gateway_error = {k: redactor.text(v) if isinstance(v, str) else v for k, v in gateway_error.items()}
        return Exchange(
            request_id=self.request_id,
            request=self._captured_request(redactor),
            timings=Timings(
                received_at=self.received_at,
                upstream_first_byte_ms=self.first_byte,
                last_byte_ms=self.last_byte,
                gateway_overhead_ms=self.overhead_ms,
            ),
            identity=self.identity,
            response=response,
            backend=self.backend,
            attempts=self.attempts,
            client_disconnected=self.client_disconnected,
            gateway_error=gateway_error,
            usage_injected=self.usage_injected,
            enforcement=self.enforcement,
            audience=self.audience,
            cache=self.cache,
        )


def default_outbox_dir() -> Path:
    return Path(tempfile.gettempdir()) / "aoai-gateway-outbox"


class CaptureWriter:
    """Store, then announce, each exchange in the background; spill to the outbox when the store is down."""

    def __init__(
        self,
        ports: Callable[[], Ports],
        outbox_dir: Path | None = None,
        *,
        store_attempts: int = 5,
        backoff_seconds: float = 0.2,
        privacy: CapturePrivacy | None = None,
        record_in_place: Callable[[Exchange], Awaitable[object]] | None = None,
    ) -> None:
        """`privacy` applies CAPTURE_LEVELS to each exchange before it is stored; an exchange at
        level `none` goes to `record_in_place` (the parser's record step) instead of the store."""
        self._ports = ports
        self.outbox_dir = outbox_dir or default_outbox_dir()
        self._store_attempts = store_attempts
        self._backoff = backoff_seconds
        self._tasks = BackgroundTasks()
        #: Responses being relayed, whose exchange is submitted when they end (`relay_started`).
        self._relaying = 0
        self._no_relays: asyncio.Event | None = None  # made by `drain`, inside the running loop
        self._privacy = privacy
        self._record_in_place = record_in_place

    def relay_started(self) -> None:
        """A response is on its way to the client; its exchange comes with `submit(..., relay=True)`.

        A client may hold a complete answer a moment before its relay ends (a JSON body sent with
        its length is complete at its last byte), so `drain` waits for relays still open too."""
        self._relaying += 1

    def submit(
        self,
        exchange: Exchange | ExchangeRecorder,
        before: Callable[[], Awaitable[None]] | None = None,
        *,
        relay: bool = False,
    ) -> None:
        """Hand an exchange (or the recorder that will build it) over; returns at once (the task
        is tracked until done). Given a recorder, `finish()` (join, decode, redact) runs in the
        task, after the client's last byte, instead of in the response's path. `before` runs first
        in the same task (storing the answer in the response cache, which the exchange then notes)."""
        if relay:
            self._relaying -= 1
            if self._relaying == 0 and self._no_relays is not None:
                self._no_relays.set()
        self._tasks.spawn(self._persist(exchange, before))

    @property
    def pending(self) -> int:
        return self._tasks.pending

    async def drain(self, relay_wait_seconds: float = 30.0) -> None:
        """Wait for open relays to end (at most `relay_wait_seconds`), then for every submitted
        exchange (shutdown, tests)."""
        if self._relaying > 0:
            if self._no_relays is None:
                self._no_relays = asyncio.Event()
            self._no_relays.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_relays.wait(), relay_wait_seconds)
        await self._tasks.drain()

    async def _persist(
        self, exchange: Exchange | ExchangeRecorder, before: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        if before is not None:
            try:
                await before()
            except Exception:  # never lose the exchange to it
                log.exception("the step before capturing %s failed", exchange.request_id)
        if isinstance(exchange, ExchangeRecorder):
            try:
                exchange = exchange.finish()
            except Exception:  # a defect: say which request, as the response path would have
                log.exception("building the exchange of %s failed", exchange.request_id)
                return
        if self._privacy is not None:
            exchange = await self._apply_privacy(exchange, self._privacy)
            if exchange.capture_level == "none" and self._record_in_place is not None:
                await self._record_in_place(exchange)
                return
        ports = self._ports()
        delay = self._backoff
        for attempt in range(1, self._store_attempts + 1):
            try:
                await ports.exchanges.save(exchange)
                break
            except Exception as exc:
                log.warning(
                    "storing exchange %s failed (attempt %d/%d): %s",
                    exchange.request_id,
                    attempt,
                    self._store_attempts,
                    type(exc).__name__,
                )
                if attempt == self._store_attempts:
                    self._spill(exchange, "store")
                    return
                await asyncio.sleep(delay)
                delay *= 2
        try:
            await ports.channel.publish(exchange.request_id)
        except Exception as exc:
            log.warning("announcing exchange %s failed: %s", exchange.request_id, type(exc).__name__)
            self._spill(exchange, "publish")

    @staticmethod
    async def _apply_privacy(exchange: Exchange, privacy: CapturePrivacy) -> Exchange:
        """The capture level, applied off the event loop when there is work (recognizers over every
        text cost milliseconds per 100 KB, which other streams must not wait for)."""
        level, rule = privacy.level_of(exchange)
        try:
            if level == "full":
                return reduce(exchange, level, rule, privacy.pii)
            return await asyncio.to_thread(reduce, exchange, level, rule, privacy.pii)
        except Exception as exc:  # a defect: fail closed, keep no content rather than too much
            # The type only: a traceback's locals and messages can quote the bodies being redacted.
            log.error(
                "applying capture level %s to %s failed (%s); keeping no bodies",
                level,
                exchange.request_id,
                type(exc).__name__,
            )
            return without_bodies(exchange, rule)

    def _spill(self, exchange: Exchange, stage: str) -> None:
        """Write the (already redacted) exchange to `<outbox>/<request_id>.json` for a later replay."""
        try:
            self.outbox_dir.mkdir(parents=True, exist_ok=True)
            final = self.outbox_dir / f"{exchange.request_id}.json"
            tmp = final.with_suffix(".tmp")
            tmp.write_bytes(exchange.to_json())
            os.replace(tmp, final)
            log.error("exchange %s spilled to %s after %s failure", exchange.request_id, final, stage)
        except OSError as exc:
            log.error("exchange %s lost: outbox not writable (%s)", exchange.request_id, exc)

    async def replay_outbox(self) -> int:
        """Store and announce every spilled exchange again; returns how many were sent."""
        if not self.outbox_dir.is_dir():
            return 0
        sent = 0
        for path in sorted(self.outbox_dir.glob("*.json")):
            try:
                exchange = Exchange.from_json(path.read_bytes())
                ports = self._ports()
                await ports.exchanges.save(exchange)
                await ports.channel.publish(exchange.request_id)
            except Exception as exc:
                log.warning("outbox replay of %s failed: %s", path.name, type(exc).__name__)
                continue
            path.unlink(missing_ok=True)
            sent += 1
        return sent
