"""The keeper on real Redis: one round trip per beat however many leases and jobs a worker holds; leases are
renewed, lost ones reported, and taken again after Redis lost its data."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Connection, ConnectionPool, Redis
from saq.job import Job, Status

from deployer.embedded_redis import EmbeddedRedis
from jobs.enqueue import redis_from_url
from jobs.keeper import EPOCH_KEY, Keeper
from jobs.lease import Lease
from jobs.queue import DeployerQueue


class CountingConnection(Connection):
    """A Redis connection that counts what it sends: one call per command, or per pipeline."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """Count, then send."""
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def counting_redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client whose sends are counted in `CountingConnection.sends`."""
    client = Redis.from_pool(ConnectionPool.from_url(redis_url, connection_class=CountingConnection))
    yield client
    await client.aclose()


async def running_job(redis: Redis, queue: DeployerQueue, *, touched: int = 1, status: Status = Status.ACTIVE) -> str:
    """Store a job record as a worker leaves it while running (with SAQ's TTL); returns its Redis id."""
    job = Job(function="deploy", key=str(uuid.uuid4()), status=status, touched=touched, started=touched, queue=queue)
    await redis.set(job.id, queue.serialize(job), ex=600)
    return job.id


def names(count: int) -> list[str]:
    """Lease names no other test uses."""
    prefix = uuid.uuid4().hex[:8]
    return [f"test:{prefix}:{i}" for i in range(count)]


async def holding(redis: Redis, keeper: Keeper, count: int) -> list[Lease]:
    """Acquire `count` leases with the keeper's TTL and hand them to it."""
    leases = [Lease(redis, name, ttl_s=keeper.ttl_ms / 1000) for name in names(count)]
    for lease in leases:
        assert await lease.acquire()
        keeper.hold(lease, lambda: None)
    return leases


@pytest.mark.parametrize("in_flight", [1, 1000])
async def test_one_round_trip_per_beat_however_many_jobs(counting_redis: Redis, in_flight: int) -> None:
    """A beat renews the worker's liveness, every lease and every job heartbeat with a single command."""
    queue = DeployerQueue(counting_redis, name=f"test-{uuid.uuid4().hex[:8]}")
    keeper = Keeper(counting_redis, ttl_s=30, alive_key=queue.alive_key("w1"))
    leases = await holding(counting_redis, keeper, in_flight)
    for _ in range(in_flight):
        keeper.track(await running_job(counting_redis, queue))
    await keeper.beat()  # the first beat loads the script
    before = CountingConnection.sends
    await keeper.beat()
    assert CountingConnection.sends - before == 1
    for lease in leases:
        await lease.release()


async def test_a_beat_renews_leases_and_active_heartbeats(redis: Redis) -> None:
    """Leases get their full TTL back; an ACTIVE job's `touched` moves to now and keeps its TTL; a job that is
    no longer ACTIVE is left as it is; the worker is marked alive."""
    queue = DeployerQueue(redis, name=f"test-{uuid.uuid4().hex[:8]}")
    keeper = Keeper(redis, ttl_s=30, alive_key=queue.alive_key("w1"))
    (lease,) = await holding(redis, keeper, 1)
    await redis.pexpire(lease.key, 1000)
    active = await running_job(redis, queue)
    finished = await running_job(redis, queue, status=Status.COMPLETE)
    keeper.track(active)
    keeper.track(finished)
    before_ms = int(time.time() * 1000)
    await keeper.beat()
    assert await redis.pttl(lease.key) > 25_000
    stored = json.loads(await redis.get(active))
    assert stored["touched"] >= before_ms - 1000
    assert stored["status"] == "active"
    assert 0 < await redis.ttl(active) <= 600
    assert json.loads(await redis.get(finished))["touched"] == 1
    assert await redis.exists(queue.alive_key("w1"))
    await keeper.stop()
    assert not await redis.exists(queue.alive_key("w1"))
    await lease.release()


async def test_a_lease_taken_by_someone_else_is_reported_lost(redis: Redis) -> None:
    """A lease now held by another owner is reported once, dropped, and never overwritten."""
    keeper = Keeper(redis, ttl_s=30)
    lost: list[str] = []
    lease = Lease(redis, names(1)[0], ttl_s=30)
    assert await lease.acquire()
    keeper.hold(lease, lambda: lost.append(lease.key))
    await redis.set(lease.key, "another-owner")
    await keeper.beat()
    await keeper.beat()
    assert lost == [lease.key]
    assert keeper.lease_count == 0
    assert await redis.get(lease.key) == b"another-owner"
    await redis.delete(lease.key)


async def test_an_expired_lease_is_lost_when_redis_kept_its_data(redis: Redis) -> None:
    """A missing lease on a Redis that did not restart expired (this worker stalled): it is lost, not retaken."""
    keeper = Keeper(redis, ttl_s=30)
    await keeper.beat()
    lost: list[str] = []
    lease = Lease(redis, names(1)[0], ttl_s=30)
    assert await lease.acquire()
    keeper.hold(lease, lambda: lost.append(lease.key))
    await redis.delete(lease.key)
    await keeper.beat()
    assert lost == [lease.key]
    assert not await redis.exists(lease.key)


async def test_leases_are_taken_again_after_redis_lost_its_data(private_redis: EmbeddedRedis) -> None:
    """Redis restarts without persistence: the next beat finds a new epoch and takes every lease back."""
    redis = redis_from_url(private_redis.url)
    try:
        keeper = Keeper(redis, ttl_s=30, alive_key="saq:q:alive:w1")
        lost: list[str] = []
        leases = [Lease(redis, name, ttl_s=30) for name in names(3)]
        for lease in leases:
            assert await lease.acquire()
            keeper.hold(lease, lambda: lost.append("lost"))
        await keeper.beat()
        first_epoch = await redis.get(EPOCH_KEY)
        private_redis.stop()
        private_redis.start()
        assert await redis.dbsize() == 0
        await keeper.beat()
        assert lost == []
        for lease in leases:
            assert await redis.get(lease.key) == lease.owner.encode()
        assert await redis.exists("saq:q:alive:w1")
        assert await redis.get(EPOCH_KEY) not in (None, first_epoch)
    finally:
        await redis.aclose()


async def test_every_lease_is_lost_when_redis_stays_away_for_a_ttl(private_redis: EmbeddedRedis) -> None:
    """While beats fail for a whole TTL the keeper cannot know whether someone took over: the work stops."""
    redis = redis_from_url(private_redis.url, socket_timeout=0.2, socket_connect_timeout=0.2)
    try:
        lost = asyncio.Event()
        async with Keeper.running(redis, ttl_s=0.6) as keeper:
            lease = Lease(redis, names(1)[0], ttl_s=0.6)
            assert await lease.acquire()
            keeper.hold(lease, lost.set)
            private_redis.stop()
            await asyncio.wait_for(lost.wait(), 10)
            assert keeper.lease_count == 0
            private_redis.start()
    finally:
        await redis.aclose()
