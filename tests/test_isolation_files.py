"""Tenant isolation of files and batches, through the real proxy with the official OpenAI SDK.

The AOAI simulator has no Files or Batches API, so the backend here is a double of it (`FilesDouble`,
aiohttp on loopback): it keeps files and batches for everyone, as AOAI does for the gateway's one
identity, answers unknown ids 404 and lists everything. The proxy runs in-process behind the
`x-gateway-subscription-id` header that APIM (or the dev host) sets.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from openai import AsyncAzureOpenAI
from starlette.applications import Starlette
from starlette.routing import Route

from proxy.capture import CaptureWriter
from proxy.credentials import Credentials
from proxy.handler import Proxy
from proxy.upstream import Timeouts, UpstreamClient
from shared.settings import Settings
from testing.memory import memory_ports

API_VERSION = "2024-10-21"


class FilesDouble:
    """AOAI's Files and Batches APIs, strict about ids: unknown ones are 404, as the service answers."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    @staticmethod
    def _missing(kind: str, oid: str) -> web.Response:
        return web.json_response(
            {"error": {"code": "NotFound", "message": f"{kind} with id '{oid}' not found."}}, status=404
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        parts = [p for p in request.path.split("/") if p][1:]  # after "openai"
        if parts[:1] == ["files"]:
            if len(parts) == 1 and request.method == "POST":
                form = await request.post()
                upload = form["file"]
                fid = f"file-{next(self._ids)}"
                self.files[fid] = {
                    "id": fid,
                    "object": "file",
                    "bytes": len(upload.file.read()),  # type: ignore[union-attr]
                    "filename": upload.filename,
                    "purpose": form["purpose"],
                    "status": "processed",  # type: ignore[union-attr]
                    "created_at": 0,
                }
                return web.json_response(self.files[fid])
            if len(parts) == 1:
                return web.json_response(
                    {
                        "object": "list",
                        "data": list(self.files.values()),
                        "has_more": False,
                        "first_id": next(iter(self.files), None),
                        "last_id": None,
                    }
                )
            fid = parts[1]
            if fid not in self.files:
                return self._missing("File", fid)
            if len(parts) == 3:
                return web.Response(body=b'{"custom_id": "1"}\n', content_type="application/octet-stream")
            if request.method == "DELETE":
                del self.files[fid]
                return web.json_response({"id": fid, "object": "file", "deleted": True})
            return web.json_response(self.files[fid])
        if parts[:1] == ["batches"]:
            if len(parts) == 1 and request.method == "POST":
                body = await request.json()
                if body["input_file_id"] not in self.files:
                    return self._missing("File", body["input_file_id"])
                bid, out = f"batch_{next(self._ids)}", f"file-out{next(self._ids)}"
                self.files[out] = {
                    "id": out,
                    "object": "file",
                    "purpose": "batch_output",
                    "bytes": 1,
                    "created_at": 0,
                    "filename": "out.jsonl",
                    "status": "processed",
                }
                self.batches[bid] = {
                    "id": bid,
                    "object": "batch",
                    "endpoint": body["endpoint"],
                    "status": "completed",
                    "input_file_id": body["input_file_id"],
                    "output_file_id": out,
                    "completion_window": "24h",
                    "created_at": 0,
                }
                return web.json_response(self.batches[bid])
            if len(parts) == 1:
                return web.json_response({"object": "list", "data": list(self.batches.values()), "has_more": False})
            bid = parts[1]
            if bid not in self.batches:
                return self._missing("Batch", bid)
            return web.json_response(self.batches[bid])
        return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)


@contextlib.asynccontextmanager
async def gateway() -> AsyncIterator[tuple[FilesDouble, Any]]:
    double = FilesDouble()
    runner = web.AppRunner(double.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    backends = [
        {
            "name": "files",
            "endpoint": f"http://127.0.0.1:{port}",
            "auth": {"type": "api_key", "value": "k"},
            "deployments": ["*"],
        }
    ]
    ports = memory_ports()
    proxy = Proxy(
        Settings(backends_json=json.dumps(backends)),
        UpstreamClient(Timeouts(connect=2, first_byte=10, idle=10)),
        Credentials({}),
        CaptureWriter(lambda: ports),
        owners=lambda: ports.owners,
    )
    app = Starlette(routes=[Route("/openai/{path:path}", proxy.handle, methods=["GET", "POST", "DELETE"])])

    def client(team: str) -> AsyncAzureOpenAI:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        return AsyncAzureOpenAI(
            api_key="unused",
            azure_endpoint="http://gw",
            api_version=API_VERSION,
            max_retries=0,
            http_client=http,
            default_headers={"x-gateway-subscription-id": team},
        )

    try:
        yield double, client
    finally:
        await proxy.aclose()
        await runner.cleanup()


async def test_team_a_cannot_reach_team_b_files_or_batches() -> None:
    async with gateway() as (double, client):
        a, b = client("team-a"), client("team-b")
        fb = await b.files.create(file=("b.jsonl", b'{"custom_id": "1"}\n'), purpose="batch")
        fa = await a.files.create(file=("a.jsonl", b'{"custom_id": "2"}\n'), purpose="batch")
        batch = await b.batches.create(input_file_id=fb.id, endpoint="/v1/chat/completions", completion_window="24h")
        forwarded = len(double.requests)

        for attempt in (
            lambda: a.files.retrieve(fb.id),
            lambda: a.files.content(fb.id),
            lambda: a.files.delete(fb.id),
            lambda: a.batches.retrieve(batch.id),
            lambda: a.batches.cancel(batch.id),
            lambda: a.files.retrieve(batch.output_file_id or ""),
            lambda: a.batches.create(input_file_id=fb.id, endpoint="/v1/chat/completions", completion_window="24h"),
        ):
            with pytest.raises(openai.NotFoundError) as err:
                await attempt()
            assert err.value.response.json()["error"]["message"].endswith("not found.")
        assert len(double.requests) == forwarded, "a refused request reached the backend"

        # Listings show each team its own.
        assert [f.id for f in (await a.files.list()).data] == [fa.id]
        assert sorted(f.id for f in (await b.files.list()).data) == sorted([fb.id, batch.output_file_id])
        assert [x.id for x in (await a.batches.list()).data] == []
        assert [x.id for x in (await b.batches.list()).data] == [batch.id]

        # Team B has everything it made, including the batch's output file.
        assert (await b.files.retrieve(fb.id)).id == fb.id
        assert (await b.batches.retrieve(batch.id)).id == batch.id
        assert (await b.files.content(batch.output_file_id or "")).content
        assert (await b.files.delete(fb.id)).deleted
