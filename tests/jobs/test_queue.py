"""`DeployerQueue` on real Redis: a worker starting with a backlog aborts nothing (SAQ's dequeue/sweep race),
and the sweep spares live work but hands a dead worker's job on at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from saq import Worker
from saq.job import Job, Status
from saq.queue.redis import RedisQueue

from deployer.embedded_redis import EmbeddedRedis
from jobs.keeper import Keeper
from jobs.lease import Lease
from jobs.queue import DEPLOY_LEASE_PREFIX, DeployerQueue
from jobs.worker import track_job, untrack_job

#: Worker starts in the race test.
STARTS = 50
#: Jobs waiting when each worker starts (one per concurrency slot, all dequeued at once).
BACKLOG = 4


class Recording(RedisQueue):
    """Remembers the sweeps and the aborts (mixed into the queue class under test)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sweeps_done = 0
        self.disturbed: list[str] = []

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        """Sweep and record what was swept."""
        swept = await super().sweep(lock, abort)
        self.sweeps_done += 1
        self.disturbed.extend(swept)
        return swept

    async def abort(self, job: Job, error: str, ttl: float = 5) -> None:
        """Abort and record it (SAQ's sweep aborts before it waits and retries)."""
        self.disturbed.append(job.id)
        await super().abort(job, error, ttl)


class RecordingQueue(Recording, DeployerQueue):
    """The queue the workers use, recording its sweeps."""


class RecordingSaqQueue(Recording):
    """SAQ's own Redis queue, recording its sweeps (for showing that the race test fails without the fix)."""


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Poll `check` until it is true."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def start_worker_with_backlog(redis_url: str, queue_class: type[Recording]) -> tuple[int, Counter[str]]:
    """Enqueue `BACKLOG` jobs, start a worker (sweeping at once, as every worker does when it starts), let it
    run them all; returns (jobs swept, aborted or retried, runs per job key)."""
    runs: Counter[str] = Counter()

    async def hold(ctx: Any, *, n: int) -> int:
        runs[ctx["job"].key] += 1
        await asyncio.sleep(0.05)
        return n

    redis = Redis.from_url(redis_url)
    # As on a Redis that just started: the sweep's script is not loaded yet, so the first sweep takes the extra
    # round trips (NOSCRIPT, SCRIPT LOAD) that land it between the first dequeues and their marking ACTIVE.
    await redis.script_flush()
    queue = queue_class(redis, name=f"race-{uuid.uuid4().hex[:10]}")
    await queue.connect()
    keys = []
    for n in range(BACKLOG):
        job = await queue.enqueue("hold", n=n, timeout=30, heartbeat=5, retries=3)
        assert job is not None
        keys.append(job.key)

    async def startup(ctx: Any) -> None:
        if isinstance(queue, DeployerQueue):  # as jobs.worker wires it
            ctx["keeper"] = Keeper(redis, ttl_s=5, alive_key=queue.alive_key(ctx["worker"].id))
            await ctx["keeper"].start()

    async def shutdown(ctx: Any) -> None:
        if "keeper" in ctx:
            await ctx["keeper"].stop()

    worker: Worker[Any] = Worker(
        queue,
        [("hold", hold)],
        concurrency=BACKLOG,
        timers={"sweep": 1},
        startup=startup,
        shutdown=shutdown,
        before_process=track_job,
        after_process=untrack_job,
    )
    task = asyncio.create_task(worker.start())

    async def settled() -> bool:  # every job done after a sweep, or something disturbed (a failure already)
        if queue.disturbed:
            return True
        jobs = await queue.jobs(keys)
        return queue.sweeps_done > 0 and all(j is not None and j.status == Status.COMPLETE for j in jobs)

    try:
        await wait_until(settled)
    finally:
        await worker.stop()
        await task
        await queue.disconnect()
    return len(set(queue.disturbed)) + queue.retried + queue.aborted, runs


@pytest.mark.timeout(240)
async def test_workers_starting_with_a_backlog_never_abort_a_job(private_redis: EmbeddedRedis) -> None:
    """Start a worker with jobs waiting, 50 times: its first sweep runs in the same instant as its first
    dequeues, yet no job is swept, aborted or run twice. (With SAQ's own queue, `RecordingSaqQueue`, 48 of 50
    starts aborted jobs.)"""
    swept_total = 0
    double_runs = 0
    for _ in range(STARTS):
        swept, runs = await start_worker_with_backlog(private_redis.url, RecordingQueue)
        swept_total += swept
        double_runs += sum(1 for count in runs.values() if count != 1)
        assert len(runs) == BACKLOG
    assert (swept_total, double_runs) == (0, 0)


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[DeployerQueue]:
    """A DeployerQueue with a name of its own."""
    queue = DeployerQueue(Redis.from_url(redis_url), name=f"test-{uuid.uuid4().hex[:10]}", dequeue_grace_s=0.3)
    await queue.connect()
    yield queue
    await queue.disconnect()


async def dequeue_without_marking(queue: DeployerQueue) -> Job:
    """What a worker's dequeue does before it marks the job ACTIVE: the job is in the active list, still QUEUED."""
    job = await queue.dequeue()
    assert job is not None
    assert job.status == Status.QUEUED
    return job


async def mark_active(queue: DeployerQueue, job: Job, *, worker_id: str, touched_ms_ago: int = 0) -> None:
    """What the worker does next (SAQ's Worker.process), optionally with an old heartbeat."""
    job.started = job.touched = int(time.time() * 1000) - touched_ms_ago
    job.attempts += 1
    job.worker_id = worker_id
    job.status = Status.ACTIVE
    await queue.redis.set(job.id, queue.serialize(job))


async def sweep_now(queue: DeployerQueue) -> list[str]:
    """Sweep, ignoring the once-per-interval lock (a test sweeps whenever it likes)."""
    await queue.redis.delete(queue.namespace("sweep"))
    return await queue.sweep(lock=60)


async def test_a_job_just_dequeued_is_spared_until_its_grace_ends(queue: DeployerQueue) -> None:
    """A dequeued job not yet marked ACTIVE is left alone; one that never gets marked (its worker died between
    the two steps) is put back on the queue once its grace is over."""
    await queue.enqueue("work", retries=3)
    job = await dequeue_without_marking(queue)
    assert await sweep_now(queue) == []
    assert await sweep_now(queue) == []
    await asyncio.sleep(0.4)  # the grace (0.3 s), counted from the first sweep that saw the job
    assert await sweep_now(queue) == [job.id]
    again = await queue.job(job.key)
    assert again is not None
    assert again.status == Status.QUEUED
    assert await queue.count("queued") == 1
    assert await queue.count("active") == 0


async def test_a_live_worker_keeps_its_stale_job(queue: DeployerQueue, redis: Redis) -> None:
    """A job whose heartbeat looks expired is not swept while its worker's keeper is alive."""
    await queue.enqueue("work", heartbeat=1, retries=3)
    job = await dequeue_without_marking(queue)
    await mark_active(queue, job, worker_id="w-alive", touched_ms_ago=5000)
    async with Keeper.running(redis, ttl_s=5, alive_key=queue.alive_key("w-alive")):
        assert await sweep_now(queue) == []
    # The keeper stopped: the worker is gone, and the job goes back on the queue at once.
    assert await sweep_now(queue) == [job.id]
    again = await queue.job(job.key)
    assert again is not None
    assert (again.status, again.attempts, again.error) == (Status.QUEUED, 1, "swept")
    assert await queue.dequeue(timeout=1) is not None


async def test_a_job_whose_deployment_lease_is_held_is_spared(queue: DeployerQueue, redis: Redis) -> None:
    """A stale job whose deployment lease someone holds is not swept."""
    deployment_id = str(uuid.uuid4())
    await queue.enqueue("deploy", heartbeat=1, retries=3, deployment_id=deployment_id)
    job = await dequeue_without_marking(queue)
    await mark_active(queue, job, worker_id="w-gone", touched_ms_ago=5000)
    lease = Lease(redis, f"deploy:{deployment_id}", ttl_s=5)
    assert lease.key == f"{DEPLOY_LEASE_PREFIX}{deployment_id}"
    assert await lease.acquire()
    assert await sweep_now(queue) == []
    await lease.release()
    assert await sweep_now(queue) == [job.id]


async def test_a_fresh_heartbeat_is_never_swept(queue: DeployerQueue) -> None:
    """An ACTIVE job with a recent heartbeat stays, even without a keeper."""
    await queue.enqueue("work", heartbeat=60, retries=3)
    job = await dequeue_without_marking(queue)
    await mark_active(queue, job, worker_id="w-plain")
    assert await sweep_now(queue) == []


async def test_a_dead_workers_last_attempt_ends_aborted(queue: DeployerQueue) -> None:
    """A dead worker's job with no attempts left is finished ABORTED rather than retried."""
    await queue.enqueue("work", heartbeat=1, retries=1)
    job = await dequeue_without_marking(queue)
    await mark_active(queue, job, worker_id="w-gone", touched_ms_ago=5000)
    assert await sweep_now(queue) == [job.id]
    done = await queue.job(job.key)
    assert done is not None
    assert done.status == Status.ABORTED
    assert await queue.count("active") == 0
    assert await queue.count("incomplete") == 0


async def test_a_missing_job_is_removed_from_the_active_list(queue: DeployerQueue) -> None:
    """An id in the active list whose job record is gone is dropped."""
    await queue.enqueue("work", retries=3)
    job = await dequeue_without_marking(queue)
    await queue.redis.delete(job.id)
    assert await sweep_now(queue) == [job.id]
    assert await queue.count("active") == 0
