"""`python -m devhost smoke`: did the deployment work? What a careful engineer checks after deploying.

Through the front door (APIM in Azure, the dev host locally) with the official OpenAI SDK: a chat, a
streamed chat (events arrive one by one, no usage chunk unless asked, one when asked), an embedding,
the gateway's headers, a wrong key refused with 401; then the usage records of its own request ids,
read where the deployment writes them (the dev host's SQLite file, the Cosmos DB records container
or Application Insights, with the caller's Azure credentials). One PASS/FAIL line per check with the
time it took; exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import openai
from openai import AsyncAzureOpenAI, AsyncStream
from openai.types.chat import ChatCompletionMessageParam

#: Seconds a run may take in all; the records wait gets what the other checks left of it.
RUN_BUDGET_SECONDS = 55.0
_PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Reply with one short sentence: is the gateway up?"}
]


class CheckFailed(Exception):
    """A check saw something wrong; the message says what."""


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    ok: bool
    seconds: float
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name:<26} {self.seconds:6.2f} s  {self.detail}"


class RecordSource(Protocol):
    """Where the deployment writes usage records: which of these request ids have one."""

    name: str

    async def found(self, request_ids: set[str]) -> set[str]: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class Options:
    endpoint: str
    key: str
    deployment: str = "gpt-4o-mini"
    embedding_deployment: str = "text-embedding-3-small"
    api_version: str = "2024-10-21"
    request_timeout: float = 20.0
    records_timeout: float = 40.0
    sources: Sequence[RecordSource] = ()
    #: Seconds the whole run may take; a check still waiting then fails.
    budget: float = RUN_BUDGET_SECONDS


@dataclass(slots=True)
class _Run:
    options: Options
    started: float = field(default_factory=time.monotonic)
    request_ids: list[str] = field(default_factory=list)
    chat_headers: dict[str, str] = field(default_factory=dict)

    def client(self, key: str | None = None) -> AsyncAzureOpenAI:
        return AsyncAzureOpenAI(
            azure_endpoint=self.options.endpoint,
            api_key=key or self.options.key,
            api_version=self.options.api_version,
            max_retries=0,
            timeout=self.options.request_timeout,
        )

    def keep_id(self, headers: Any) -> str:
        rid = headers.get("x-gateway-request-id") or ""
        if not rid:
            raise CheckFailed("no x-gateway-request-id header: is the endpoint the gateway?")
        self.request_ids.append(rid)
        return rid


# --------------------------------------------------------------------------------------- checks
async def check_chat(run: _Run) -> str:
    async with run.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=run.options.deployment, messages=_PROMPT, max_tokens=30
        )
        completion = raw.parse()
    run.chat_headers = {k.lower(): v for k, v in raw.headers.items()}
    rid = run.keep_id(raw.headers)
    text = completion.choices[0].message.content if completion.choices else None
    if not text:
        raise CheckFailed("the answer has no text")
    if completion.usage is None or completion.usage.total_tokens <= 0:
        raise CheckFailed("the answer has no usage")
    return f"{completion.usage.total_tokens} tokens, model {completion.model}, request {rid}"


async def _stream(run: _Run, include_usage: bool) -> tuple[list[float], list[Any], str]:
    """(arrival time of each content event, every chunk, request id)."""
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    arrivals: list[float] = []
    chunks: list[Any] = []
    async with (
        run.client() as client,
        client.chat.completions.with_streaming_response.create(
            model=run.options.deployment,
            messages=_PROMPT,
            max_tokens=30,
            stream=True,
            **extra,
        ) as response,
    ):
        rid = run.keep_id(response.headers)
        stream = await response.parse()
        assert isinstance(stream, AsyncStream)
        async for chunk in stream:
            chunks.append(chunk)
            if any(c.delta and c.delta.content for c in chunk.choices):
                arrivals.append(time.monotonic())
    return arrivals, chunks, rid


async def check_stream(run: _Run) -> str:
    arrivals, chunks, rid = await _stream(run, include_usage=False)
    if len(arrivals) < 2:
        raise CheckFailed(f"{len(arrivals)} content event(s): a stream carries the answer in several")
    spread_ms = (arrivals[-1] - arrivals[0]) * 1000
    if spread_ms < 5:
        raise CheckFailed(
            f"all {len(arrivals)} content events arrived at once ({spread_ms:.1f} ms): "
            "something buffers the stream (APIM buffer-response, a proxy)"
        )
    usage = [c for c in chunks if getattr(c, "usage", None) is not None]
    if usage:
        raise CheckFailed("a usage chunk arrived although the client did not ask for one")
    return f"{len(arrivals)} content events over {spread_ms:.0f} ms, no usage chunk, request {rid}"


async def check_stream_usage(run: _Run) -> str:
    _, chunks, rid = await _stream(run, include_usage=True)
    usage = [c for c in chunks if getattr(c, "usage", None) is not None]
    if len(usage) != 1 or usage[0].choices or usage[0].usage.total_tokens <= 0:
        raise CheckFailed(f"{len(usage)} usage chunk(s) when asked for one (stream_options.include_usage)")
    return f"one usage chunk, {usage[0].usage.total_tokens} tokens, request {rid}"


async def check_embedding(run: _Run) -> str:
    async with run.client() as client:
        raw = await client.embeddings.with_raw_response.create(
            model=run.options.embedding_deployment, input="smoke test"
        )
        result = raw.parse()
    rid = run.keep_id(raw.headers)
    if not result.data or not result.data[0].embedding:
        raise CheckFailed("no vector in the answer")
    return f"{len(result.data[0].embedding)} dimensions, {result.usage.prompt_tokens} tokens, request {rid}"


async def check_headers(run: _Run) -> str:
    headers = run.chat_headers
    if not headers:
        raise CheckFailed("no chat answer to look at")
    backend = headers.get("x-gateway-backend", "")
    attempts = headers.get("x-gateway-attempts", "")
    missing = [
        n
        for n, v in (
            ("x-gateway-request-id", headers.get("x-gateway-request-id")),
            ("x-gateway-backend", backend),
            ("x-gateway-attempts", attempts),
        )
        if not v
    ]
    if missing:
        raise CheckFailed("missing " + ", ".join(missing))
    if not attempts.isdigit() or int(attempts) < 1:
        raise CheckFailed(f"x-gateway-attempts is {attempts!r}")
    return f"backend {backend}, attempts {attempts}"


async def check_wrong_key(run: _Run) -> str:
    async with run.client(key="smoke-wrong-" + secrets.token_hex(8)) as client:
        try:
            await client.chat.completions.create(model=run.options.deployment, messages=_PROMPT, max_tokens=1)
        except openai.AuthenticationError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            if "message" not in body and "code" not in body:
                raise CheckFailed("401 without an AOAI-shaped error body") from None
            return "401"
        except openai.APIStatusError as exc:
            raise CheckFailed(f"HTTP {exc.status_code} instead of 401") from None
    raise CheckFailed("a wrong key was accepted")


async def check_records(run: _Run) -> str:
    wanted = set(run.request_ids)
    sources = run.options.sources
    if not sources:
        raise CheckFailed(
            "no record store to look in: pass --cosmos-endpoint or --appinsights-app-id (or --sqlite for a dev host)"
        )
    if not wanted:
        raise CheckFailed("no request reached the gateway")
    budget = min(run.options.records_timeout, max(1.0, run.options.budget - (time.monotonic() - run.started) - 1))
    deadline = time.monotonic() + budget
    seen: dict[str, set[str]] = {s.name: set() for s in sources}
    while True:
        for source in sources:
            seen[source.name] |= await source.found(wanted - seen[source.name])
        if all(found >= wanted for found in seen.values()) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.5)
    short = {name: sorted(wanted - found) for name, found in seen.items() if not found >= wanted}
    if short:
        raise CheckFailed(
            "; ".join(f"{name}: no record yet for {', '.join(ids)} after {budget:.0f} s" for name, ids in short.items())
        )
    return f"{len(wanted)} record(s) in {', '.join(seen)}"


CHECKS: list[tuple[str, Callable[[_Run], Awaitable[str]]]] = [
    ("chat", check_chat),
    ("chat stream", check_stream),
    ("chat stream usage", check_stream_usage),
    ("embedding", check_embedding),
    ("gateway headers", check_headers),
    ("wrong key -> 401", check_wrong_key),
    ("usage records", check_records),
]


async def run_checks(options: Options, out: Callable[[str], None] = print) -> list[Result]:
    run = _Run(options)
    results = []
    try:
        for name, check in CHECKS:
            started = time.monotonic()
            left = options.budget - (started - run.started)
            try:
                async with asyncio.timeout(max(0.5, left)):
                    detail, ok = await check(run), True
            except TimeoutError:
                detail, ok = f"no answer within the run's {options.budget:.0f} s", False
            except CheckFailed as exc:
                detail, ok = str(exc), False
            except openai.APIStatusError as exc:
                detail, ok = _status_detail(exc), False
            except (openai.APIConnectionError, OSError) as exc:
                detail, ok = f"could not reach {options.endpoint}: {exc}", False
            result = Result(name, ok, time.monotonic() - started, detail)
            results.append(result)
            out(result.line())
    finally:
        for source in options.sources:
            await source.close()
    return results


def _status_detail(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
    code, message = error.get("code"), error.get("message")
    return f"HTTP {exc.status_code} {code or ''}: {message or exc.message}".replace("  ", " ")


# --------------------------------------------------------------------------------------- record stores
class SqliteRecords:
    """The dev host's records (SQLITE_PATH)."""

    def __init__(self, path: Path) -> None:
        self.name = f"sqlite {path}"
        self.path = path

    async def found(self, request_ids: set[str]) -> set[str]:
        if not self.path.is_file() or not request_ids:
            return set()
        from shared.adapters.sqlite import SqliteDatabase, SqliteRecordStore

        db = SqliteDatabase(self.path)
        try:
            store = SqliteRecordStore(db)
            return {rid for rid in request_ids if await store.get(rid) is not None}
        finally:
            await db.close()

    async def close(self) -> None:
        return None


class CosmosRecords:
    """The records container of the deployment's Cosmos DB account, read with the caller's credentials
    (DefaultAzureCredential: `az login` locally) unless another credential is given."""

    def __init__(
        self, endpoint: str, database: str, container: str, credential: Any = None, **client_options: Any
    ) -> None:
        self.name = f"cosmos {urlsplit(endpoint).hostname}/{database}/{container}"
        self.endpoint, self.database, self.container_name = endpoint, database, container
        self._credential, self._options = credential, client_options
        self._owned_credential: Any = None
        self._client: Any = None
        self._container: Any = None

    async def found(self, request_ids: set[str]) -> set[str]:
        if not request_ids:
            return set()
        if self._container is None:
            from azure.cosmos.aio import CosmosClient

            credential = self._credential
            if credential is None:
                from azure.identity.aio import DefaultAzureCredential

                credential = self._owned_credential = DefaultAzureCredential()
            self._client = CosmosClient(self.endpoint, credential=credential, **self._options)
            self._container = self._client.get_database_client(self.database).get_container_client(self.container_name)
        # One cross-partition query per poll for all ids (record items: id = request id, kind "record").
        pages = self._container.query_items(
            "SELECT VALUE c.id FROM c WHERE c.kind = 'record' AND ARRAY_CONTAINS(@ids, c.id)",
            parameters=[{"name": "@ids", "value": sorted(request_ids)}],
        )
        return {rid async for rid in pages}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._owned_credential is not None:
            await self._owned_credential.close()


class AppInsightsRecords:
    """`AOAIUsage` custom events in Application Insights (its query API, with the caller's credentials)."""

    API = "https://api.applicationinsights.io/v1/apps/{app}/query"
    SCOPE = "https://api.applicationinsights.io/.default"

    def __init__(self, app_id: str) -> None:
        self.name = f"appinsights {app_id}"
        self.app_id = app_id
        self._credential: Any = None

    async def found(self, request_ids: set[str]) -> set[str]:
        if not request_ids:
            return set()
        import aiohttp
        from azure.identity.aio import DefaultAzureCredential

        if self._credential is None:
            self._credential = DefaultAzureCredential()
        token = await self._credential.get_token(self.SCOPE)
        ids = ", ".join(f'"{rid}"' for rid in sorted(request_ids) if rid.replace("-", "").isalnum())
        query = (
            'customEvents | where timestamp > ago(1h) and name == "AOAIUsage" '
            f"| extend rid = tostring(customDimensions.request_id) | where rid in ({ids}) | distinct rid"
        )
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.API.format(app=self.app_id),
                json={"query": query},
                headers={"Authorization": f"Bearer {token.token}"},
            ) as response,
        ):
            if response.status != 200:
                raise CheckFailed(f"Application Insights query answered HTTP {response.status}")
            body = await response.json()
        return {row[0] for table in body.get("tables", []) for row in table.get("rows", [])}

    async def close(self) -> None:
        if self._credential is not None:
            await self._credential.close()


# --------------------------------------------------------------------------------------- command line
def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint", required=True, help="the gateway: https://<apim>.azure-api.net, or the dev host URL"
    )
    parser.add_argument(
        "--key", required=True, help="an APIM subscription key (the dev host: a LOCAL_SUBSCRIPTIONS key)"
    )
    parser.add_argument("--deployment", default="gpt-4o-mini", help="chat deployment (default gpt-4o-mini)")
    parser.add_argument(
        "--embedding-deployment",
        default="text-embedding-3-small",
        help="embeddings deployment (default text-embedding-3-small)",
    )
    parser.add_argument("--api-version", default="2024-10-21")
    parser.add_argument("--cosmos-endpoint", help="Cosmos DB account endpoint: wait for the records there")
    parser.add_argument("--cosmos-database", default="gateway")
    parser.add_argument("--cosmos-container", default="records")
    parser.add_argument("--appinsights-app-id", help="Application Insights application id: wait for AOAIUsage events")
    parser.add_argument(
        "--sqlite", help="the dev host's SQLITE_PATH (default for a loopback endpoint: from --settings)"
    )
    parser.add_argument("--settings", default="local.settings.json", help="dev host settings file (for SQLITE_PATH)")
    parser.add_argument("--records-timeout", type=float, default=40.0, help="seconds to wait for the records")


def _sources(args: argparse.Namespace) -> list[RecordSource]:
    sources: list[RecordSource] = []
    if args.sqlite:
        sources.append(SqliteRecords(Path(args.sqlite)))
    if args.cosmos_endpoint:
        sources.append(CosmosRecords(args.cosmos_endpoint, args.cosmos_database, args.cosmos_container))
    if args.appinsights_app_id:
        sources.append(AppInsightsRecords(args.appinsights_app_id))
    if not sources and urlsplit(args.endpoint).hostname in ("127.0.0.1", "localhost", "::1"):
        from devhost.commands import database_path

        sources.append(SqliteRecords(database_path(args.settings)))
    return sources


def command(args: argparse.Namespace) -> int:
    for name in ("httpx", "httpx2", "openai", "azure"):  # one line per check, not per HTTP call
        logging.getLogger(name).setLevel(logging.WARNING)
    options = Options(
        endpoint=args.endpoint.rstrip("/"),
        key=args.key,
        deployment=args.deployment,
        embedding_deployment=args.embedding_deployment,
        api_version=args.api_version,
        records_timeout=args.records_timeout,
        sources=_sources(args),
    )
    started = time.monotonic()
    results = asyncio.run(run_checks(options))
    passed = sum(r.ok for r in results)
    print(
        f"smoke: {passed}/{len(results)} checks passed in {time.monotonic() - started:.1f} s "
        f"against {options.endpoint}",
        flush=True,
    )
    sys.stdout.flush()
    return 0 if passed == len(results) else 1
