"""Paths that would leave the AOAI API surface are refused (400, recorded) and never forwarded;
`//openai/...` (an endpoint configured with a trailing slash) is served as AOAI serves it.

Raw `http.client` requests: HTTP libraries would resolve the dot-segments before sending them.
"""

from __future__ import annotations

import http.client
import json
import uuid
from urllib.parse import urlsplit

import pytest

from devhost.simulator import SimulatorConfig
from shared.normalize.apis import resolve_path
from tests.devhost_harness import dev_host

CLIENT_KEY = "client-key-paths"
UPSTREAM_KEY = "upstream-key-paths"
API = "?api-version=2024-10-21"

ESCAPES = [
    "/openai/../_dashboard",
    "/openai/deployments/../../_dashboard",
    "/openai/%2e%2e/_dashboard",
    "/openai/%2E./_dashboard",
    "/openai/.%2E/_dashboard",
    "/openai/deployments/%2e%2e/%2e%2e/_dashboard",
    "/openai/..%2f_dashboard",
    "/openai/..%2F..%2F_dashboard",
    "/openai/..%5c_dashboard",
    "/openai/..\\_dashboard",
    "/openai//../../_dashboard",
    "/openai/%c0%ae%c0%ae/_dashboard",
    "/openai/%c0%af../_dashboard",
    "/openai/%252e%252e/_dashboard",
    "/openai/deployments/gpt-4o/..%00/x",
]


@pytest.mark.parametrize(
    ("raw", "resolved"),
    [
        ("/openai/deployments/gpt-4o/chat/completions", "/openai/deployments/gpt-4o/chat/completions"),
        ("/openai/deployments//gpt-4o//chat/completions", "/openai/deployments/gpt-4o/chat/completions"),
        ("//openai/v1/responses", "/openai/v1/responses"),
        ("/openai/./v1/./responses", "/openai/v1/responses"),
        ("/openai/deployments/x/../gpt-4o/embeddings", "/openai/deployments/gpt-4o/embeddings"),
        ("/openai/v1/files/file-abc123/content", "/openai/v1/files/file-abc123/content"),
        ("/openai/../_dashboard", None),
        ("/openai/..", None),
        ("/openai/", "/openai/"),  # inside the surface: classified as nothing, a recorded 404
        ("/_dashboard", None),
        ("/openai/a\\..\\..\\x", None),
        ("/openai/%2e%2e/x", None),
        ("/openai/\ufffd\ufffd/x", None),
        ("/openai/deployments/gpt\x00/chat/completions", None),
        ("/openai/v1/responses?x=1", None),
    ],
)
def test_resolve_path(raw, resolved):
    assert resolve_path(raw) == resolved


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with dev_host(
        tmp_path_factory.mktemp("paths"),
        {CLIENT_KEY: {"id": "team-a", "name": "Team A", "product": "standard"}},
        {"sim": SimulatorConfig(api_key=UPSTREAM_KEY)},
    ) as gateway:
        yield gateway


def _send(url: str, method: str, path: str, body: bytes = b"{}") -> tuple[int, dict, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in {
            "api-key": CLIENT_KEY,
            "content-type": "application/json",
            "content-length": str(len(body)),
        }.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", ESCAPES)
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_escaping_path_is_refused_recorded_and_never_forwarded(gw, path, method):
    before = len(gw.sim.requests)
    status, headers, body = _send(gw.url, method, path + API)
    assert status == 400, (status, body)
    error = json.loads(body)["error"]
    assert error["code"] and error["message"]
    gw.settle()
    rid = headers["x-gateway-request-id"]
    assert gw.emitted[rid] == 1
    assert gw.exchange(rid).response.status == 400
    assert len(gw.sim.requests) == before, [r.path for r in gw.sim.requests[before:]]
    assert all(r.path.startswith("/openai/") for r in gw.sim.requests)


def test_leading_double_slash_is_served_and_recorded(gw):
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    status, headers, answer = _send(gw.url, "POST", "//openai/deployments/gpt-4o/chat/completions" + API, body)
    assert status == 200, answer
    assert gw.sim.requests[-1].path == "/openai/deployments/gpt-4o/chat/completions"
    gw.settle()
    assert gw.emitted[headers["x-gateway-request-id"]] == 1


def test_unclassified_path_404_is_recorded(gw):
    status, headers, _ = _send(gw.url, "POST", "/openai/deployments" + API)
    assert status == 404
    gw.settle()
    assert gw.emitted[headers["x-gateway-request-id"]] == 1
