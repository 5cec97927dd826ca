"""HTTP/1.1 over a bare socket, for what httpx will not send: false Content-Length, bad bytes, kept-alive reuse."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    """A parsed response: status, lower-cased headers and the body."""

    status: int
    headers: dict[str, str]
    body: bytes


class RawConnection:
    """One kept-alive TCP connection to a server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    async def send(self, data: bytes) -> None:
        """Write raw bytes."""
        self.writer.write(data)
        await self.writer.drain()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        content_length: int | None = None,
    ) -> RawResponse:
        """Send one request (a false `content_length` may be given) and read its response."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        lines += [f"{name}: {value}" for name, value in all_headers.items()]
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await self.read_response()

    async def read_response(self, timeout: float = 20.0) -> RawResponse:
        """Read one response with a Content-Length body."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout) if length else b""
        return RawResponse(status=int(status_line.split()[1]), headers=headers, body=body)

    async def closed_by_server(self, timeout: float = 5.0) -> bool:
        """Whether the server closed the connection (EOF) within `timeout`."""
        try:
            return await asyncio.wait_for(self.reader.read(1), timeout) == b""
        except (TimeoutError, ConnectionError):
            return False


@contextlib.asynccontextmanager
async def raw_connection(base_url: str, *, host: str | None = None) -> AsyncIterator[RawConnection]:
    """A connection to `base_url`'s server; `host` overrides the Host header."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        yield RawConnection(reader, writer, host or parts.netloc)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
