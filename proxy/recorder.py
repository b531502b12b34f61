"""One request and its answer as the proxy saw them, collected without slowing the stream.

`ExchangeRecorder` collects what the handler sees (chunks are appended as bytes, nothing is parsed
while streaming); `finish()` turns it into one `shared.exchange.Exchange` with secrets redacted
(headers, query, credentials in a JSON request body), and `fallback()` keeps a body that cannot be
written back as JSON as its bytes, so capture never gives up on a request.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import orjson

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
        "budget",
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
        #: What budget admission decided (`Admission.marks()`), when a budget applies.
        self.budget: dict[str, Any] | None = None

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

    def reroute(self, path: str, model: str | None) -> None:
        """The request went to another deployment (a budget's downgrade): the new path, or (v1) the
        body's `model`, so the record names and prices the deployment that answered."""
        if self._raw_request is None:
            return
        method, _, query, headers, body = self._raw_request
        if model is not None:
            body = orjson.dumps({**orjson.loads(body), "model": model})
        self._raw_request = (method, path, query, headers, body)

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

    def fallback(self, reason: str) -> Exchange:
        """The exchange when `finish` failed: bodies kept as the bytes received (redacted as
        text), so the request is still stored, announced and recorded. A part whose redaction
        fails too is left out rather than stored unredacted."""
        redactor = Redactor()
        with contextlib.suppress(Exception):
            redactor = self._redactor()
        method, path, query, headers, body = self._raw_request or ("", "", [], [], b"")

        def safe(build: Callable[[], Any], default: Any) -> Any:
            try:
                return build()
            except Exception:
                return default

        def raw(data: bytes) -> tuple[Any, Literal["base64", "empty"]]:
            clean = safe(lambda: redactor.raw_body(data, "text/plain"), None)
            if not data or clean is None:
                return None, "empty"
            return {"base64": base64.b64encode(clean).decode("ascii")}, "base64"

        request_body, request_encoding = raw(body)
        response = None
        if self.status is not None:
            answer = safe(lambda: b"".join(self.chunks), b"")
            response_body, response_encoding = raw(answer)
            response = CapturedResponse(
                status=self.status,
                headers=safe(lambda: redactor.headers(self.response_headers), {}),
                body=response_body,
                body_encoding=response_encoding,
                body_bytes=len(answer),
            )
        return Exchange(
            request_id=self.request_id,
            request=CapturedRequest(
                method=method,
                path=safe(lambda: redactor.path(path), ""),
                query=safe(lambda: redactor.query(query), {}),
                headers=safe(lambda: redactor.headers(headers), {}),
                body=request_body,
                body_encoding=request_encoding,
                body_bytes=len(body),
            ),
            response=response,
            **self._common(),
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
            response=response,
            gateway_error=gateway_error,
            enforcement=self.enforcement,
            **self._common(),
        )

    def _common(self) -> dict[str, Any]:
        """What every exchange of this request carries, however it was built (`finish`, `fallback`):
        timings, identity, attempts, and the decisions taken on the way (audience, cache, budget)."""
        return {
            "timings": Timings(
                received_at=self.received_at,
                upstream_first_byte_ms=self.first_byte,
                last_byte_ms=self.last_byte,
                gateway_overhead_ms=self.overhead_ms,
            ),
            "identity": self.identity,
            "backend": self.backend,
            "attempts": self.attempts,
            "client_disconnected": self.client_disconnected,
            "usage_injected": self.usage_injected,
            "audience": self.audience,
            "cache": self.cache,
            "budget": self.budget,
        }
