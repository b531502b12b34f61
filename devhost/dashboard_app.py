"""The local dashboard as an ASGI app, which the dev host mounts at /_dashboard (loopback clients only).

Same page as `python -m devhost dashboard`, served by the running gateway so that `make run` users
see their usage without a second process. The SQLite records are re-read on every page view, on a
worker thread so the gateway's event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sqlite3
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.responses import Response

from devhost.dashboard import plotly_js, render_dashboard
from devhost.usage_summary import load_records, summarize
from shared.errors import ErrorResponse, NotFound

#: Where the dev host serves the dashboard: outside /openai, so no function route can shadow it.
DASHBOARD_PATH = "/_dashboard"


def records_or_none(db_path: Path) -> list[dict[str, Any]]:
    """The records, or none yet: the database is created by the first request the gateway stores."""
    if not db_path.is_file():
        return []
    try:
        return load_records(db_path)
    except sqlite3.OperationalError:  # the file exists but the parser has not created `records` yet
        return []


def is_loopback(client: tuple[str, int] | list[Any] | None) -> bool:
    if not client:
        return False
    try:
        return ipaddress.ip_address(str(client[0])).is_loopback
    except ValueError:
        return False


class DashboardApp:
    """GET {prefix}/ (the page), {prefix}/plotly.min.js, {prefix}/api/summary (the numbers as JSON)."""

    def __init__(self, db_path: Path, prefix: str = DASHBOARD_PATH) -> None:
        self.db_path = Path(db_path)
        self.prefix = prefix

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        response = await self._respond(scope)
        await response(scope, receive, send)

    async def _respond(self, scope: dict[str, Any]) -> Response:
        if not is_loopback(scope.get("client")):
            # The records name subscriptions and users: not for other machines, even on 0.0.0.0.
            return _error(NotFound(f"Resource not found: {scope['path']}"))
        if scope["method"] not in ("GET", "HEAD"):
            return _error(ErrorResponse("The method is not allowed for this resource."), 405)
        sub = scope["path"][len(self.prefix) :].rstrip("/")
        if sub == "":
            page = await asyncio.to_thread(self._page)
            return Response(page, media_type="text/html; charset=utf-8")
        if sub == "/plotly.min.js":
            return Response(
                plotly_js(), media_type="application/javascript", headers={"cache-control": "max-age=86400"}
            )
        if sub == "/api/summary":
            body = await asyncio.to_thread(self._summary)
            return Response(body, media_type="application/json")
        return _error(NotFound(f"Resource not found: {scope['path']}"))

    def _page(self) -> str:
        return render_dashboard(records_or_none(self.db_path), plotly_src=f"{self.prefix}/plotly.min.js")

    def _summary(self) -> str:
        return json.dumps(asdict(summarize(records_or_none(self.db_path))), default=str)


def _error(error: ErrorResponse, status: int | None = None) -> Response:
    return Response(error.to_bytes(), status_code=status or error.status, media_type="application/json")
