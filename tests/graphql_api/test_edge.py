"""The edge, through a real uvicorn server: Host checks while open, body and message limits, websocket caps,
request ids."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from graphql_api.edge import is_loopback_host
from settings import Limits
from tests.graphql_api.conftest import DROPLET_COUNT, READ_TOKEN, TOKENS, served, ws_client
from tests.rawhttp import raw_connection

QUERY = json.dumps({"query": DROPLET_COUNT}).encode()


@pytest.fixture
async def open_url(make_app: Callable[..., Starlette]) -> AsyncIterator[str]:
    """A real server for an app without tokens (open, so loopback only)."""
    async with served(make_app()) as url:
        yield url


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:8000", True),
        ("LOCALHOST.", True),
        ("app.localhost:8000", True),
        ("127.0.0.1:8000", True),
        ("127.9.9.9", True),
        ("[::1]:8000", True),
        ("[::1]", True),
        ("evil.example", False),
        ("evil.example:8000", False),
        ("localhost.evil.example", False),
        ("10.0.0.1:8000", False),
        ("[::ffff:10.0.0.1]", False),
        ("", False),
        (None, False),
    ],
)
def test_loopback_hosts(host: str | None, loopback: bool) -> None:
    """Only names of this machine's loopback count: a rebinding attacker's own name never does."""
    assert is_loopback_host(host) is loopback


async def test_an_open_api_answers_only_requests_addressed_to_loopback(open_url: str) -> None:
    """Without tokens, a request whose Host is another name gets 421; loopback names and the probes pass."""
    async with raw_connection(open_url, host="rebound.evil.example:8000") as conn:
        refused = await conn.request("POST", "/graphql", QUERY)
        probe = await conn.request("GET", "/healthz")
    assert refused.status == 421
    error = json.loads(refused.body)["errors"][0]
    assert error["extensions"] == {"code": "MISDIRECTED_REQUEST", "status": 421}
    assert "DEPLOYER_API_TOKENS" in error["message"]
    assert probe.status == 200
    port = open_url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]"):
        async with raw_connection(open_url, host=host) as conn:
            answer = await conn.request("POST", "/graphql", QUERY)
        assert answer.status == 200, (host, answer.body)
        assert "errors" not in json.loads(answer.body)


async def test_an_open_api_refuses_websockets_addressed_elsewhere(open_url: str) -> None:
    """The websocket handshake of a rebound page (Host: its own name) is refused with 421."""
    key = base64.b64encode(os.urandom(16)).decode()
    async with raw_connection(open_url, host="rebound.evil.example") as conn:
        await conn.send(
            (
                "GET /graphql HTTP/1.1\r\nHost: rebound.evil.example\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: graphql-transport-ws\r\nOrigin: http://rebound.evil.example\r\n\r\n"
            ).encode()
        )
        response = await conn.read_response()
    assert response.status == 421


@pytest.mark.parametrize("origin", ["http://evil.example", "null"])
async def test_a_cross_site_page_cannot_open_a_websocket(open_url: str, origin: str) -> None:
    """A browser handshake from another origin (Host: localhost, Origin: another site) is refused."""
    ws_url = open_url.replace("http://127.0.0.1", "ws://localhost") + "/graphql"
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url, subprotocols=["graphql-transport-ws"], origin=origin)  # type: ignore[arg-type,list-item]
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_a_cross_site_form_cannot_post_an_operation(open_url: str, content_type: str) -> None:
    """What a cross-site form can send without a CORS preflight is refused: only application/json runs."""
    async with raw_connection(open_url, host="localhost") as conn:
        answer = await conn.request(
            "POST", "/graphql", b'{"query": "mutation { deploy { id } }"}', headers={"Content-Type": content_type}
        )
    assert answer.status == 400
    assert json.loads(answer.body)["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_with_tokens_any_host_reaches_the_api(make_app: Callable[..., Starlette]) -> None:
    """With tokens configured, the Host is not restricted (a reverse proxy may use any name)."""
    async with served(make_app(api_tokens=TOKENS)) as url, raw_connection(url, host="deployer.internal") as conn:
        answer = await conn.request("POST", "/graphql", QUERY, headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert answer.status == 200
    assert json.loads(answer.body)["data"]["dropletCount"]["limit"] == 3


async def test_a_declared_oversized_body_gets_413_before_it_is_sent(open_url: str) -> None:
    """Content-Length of 100 MB: 413 at once, with none of the body sent, and the connection closed."""
    async with raw_connection(open_url, host="localhost") as conn:
        answer = await conn.request("POST", "/graphql", b"", content_length=100_000_000)
        assert answer.status == 413
        assert json.loads(answer.body)["errors"][0]["extensions"] == {"code": "PAYLOAD_TOO_LARGE", "status": 413}
        assert answer.headers.get("connection") == "close"
        assert await conn.closed_by_server()


async def test_a_client_still_sending_receives_the_413_not_a_reset(open_url: str) -> None:
    """A client that sends a 6 MB body in full (as httpx does) still reads the 413: the server lingers briefly
    before closing instead of resetting the connection under it."""
    body = json.dumps({"query": DROPLET_COUNT, "variables": {"pad": "x" * 6_000_000}}).encode()
    async with httpx.AsyncClient(base_url=open_url.replace("127.0.0.1", "localhost"), timeout=30) as http:
        response = await http.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413


async def test_a_chunked_oversized_body_gets_413(make_app: Callable[..., Starlette]) -> None:
    """A body without Content-Length is counted as it arrives: past the limit, 413."""
    async with served(make_app(limits=Limits(max_body_bytes=64 * 1024))) as url, raw_connection(url) as conn:
        await conn.send(
            (
                f"POST /graphql HTTP/1.1\r\nHost: {conn.host}\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        chunk = b"x" * 16 * 1024
        for _ in range(6):
            await conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        answer = await conn.read_response()
    assert answer.status == 413


async def test_a_body_at_the_limit_is_read(make_app: Callable[..., Starlette]) -> None:
    """A body of exactly the limit is accepted (here padded with JSON whitespace)."""
    limit = 8 * 1024
    async with served(make_app(limits=Limits(max_body_bytes=limit))) as url, raw_connection(url) as conn:
        answer = await conn.request("POST", "/graphql", QUERY + b" " * (limit - len(QUERY)))
    assert answer.status == 200


async def test_every_answer_carries_a_request_id(open_url: str) -> None:
    """A plain X-Request-ID is kept; a missing or odd one is replaced by a random one."""
    async with raw_connection(open_url, host="localhost") as conn:
        given = await conn.request("POST", "/graphql", QUERY, headers={"X-Request-ID": "abc-123"})
        odd = await conn.request("POST", "/graphql", QUERY, headers={"X-Request-ID": "a b\tc"})
        none = await conn.request("GET", "/healthz")
    assert given.headers["x-request-id"] == "abc-123"
    assert odd.headers["x-request-id"] != "a b\tc" and len(odd.headers["x-request-id"]) == 16
    assert len(none.headers["x-request-id"]) == 16


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_an_oversized_websocket_message_closes_with_1009(
    make_app: Callable[..., Starlette], protocol: str
) -> None:
    """A message over the limit closes the connection with 1009 (message too big)."""
    async with served(make_app(limits=Limits(max_body_bytes=64 * 1024))) as url, ws_client(url, protocol) as client:
        assert (await client.init())["type"] == "connection_ack"
        await client.send({"type": "ping", "payload": {"pad": "x" * 70_000}})
        with pytest.raises(ConnectionClosed) as closed:
            await client.receive()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


async def test_websockets_per_address_are_capped(make_app: Callable[..., Starlette]) -> None:
    """The third websocket from one address is refused with 429; once one closes, a new one is accepted."""
    async with served(make_app(limits=Limits(ws_per_ip=2))) as url:
        ws_url = url.replace("http://", "ws://") + "/graphql"
        first = await connect(ws_url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
        second = await connect(ws_url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
        assert refused.value.response.status_code == 429
        await first.close()
        await asyncio.sleep(0.2)  # the server notices the close
        for _ in range(50):
            try:
                third = await connect(ws_url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
                break
            except InvalidStatus:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("a websocket was refused after another one closed")
        await second.close()
        await third.close()
