"""Reading a file (a batch's output) from the account that holds it, for the parser's batch accounting.

Uses the proxy's own upstream session and credentials, so the parser never holds an AOAI key of
its own; the file is read from the backend that answered the call which saw the batch complete
(a batch and its files live on one account).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import aiohttp

from proxy.credentials import Credentials
from proxy.routing.pool import BackendPool
from proxy.upstream import UpstreamClient

log = logging.getLogger(__name__)

#: A batch output file is at most about 200 MB (the input limit); anything larger is not read whole.
MAX_FILE_BYTES = 256 * 1024 * 1024


class UpstreamFiles:
    def __init__(self, pool: BackendPool, upstream: UpstreamClient, credentials: Credentials) -> None:
        self.backends = {b.name: b for b in pool.backends}
        self.upstream = upstream
        self.credentials = credentials

    async def content(self, backend: str, file_id: str, api_version: str | None) -> bytes | None:
        """The file's bytes, or None when the backend is unknown or does not answer 200."""
        target = self.backends.get(backend)
        if target is None:
            return None
        # Dated api-versions use /openai/files; the v1 surface takes none.
        dated = api_version is not None and api_version[:4].isdigit()
        path = (
            f"/openai/files/{quote(file_id, safe='')}/content"
            if dated
            else f"/openai/v1/files/{quote(file_id, safe='')}/content"
        )
        params = [("api-version", api_version)] if dated and api_version else []
        try:
            headers = await self.credentials.headers_for(target)
            response = await self.upstream.send("GET", target.endpoint + path, headers=headers, params=params, body=b"")
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("files: %s unreachable for %s: %s", backend, file_id, type(exc).__name__)
            return None
        try:
            if response.status != 200:
                log.warning("files: %s answered %d for %s", backend, response.status, file_id)
                return None
            data = bytearray()
            while chunk := await self.upstream.read(response):
                data += chunk
                if len(data) > MAX_FILE_BYTES:
                    log.warning("files: %s is larger than %d bytes; not read", file_id, MAX_FILE_BYTES)
                    return None
            return bytes(data)
        finally:
            response.release()
