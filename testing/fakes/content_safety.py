"""A local fake of Azure AI Content Safety (text) that speaks the real REST contract, for tests and the bench.

Endpoints (under the base URL, like `https://NAME.cognitiveservices.azure.com`):

- `POST /contentsafety/text:analyze?api-version=2023-10-01`
  request `{"text", "categories"?, "blocklistNames"?, "haltOnBlocklistHit"?, "outputType"?}` ->
  `{"blocklistsMatch": [{"blocklistName", "blocklistItemId", "blocklistItemText"}],
    "categoriesAnalysis": [{"category": "Hate", "severity": 0}, ...]}`.
  Text over 10,000 code points (or missing) -> 400 `{"error": {"code": "InvalidRequestBody", "message"}}`.
- `POST /contentsafety/text:shieldPrompt?api-version=2024-09-01`
  request `{"userPrompt", "documents"?}` ->
  `{"userPromptAnalysis": {"attackDetected": bool}, "documentsAnalysis": [{"attackDetected": bool}, ...]}`.

Auth: `Ocp-Apim-Subscription-Key` equal to the configured key, or any `Authorization: Bearer` token
(the fake cannot check Entra tokens); otherwise 401 in the Cognitive Services shape.

Scripted behaviour:
- Severity by trigger words in the text: `HATE_LEVEL_4`, `SELFHARM_LEVEL_6`, `SEXUAL_LEVEL_2`,
  `VIOLENCE_LEVEL_7` (the highest per category wins; with FourSeverityLevels it is rounded down to
  0/2/4/6 like the real service).
- Blocklists: `blocklists={"name": ["term", ...]}`; a term found (case-insensitively) in the text is a
  match when the request names that blocklist.
- Prompt attack: `PROMPT_ATTACK` in the user prompt or a document.
- Failures: `fail(status, times=n, retry_after=s)` makes the next n requests answer that status
  (429 carries `Retry-After`); then normal service resumes.
- `latency` (seconds, default 0; the bench uses 0.02) before every answer.
- `requests` records (monotonic time, operation, JSON body) of every request, for assertions.

In a thread (sync tests): `running = run_in_thread(FakeContentSafety(key="k"))`, `running.url`, `running.stop()`.
Run alone: `python -m testing.fakes.content_safety --port 7073 --latency-ms 20 --key local-key`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_TEXT = 10_000
_TRIGGER = re.compile(r"\b(HATE|SELFHARM|SEXUAL|VIOLENCE)_LEVEL_([0-7])\b")
_CATEGORY = {"HATE": "Hate", "SELFHARM": "SelfHarm", "SEXUAL": "Sexual", "VIOLENCE": "Violence"}
CATEGORIES = ("Hate", "SelfHarm", "Sexual", "Violence")
ATTACK_TRIGGER = "PROMPT_ATTACK"


@dataclass
class _Failure:
    status: int
    retry_after: float | None


@dataclass
class FakeContentSafety:
    key: str = "local-key"
    latency: float = 0.0
    blocklists: dict[str, list[str]] = field(default_factory=dict)
    requests: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    _failures: deque[_Failure] = field(default_factory=deque)
    _runner: web.AppRunner | None = None
    base_url: str = ""

    def fail(self, status: int, *, times: int = 1, retry_after: float | None = None) -> None:
        for _ in range(times):
            self._failures.append(_Failure(status, retry_after))

    def calls(self, operation: str) -> list[dict[str, Any]]:
        return [body for _, op, body in self.requests if op == operation]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/contentsafety/text:analyze", self._analyze)
        app.router.add_post("/contentsafety/text:shieldPrompt", self._shield)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]  # the port chosen when port=0
        self.base_url = f"http://{host}:{sock.getsockname()[1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- handlers -------------------------------------------------------------------------------

    async def _common(self, request: web.Request, operation: str, api_version: str) -> dict[str, Any] | web.Response:
        if request.headers.get("Ocp-Apim-Subscription-Key") != self.key and not _bearer(request):
            return _error(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. "
                "Make sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource.",
            )
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.requests.append((time.monotonic(), operation, body if isinstance(body, dict) else {}))
        if self.latency:
            await asyncio.sleep(self.latency)
        if self._failures:
            failure = self._failures.popleft()
            headers = {"Retry-After": _seconds(failure.retry_after)} if failure.retry_after is not None else {}
            code = "TooManyRequests" if failure.status == 429 else "InternalServerError"
            return _error(failure.status, code, f"Scripted failure {failure.status}.", headers)
        if request.query.get("api-version") != api_version:
            return _error(
                404,
                "UnsupportedApiVersion",
                f"The api-version {request.query.get('api-version')!r} is not "
                f"supported by this fake; use {api_version}.",
            )
        if not isinstance(body, dict):
            return _error(400, "InvalidRequestBody", "The request body is not valid JSON.")
        return body

    async def _analyze(self, request: web.Request) -> web.Response:
        body = await self._common(request, "text:analyze", "2023-10-01")
        if isinstance(body, web.Response):
            return body
        text = body.get("text")
        if not isinstance(text, str) or not text:
            return _error(400, "InvalidRequestBody", "The text field is required and must be a non-empty string.")
        if len(text) > MAX_TEXT:
            return _error(
                400,
                "InvalidRequestBody",
                f"The text exceeds the maximum length of {MAX_TEXT} characters (got {len(text)}).",
            )
        eight = body.get("outputType") == "EightSeverityLevels"
        severities = dict.fromkeys(CATEGORIES, 0)
        for word, level in _TRIGGER.findall(text):
            category = _CATEGORY[word]
            severities[category] = max(severities[category], int(level))
        if not eight:
            severities = {c: min(6, s - s % 2) for c, s in severities.items()}
        wanted = body.get("categories") or list(CATEGORIES)
        matches = []
        lowered = text.lower()
        for name in body.get("blocklistNames") or []:
            for i, term in enumerate(self.blocklists.get(name, [])):
                if term.lower() in lowered:
                    matches.append({"blocklistName": name, "blocklistItemId": f"{name}-{i}", "blocklistItemText": term})
        if matches and body.get("haltOnBlocklistHit"):
            wanted = []
        return web.json_response(
            {
                "blocklistsMatch": matches,
                "categoriesAnalysis": [{"category": c, "severity": severities[c]} for c in CATEGORIES if c in wanted],
            }
        )

    async def _shield(self, request: web.Request) -> web.Response:
        body = await self._common(request, "text:shieldPrompt", "2024-09-01")
        if isinstance(body, web.Response):
            return body
        prompt = body.get("userPrompt") or ""
        documents = body.get("documents") or []
        if not isinstance(prompt, str) or len(prompt) > MAX_TEXT or sum(len(d) for d in documents) > MAX_TEXT:
            return _error(
                400, "InvalidRequestBody", "userPrompt and documents are limited to 10,000 characters each in total."
            )
        return web.json_response(
            {
                "userPromptAnalysis": {"attackDetected": ATTACK_TRIGGER in prompt},
                "documentsAnalysis": [{"attackDetected": ATTACK_TRIGGER in d} for d in documents],
            }
        )


def _bearer(request: web.Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}},
        status=status,
        headers={"x-ms-error-code": code, **(headers or {})},
    )


@dataclass
class RunningFake:
    """A fake serving on its own event loop in a daemon thread (sync tests, benchmarks)."""

    fake: FakeContentSafety
    url: str
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def run_in_thread(fake: FakeContentSafety, host: str = "127.0.0.1", port: int = 0) -> RunningFake:
    """Start `fake` on a free loopback port (port 0) on its own thread; `.stop()` when done."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-content-safety", daemon=True)
    thread.start()
    url = asyncio.run_coroutine_threadsafe(fake.start(host, port), loop).result(10)
    return RunningFake(fake, url, loop, thread)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7073)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--key", default="local-key")
    args = parser.parse_args()
    fake = FakeContentSafety(key=args.key, latency=args.latency_ms / 1000)
    web.run_app(fake.app(), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
