"""A response AOAI broke after its first byte: the exception that cuts the client's connection too.

Once the status and some body bytes are on their way to the client, the gateway can neither retry
nor answer with an error. Ending the body normally would hand the client a cleanly terminated HTTP
response that merely lacks its end (`data: [DONE]`, the closing brace), which SDKs take for a
complete answer. AOAI itself would have dropped the connection, so the proxy does the same: the
body iterator raises `UpstreamBroken`, and the ASGI server (uvicorn, in the dev host and in the
Functions worker) closes the connection without the terminating chunk; the client sees a
truncated transfer (httpx `RemoteProtocolError`).

The proxy logs the break itself, at warning, with the request id; `QuietUpstreamBreaks` keeps the
server from adding an "Exception in ASGI application" traceback for what is not a gateway defect.
"""

from __future__ import annotations

import logging

from shared.errors import UpstreamBroken

#: The logger uvicorn reports application exceptions on.
SERVER_ERROR_LOGGER = "uvicorn.error"


class QuietUpstreamBreaks(logging.Filter):
    """Drops the server's traceback for an `UpstreamBroken` (already logged, at warning, by the proxy)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, UpstreamBroken)


def quiet_server_log(logger_name: str = SERVER_ERROR_LOGGER) -> None:
    """Install `QuietUpstreamBreaks` on the server's error logger once (the app's wiring calls it)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, QuietUpstreamBreaks) for f in logger.filters):
        logger.addFilter(QuietUpstreamBreaks())
