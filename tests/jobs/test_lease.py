"""Leases on real Redis: one holder at a time, renewal and release only by the holder, expiry."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from jobs.lease import Lease, is_held


async def test_only_one_holder_at_a_time(redis: Redis) -> None:
    """A second claimant cannot acquire a held lease, and can once it is released."""
    name = f"test:{uuid.uuid4()}"
    first, second = Lease(redis, name, ttl_s=5), Lease(redis, name, ttl_s=5)
    assert await first.acquire()
    assert not await second.acquire()
    assert await is_held(redis, name)
    await first.release()
    assert await second.acquire()
    await second.release()


async def test_only_the_holder_renews_or_releases(redis: Redis) -> None:
    """Renewing or releasing someone else's lease does nothing."""
    name = f"test:{uuid.uuid4()}"
    holder, other = Lease(redis, name, ttl_s=5), Lease(redis, name, ttl_s=5)
    assert await holder.acquire()
    assert not await other.renew()
    await other.release()
    assert await is_held(redis, name)
    assert await holder.renew()
    await holder.release()
    assert not await is_held(redis, name)


async def test_an_unrenewed_lease_expires(redis: Redis) -> None:
    """A dead holder's lease expires after its TTL and can then be taken; the old holder cannot renew it."""
    name = f"test:{uuid.uuid4()}"
    dead, heir = Lease(redis, name, ttl_s=0.1), Lease(redis, name, ttl_s=5)
    assert await dead.acquire()
    await asyncio.sleep(0.2)
    assert await heir.acquire()
    assert not await dead.renew()
    await heir.release()
