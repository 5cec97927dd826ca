"""A short-lived hand-over of environment values from the API to the env job, outside the job's arguments.

SAQ writes a job's arguments into its log lines (in full at DEBUG level, and whenever a job raises), so the
values of an env change never travel as arguments. The API stashes them in Redis under a random key that
expires on its own; the job takes them (read and delete in one transaction) and gets only the key as an
argument. A job that starts after the stash expired, or was discarded, finds nothing and changes nothing, so
the stash is also the job's ticket: whoever deletes it first (the job taking it, or the API giving up on
waiting) decides whether the change runs.

The values are encrypted at rest (Fernet: AES-128-CBC with HMAC-SHA256) under a key derived from
`DEPLOYER_SECRET_KEY`, which the API and every worker share; Redis, its dumps and its replicas hold only
ciphertext. A comma-separated list of secrets encrypts with the first and decrypts with any (rotation).
A stash that cannot be decrypted (a worker with another key) reads as missing, and is logged as such.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import secrets
from collections.abc import Sequence
from typing import Any, cast

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.asyncio import Redis

logger = logging.getLogger("deployer.env")

STASH_PREFIX = "deployer:env-values:"
_KDF_INFO = b"deployer env stash v1"


@functools.lru_cache(maxsize=8)
def stash_cipher(secret_key: str) -> MultiFernet:
    """The Fernet cipher of a `DEPLOYER_SECRET_KEY` (each comma-separated secret through HKDF-SHA256)."""
    secrets_ = [part.strip() for part in secret_key.split(",") if part.strip()]
    if not secrets_:
        raise ValueError("DEPLOYER_SECRET_KEY is not set: env values are never stored in Redis unencrypted")
    keys = [
        Fernet(base64.urlsafe_b64encode(HKDF(hashes.SHA256(), 32, salt=None, info=_KDF_INFO).derive(part.encode())))
        for part in secrets_
    ]
    return MultiFernet(keys)


def _seal(secret_key: str, variables: Sequence[dict[str, Any]]) -> bytes:
    return stash_cipher(secret_key).encrypt(json.dumps(list(variables)).encode())


def _open(secret_key: str, ref: str, raw: bytes | str | None) -> list[dict[str, Any]] | None:
    if raw is None:
        return None
    try:
        data = json.loads(stash_cipher(secret_key).decrypt(raw if isinstance(raw, bytes) else raw.encode()))
    except InvalidToken:
        logger.error(
            "stashed env values at %s cannot be decrypted: do the API and the workers share one DEPLOYER_SECRET_KEY?",
            ref,
        )
        return None
    return cast("list[dict[str, Any]]", data) if isinstance(data, list) else None


def deploy_env_ref(deployment_id: object) -> str:
    """The fixed stash key of a deployment's initial environment, so a re-queued job can find it again."""
    return f"{STASH_PREFIX}deploy:{deployment_id}"


async def stash_values(
    redis: Redis, variables: Sequence[dict[str, Any]], *, ttl_s: int, secret_key: str, ref: str | None = None
) -> str:
    """Store the variables (keys, values, flags; may be empty), encrypted, for `ttl_s` seconds; returns the reference.

    Args:
        secret_key: `DEPLOYER_SECRET_KEY` (ValueError when empty: values are never stored in plaintext).
        ref: a fixed reference (see `deploy_env_ref`); a random one by default.
    """
    sealed = _seal(secret_key, variables)
    ref = ref or f"{STASH_PREFIX}{secrets.token_hex(16)}"
    await redis.set(ref, sealed, ex=ttl_s)
    return ref


async def take_values(redis: Redis, ref: str, *, secret_key: str) -> list[dict[str, Any]] | None:
    """Read and delete stashed variables; None when the reference is unknown, expired or undecryptable."""
    if not ref.startswith(STASH_PREFIX):
        return None
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(ref)
        pipe.delete(ref)
        raw, _ = await pipe.execute()
    return _open(secret_key, ref, raw)


async def discard_values(redis: Redis, ref: str) -> bool:
    """Withdraw a change: delete its stash; True when no job had taken it (so none will run it)."""
    return bool(await redis.delete(ref))


async def read_values(redis: Redis, ref: str, *, secret_key: str) -> list[dict[str, Any]] | None:
    """Read stashed variables without deleting them (a retried deploy job needs them again)."""
    if not ref.startswith(STASH_PREFIX):
        return None
    return _open(secret_key, ref, await redis.get(ref))


async def forget_deploy_env(redis: Redis, deployment_id: object) -> None:
    """Delete a deployment's initial env values: once the application has them, nothing needs them again."""
    await redis.delete(deploy_env_ref(deployment_id))
