"""Progress events over the real database and real Redis: sequence numbers, replay + live, no gap, no duplicate."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from jobs.progress import ProgressEvent, ProgressHub, channel, record, stored_events
from models.deployment import Deployment, DeploymentStage, DeploymentStatus


@pytest.fixture
async def hub(db: str, redis: Redis) -> AsyncIterator[ProgressHub]:
    """A started hub with a short resync interval."""
    progress_hub = ProgressHub(redis, resync_after_s=0.5)
    await progress_hub.start()
    try:
        yield progress_hub
    finally:
        await progress_hub.stop()


async def _collect(hub: ProgressHub, deployment: Deployment, after: int = 0) -> list[ProgressEvent]:
    return [event async for event in hub.listen(deployment.id, after_sequence=after)]


async def test_record_numbers_events_and_updates_the_row(db: str, redis: Redis) -> None:
    """Each recorded event gets the next sequence number and its status/stage are written to the deployment."""
    deployment = await Deployment.create()
    first = await record(redis, deployment, "queued")
    second = await record(
        redis, deployment, "creating", status=DeploymentStatus.PROCESSING, stage=DeploymentStage.CREATE_DROPLET,
        droplet_id=42,
    )  # fmt: skip
    assert (first.sequence, second.sequence) == (1, 2)
    stored = await Deployment.get(id=deployment.id)
    assert (stored.status, stored.stage, stored.droplet_id) == (
        DeploymentStatus.PROCESSING,
        DeploymentStage.CREATE_DROPLET,
        42,
    )
    assert [e.sequence for e in await stored_events(deployment.id)] == [1, 2]


async def test_concurrent_writers_never_share_a_sequence(db: str, redis: Redis) -> None:
    """Concurrent records on one deployment get distinct, gapless sequence numbers."""
    deployment = await Deployment.create()
    rows = [await Deployment.get(id=deployment.id) for _ in range(5)]
    await asyncio.gather(*(record(None, row, f"event {i}") for i, row in enumerate(rows)))
    assert [e.sequence for e in await stored_events(deployment.id)] == [1, 2, 3, 4, 5]


async def test_listen_replays_then_streams_live_and_completes(hub: ProgressHub, redis: Redis) -> None:
    """A listener gets stored events, then live ones, each once and in order, and stops after the final one."""
    deployment = await Deployment.create()
    await record(redis, deployment, "one")
    await record(redis, deployment, "two")
    listener = asyncio.create_task(_collect(hub, deployment))
    await asyncio.sleep(0.1)
    await record(redis, deployment, "three", status=DeploymentStatus.PROCESSING)
    await record(redis, deployment, "done", status=DeploymentStatus.COMPLETED, stage=DeploymentStage.DONE)
    events = await asyncio.wait_for(listener, 5)
    assert [e.sequence for e in events] == [1, 2, 3, 4]
    assert [e.message for e in events] == ["one", "two", "three", "done"]
    assert events[-1].final
    assert hub.listener_count == 0


async def test_after_sequence_skips_what_the_client_has(hub: ProgressHub, redis: Redis) -> None:
    """afterSequence replays only later events; after the final event it completes at once."""
    deployment = await Deployment.create()
    for message in ("a", "b", "c"):
        await record(redis, deployment, message)
    await record(redis, deployment, "end", status=DeploymentStatus.FAILED)
    assert [e.sequence for e in await _collect(hub, deployment, after=2)] == [3, 4]
    assert await asyncio.wait_for(_collect(hub, deployment, after=4), 2) == []


async def test_duplicates_are_dropped_and_gaps_filled_from_the_database(hub: ProgressHub, redis: Redis) -> None:
    """A re-announced event is dropped and an event stored without announcement is read from the database."""
    deployment = await Deployment.create()
    first = await record(redis, deployment, "one")
    listener = asyncio.create_task(_collect(hub, deployment))
    await asyncio.sleep(0.1)
    await redis.publish(channel(deployment.id), first.to_json())  # duplicate
    await record(None, deployment, "two, never announced")
    await record(redis, deployment, "three", status=DeploymentStatus.COMPLETED)
    events = await asyncio.wait_for(listener, 5)
    assert [e.sequence for e in events] == [1, 2, 3]


async def test_a_lost_final_announcement_is_recovered_by_resync(hub: ProgressHub, redis: Redis) -> None:
    """When the final event is stored but never announced, the listener still completes after a quiet spell."""
    deployment = await Deployment.create()
    listener = asyncio.create_task(_collect(hub, deployment))
    await asyncio.sleep(0.1)
    await record(None, deployment, "done", status=DeploymentStatus.COMPLETED)
    events = await asyncio.wait_for(listener, 5)
    assert [e.message for e in events] == ["done"]


async def test_many_listeners_share_one_subscription(hub: ProgressHub, redis: Redis) -> None:
    """Two hundred listeners on one deployment each receive every event exactly once."""
    deployment = await Deployment.create()
    listeners = [asyncio.create_task(_collect(hub, deployment)) for _ in range(200)]
    await asyncio.sleep(0.2)
    for i in range(5):
        await record(redis, deployment, f"step {i}")
    await record(redis, deployment, "done", status=DeploymentStatus.COMPLETED)
    results = await asyncio.wait_for(asyncio.gather(*listeners), 10)
    assert all([e.sequence for e in events] == [1, 2, 3, 4, 5, 6] for events in results)


async def test_replay_goes_past_completed_into_a_later_destroy(hub: ProgressHub, redis: Redis) -> None:
    """A COMPLETED event followed by destroy events does not end the replay; DESTROYED does."""
    deployment = await Deployment.create()
    await record(redis, deployment, "done", status=DeploymentStatus.COMPLETED)
    await record(redis, deployment, "destroying", status=DeploymentStatus.DESTROYING)
    listener = asyncio.create_task(_collect(hub, deployment))
    await asyncio.sleep(0.1)
    await record(redis, deployment, "destroyed", status=DeploymentStatus.DESTROYED)
    events = await asyncio.wait_for(listener, 5)
    assert [e.message for e in events] == ["done", "destroying", "destroyed"]


async def test_listen_all_streams_every_deployment_and_catches_up_on_missed_announcements(
    hub: ProgressHub, redis: Redis
) -> None:
    """`listen_all` yields every deployment's new events once; one stored without an announcement is found in
    the database after a quiet spell."""
    listener = hub.listen_all()
    first = asyncio.ensure_future(anext(listener))
    while hub.listener_count == 0:
        await asyncio.sleep(0.01)
    a, b = await Deployment.create(), await Deployment.create()
    ours = {str(a.id), str(b.id)}  # a shared database may hold other tests' recent events, caught up too
    await record(redis, a, "a1")
    event = await asyncio.wait_for(first, 10)
    while event.deployment_id not in ours:
        event = await asyncio.wait_for(anext(listener), 10)
    assert event.message == "a1"
    await record(None, b, "b1 (never announced)")
    await record(redis, a, "a2")
    got: list[ProgressEvent] = []
    while len(got) < 2:
        event = await asyncio.wait_for(anext(listener), 10)
        if event.deployment_id in ours:
            got.append(event)
    assert sorted(e.message for e in got) == ["a2", "b1 (never announced)"]
    await listener.aclose()
    assert hub.listener_count == 0


async def _hub_client(redis_url: str, name: str) -> dict[str, str]:
    """The CLIENT LIST entry of the connection named `name` (the hub's pub/sub connection)."""
    admin = Redis.from_url(redis_url)
    try:
        for entry in await admin.client_list():
            if entry.get("name") == name:
                return {key: str(value) for key, value in entry.items()}
        return {}
    finally:
        await admin.aclose()


async def _wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_the_hub_subscribes_only_to_followed_deployments(db: str, redis_url: str, redis: Redis) -> None:
    """Redis sees the hub subscribed to the channels its listeners follow, and to every channel only while a
    `listen_all` listener exists; a channel is dropped when its last listener leaves."""
    name = f"hub-{uuid.uuid4().hex[:8]}"
    hub_redis = Redis.from_url(redis_url, client_name=name)
    hub = ProgressHub(hub_redis)
    await hub.start()
    followed, other = await Deployment.create(), await Deployment.create()
    try:
        assert (await _hub_client(redis_url, name))["sub"] == "1"  # the hub's own channel only
        listener = hub.listen(followed.id)
        first = asyncio.ensure_future(anext(listener))
        await _wait_for(lambda: _subscribed(redis, channel(followed.id)))
        assert not await _subscribed(redis, channel(other.id))
        assert hub.channels == {channel(followed.id)}
        entry = await _hub_client(redis_url, name)
        assert (entry["sub"], entry["psub"]) == ("2", "0")

        everything = hub.listen_all()
        any_event = asyncio.ensure_future(anext(everything))
        await _wait_for(lambda: _client_field(redis_url, name, "psub", "1"))
        await record(redis, other, "seen by listen_all only")
        event = await asyncio.wait_for(any_event, 5)
        while event.deployment_id != str(other.id):  # a shared Redis carries other installations' events too
            event = await asyncio.wait_for(anext(everything), 5)
        await everything.aclose()
        await _wait_for(lambda: _client_field(redis_url, name, "psub", "0"))

        await record(redis, followed, "done", status=DeploymentStatus.COMPLETED)
        assert (await asyncio.wait_for(first, 5)).message == "done"
        await listener.aclose()
        await _wait_for(lambda: _not(_subscribed(redis, channel(followed.id))))
        assert hub.channels == frozenset()
        assert (await _hub_client(redis_url, name))["sub"] == "1"
    finally:
        await hub.stop()
        await hub_redis.aclose()


async def _subscribed(redis: Redis, name: str) -> bool:
    counts = await redis.pubsub_numsub(name)
    return bool(counts and counts[0][1] > 0)


async def _client_field(redis_url: str, name: str, field: str, value: str) -> bool:
    return (await _hub_client(redis_url, name)).get(field) == value


async def _not(result: Awaitable[bool]) -> bool:
    return not await result


async def test_a_new_listener_is_subscribed_before_it_replays(db: str, redis: Redis) -> None:
    """An event announced right after a listener's replay arrives live, not after a quiet-spell resync."""
    hub = ProgressHub(redis, resync_after_s=60)
    await hub.start()
    try:
        deployment = await Deployment.create()
        await record(redis, deployment, "stored before")
        listener = hub.listen(deployment.id)
        assert (await asyncio.wait_for(anext(listener), 5)).message == "stored before"
        await record(redis, deployment, "announced after the replay")
        assert (await asyncio.wait_for(anext(listener), 5)).message == "announced after the replay"
        await listener.aclose()
    finally:
        await hub.stop()


async def test_a_reconnect_resubscribes_and_resyncs_from_the_database(db: str, redis_url: str, redis: Redis) -> None:
    """When Redis drops the hub's connection, the hub subscribes its channels again and its listeners read
    the database once Redis confirms, long before a quiet-spell resync: what they missed is delivered."""
    name = f"hub-{uuid.uuid4().hex[:8]}"
    hub_redis = Redis.from_url(redis_url, client_name=name)
    hub = ProgressHub(hub_redis, resync_after_s=60)
    await hub.start()
    try:
        deployment = await Deployment.create()
        await record(redis, deployment, "one")
        listener = hub.listen(deployment.id)
        assert (await asyncio.wait_for(anext(listener), 5)).sequence == 1
        await record(None, deployment, "two (never announced)")
        await record(None, deployment, "three (never announced)")
        entry = await _hub_client(redis_url, name)
        await redis.client_kill_filter(_id=entry["id"])
        got = [await asyncio.wait_for(anext(listener), 10) for _ in range(2)]
        assert [e.sequence for e in got] == [2, 3]
        await _wait_for(lambda: _subscribed(redis, channel(deployment.id)))
        await record(redis, deployment, "four")
        assert (await asyncio.wait_for(anext(listener), 5)).sequence == 4
        await listener.aclose()
    finally:
        await hub.stop()
        await hub_redis.aclose()


async def test_listen_all_catches_up_while_other_deployments_keep_it_busy(hub: ProgressHub, redis: Redis) -> None:
    """An event stored without an announcement reaches `listen_all` within a resync interval or two even when
    other deployments' announcements never leave it a quiet spell."""
    listener = hub.listen_all()
    busy, quiet = await Deployment.create(), await Deployment.create()
    await record(redis, busy, "first")  # starts the generator's wait below
    first = asyncio.ensure_future(anext(listener))
    await record(None, quiet, "never announced")

    async def chatter() -> None:
        for i in range(40):
            await record(redis, busy, f"busy {i}")
            await asyncio.sleep(0.05)

    talker = asyncio.create_task(chatter())
    try:
        event = await asyncio.wait_for(first, 5)
        while event.deployment_id != str(quiet.id):
            event = await asyncio.wait_for(anext(listener), 5)
        assert event.message == "never announced"
        assert not talker.done()  # found while the other deployment was still talking
    finally:
        talker.cancel()
        await listener.aclose()


async def test_listen_all_delivers_what_came_before_redis_confirmed_it(db: str, redis: Redis) -> None:
    """An event announced after `listen_all` registered but before Redis confirmed its pattern arrives at once
    from the database, not after a resync interval."""
    hub = ProgressHub(redis, resync_after_s=60)
    await hub.start()
    try:
        listener = hub.listen_all()
        first = asyncio.ensure_future(anext(listener))
        while hub.listener_count == 0:
            await asyncio.sleep(0)
        deployment = await Deployment.create()
        await record(redis, deployment, "right away")
        event = await asyncio.wait_for(first, 5)
        while event.deployment_id != str(deployment.id):
            event = await asyncio.wait_for(anext(listener), 5)
        assert event.message == "right away"
        await listener.aclose()
    finally:
        await hub.stop()


async def test_listen_all_ignores_deployments_of_other_installations(hub: ProgressHub, redis: Redis) -> None:
    """Pub/sub ignores Redis database numbers: an announcement of a deployment our database does not hold (another
    installation on the same Redis server) is not passed on."""
    listener = hub.listen_all()
    first = asyncio.ensure_future(anext(listener))
    while hub.listener_count == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    stranger = uuid.uuid4()
    foreign = ProgressEvent(
        str(stranger), 1, DeploymentStatus.QUEUED, DeploymentStage.QUEUED, "elsewhere", None, datetime.now(UTC)
    )
    await redis.publish(channel(stranger), foreign.to_json())
    ours = await Deployment.create()
    await record(redis, ours, "here")
    event = await asyncio.wait_for(first, 5)
    assert (event.deployment_id, event.message) == (str(ours.id), "here")
    await listener.aclose()
