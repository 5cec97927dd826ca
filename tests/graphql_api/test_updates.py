"""`deploymentUpdates` over a real server and real websockets: every status or stage change of any deployment,
live, over both subprotocols; poll attempts that change neither are left out; `status` filters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from jobs.progress import record
from models import Deployment, DeploymentStage, DeploymentStatus
from tests.graphql_api.conftest import WSClient, served, ws_client

UPDATES = """
subscription($status: [DeploymentStatus!]) {
  deploymentUpdates(status: $status) { deploymentId sequence status stage message deployment { id status stage } }
}
"""


async def wait_for_listeners(app: Starlette, count: int) -> None:
    """Wait until the app's progress hub has `count` listeners (the subscriptions are registered)."""
    deadline = time.monotonic() + 20
    while app.state.services.hub.listener_count < count:
        assert time.monotonic() < deadline, "the subscription never registered"
        await asyncio.sleep(0.02)


async def run_one_deployment(redis: Redis) -> Deployment:
    """Record a small deployment's life: queued, two stages with a poll attempt between, completed."""
    row = await Deployment.create(spec={})
    await record(redis, row, "queued", status=DeploymentStatus.QUEUED, stage=DeploymentStage.QUEUED)
    await record(redis, row, "creating", status=DeploymentStatus.PROCESSING, stage=DeploymentStage.CREATE_DROPLET)
    await record(redis, row, "waiting", stage=DeploymentStage.WAIT_DROPLET)
    await record(redis, row, "still new (attempt 2)", attempt=2)
    await record(redis, row, "running", status=DeploymentStatus.COMPLETED, stage=DeploymentStage.DONE)
    return row


async def collect(client: WSClient, op_id: str, count: int) -> list[dict[str, object]]:
    """The next `count` updates of an operation."""
    updates = []
    async for payload in client.results(op_id, timeout=20):
        assert "errors" not in payload, payload
        updates.append(payload["data"]["deploymentUpdates"])
        if len(updates) == count:
            break
    return updates


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_every_status_or_stage_change_arrives_live(
    make_app: Callable[..., Starlette], redis: Redis, protocol: str
) -> None:
    """Changes of two deployments arrive in order per deployment, without the poll attempt in between."""
    app = make_app()
    async with served(app) as base, ws_client(base, protocol) as client:
        assert (await client.init())["type"] == "connection_ack"
        await client.subscribe("u", UPDATES, {})
        await wait_for_listeners(app, 1)
        first, second = await run_one_deployment(redis), await run_one_deployment(redis)
        updates = await collect(client, "u", 8)
    for row in (first, second):
        mine = [u for u in updates if u["deploymentId"] == str(row.id)]
        assert [(u["status"], u["stage"]) for u in mine] == [
            ("QUEUED", "QUEUED"),
            ("PROCESSING", "CREATE_DROPLET"),
            ("PROCESSING", "WAIT_DROPLET"),
            ("COMPLETED", "DONE"),
        ]
        assert [u["sequence"] for u in mine] == [1, 2, 3, 5]
        assert mine[-1]["deployment"] == {"id": str(row.id), "status": "COMPLETED", "stage": "DONE"}


async def test_a_status_filter_passes_only_changes_into_those_statuses(
    make_app: Callable[..., Starlette], redis: Redis
) -> None:
    """With `status: [COMPLETED]` a dashboard sees only deployments arriving in COMPLETED."""
    app = make_app()
    async with served(app) as base, ws_client(base, "graphql-transport-ws") as client:
        await client.init()
        await client.subscribe("u", UPDATES, {"status": ["COMPLETED"]})
        await wait_for_listeners(app, 1)
        row = await run_one_deployment(redis)
        updates = await collect(client, "u", 1)
        await client.send({"id": "u", "type": "complete"})
    assert [(u["deploymentId"], u["status"], u["message"]) for u in updates] == [(str(row.id), "COMPLETED", "running")]


async def test_closing_the_socket_unregisters_the_listener(make_app: Callable[..., Starlette]) -> None:
    """A dashboard that goes away leaves no listener behind."""
    app = make_app()
    async with served(app) as base:
        async with ws_client(base, "graphql-transport-ws") as client:
            await client.init()
            await client.subscribe("u", UPDATES, {})
            await wait_for_listeners(app, 1)
        deadline = time.monotonic() + 20
        while app.state.services.hub.listener_count:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
