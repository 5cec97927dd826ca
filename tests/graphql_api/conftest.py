"""Fixtures for the GraphQL edge: an app with its lifespan running, an HTTP client, a real uvicorn server,
and small GraphQL-over-HTTP and GraphQL-over-WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from saq import Queue
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect

from deployer.embedded_redis import free_port
from graphql_api.app import create_app
from graphql_api.context import Services
from sandbox.app import create_app as create_sandbox
from sandbox.state import World
from settings import ApiToken, Settings
from tests.conftest import FAST_WORLD

READ_TOKEN = "read-token-0123456789abcdef"
DEPLOY_TOKEN = "deploy-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
TOKENS = (
    ApiToken(token=READ_TOKEN, scopes=frozenset({"read"}), name="reader"),
    ApiToken(token=DEPLOY_TOKEN, scopes=frozenset({"deploy"}), name="deployer"),
    ApiToken(token=ADMIN_TOKEN, scopes=frozenset({"read", "deploy", "env", "admin"}), name="admin"),
)

DEPLOY = """
mutation Deploy($input: DeployInput) {
  deploy(input: $input) { id status stage dropletName name ports region size image envKeys
                          source { kind image tag repository branch buildPack description } }
}
"""
DROPLET_COUNT = "{ dropletCount { active limit available } }"
PROGRESS = """
subscription Progress($id: ID!, $after: Int) {
  deploymentProgress(id: $id, afterSequence: $after) { sequence deploymentId status stage message attempt at }
}
"""


@dataclass
class GraphQLClient:
    """Posts GraphQL operations to an app and returns (HTTP status, JSON body)."""

    http: httpx.AsyncClient

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Run one operation."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
        return response.status_code, response.json()


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Services]:
    """Run an app's lifespan (what a server does at start and stop) and yield its services."""
    async with app.router.lifespan_context(app):
        yield app.state.services


@contextlib.asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[str]:
    """Serve an app with a real uvicorn server on a free port; yields its base URL (http://...)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


@pytest.fixture
def api_world() -> World:
    """The sandbox the API's own DigitalOcean client (the catalog `deploy` checks) talks to."""
    return World(FAST_WORLD)


@pytest.fixture
def make_app(settings: Settings, api_world: World) -> Callable[..., Starlette]:
    """Build an app from the test settings, optionally overriding some of them."""

    def build(**overrides: object) -> Starlette:
        return create_app(
            settings.with_overrides(**overrides) if overrides else settings,
            cloud_transport=httpx.ASGITransport(app=create_sandbox(api_world)),
        )

    return build


@pytest.fixture
async def app(make_app: Callable[..., Starlette]) -> AsyncIterator[Starlette]:
    """The app with its lifespan running."""
    application = make_app()
    async with running(application):
        yield application


@pytest.fixture
async def gql(app: Starlette) -> AsyncIterator[GraphQLClient]:
    """A GraphQL client talking to `app` in-process."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http:
        yield GraphQLClient(http)


@pytest.fixture
async def queue(redis_url: str, queue_name: str) -> AsyncIterator[Queue]:
    """The test's SAQ queue, to see what the API enqueued."""
    q = Queue.from_url(redis_url, name=queue_name)
    await q.connect()
    try:
        yield q
    finally:
        await q.disconnect()


class WSClient:
    """A GraphQL-over-WebSocket client for either subprotocol (`graphql-transport-ws` or `graphql-ws`)."""

    def __init__(self, connection: ClientConnection, protocol: str) -> None:
        self.ws = connection
        self.protocol = protocol

    @property
    def legacy(self) -> bool:
        """Whether this speaks the old `graphql-ws` (subscriptions-transport-ws) protocol."""
        return self.protocol == "graphql-ws"

    async def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message."""
        await self.ws.send(json.dumps(message))

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message that is not a keep-alive."""
        while True:
            message: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if message.get("type") not in ("ka", "ping", "pong"):
                return message

    async def init(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send `connection_init` and return the server's answer."""
        await self.send({"type": "connection_init", "payload": payload or {}})
        return await self.receive()

    async def subscribe(self, op_id: str, query: str, variables: dict[str, Any]) -> None:
        """Start an operation."""
        kind = "start" if self.legacy else "subscribe"
        await self.send({"id": op_id, "type": kind, "payload": {"query": query, "variables": variables}})

    async def results(self, op_id: str, *, timeout: float = 10.0) -> AsyncIterator[dict[str, Any]]:
        """Payloads of `next`/`data` messages for an operation until it completes; raises on `error`."""
        while True:
            message = await self.receive(timeout)
            assert message.get("id") == op_id, message
            if message["type"] in ("next", "data"):
                yield message["payload"]
            elif message["type"] == "complete":
                return
            else:
                raise AssertionError(f"unexpected message {message}")


def operation_errors(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The GraphQL errors of an `error`, `next` or `data` message, whichever protocol sent it."""
    payload = message["payload"]
    if message["type"] == "error":
        return payload if isinstance(payload, list) else [payload]
    errors: list[dict[str, Any]] = payload["errors"]
    return errors


@contextlib.asynccontextmanager
async def ws_client(
    base_url: str, protocol: str, *, headers: Sequence[tuple[str, str]] = ()
) -> AsyncIterator[WSClient]:
    """Open a WebSocket to `/graphql` with one subprotocol."""
    url = base_url.replace("http://", "ws://") + "/graphql"
    async with connect(url, subprotocols=[protocol], additional_headers=list(headers)) as connection:  # type: ignore[list-item]
        assert connection.subprotocol == protocol
        yield WSClient(connection, protocol)
