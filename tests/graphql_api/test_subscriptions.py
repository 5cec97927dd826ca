"""`deploymentProgress` over real WebSockets (both subprotocols) on a real uvicorn server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from jobs.progress import record
from models import Deployment, DeploymentStage, DeploymentStatus
from tests.graphql_api.conftest import PROGRESS, WSClient, operation_errors, served, ws_client

PROTOCOLS = ["graphql-transport-ws", "graphql-ws"]
STEPS = [
    ("Creating droplet", DeploymentStatus.PROCESSING, DeploymentStage.CREATE_DROPLET),
    ("Waiting for droplet", DeploymentStatus.PROCESSING, DeploymentStage.WAIT_DROPLET),
    ("Registering server", DeploymentStatus.PROCESSING, DeploymentStage.REGISTER_SERVER),
    ("Deployment finished", DeploymentStatus.COMPLETED, DeploymentStage.DONE),
]


@pytest.fixture
async def base_url(make_app: Any) -> AsyncIterator[str]:
    """A real server for the app."""
    app: Starlette = make_app()
    async with served(app) as url:
        yield url


async def _deploy(base_url: str) -> Deployment:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/graphql", json={"query": "mutation { deploy { id } }"})
    return await Deployment.get(id=response.json()["data"]["deploy"]["id"])


async def _events(client: WSClient, op_id: str) -> list[dict[str, Any]]:
    return [payload["data"]["deploymentProgress"] async for payload in client.results(op_id)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_live_events_arrive_once_in_order_then_complete(base_url: str, redis: Redis, protocol: str) -> None:
    """A subscriber gets the stored event, then every live one once and in order, then `complete`."""
    row = await _deploy(base_url)
    async with ws_client(base_url, protocol) as client:
        assert (await client.init())["type"] == "connection_ack"
        await client.subscribe("1", PROGRESS, {"id": str(row.id)})
        results = client.results("1")
        first = await anext(results)
        assert first["data"]["deploymentProgress"]["sequence"] == 1  # replayed; the listener is now registered
        for message, status, stage in STEPS:
            await record(redis, row, message, status=status, stage=stage)
        rest = [payload["data"]["deploymentProgress"] async for payload in results]
    assert [e["sequence"] for e in rest] == [2, 3, 4, 5]
    assert [e["message"] for e in rest] == [step[0] for step in STEPS]
    assert rest[-1]["status"] == "COMPLETED"
    assert rest[-1]["stage"] == "DONE"
    assert {e["deploymentId"] for e in rest} == {str(row.id)}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_after_sequence_replays_only_later_events(base_url: str, redis: Redis, protocol: str) -> None:
    """With `afterSequence`, a finished deployment replays the later stored events and completes."""
    row = await _deploy(base_url)
    for message, status, stage in STEPS:
        await record(redis, row, message, status=status, stage=stage)
    async with ws_client(base_url, protocol) as client:
        await client.init()
        await client.subscribe("a", PROGRESS, {"id": str(row.id), "after": 2})
        events = await _events(client, "a")
        await client.subscribe("b", PROGRESS, {"id": str(row.id)})
        everything = await _events(client, "b")
    assert [e["sequence"] for e in events] == [3, 4, 5]
    assert [e["sequence"] for e in everything] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unknown_deployment_is_not_found(base_url: str, protocol: str) -> None:
    """Subscribing to an unknown id yields a NOT_FOUND error."""
    async with ws_client(base_url, protocol) as client:
        await client.init()
        await client.subscribe("x", PROGRESS, {"id": "00000000-0000-4000-8000-000000000000"})
        message = await client.receive()
    errors = operation_errors(message)
    assert errors[0]["extensions"] == {"code": "NOT_FOUND", "status": 404}


async def test_two_subscribers_each_get_every_event(base_url: str, redis: Redis) -> None:
    """Two subscribers on different protocols both receive the full stream."""
    row = await _deploy(base_url)
    async with ws_client(base_url, "graphql-transport-ws") as one, ws_client(base_url, "graphql-ws") as two:
        for client in (one, two):
            await client.init()
            await client.subscribe("s", PROGRESS, {"id": str(row.id)})
        streams = [one.results("s"), two.results("s")]
        for stream in streams:
            assert (await anext(stream))["data"]["deploymentProgress"]["sequence"] == 1
        for message, status, stage in STEPS:
            await record(redis, row, message, status=status, stage=stage)
        for stream in streams:
            assert [p["data"]["deploymentProgress"]["sequence"] async for p in stream] == [2, 3, 4, 5]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_disconnect_unregisters_the_listener(make_app: Any, protocol: str) -> None:
    """A client that goes away mid-stream leaves no listener behind in the progress hub."""
    app: Starlette = make_app()
    async with served(app) as url:
        hub = app.state.services.hub
        row = await _deploy(url)
        async with ws_client(url, protocol) as client:
            await client.init()
            await client.subscribe("1", PROGRESS, {"id": str(row.id)})
            await anext(client.results("1"))
            assert hub.listener_count == 1
        for _ in range(100):
            if hub.listener_count == 0:
                break
            await asyncio.sleep(0.02)
        assert hub.listener_count == 0
