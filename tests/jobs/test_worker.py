"""The worker `jobs.worker` runs, on real Redis: hundreds of jobs in flight on a handful of Redis connections,
one blocking dequeue per process, and SAQ's abort still cancelling a running job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from saq.job import Status

from jobs.worker import DeployerWorker, worker_client_name, worker_settings
from sandbox.app import create_app as create_sandbox
from sandbox.state import World
from settings import Settings
from tests.conftest import FAST_WORLD

#: Jobs in flight at once, far more than the connections allowed.
IN_FLIGHT = 300
#: WORKER_REDIS_CONNECTIONS of the worker under test.
CONNECTIONS = 6


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Poll `check` until it is true."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def worker_clients(redis: Redis, name: str) -> list[dict[str, Any]]:
    """The connections Redis has open under the worker's client name."""
    return [c for c in await redis.client_list() if c.get("name") == name]


class Polling:
    """A job function that behaves like a deployment waiting at a stage: a Redis command, a pause, again,
    until released."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()

    async def run(self, ctx: Any, *, n: int) -> int:
        redis: Redis = ctx["deps"].redis
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            while not self.release.is_set():
                await redis.incr(f"{ctx['job'].id}:polls")
                await asyncio.sleep(0.02)
            return n
        finally:
            self.running -= 1


@pytest.fixture
async def running(settings: Settings, redis: Redis) -> AsyncIterator[tuple[DeployerWorker, Polling]]:
    """A worker from `worker_settings` (clouds served by the sandbox) whose only function is `Polling`."""
    settings = settings.with_overrides(worker_concurrency=IN_FLIGHT, worker_redis_connections=CONNECTIONS)
    polling = Polling()
    options = worker_settings(settings, transport=httpx.ASGITransport(app=create_sandbox(World(FAST_WORLD))))
    worker = DeployerWorker(**{**options, "functions": [("poll", polling.run)], "shutdown_grace_period_s": 1})
    await worker.queue.connect()
    task = asyncio.create_task(worker.start())
    try:
        yield worker, polling
    finally:
        polling.release.set()
        await worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.queue.disconnect()


async def test_hundreds_of_jobs_in_flight_on_a_few_connections(
    running: tuple[DeployerWorker, Polling], settings: Settings, redis: Redis
) -> None:
    """300 jobs run at once, each sending Redis commands, while the worker never holds more than
    WORKER_REDIS_CONNECTIONS connections; then every job completes."""
    worker, polling = running
    name = worker_client_name(settings)
    jobs = [await worker.queue.enqueue("poll", n=n, timeout=60, heartbeat=10) for n in range(IN_FLIGHT)]
    most_connections = 0

    async def all_running() -> bool:
        nonlocal most_connections
        most_connections = max(most_connections, len(await worker_clients(redis, name)))
        return polling.running == IN_FLIGHT

    await wait_until(all_running)
    for _ in range(10):  # every job keeps polling: the connections stay capped
        most_connections = max(most_connections, len(await worker_clients(redis, name)))
        await asyncio.sleep(0.05)
    assert 0 < most_connections <= CONNECTIONS
    polling.release.set()

    async def all_complete() -> bool:
        found = await worker.queue.jobs(job.key for job in jobs if job is not None)
        return all(job is not None and job.status == Status.COMPLETE for job in found)

    await wait_until(all_complete)
    assert polling.most == IN_FLIGHT


async def test_an_idle_worker_waits_for_work_on_one_connection(
    running: tuple[DeployerWorker, Polling], settings: Settings, redis: Redis
) -> None:
    """With 300 free slots and an empty queue, exactly one connection is blocked in the dequeue, and a job
    enqueued then is still picked up at once."""
    worker, polling = running
    name = worker_client_name(settings)

    async def blocked() -> list[dict[str, Any]]:
        return [c for c in await worker_clients(redis, name) if c.get("cmd") in ("blmove", "brpoplpush")]

    async def one_blocked() -> bool:
        return len(await blocked()) == 1

    await wait_until(one_blocked)
    await asyncio.sleep(0.3)  # and it stays one, however many slots wait behind it
    assert len(await blocked()) == 1
    polling.release.set()
    job = await worker.queue.enqueue("poll", n=7, timeout=10)
    assert job is not None

    async def done() -> bool:
        await job.refresh()
        return job.status == Status.COMPLETE

    await wait_until(done, timeout=10)
    assert job.result == 7


async def test_an_aborted_job_is_cancelled(running: tuple[DeployerWorker, Polling]) -> None:
    """`Queue.abort` on a running job (SAQ's way, e.g. from its web UI) cancels it while the others run on."""
    worker, polling = running
    jobs = [await worker.queue.enqueue("poll", n=n, timeout=60) for n in range(20)]
    assert all(job is not None for job in jobs)

    async def all_running() -> bool:
        return polling.running == 20

    await wait_until(all_running)
    victim = jobs[7]
    assert victim is not None
    await worker.queue.abort(victim, "stop it")

    async def aborted() -> bool:
        await victim.refresh()
        return victim.status == Status.ABORTED and polling.running == 19

    await wait_until(aborted, timeout=10)
    assert victim.error == "stop it"


async def test_an_idle_worker_stops_without_waiting_out_the_grace(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """With no job running, stop does not hold for the shutdown grace (30 s here): SAQ's upkeep loops and its
    blocked dequeue are cancelled at once, and SAQ never warns that tasks outlived the grace."""
    options = worker_settings(settings, transport=httpx.ASGITransport(app=create_sandbox(World(FAST_WORLD))))
    worker = DeployerWorker(**{**options, "shutdown_grace_period_s": 30})
    await worker.queue.connect()
    task = asyncio.create_task(worker.start())
    name = worker_client_name(settings)

    async def waiting_for_work() -> bool:
        return any(c.get("cmd") in ("blmove", "brpoplpush") for c in await worker_clients(redis, name))

    try:
        await wait_until(waiting_for_work)
        with caplog.at_level(logging.WARNING, logger="saq"):
            async with asyncio.timeout(20):  # well inside the grace: the old stop waited all 30 s
                await worker.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert not [r for r in caplog.records if "grace period" in r.getMessage()]
        assert not worker.tasks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.queue.disconnect()
