"""Websockets through a real uvicorn server: malformed messages close with 4400, a missing `connection_init`
closes with 4408 on both protocols, and each token holds a bounded number of websockets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from graphql_api.context import CONNECTION_INIT_TIMEOUT_S
from graphql_api.wsguard import TransportWSHandler
from settings import Limits
from tests.graphql_api.conftest import ADMIN_TOKEN, DROPLET_COUNT, READ_TOKEN, TOKENS, served, ws_client

PROTOCOLS = ["graphql-transport-ws", "graphql-ws"]
START = {"graphql-transport-ws": "subscribe", "graphql-ws": "start"}

#: Raw frames (text unless bytes) that a client may send after `connection_init`; each must close with 4400.
MALFORMED: list[tuple[str, Any]] = [
    ("not JSON", "{"),
    ("a JSON list", "[]"),
    ("a JSON string", '"hello"'),
    ("no type", "{}"),
    ("a numeric type", '{"type": 5}'),
    ("an unknown type", '{"type": "launch"}'),
    ("payload a string", '{"type": "%START%", "id": "1", "payload": "{ dropletCount { limit } }"}'),
    ("payload null", '{"type": "%START%", "id": "1", "payload": null}'),
    ("query a number", '{"type": "%START%", "id": "1", "payload": {"query": 5}}'),
    ("id an object", '{"type": "%START%", "id": {"a": 1}, "payload": {"query": "{ dropletCount { limit } }"}}'),
    ("id missing", '{"type": "%START%", "payload": {"query": "{ dropletCount { limit } }"}}'),
    ("variables a list", '{"type": "%START%", "id": "1", "payload": {"query": "{ x }", "variables": []}}'),
    ("deep nesting", '{"type": "ping", "payload": ' + "[" * 5000 + "]" * 5000 + "}"),
    ("NUL in a string", '{"type": "%START%", "id": "1", "payload": {"query": "{ dropletCount { limit } }\\u0000"}}'),
    ("a lone surrogate", '{"type": "%START%", "id": "\\ud800", "payload": {"query": "{ x }"}}'),
    ("NaN", '{"type": "ping", "payload": {"a": NaN}}'),
    ("a binary frame", b"\x00\x01"),
]


@pytest.fixture
async def url(make_app: Callable[..., Starlette]) -> AsyncIterator[str]:
    """A real server for the open app."""
    async with served(make_app()) as base:
        yield base


async def close_code(ws: ClientConnection, timeout: float = 20.0) -> int:
    """Read until the server closes the websocket; its close code (fails when nothing closes it in time)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as closed:
        received = closed.rcvd
    assert received is not None, "the server did not send a close frame"
    return received.code


async def _close_code(client: Any, timeout: float = 20.0) -> int:
    return await close_code(client.ws, timeout)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("what", "frame"), MALFORMED, ids=[what for what, _ in MALFORMED])
async def test_a_malformed_message_closes_with_4400(url: str, protocol: str, what: str, frame: Any) -> None:
    """After a good `connection_init`, any malformed message closes the connection with 4400, and the server
    goes on serving other connections."""
    async with ws_client(url, protocol) as client:
        assert (await client.init())["type"] == "connection_ack"
        raw = frame if isinstance(frame, bytes) else frame.replace("%START%", START[protocol])
        await client.ws.send(raw)
        assert await _close_code(client) == 4400
    async with ws_client(url, protocol) as client:
        assert (await client.init())["type"] == "connection_ack"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_query_over_websocket_is_answered_or_refused_with_400(url: str, protocol: str) -> None:
    """graphql-transport-ws runs queries; legacy graphql-ws runs subscriptions only and says so (never a 500)."""
    async with ws_client(url, protocol) as client:
        assert (await client.init())["type"] == "connection_ack"
        await client.subscribe("1", DROPLET_COUNT, {})
        message = await client.receive()
    if protocol == "graphql-transport-ws":
        assert message["payload"] == {"data": {"dropletCount": {"active": 0, "limit": 3, "available": 3}}}
    else:
        assert message["type"] == "error"
        assert message["payload"]["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED", "status": 400}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_malformed_connection_init_closes_with_4400(url: str, protocol: str) -> None:
    """A `connection_init` whose payload is not an object is malformed too."""
    async with ws_client(url, protocol) as client:
        await client.ws.send(json.dumps({"type": "connection_init", "payload": "token"}))
        assert await _close_code(client) == 4400


@pytest.mark.slow
async def test_a_connection_without_connection_init_is_closed_on_both_protocols(url: str) -> None:
    """Neither protocol lets a socket idle without `connection_init`: both close with 4408 after the deadline."""

    async def idle(protocol: str) -> tuple[int, float]:
        async with ws_client(url, protocol) as client:
            started = time.monotonic()
            code = await _close_code(client, timeout=CONNECTION_INIT_TIMEOUT_S + 30)
            return code, time.monotonic() - started

    results = await asyncio.gather(*(idle(protocol) for protocol in PROTOCOLS))
    for code, waited in results:
        assert code == 4408
        assert waited >= CONNECTION_INIT_TIMEOUT_S * 0.9  # the deadline, not an early close


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_websockets_per_token_are_capped(make_app: Callable[..., Starlette], protocol: str) -> None:
    """A token holding its cap is refused another websocket (4429, or RATE_LIMITED); other tokens are not."""
    async with served(make_app(api_tokens=TOKENS, limits=Limits(ws_per_token=2))) as base:
        async with ws_client(base, protocol) as one, ws_client(base, protocol) as two:
            for client in (one, two):
                assert (await client.init({"authToken": READ_TOKEN}))["type"] == "connection_ack"
            async with ws_client(base, protocol) as three:
                if protocol == "graphql-transport-ws":
                    await three.send({"type": "connection_init", "payload": {"authToken": READ_TOKEN}})
                    assert await _close_code(three) == 4429
                else:
                    answer = await three.init({"authToken": READ_TOKEN})
                    assert answer["type"] == "connection_error"
                    assert answer["payload"]["extensions"]["code"] == "RATE_LIMITED"
            async with ws_client(base, protocol) as other:
                assert (await other.init({"authToken": ADMIN_TOKEN}))["type"] == "connection_ack"
        async with ws_client(base, protocol) as again:  # the first two closed: the reader may connect again
            assert (await again.init({"authToken": READ_TOKEN}))["type"] == "connection_ack"


def test_an_operation_already_forgotten_is_not_an_error() -> None:
    """When a client's `complete` or the socket's shutdown has dropped an operation just as it ends, its own
    end forgets nothing (Strawberry raised KeyError and logged a traceback; `make fuzz` found it)."""
    handler = TransportWSHandler(
        view=None,  # type: ignore[arg-type]
        websocket=None,  # type: ignore[arg-type]
        context=None,
        root_value=None,
        schema=None,  # type: ignore[arg-type]
        connection_init_wait_timeout=timedelta(seconds=10),
    )
    handler.forget_id("1")
    assert handler.operations == {}
