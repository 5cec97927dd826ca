"""Leases: at most one live worker runs a deployment's pipeline, and a dead worker's claim expires.

A lease is a Redis key holding a random owner token with a time-to-live. The worker's keeper (`jobs.keeper`)
renews all of a worker's leases in one round trip per beat; if the worker dies (SIGKILL, lost machine), the key
expires and the queue's sweep hands the job to another worker (the reaper does when the job itself is gone). A
job that starts while someone else holds the lease does nothing, so a duplicate delivery never runs two
pipelines at once. A job whose lease is lost stops working, since another worker may already have taken over.
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

LEASE_PREFIX = "deployer:lease:"
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_key(name: str) -> str:
    """The Redis key of a named lease (e.g. `deploy:<deployment id>`)."""
    return f"{LEASE_PREFIX}{name}"


class Lease:
    """One claim on a named resource, identified by a random owner token."""

    def __init__(self, redis: Redis, name: str, *, ttl_s: float) -> None:
        self._redis = redis
        self.key = lease_key(name)
        self.owner = secrets.token_hex(12)
        self.ttl_ms = max(1, int(ttl_s * 1000))

    async def acquire(self) -> bool:
        """Claim the lease if nobody holds it; True when we now hold it."""
        return bool(await self._redis.set(self.key, self.owner, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        """Extend our claim; False when it expired or someone else holds it now."""
        return bool(await self._redis.eval(_RENEW, 1, self.key, self.owner, self.ttl_ms))

    async def release(self) -> None:
        """Give the lease up if we still hold it."""
        await self._redis.eval(_RELEASE, 1, self.key, self.owner)


async def is_held(redis: Redis, name: str) -> bool:
    """Whether a live worker holds the named lease."""
    return bool(await redis.exists(lease_key(name)))
