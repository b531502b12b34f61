"""A raw HTTP/1.1 client over asyncio sockets, for requests no well-behaved client library sends:
invalid bytes in the head, trickled headers or bodies, bodies that never end.

It sends exactly the bytes it is given and reads one response (content-length, chunked, or until
the server closes), returning what arrived, or that the server closed without answering.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class RawResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def request_head(
    method: bytes | str,
    target: bytes | str,
    headers: Iterable[tuple[bytes | str, bytes | str]],
    host: str = "127.0.0.1",
) -> bytes:
    """`METHOD target HTTP/1.1` and the header lines, as bytes (no validation of any of it)."""

    def b(value: bytes | str) -> bytes:
        return value if isinstance(value, bytes) else value.encode("latin-1")

    lines = [b(method) + b" " + b(target) + b" HTTP/1.1", b"host: " + host.encode()]
    lines += [b(k) + b": " + b(v) for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def read_response(reader: asyncio.StreamReader, head_only: bool = False) -> RawResponse | None:
    """One response from `reader`, or None when the server closed without a status line."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    response = RawResponse(int(parts[1]))
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            response.headers.append((k.strip(), v.strip()))
    if head_only:
        return response
    length = response.header("content-length")
    try:
        if length is not None:
            response.body = await reader.readexactly(int(length))
        elif (response.header("transfer-encoding") or "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            response.body = bytes(body)
        else:
            response.body = await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # a body cut short: what arrived is kept
    return response


async def exchange(
    url: str, head: bytes, body: bytes | AsyncIterator[bytes] = b"", *, head_only: bool = False
) -> RawResponse | None:
    """Send `head` and `body` (bytes, or pieces sent as they come while the answer is read) on a new
    connection and read one response (`head_only`: its status and headers, as for HEAD)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    sending: asyncio.Task[None] | None = None
    try:
        if isinstance(body, bytes):
            writer.write(head + body)
            await writer.drain()
        else:
            writer.write(head)

            async def send() -> None:
                try:
                    async for piece in body:
                        writer.write(piece)
                        await writer.drain()
                except ConnectionError:
                    pass

            sending = asyncio.create_task(send())
        return await read_response(reader, head_only)
    finally:
        if sending is not None:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
