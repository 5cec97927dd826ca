"""The event write path (`jobs.progress.record`): grouped transactions that keep every guarantee of one per event.

Stored before announced, announced in order, sequences 1, 2, 3, ... per deployment with no gap or duplicate
(also against a writer in another process), the row matching its last event, errors reaching only their caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import textwrap
import uuid

import pytest
from redis.asyncio import Redis
from tortoise.transactions import in_transaction

from deployer.embedded_redis import free_port
from jobs.progress import EventWriter, channel, record, stored_events
from models.deployment import Deployment, DeploymentEvent, DeploymentStage, DeploymentStatus


async def test_concurrent_records_are_stored_in_one_group(db: str, redis: Redis) -> None:
    """Records waiting together are stored by one transaction (one timestamp), each with its own sequence."""
    rows = [await Deployment.create() for _ in range(50)]
    events = await asyncio.gather(*(record(redis, row, f"event of {n}", attempt=n) for n, row in enumerate(rows)))
    assert {event.at for event in events} == {events[0].at}
    assert [(event.deployment_id, event.sequence, event.attempt) for event in events] == [
        (str(row.id), 1, n) for n, row in enumerate(rows)
    ]
    for n, row in enumerate(rows):
        stored = await stored_events(row.id)
        assert [(e.sequence, e.message, e.at) for e in stored] == [(1, f"event of {n}", events[0].at)]


async def test_one_deployment_in_a_group_keeps_call_order(db: str, redis: Redis) -> None:
    """Several records of one deployment in one group get consecutive sequences in call order, and the row
    ends as the last call left it while each event keeps the status it was recorded with."""
    row = await Deployment.create()
    await record(redis, row, "queued")
    calls = [
        record(redis, row, "polling", status=DeploymentStatus.PROCESSING, stage=DeploymentStage.WAIT_DROPLET),
        record(redis, row, "ip", droplet_id=7, ip_address="203.0.113.9"),
        record(redis, row, "done", status=DeploymentStatus.COMPLETED, stage=DeploymentStage.DONE),
    ]
    events = await asyncio.gather(*calls)
    assert [(e.sequence, e.status, e.stage) for e in events] == [
        (2, DeploymentStatus.PROCESSING, DeploymentStage.WAIT_DROPLET),
        (3, DeploymentStatus.PROCESSING, DeploymentStage.WAIT_DROPLET),
        (4, DeploymentStatus.COMPLETED, DeploymentStage.DONE),
    ]
    stored = await Deployment.get(id=row.id)
    assert (stored.status, stored.stage, stored.droplet_id, stored.ip_address) == (
        DeploymentStatus.COMPLETED,
        DeploymentStage.DONE,
        7,
        "203.0.113.9",
    )
    assert [e.message for e in await stored_events(row.id)] == ["queued", "polling", "ip", "done"]


async def test_announcements_follow_storage_in_sequence_order(db: str, redis: Redis) -> None:
    """Every announcement names an event already in the database, and each deployment's come in order."""
    rows = [await Deployment.create() for _ in range(5)]
    pubsub = redis.pubsub()
    await pubsub.subscribe(*(channel(row.id) for row in rows))
    seen: list[dict[str, object]] = []

    async def reader() -> None:
        while len(seen) < 5 * 8:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                data = json.loads(message["data"])
                stored = await DeploymentEvent.filter(
                    deployment_id=data["deployment_id"], sequence=data["sequence"]
                ).exists()
                assert stored, data
                seen.append(data)

    async def writer(row: Deployment) -> None:
        for n in range(4):
            await asyncio.gather(record(redis, row, f"{n}a"), record(redis, row, f"{n}b"))

    try:
        task = asyncio.create_task(reader())
        await asyncio.gather(*(writer(row) for row in rows))
        await asyncio.wait_for(task, 10)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    for row in rows:
        assert [m["sequence"] for m in seen if m["deployment_id"] == str(row.id)] == list(range(1, 9))


async def test_an_error_reaches_only_its_caller(db: str, redis: Redis) -> None:
    """A record whose deployment was deleted fails alone; the others of its group are stored."""
    kept = [await Deployment.create() for _ in range(3)]
    gone = await Deployment.create()
    await Deployment.filter(id=gone.id).delete()
    results = await asyncio.gather(
        *(record(redis, row, "fine") for row in kept), record(redis, gone, "orphan"), return_exceptions=True
    )
    assert [type(result).__name__ for result in results[:3]] == ["ProgressEvent"] * 3
    assert isinstance(results[3], Exception)
    for row in kept:
        assert [e.sequence for e in await stored_events(row.id)] == [1]
    assert not await DeploymentEvent.filter(deployment_id=gone.id).exists()


async def test_a_record_cancelled_before_its_group_is_not_stored(db: str, redis: Redis) -> None:
    """A caller cancelled while waiting for its group leaves nothing behind, and the next event is number 1."""
    row = await Deployment.create()
    task = asyncio.create_task(record(redis, row, "never"))
    await asyncio.sleep(0)  # it has joined the writer's queue; the writer has not run yet
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert (await record(redis, row, "first")).sequence == 1
    assert [e.message for e in await stored_events(row.id)] == ["first"]


async def test_inside_a_transaction_the_event_belongs_to_it(db: str, redis: Redis) -> None:
    """Called in a caller's transaction, record() writes there (no deadlock) and rolls back with it."""
    row = await Deployment.create()

    class Undo(Exception):
        pass

    try:
        async with in_transaction():
            event = await record(redis, row, "inside", status=DeploymentStatus.PROCESSING)
            assert event.sequence == 1
            raise Undo
    except Undo:
        pass
    assert await stored_events(row.id) == []
    assert (await Deployment.get(id=row.id)).status == DeploymentStatus.QUEUED


async def test_one_writer_per_event_loop(db: str) -> None:
    """The writer is made once per event loop and idles without a task between groups."""
    writer = EventWriter.for_running_loop()
    assert EventWriter.for_running_loop() is writer
    row = await Deployment.create()
    await record(None, row, "one")
    assert writer._task is None and writer._pending == []


_OTHER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from jobs.progress import record
    from models.db import close_db, init_db
    from models.deployment import Deployment, DeploymentEvent

    async def main(url, deployment_id, count):
        await init_db(url, create_schema=False)
        try:
            rows = [await Deployment.get(id=deployment_id) for _ in range(4)]
            print("ready", flush=True)
            n = 0
            while n < count:
                await asyncio.gather(*(record(None, row, f"other {n}") for row in rows))
                n += 4
        finally:
            await close_db()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_a_writer_in_another_process_never_causes_a_gap_or_a_duplicate(db: str, redis: Redis) -> None:
    """Two processes grouping records of one deployment at once end with sequences 1..N, each used once."""
    row = await Deployment.create(id=uuid.uuid4())
    count = 200
    other = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _OTHER_PROCESS,
        db,
        str(row.id),
        str(count),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert other.stdout is not None
    if await asyncio.wait_for(other.stdout.readline(), 30) != b"ready\n":
        _, stderr = await other.communicate()
        raise AssertionError(f"the other process did not start: {stderr.decode()[-2000:]}")
    rows = [await Deployment.get(id=row.id) for _ in range(4)]
    written = 0
    # Keep writing until the other process has written too, so that the two really ran at the same time.
    while (
        written < count or not await DeploymentEvent.filter(deployment_id=row.id, message__startswith="other").exists()
    ):
        await asyncio.gather(*(record(None, copy, f"here {written}") for copy in rows))
        written += 4
        assert written < 100 * count, "the other process never wrote"
    _, stderr = await asyncio.wait_for(other.communicate(), 60)
    assert other.returncode == 0, stderr.decode()[-2000:]
    stored = await stored_events(row.id)
    assert [e.sequence for e in stored] == list(range(1, written + count + 1))
    assert sum(e.message.startswith("other") for e in stored) == count


async def test_a_redis_failure_loses_no_event(db: str, caplog: pytest.LogCaptureFixture) -> None:
    """With Redis unreachable, grouped and lone records are stored and returned; the failed announcement is
    logged (listeners catch up from the database)."""
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    try:
        rows = [await Deployment.create() for _ in range(4)]
        with caplog.at_level(logging.WARNING, logger="deployer.progress"):
            grouped = await asyncio.gather(*(record(dead, row, "grouped") for row in rows))
            alone = await record(dead, rows[0], "alone")
    finally:
        await dead.aclose()
    assert [event.sequence for event in grouped] == [1, 1, 1, 1] and alone.sequence == 2
    assert [e.message for e in await stored_events(rows[0].id)] == ["grouped", "alone"]
    assert [r.getMessage() for r in caplog.records].count(
        "progress announce failed; listeners will catch up from the database"
    ) == 2


async def test_callers_are_released_when_the_writer_is_cancelled(db: str, redis: Redis) -> None:
    """Should the writer's task be cancelled (its event loop closing), every caller still waiting gets an error
    instead of waiting forever."""
    rows = [await Deployment.create() for _ in range(3)]
    calls = [asyncio.create_task(record(redis, row, "late")) for row in rows]
    await asyncio.sleep(0)  # all three have joined the writer's queue
    writer = EventWriter.for_running_loop()
    assert writer._task is not None
    writer._task.cancel()
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert all(isinstance(result, RuntimeError) for result in results), results
    assert writer._task is None
    assert (await record(redis, rows[0], "after")).sequence == 1  # a new writer task serves the next call
