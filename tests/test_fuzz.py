"""A bounded, seeded fuzz of the gateway's front: raw requests through the dev host (the Functions
runtime) to the AOAI simulator, checked against the gateway's promises.

Cases combine methods, paths that try to leave the API surface (`..`, `%2e%2e`, doubled slashes,
encoded separators), api-version values, a 100 KB header, hundreds of headers, wrong content
types, invalid UTF-8, bodies of every JSON type, JSON nested 255, 300 and 1,000 levels deep
(streamed and not), bodies past the size limit and chunked bodies that never end. For every case:

- no 5xx made by the gateway itself (the simulator here never fails);
- an answer within the configured deadlines;
- a request that passed the key check and reached the proxy has exactly one record, whose status
  is the status the client received;
- nothing reached the backend outside `/openai/...` as resolved, and no header larger than the
  host's head limit reached it.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import function_app
from devhost.simulator import SimulatorConfig
from shared.normalize.apis import resolve_path
from tests.devhost_harness import DevHostGateway, dev_host
from tests.raw_http import RawResponse, exchange, request_head

SEED = 1515
CASES = 3000
CONCURRENCY = 12
KEY = "fuzz-key"
UPSTREAM_KEY = "fuzz-upstream-key"
HEADER_TIMEOUT = 3.0
BODY_TIMEOUT = 3.0
MAX_BODY = 65_536
MAX_HEAD = 32_768
#: Deadline per case: the head and body deadlines, plus time to answer on a loaded CI machine.
CASE_DEADLINE = HEADER_TIMEOUT + BODY_TIMEOUT + 20

METHODS = ["GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO", "post"]
PATHS = [
    "/openai/deployments/gpt-4o/chat/completions",
    "/openai/deployments/gpt-4o/chat/completions",
    "/openai/deployments/gpt-4o/embeddings",
    "/openai/deployments/gpt-4o/completions",
    "/openai/v1/chat/completions",
    "/openai/v1/responses",
    "/openai/responses",
    "//openai/deployments/gpt-4o/chat/completions",
    "/openai//deployments//gpt-4o//chat/completions",
    "/openai/deployments/gpt-4o/chat/completions/",
    "/openai/../_dashboard",
    "/openai/deployments/../../_dashboard",
    "/openai/%2e%2e/_dashboard",
    "/openai/%2E./health",
    "/openai/..%2f..%2f_dashboard",
    "/openai/..%5c_dashboard",
    "/openai/%c0%ae%c0%ae/x",
    "/openai/deployments/gpt-4o%2fchat%2fcompletions",
    "/openai/deployments/gpt-4o/chat/completions%3Fapi-key%3Dx",
    "/openai/deployments/%00/chat/completions",
    "/openai/",
    "/openai",
    "/openai/deployments",
    "/openai/deployments/gpt-4o/unknown/op",
    "/openai/v1/files/file-abc/content",
    "/openai/v1/responses/resp_unknown",
    "/health",
    "/nope",
]
API_VERSIONS = [
    "2024-10-21",
    "2024-10-21",
    "2025-04-01-preview",
    "v1",
    "",
    "garbage",
    "x" * 2000,
    "%00",
    "%ff%fe",
    None,
]
CONTENT_TYPES = [
    "application/json",
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=zz",
    "application/json; charset=latin-1",
    "",
    None,
    "\x7f/\x01",
]


def nested(depth: int, stream: bool) -> bytes:
    deep = "[" * depth + "]" * depth
    flag = "true" if stream else "false"
    return f'{{"messages":[{{"role":"user","content":"hi"}}],"stream":{flag},"x":{deep}}}'.encode()


def bodies(rng: random.Random) -> bytes:
    choice = rng.randrange(16)
    chat = {"messages": [{"role": "user", "content": "hello"}]}
    return [
        json.dumps(chat).encode(),
        json.dumps({**chat, "stream": True}).encode(),
        json.dumps({**chat, "stream": True, "stream_options": {"include_usage": True}}).encode(),
        b"",
        b"[]",
        b'"x"',
        b"1",
        b"null",
        b"true",
        json.dumps({"messages": 5}).encode(),
        json.dumps({"messages": [1, {"role": 2}], "stream": "yes", "model": ["x"]}).encode(),
        b'{"messages": [{"role": "user", "content": "\xff\xfe invalid utf-8"}]}',
        b"\xff\xfe\xfd" * 100,
        b'{"unterminated": ',
        nested(rng.choice([255, 300, 1000]), stream=rng.random() < 0.5),
        json.dumps({**chat, "input": "x" * rng.choice([10, 70_000])}).encode(),
    ][choice]


@dataclass(slots=True)
class Case:
    n: int
    method: str
    target: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    #: Chunked body pieces, sent forever (None: `body` with a content-length).
    endless: bool = False
    authenticated: bool = True
    notes: list[str] = field(default_factory=list)
    #: JSON nested deeper than orjson writes back (255 levels and more).
    deep: bool = False


def cases(seed: int, count: int) -> Iterator[Case]:
    rng = random.Random(seed)
    for n in range(count):
        method = rng.choice(METHODS)
        path = rng.choice(PATHS)
        version = rng.choice(API_VERSIONS)
        target = path + ("" if version is None else f"?api-version={version}")
        headers: list[tuple[bytes, bytes]] = []
        authenticated = rng.random() < 0.9
        headers.append((b"api-key", KEY.encode() if authenticated else b"wrong-key"))
        content_type = rng.choice(CONTENT_TYPES)
        if content_type is not None:
            headers.append((b"content-type", content_type.encode("latin-1")))
        extra = rng.randrange(10)
        notes = []
        if extra == 0:
            headers.append((b"x-big", b"a" * 100_000))
            notes.append("100 KB header")
        elif extra == 1:
            headers += [(f"x-h{i}".encode(), b"v" * 20) for i in range(300)]
            notes.append("300 headers")
        elif extra == 2:
            headers.append((b"x-bad-utf8", b"\xff\xfe\xc0\xaf"))
        elif extra == 3:
            headers.append((b"x-medium", b"m" * 6000))
        headers.append((b"x-fuzz-case", str(n).encode()))
        case = Case(n, method, target, path, headers, authenticated=authenticated, notes=notes)
        shape = rng.randrange(20)
        if shape == 0:
            case.endless = True
            case.headers.append((b"transfer-encoding", b"chunked"))
        elif shape == 1:
            case.body = b"x" * (MAX_BODY + 1 + rng.randrange(1000))
            case.headers.append((b"content-length", str(len(case.body)).encode()))
        else:
            case.body = bodies(rng) if method.upper() not in ("GET", "HEAD") or rng.random() < 0.1 else b""
            case.deep = b"[[[[[[[[[[" in case.body
            if case.body or method.upper() in ("POST", "PUT", "PATCH"):
                case.headers.append((b"content-length", str(len(case.body)).encode()))
        yield case


async def _endless() -> AsyncIterator[bytes]:
    piece = b"2000\r\n" + b"y" * 0x2000 + b"\r\n"
    while True:
        yield piece
        await asyncio.sleep(0.001)


@dataclass(slots=True)
class Outcome:
    case: Case
    response: RawResponse | None
    error: str | None = None


async def run_all(url: str, all_cases: list[Case]) -> list[Outcome]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(case: Case) -> Outcome:
        async with gate:
            head = request_head(case.method, case.target, case.headers)
            try:
                async with asyncio.timeout(CASE_DEADLINE):
                    answer = await exchange(
                        url, head, _endless() if case.endless else case.body, head_only=case.method == "HEAD"
                    )
            except TimeoutError:
                return Outcome(case, None, "no answer within the deadline")
            except OSError as exc:
                return Outcome(case, None, f"{type(exc).__name__}: {exc}")
            return Outcome(case, answer)

    return await asyncio.gather(*(one(c) for c in all_cases))


def _reached_proxy(case: Case, response: RawResponse) -> bool:
    """The request passed the key check and the host's routing: the proxy answered it."""
    return case.authenticated and response.header("x-gateway-request-id") is not None


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHostGateway]:
    env = {
        "MAX_REQUEST_BODY_BYTES": str(MAX_BODY),
        "REQUEST_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "DEVHOST_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "MAX_REQUEST_HEADER_BYTES": str(MAX_HEAD),
    }
    with dev_host(
        tmp_path_factory.mktemp("fuzz"),
        {KEY: {"id": "fuzz", "name": "Fuzz", "product": "standard"}},
        {"sim": SimulatorConfig(api_key=UPSTREAM_KEY, completion_tokens=8, seed=SEED)},
        env=env,
    ) as gateway:
        yield gateway


@dataclass(slots=True)
class Fuzzed:
    outcomes: list[Outcome]
    #: Request id -> (case, status the client got) for every request the proxy answered.
    proxied: dict[str, tuple[Case, int]]
    records: dict[str, dict]


@pytest.fixture(scope="module")
def fuzzed(gw: DevHostGateway) -> Fuzzed:
    outcomes = gw.call(run_all(gw.url, list(cases(SEED, CASES))), timeout=600)
    gw.settle()
    proxied = {}
    for o in outcomes:
        if o.response is not None and _reached_proxy(o.case, o.response):
            proxied[o.response.header("x-gateway-request-id") or ""] = (o.case, o.response.status)
    return Fuzzed(outcomes, proxied, gw.call(_records(list(proxied))))


def _record_problems(fuzzed: Fuzzed, deep: bool) -> list[str]:
    problems = []
    for rid, (c, status) in fuzzed.proxied.items():
        if c.deep is not deep:
            continue
        record = fuzzed.records.get(rid)
        if record is None:
            problems.append(f"case {c.n} {c.method} {c.target[:80]!r}: no record for {rid}")
        elif record["status_code"] != status:
            problems.append(f"case {c.n}: the client got {status}, the record says {record['status_code']}")
    return problems


def test_fuzzed_requests_keep_the_gateways_promises(gw: DevHostGateway, fuzzed: Fuzzed) -> None:
    problems: list[str] = []
    statuses: Counter[int] = Counter()
    for o in fuzzed.outcomes:
        c = o.case
        label = f"case {c.n} {c.method} {c.target[:80]!r} {c.notes}"
        if o.response is None:
            # Only a never-ending body may be cut by the server without an answer.
            if not c.endless:
                problems.append(f"{label}: {o.error or 'closed without an answer'}")
            continue
        statuses[o.response.status] += 1
        if o.response.status >= 500:
            problems.append(f"{label}: {o.response.status} {o.response.body[:200]!r}")
        elif o.response.status >= 400 and b'"InternalServerError"' in o.response.body:
            problems.append(f"{label}: a {o.response.status} that calls itself InternalServerError")
    problems += _record_problems(fuzzed, deep=False)
    assert gw.emitted and max(gw.emitted.values()) == 1, "a record was emitted more than once"
    for logged in gw.sim.requests:
        resolved = resolve_path(logged.path)
        if resolved is None or not resolved.startswith("/openai/"):
            problems.append(f"forwarded outside the API surface: {logged.path!r}")
        for name, value in logged.headers.items():
            if len(name) + len(value) > MAX_HEAD:
                problems.append(f"a {len(value)}-byte header {name!r} reached the backend")
    assert not problems, "\n".join(problems[:30])
    # The fuzz reached every layer: the proxy, the backend, and the refusals on the way.
    assert len(fuzzed.proxied) > CASES // 5 and len(gw.sim.requests) > CASES // 20, (
        len(fuzzed.proxied),
        len(gw.sim.requests),
    )
    assert {400, 401, 404, 405, 413, 431}.issubset(statuses), statuses


def test_fuzzed_json_nested_past_the_serializers_depth_is_recorded(fuzzed: Fuzzed) -> None:
    assert any(c.deep for c, _ in fuzzed.proxied.values())
    problems = _record_problems(fuzzed, deep=True)
    assert not problems, "\n".join(problems[:30])


async def _records(request_ids: list[str]) -> dict[str, dict]:
    records = function_app.ports().records
    found = {}
    for rid in request_ids:
        record = await records.get(rid)
        if record is not None:
            found[rid] = record
    return found
