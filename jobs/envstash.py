"""A short-lived hand-over of environment values from the API to the env job, outside the job's arguments.

SAQ writes a job's arguments into its log lines (in full at DEBUG level, and whenever a job raises), so the
values of an env change never travel as arguments. The API stashes them in Redis under a random key that
expires on its own; the job takes them (read and delete in one transaction) and gets only the key as an
argument. A job that starts after the stash expired, or was discarded, finds nothing and changes nothing, so
the stash is also the job's ticket: whoever deletes it first (the job taking it, or the API giving up on
waiting) decides whether the change runs.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis

STASH_PREFIX = "deployer:env-values:"


def deploy_env_ref(deployment_id: object) -> str:
    """The fixed stash key of a deployment's initial environment, so a re-queued job can find it again."""
    return f"{STASH_PREFIX}deploy:{deployment_id}"


async def stash_values(redis: Redis, variables: Sequence[dict[str, Any]], *, ttl_s: int, ref: str | None = None) -> str:
    """Store the variables (keys, values, flags; may be empty) for `ttl_s` seconds; returns the reference.

    Args:
        ref: a fixed reference (see `deploy_env_ref`); a random one by default.
    """
    ref = ref or f"{STASH_PREFIX}{secrets.token_hex(16)}"
    await redis.set(ref, json.dumps(list(variables)), ex=ttl_s)
    return ref


async def take_values(redis: Redis, ref: str) -> list[dict[str, Any]] | None:
    """Read and delete stashed variables; None when the reference is unknown or expired."""
    if not ref.startswith(STASH_PREFIX):
        return None
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(ref)
        pipe.delete(ref)
        raw, _ = await pipe.execute()
    if raw is None:
        return None
    data = json.loads(raw)
    return cast("list[dict[str, Any]]", data) if isinstance(data, list) else None


async def discard_values(redis: Redis, ref: str) -> bool:
    """Withdraw a change: delete its stash; True when no job had taken it (so none will run it)."""
    return bool(await redis.delete(ref))


async def read_values(redis: Redis, ref: str) -> list[dict[str, Any]] | None:
    """Read stashed variables without deleting them (a retried deploy job needs them again)."""
    if not ref.startswith(STASH_PREFIX):
        return None
    raw = await redis.get(ref)
    if raw is None:
        return None
    data = json.loads(raw)
    return cast("list[dict[str, Any]]", data) if isinstance(data, list) else None
