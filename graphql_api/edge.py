"""The outermost layer of the API, before routing: request ids, Host checks, size limits, websocket caps.

`EdgeGuard` is plain ASGI middleware, so it acts before anything reads a body or accepts a websocket:

- Every HTTP request and websocket connection gets a request id (the client's `X-Request-ID` when it is short
  and plain, else a random one), bound to the log context and returned in the `X-Request-ID` header.
- While the API runs without tokens, only requests addressed to a loopback name (`localhost`, `127.0.0.1`,
  `[::1]`) are answered, 421 otherwise: a web page on any site could otherwise make a browser call
  `localhost` through DNS rebinding. `/healthz` and `/readyz` stay open.
- A body larger than `max_body_bytes` gets 413 before the rest of it is read (at once when `Content-Length`
  says so). The rest is then discarded for a moment (`LINGER_S`, `LINGER_BYTES`) before the connection is
  closed, so a client still sending sees the answer rather than a reset. Smaller bodies are read whole here
  and handed on.
- A websocket message larger than `max_body_bytes` closes the connection with 1009.
- Websocket connections per client address are capped (429 at the handshake).

Each websocket gets a `Connection` (in `scope["deployer.connection"]`) that other layers use to close it from
outside the protocol handler: a malformed message, a revoked token, the per-token cap, a missing
`connection_init`. Whatever the application sends after that close is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import secrets
from collections import Counter
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graphql_api.logcontext import request_id_var

logger = logging.getLogger("deployer.api")

CONNECTION_KEY = "deployer.connection"
#: Paths answered whatever the Host header (they reveal nothing and orchestrators probe them by IP).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
WS_MESSAGE_TOO_BIG = 1009
#: After a 413, how long and how much of the rest of the body is read and dropped before closing (a lingering
#: close, as nginx does): closing with unread data makes the kernel reset the connection, and a client that
#: is still sending would lose the answer.
LINGER_S = 2.0
LINGER_BYTES = 64 * 1024 * 1024


def _error_body(status: int, code: str, message: str) -> bytes:
    error = {"message": message, "extensions": {"code": code, "status": status}}
    return json.dumps({"data": None, "errors": [error]}).encode()


def is_loopback_host(host: str | None) -> bool:
    """Whether a Host header names this machine's loopback (`localhost`, `*.localhost`, 127.0.0.0/8, ::1)."""
    if not host:
        return False
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def request_id_of(scope: Scope) -> str:
    """The client's `X-Request-ID` when it is short and plain, else a new random id."""
    given = _header(scope, b"x-request-id")
    return given if given and _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)


@dataclass(eq=False)
class Connection:
    """One websocket, as the edge sees it: closable from outside the protocol handler."""

    send: Send
    client: str
    request_id: str
    closed: bool = False
    close_code: int | None = None

    async def close(self, code: int, reason: str = "") -> None:
        """Close the websocket with `code` (once); later messages from the application are dropped."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        with contextlib.suppress(Exception):  # the client may be gone already
            await self.send({"type": "websocket.close", "code": code, "reason": reason[:120]})


class EdgeGuard:
    """ASGI middleware: request ids, Host checks while open, body and message limits, websocket caps.

    Args:
        loopback_only: answer only requests addressed to a loopback name (the API runs without tokens).
        max_body_bytes: the largest request body and websocket message.
        ws_per_ip: open websockets allowed per client address.
    """

    def __init__(self, app: ASGIApp, *, loopback_only: bool, max_body_bytes: int, ws_per_ip: int) -> None:
        self.app = app
        self.loopback_only = loopback_only
        self.max_body_bytes = max_body_bytes
        self.ws_per_ip = ws_per_ip
        self._ws_by_ip: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _host_refused(self, scope: Scope) -> bool:
        return (
            self.loopback_only and scope.get("path") not in OPEN_PATHS and not is_loopback_host(_header(scope, b"host"))
        )

    # --- HTTP ------------------------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope)
        token = request_id_var.set(request_id)
        try:

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                    message = {**message, "headers": headers}
                await send(message)

            if self._host_refused(scope):
                await self._refuse_host(send_with_id)
                return
            body = await self._read_body(scope, receive, send_with_id)
            if body is None:
                return
            await self.app(scope, _replay(body, receive), send_with_id)
        finally:
            request_id_var.reset(token)

    async def _refuse_host(self, send: Send) -> None:
        logger.warning("refused a request for a non-loopback Host while running without API tokens")
        await _respond(
            send,
            421,
            "MISDIRECTED_REQUEST",
            "This server runs without API tokens, so it answers only requests addressed to localhost,"
            " 127.0.0.1 or [::1] (protection against DNS rebinding). Configure DEPLOYER_API_TOKENS to serve"
            " other names.",
        )

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None after answering 413 (or 400 for a malformed Content-Length)."""
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _respond(send, 400, "BAD_USER_INPUT", "Content-Length must be a whole number")
                return None
            if int(declared) > self.max_body_bytes:
                await self._too_large(receive, send)
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(receive, send, more=bool(message.get("more_body", False)))
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, receive: Receive, send: Send, *, more: bool = True) -> None:
        """Answer 413 at once; then drop what the client still sends, briefly, and let the server close."""
        message = f"The request body is larger than {self.max_body_bytes} bytes (DEPLOYER_MAX_BODY_BYTES)"
        await _respond(send, 413, "PAYLOAD_TOO_LARGE", message, close=True, finished=False)
        if more:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LINGER_S):
                    dropped = 0
                    while dropped < LINGER_BYTES:
                        chunk = await receive()
                        if chunk["type"] != "http.request":
                            break
                        dropped += len(chunk.get("body", b""))
                        if not chunk.get("more_body", False):
                            break
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # --- WebSocket -------------------------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope)
        token = request_id_var.set(request_id)
        client = (scope.get("client") or ("unknown", 0))[0]
        try:
            if self._host_refused(scope):
                logger.warning("refused a websocket for a non-loopback Host while running without API tokens")
                await _deny_websocket(scope, receive, send, 421, "MISDIRECTED_REQUEST", "Host not allowed")
                return
            if self._ws_by_ip[client] >= self.ws_per_ip:
                logger.warning("refused a websocket: %s already holds %s", client, self._ws_by_ip[client])
                await _deny_websocket(
                    scope, receive, send, 429, "RATE_LIMITED", f"At most {self.ws_per_ip} websockets per address"
                )
                return
            self._ws_by_ip[client] += 1
            try:
                await self._serve_websocket(scope, receive, send, client, request_id)
            finally:
                self._ws_by_ip[client] -= 1
                if self._ws_by_ip[client] <= 0:
                    del self._ws_by_ip[client]
        finally:
            request_id_var.reset(token)

    async def _serve_websocket(self, scope: Scope, receive: Receive, send: Send, client: str, request_id: str) -> None:
        connection = Connection(send=send, client=client, request_id=request_id)

        async def guarded_send(message: Message) -> None:
            if connection.closed:
                return  # we closed it: the handler may still try to answer
            if message["type"] == "websocket.close":
                connection.closed = True
                connection.close_code = message.get("code", 1000)
            await send(message)

        async def guarded_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive" and _too_big(message, self.max_body_bytes):
                await connection.close(WS_MESSAGE_TOO_BIG, f"Messages are limited to {self.max_body_bytes} bytes")
                return {"type": "websocket.disconnect", "code": WS_MESSAGE_TOO_BIG}
            return message

        await self.app({**scope, CONNECTION_KEY: connection}, guarded_receive, guarded_send)

    def open_websockets(self) -> int:
        """Websockets currently open through this guard (for tests and metrics)."""
        return sum(self._ws_by_ip.values())


def _too_big(message: Message, limit: int) -> bool:
    """Whether a websocket message is over `limit` bytes (UTF-8 for text; encoded only when it matters)."""
    if message.get("bytes") is not None:
        return len(message["bytes"]) > limit
    text = message.get("text") or ""
    if len(text) > limit or len(text) * 4 <= limit:
        return len(text) > limit
    return len(text.encode("utf-8", "surrogatepass")) > limit


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over the body read already, then passes on what the server sends."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(
    send: Send, status: int, code: str, message: str, *, close: bool = False, finished: bool = True
) -> None:
    """A JSON error answer; with `finished=False` the caller ends it (the client has it all: Content-Length)."""
    body = _error_body(status, code, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": not finished})


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
    """Refuse a websocket handshake: an HTTP answer where the server supports it, a bare close otherwise."""
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = _error_body(status, code, message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": message})


def connection_of(scope: Scope) -> Connection | None:
    """The edge's `Connection` of a websocket scope (None for a scope the guard did not see)."""
    connection = scope.get(CONNECTION_KEY)
    return connection if isinstance(connection, Connection) else None
