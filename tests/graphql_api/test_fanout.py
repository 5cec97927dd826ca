"""Fan-out over real websockets on real uvicorn servers: one rendering per shape and event, Strawberry's bytes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from graphql_api.fanout import Fanout, Handover, Renderer, send_now
from graphql_api.schema import schema
from graphql_api.types import DeploymentEvent
from jobs.progress import ProgressHub, record
from models import Deployment, DeploymentStage, DeploymentStatus
from tests.graphql_api.conftest import PROGRESS, WSClient, served, ws_client

PROTOCOLS = ["graphql-transport-ws", "graphql-ws"]
#: Documents of different shapes: every field, aliases and a fragment, a directive driven by a variable.
DOCUMENTS: list[tuple[str, dict[str, Any]]] = [
    (PROGRESS, {}),
    (
        """subscription($id: ID!) { p: deploymentProgress(id: $id) { __typename n: sequence ...F } }
        fragment F on DeploymentEvent { status stage when: at }""",
        {},
    ),
    (
        """subscription Watch($id: ID!, $full: Boolean!) {
          deploymentProgress(id: $id) { sequence message @include(if: $full) attempt @skip(if: $full) }
        }""",
        {"full": False},
    ),
]


async def _deploy(base_url: str) -> Deployment:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/graphql", json={"query": "mutation { deploy { id } }"})
    return await Deployment.get(id=response.json()["data"]["deploy"]["id"])


async def _frames(client: WSClient) -> list[str]:
    """Raw text frames up to and including the operation's `complete`, keep-alives left out."""
    frames: list[str] = []
    while True:
        text = await asyncio.wait_for(client.ws.recv(), 10)
        assert isinstance(text, str)
        kind = json.loads(text)["type"]
        if kind in ("ka", "ping", "pong"):
            continue
        frames.append(text)
        if kind in ("complete", "error"):
            return frames


async def _events(redis: Redis, row: Deployment) -> None:
    await record(
        redis, row, "Creating droplet", status=DeploymentStatus.PROCESSING, stage=DeploymentStage.CREATE_DROPLET
    )
    await record(redis, row, "Waiting", stage=DeploymentStage.WAIT_DROPLET, attempt=2)
    await record(redis, row, "Deployment finished", status=DeploymentStatus.COMPLETED, stage=DeploymentStage.DONE)


@contextlib.asynccontextmanager
async def _two_servers(make_app: Callable[..., Starlette]) -> AsyncIterator[tuple[str, str]]:
    """One app that fans out, one whose websockets run every subscriber through Strawberry (no renderer)."""
    shared, own = make_app(), make_app()
    own.state.graphql.fanout = None
    async with served(shared) as shared_url, served(own) as own_url:
        yield shared_url, own_url


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("document", "variables"), DOCUMENTS)
async def test_frames_are_the_bytes_strawberry_sends(
    make_app: Callable[..., Starlette], redis: Redis, protocol: str, document: str, variables: dict[str, Any]
) -> None:
    """A fanned-out subscriber receives, frame for frame and byte for byte, what Strawberry's own per-subscriber
    execution sends for the same operation."""
    async with _two_servers(make_app) as (shared_url, own_url):
        row = await _deploy(shared_url)
        streams: list[list[str]] = []
        async with ws_client(shared_url, protocol) as fanned, ws_client(own_url, protocol) as strawberry:
            for client in (fanned, strawberry):
                await client.init()
                await client.subscribe("op-1", document, {"id": str(row.id), **variables})
                first = await client.receive()
                assert first["type"] in ("next", "data"), first
            await _events(redis, row)
            streams = [await _frames(fanned), await _frames(strawberry)]
    assert len(streams[0]) == 4  # three events and `complete`
    assert streams[0] == streams[1]


async def test_each_event_is_rendered_once_per_shape(make_app: Callable[..., Starlette], redis: Redis) -> None:
    """Twenty subscribers of two shapes on both protocols each get every event once and in order, while each
    event is rendered once per shape."""
    app = make_app()
    renderer: Renderer = app.state.graphql.fanout.renderer
    async with served(app) as url:
        row = await _deploy(url)
        async with contextlib.AsyncExitStack() as stack:
            clients = []
            for i in range(20):
                client = await stack.enter_async_context(ws_client(url, PROTOCOLS[i % 2]))
                await client.init()
                document, variables = DOCUMENTS[i % 3 == 0]
                await client.subscribe(f"s{i}", document, {"id": str(row.id), **variables})
                clients.append(client)
            for client in clients:
                assert (await client.receive())["type"] in ("next", "data")
            before = renderer.renders
            await _events(redis, row)
            results = await asyncio.gather(*(_frames(client) for client in clients))
    assert all(json.loads(frames[-1])["type"] == "complete" for frames in results)
    for frames in results:
        events = [next(iter(json.loads(frame)["payload"]["data"].values())) for frame in frames[:-1]]
        assert [event.get("sequence", event.get("n")) for event in events] == [2, 3, 4]
    assert renderer.renders - before == 3 * 2  # three events, two shapes


async def test_a_subscriber_leaving_stops_only_its_stream(make_app: Callable[..., Starlette], redis: Redis) -> None:
    """Completing one subscription (graphql-transport-ws `complete`) ends it alone; the hub follows the
    deployment for the others, and drops it when they are done."""
    app = make_app()
    async with served(app) as url:
        hub = app.state.services.hub
        fanout: Fanout = app.state.graphql.fanout
        row = await _deploy(url)
        async with ws_client(url, "graphql-transport-ws") as leaving, ws_client(url, "graphql-ws") as staying:
            for client in (leaving, staying):
                await client.init()
                await client.subscribe("1", PROGRESS, {"id": str(row.id)})
                await client.receive()
            await leaving.send({"id": "1", "type": "complete"})
            for _ in range(100):
                if fanout.subscribers == 1:
                    break
                await asyncio.sleep(0.02)
            assert fanout.subscribers == 1
            assert hub.listener_count == 1  # the deployment's feed
            await _events(redis, row)
            frames = await _frames(staying)
            assert [json.loads(f)["payload"]["data"]["deploymentProgress"]["sequence"] for f in frames[:-1]] == [
                2,
                3,
                4,
            ]
        for _ in range(100):
            if not hub.channels:
                break
            await asyncio.sleep(0.02)
        assert hub.channels == frozenset()


class GatedSend:
    """A subscriber's send that records frames, and from frame `block_at` on waits until `gate` opens."""

    def __init__(self, block_at: int | None = None) -> None:
        self.frames: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.block_at = block_at

    async def __call__(self, frame: str) -> None:
        if self.block_at is not None and len(self.frames) + 1 >= self.block_at:
            await self.gate.wait()
        self.frames.append(json.loads(frame))

    @property
    def sequences(self) -> list[int]:
        return [f["payload"]["data"]["deploymentProgress"]["sequence"] for f in self.frames]


async def _follow(fanout: Fanout, hub: ProgressHub, row: Deployment, send: GatedSend) -> None:
    handover = Handover(PROGRESS, None, {"id": str(row.id)}, deployment_id=row.id)
    await fanout.follow(hub, handover, prefix='{"id":"1","type":"next","payload":', send=send)


@pytest.mark.parametrize("max_backlog", [256, 2])
async def test_a_slow_reader_holds_up_nobody(db: str, redis: Redis, max_backlog: int) -> None:
    """While one subscriber's send is stuck, the others get every live event; the stuck one then gets the rest,
    each event once and in order: queued behind the stuck send, or (past `max_backlog`) from the database."""
    hub = ProgressHub(redis)
    await hub.start()
    try:
        fanout = Fanout(Renderer(schema, DeploymentEvent.from_progress), max_backlog=max_backlog)
        row = await Deployment.create()
        await record(redis, row, "queued")
        fast, slow = GatedSend(), GatedSend(block_at=3)
        tasks = [asyncio.create_task(_follow(fanout, hub, row, send)) for send in (fast, slow)]
        while len(fast.frames) < 1 or len(slow.frames) < 1 or fanout.feeds == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # both parked on the feed
        for i in range(5):
            await record(redis, row, f"step {i}")
        await record(redis, row, "done", status=DeploymentStatus.COMPLETED, stage=DeploymentStage.DONE)
        await asyncio.wait_for(tasks[0], 5)
        assert fast.sequences == [1, 2, 3, 4, 5, 6, 7]
        assert slow.sequences == [1, 2] and not tasks[1].done()
        slow.gate.set()
        await asyncio.wait_for(tasks[1], 5)
        assert slow.sequences == [1, 2, 3, 4, 5, 6, 7]
        assert fanout.feeds == 0
    finally:
        await hub.stop()


async def test_send_now_finishes_at_once_or_in_a_task() -> None:
    """A send that need not wait is done when `send_now` returns; one that must wait finishes in a task."""
    done: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    async def quick() -> None:
        done.append("quick")

    async def waits() -> None:
        await gate
        done.append("waited")

    assert send_now(quick()) is None
    assert done == ["quick"]
    task = send_now(waits())
    assert task is not None and not task.done()
    gate.set_result(None)
    await asyncio.wait_for(task, 1)
    assert done == ["quick", "waited"]


async def test_metrics_count_subscribers_and_followed_deployments(
    make_app: Callable[..., Starlette], redis: Redis
) -> None:
    """Three subscribers of one deployment are three listeners in `/metrics`, and one channel followed."""
    app = make_app()
    async with served(app) as url:
        row = await _deploy(url)
        async with contextlib.AsyncExitStack() as stack:
            for i in range(3):
                client = await stack.enter_async_context(ws_client(url, PROTOCOLS[i % 2]))
                await client.init()
                await client.subscribe("1", PROGRESS, {"id": str(row.id)})
                await client.receive()
            async with httpx.AsyncClient(base_url=url) as http:
                lines = (await http.get("/metrics")).text.splitlines()
            assert "deployer_progress_listeners 3" in lines
            assert "deployer_progress_channels 1" in lines


async def test_a_feed_that_fails_ends_its_subscribers_with_a_masked_error(db: str, redis: Redis) -> None:
    """When the deployment's feed cannot follow it (here the hub was never started), each subscriber gets its
    replay, then one INTERNAL_SERVER_ERROR payload, and its stream ends instead of retrying forever."""
    fanout = Fanout(Renderer(schema, DeploymentEvent.from_progress))
    row = await Deployment.create()
    await record(redis, row, "queued")
    send = GatedSend()
    await asyncio.wait_for(_follow(fanout, ProgressHub(redis), row, send), 5)
    assert send.frames[0]["payload"]["data"]["deploymentProgress"]["sequence"] == 1
    assert send.frames[1]["payload"]["data"] is None
    assert send.frames[1]["payload"]["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert len(send.frames) == 2 and fanout.feeds == 0 and fanout.subscribers == 0
