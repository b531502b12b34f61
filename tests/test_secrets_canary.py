"""Canary secrets in every place a client or a backend can put one; none of them may appear in any
stored byte (the SQLite file: exchanges, records, dead letters; bodies stored as base64 decoded),
in any usage record sent to the sink (Application Insights) or in the gateway's log output, at
every capture level, while the backend still receives what the client sent. Below `full`, the
personal data in the same requests and answers must not be stored or sent either.

The backend here is a double of a hostile AOAI account: it answers any call, echoing the upstream
key it was sent (and other canaries) in a response header, a JSON field and the raw event stream.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import sqlite3
import threading

import httpx
import pytest
from aiohttp import web

import function_app
from devhost.simulator import SimulatorConfig
from shared.redaction import REDACTED, Redactor, is_secret_name, redact_body_secrets
from tests.devhost_harness import dev_host

CLIENT_KEY = "client-key-canary-0001"
#: One key per capture level (CAPTURE_LEVELS by product); `full` is the default.
LEVEL_KEYS = {
    "full": CLIENT_KEY,
    "redacted": "client-key-canary-red-0003",
    "metadata": "client-key-canary-meta-0004",
    "none": "client-key-canary-none-0005",
}
#: Personal data in the prompt, a header and the backend's answer (kept only at `full`).
PERSONAL = {"email": "canary.person@example.org", "iban": "DE89 3704 0044 0532 0130 00", "phone": "+44 20 7946 0958"}
UPSTREAM_KEY = "upstream-key-canary-0002"

#: name -> canary core (what is grepped for; each unique, at least 12 characters).
CANARIES = {
    "x-api-key": "cnry-xapikey-1001",
    "x-upstream-token": "cnry-upstoken-1002",
    "x-partner-key": "cnry-partner-1003",
    "x-ms-client-secret": "cnry-clsecret-1004",
    "cookie": "cnry-cookie-1005",
    "q-subscription_key": "cnry-qsubkey-1006",
    "q-access_token": "cnry-qaccess-1007",
    "q-sig": "cnry-qsig-1008",
    "path-key": "cnry-pathkey-1009",
    "body-token": "cnry-btoken-1010",
    "body-secret": "cnry-bsecret-1011",
    "body-password": "cnry-bpasswd-1012",
    "jwt": "eyJzdWIiOiJjbnJ5and0MTAxMyJ9",
    "sk": "sk-cnrySkKeyAbcdefgh1014",
    "conn": "cnryAccountKey1015",
    "sas": "cnrySasSig1016",
    "pem": "CNRYPEMBODY1017",
    "form": "cnry-form-1018",
    "text": "cnry-textkey-1019",
    "multipart": "cnry-mpart-1020",
    "echo-body": "cnry-echobody-1021",
    "stream-body": "cnry-stream-1022",
    "x-request-signature": "cnry-signature-1023",
    "x-custom-auth": "cnry-custauth-1024",
    "body-sas": "cnry-bsas-1025",
    "body-connection-string": "cnry-bconn-1026",
    "echo-header": "cnry-echohdr-1027",
    "body-key": "cnry-bkey-1028",
}
JWT = "eyJhbGciOiJIUzI1NiJ9." + CANARIES["jwt"] + ".c2lnbmF0dXJl"
PEM = "-----BEGIN PRIVATE KEY-----\n" + CANARIES["pem"] + "\n-----END PRIVATE KEY-----"
CONN = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={CANARIES['conn']};EndpointSuffix=core.windows.net"
SAS = f"https://acct.blob.core.windows.net/c/f.jsonl?sv=2022-11-02&sp=r&sig={CANARIES['sas']}"
ALL = [*CANARIES.values(), *LEVEL_KEYS.values(), UPSTREAM_KEY]


class EchoBackend:
    """A double of a hostile AOAI account: echoes the credentials it receives; keeps what it was sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append((request.path_qs, dict(request.headers), body))
        key = request.headers.get("api-key", "")
        answer = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            "debug": {
                "api_key": key,
                "token": CANARIES["echo-body"],
                "note": f"sent with {key}",
                "contact": f"{PERSONAL['email']}, {PERSONAL['phone']}",
            },
        }
        headers = {"x-echo-key": key, "x-upstream-token": CANARIES["echo-body"], "x-echo-auth": CANARIES["echo-header"]}
        try:
            streaming = json.loads(body).get("stream") is True
        except (ValueError, AttributeError):
            streaming = False
        if not streaming:
            return web.json_response(answer, headers=headers)
        resp = web.StreamResponse(headers={**headers, "content-type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": f"key {key}"}, "finish_reason": None}],
            "secret": CANARIES["stream-body"],
        }
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def start(self) -> None:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def main() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self.handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()

        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(main(), self._loop)
        assert ready.wait(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    backend = EchoBackend()
    backend.start()
    backends = [
        {
            "name": "echo",
            "endpoint": backend.url,
            "auth": {"type": "api_key", "setting": "ECHO_KEY"},
            "deployments": ["*"],
        }
    ]
    try:
        with dev_host(
            tmp_path_factory.mktemp("canary"),
            {
                key: {"id": f"team-{level}", "name": level, "product": f"product-{level}"}
                for level, key in LEVEL_KEYS.items()
            },
            {"sim": SimulatorConfig(api_key="unused-simulator-key")},
            env={
                "GATEWAY_BACKENDS": json.dumps(backends),
                "ECHO_KEY": UPSTREAM_KEY,
                "CAPTURE_LEVELS": json.dumps({f"product-{level}": level for level in LEVEL_KEYS if level != "full"}),
            },
        ) as gateway:
            gateway.backend = backend
            # What the sink (Application Insights in Azure) is given.
            gateway.sent = []
            ports = function_app.ports()
            emit = ports.sink.emit

            async def keep(record):
                gateway.sent.append(json.dumps(record))
                await emit(record)

            ports.sink.emit = keep
            yield gateway
    finally:
        backend.stop()


def _stored_text(gw, ids: list[str] | None = None) -> str:
    """Every byte of the SQLite store (and its WAL), plus every base64 body decoded; with `ids`,
    only the rows of those requests (exchanges, records, dead letters)."""
    gw.settle()
    if ids is None:
        text = b"\n".join(p.read_bytes() for p in gw.db.parent.glob(gw.db.name + "*")).decode("latin-1")
        with sqlite3.connect(gw.db) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            rows = [r for table in tables for r in db.execute(f"SELECT * FROM {table}")]
    else:
        text, marks = "", ",".join("?" * len(ids))
        with sqlite3.connect(gw.db) as db:
            rows = [
                *db.execute(f"SELECT * FROM exchange_items WHERE request_id IN ({marks})", ids),
                *db.execute(f"SELECT * FROM records WHERE request_id IN ({marks})", ids),
                *db.execute(f"SELECT * FROM deadletters WHERE key IN ({marks})", ids),
            ]
    assert rows or ids is not None, "nothing stored"
    decoded = []
    for row in rows:
        for cell in row:
            if isinstance(cell, (str, bytes)):
                cell = cell.decode("utf-8", "replace") if isinstance(cell, bytes) else cell
                decoded.append(cell)
                decoded += [
                    base64.b64decode(b).decode("latin-1") for b in re.findall(r'"base64":\s*"([A-Za-z0-9+/=]+)"', cell)
                ]
    return text + "\n".join(decoded)


@pytest.mark.parametrize("level", list(LEVEL_KEYS))
def test_no_canary_is_stored_or_logged_and_the_backend_got_everything(gw, caplog, level):
    caplog.set_level(logging.DEBUG)
    key = LEVEL_KEYS[level]
    gw.backend.received.clear()
    sent_before = len(gw.sent)
    url = gw.url + "/openai/deployments/gpt-4o/chat/completions"
    query = {
        "api-version": "2024-10-21",
        "subscription_key": CANARIES["q-subscription_key"],
        "access_token": CANARIES["q-access_token"],
        "sig": CANARIES["q-sig"],
    }
    headers = {
        "api-key": key,
        "x-api-key": CANARIES["x-api-key"],
        "x-request-signature": CANARIES["x-request-signature"],
        "x-custom-auth": CANARIES["x-custom-auth"],
        "x-contact": PERSONAL["email"],
        "x-upstream-token": CANARIES["x-upstream-token"],
        "x-partner-key": CANARIES["x-partner-key"],
        "x-ms-client-secret": CANARIES["x-ms-client-secret"],
        "cookie": f"session={CANARIES['cookie']}",
    }
    body = {
        "messages": [
            {"role": "user", "content": f"my key is {CANARIES['sk']} and {JWT}"},
            {"role": "user", "content": f"I am {PERSONAL['email']}, IBAN {PERSONAL['iban']}, call {PERSONAL['phone']}"},
        ],
        "metadata": {"deep": [{"token": CANARIES["body-token"]}, {"x": {"secret": CANARIES["body-secret"]}}]},
        "user": {"password": CANARIES["body-password"], "note": CONN, "file": SAS, "pem": PEM},
        "data_sources": [{"sas": CANARIES["body-sas"], "connection_string": CANARIES["body-connection-string"]}],
        "tools": [{"a": [{"b": {"c": [{"storage_key": CANARIES["body-key"]}]}}]}],
    }
    with httpx.Client(timeout=10) as client:
        answers = [
            client.post(url, params=query, headers=headers, json={**body, "stream": stream}) for stream in (False, True)
        ]
        ids = [a.headers["x-gateway-request-id"] for a in answers]
        assert [a.status_code for a in answers] == [200, 200]
        assert answers[0].headers["x-echo-key"] == UPSTREAM_KEY and UPSTREAM_KEY in answers[1].text  # transparent
        r = client.post(
            gw.url + "/openai/deployments/gpt-4o/chat/completions%3Fapi-key%3D" + CANARIES["path-key"],
            params={"api-version": "2024-10-21"},
            headers={"api-key": key},
            json=body,
        )
        assert r.status_code == 400
        r = client.post(
            url,
            params={"api-version": "2024-10-21"},
            headers={"api-key": key, "content-type": "application/x-www-form-urlencoded"},
            content=f"prompt=hi&api_key={CANARIES['form']}".encode(),
        )
        assert r.status_code == 200
        r = client.post(
            url,
            params={"api-version": "2024-10-21"},
            headers={"api-key": key, "content-type": "text/plain"},
            content=f"use AccountKey={CANARIES['text']}; and\n{PEM}".encode(),
        )
        assert r.status_code == 200
        r = client.post(
            gw.url + "/openai/deployments/whisper/audio/transcriptions",
            params={"api-version": "2024-10-21"},
            headers={"api-key": key},
            data={"api_key": CANARIES["multipart"], "prompt": JWT},
            files={"file": ("a.wav", b"RIFF....WAVEfmt ", "audio/wav")},
        )
        assert r.status_code == 200
    # Redaction never changes what is forwarded: the backend saw every client canary.
    forwarded = "\n".join(f"{p} {h} {b.decode('latin-1')}" for p, h, b in gw.backend.received)
    for name in (
        "x-upstream-token",
        "x-partner-key",
        "x-ms-client-secret",
        "body-token",
        "body-password",
        "form",
        "text",
        "multipart",
        "q-subscription_key",
        "sk",
        "jwt",
        "x-request-signature",
        "x-custom-auth",
        "body-sas",
        "body-connection-string",
        "body-key",
    ):
        assert CANARIES[name] in forwarded, name
    assert PERSONAL["email"] in forwarded  # personal data reaches the backend at every level
    stored = _stored_text(gw)
    assert [c for c in ALL if c in stored] == []
    assert REDACTED in stored
    sent = "\n".join(gw.sent[sent_before:])
    assert len(gw.sent) > sent_before and [c for c in ALL if c in sent] == []
    assert [v for v in PERSONAL.values() if v in sent] == []  # records never carry content
    if level != "full":
        ours = _stored_text(gw, ids)
        assert [v for v in PERSONAL.values() if v in ours] == [], level
        assert "canary.person" not in ours and "7946 0958" not in ours
    # The gateway's own log lines (the test's HTTP client and the echo double log what they send).
    ours = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore", "aiohttp.access"))]
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in ours)
    assert [c for c in ALL if c in logged] == []


@pytest.mark.parametrize(
    "name",
    [
        "x-api-key",
        "x-upstream-token",
        "x-partner-key",
        "x-ms-client-secret",
        "api_key",
        "subscription_key",
        "access_token",
        "sig",
        "client_secret",
        "password",
        "token",
        "connectionString",
        "SharedAccessSignature",
        "x-functions-key",
        "secret",
        "credentials",
        "Authorization",
        "subscriptionKey",
    ],
)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "max_tokens",
        "prompt_tokens",
        "total_tokens",
        "key",
        "prompt_cache_key",
        "content",
        "x-ratelimit-remaining-tokens",
        "author",
        "model",
        "messages",
        "type",
        "code",
        "input_tokens_details",
        "idempotency-key",
        "x-ms-region",
    ],
)
def test_ordinary_names(name):
    assert not is_secret_name(name)


def test_shapes_in_any_string():
    r = Redactor()
    for raw, core in (
        (JWT, CANARIES["jwt"]),
        ("sk-" + "a" * 30, "a" * 30),
        (CONN, CANARIES["conn"]),
        (SAS, CANARIES["sas"]),
        (PEM, CANARIES["pem"]),
        ("Authorization: Bearer abc.def-123456789", "abc.def-123456789"),
    ):
        assert core not in r.text(f"x {raw} y")
    prose = "Bearer authentication is basic information; task-force sk-short"
    assert r.text(prose) is prose


def test_logprob_tokens_are_output_not_credentials():
    body = {"choices": [{"logprobs": {"content": [{"token": "Hello", "logprob": -0.1, "bytes": [72]}]}}]}
    assert redact_body_secrets(body) is body
    text = 'data: {"logprobs":{"content":[{"token":"Hi","logprob":-0.2}]}}'
    assert Redactor().event_text(text) == text


@pytest.mark.parametrize("depth", [300, 1000, 5000])
def test_deep_nesting_does_not_exhaust_the_stack(depth):
    value: object = {"password": "cnry-deep"}
    for _ in range(depth):
        value = {"x": [value]}
    out = redact_body_secrets(value)
    for _ in range(depth):
        out = out["x"][0]
    assert out == {"password": REDACTED}


def test_large_numeric_bodies_are_not_walked_item_by_item():
    body = {"data": [{"embedding": [0.1] * 200_000}], "input": [[1, 2, 3]] * 1000}
    assert redact_body_secrets(body) is body


def test_the_callers_own_key_is_redacted_where_echoed():
    assert Redactor(["client-key-abcdef"]).text("echo client-key-abcdef") == f"echo {REDACTED}"
