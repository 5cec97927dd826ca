"""The env stash: values encrypted at rest under DEPLOYER_SECRET_KEY, key rotation, a wrong key reads as
missing, and a deployment's values are deleted once its application has them."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from redis.asyncio import Redis

from jobs.context import Deps, WorkerContext
from jobs.deploy import deploy
from jobs.enqueue import DEPLOY_ATTEMPTS, deploy_job_options, enqueue_deploy
from jobs.envstash import deploy_env_ref, read_values, stash_values, take_values
from models.deployment import Deployment, DeploymentStage
from sandbox.state import World
from tests.conftest import SECRET_KEY, fast_timings
from tests.env_support import rows
from tests.jobs.conftest import new_deployment

VALUE = "postgres://admin:hunter2-very-secret@db/prod"
OTHER_KEY = "another-secret-key-0123456789abcdef0123"


async def test_values_are_encrypted_at_rest(redis: Redis) -> None:
    """What Redis holds is a Fernet token: neither the value nor the key name is readable in it."""
    ref = await stash_values(redis, [{"key": "DATABASE_URL", "value": VALUE}], ttl_s=60, secret_key=SECRET_KEY)
    raw = await redis.get(ref)
    assert raw is not None and raw.startswith(b"gAAAAA")
    assert VALUE.encode() not in raw and b"DATABASE_URL" not in raw
    assert await read_values(redis, ref, secret_key=SECRET_KEY) == [{"key": "DATABASE_URL", "value": VALUE}]


async def test_a_wrong_key_reads_as_missing_and_says_why(redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    """A worker with another key finds nothing (so changes nothing) and logs that the keys differ."""
    ref = await stash_values(redis, [{"key": "A", "value": VALUE}], ttl_s=60, secret_key=SECRET_KEY)
    with caplog.at_level(logging.ERROR):
        assert await take_values(redis, ref, secret_key=OTHER_KEY) is None
    assert "DEPLOYER_SECRET_KEY" in caplog.text
    assert VALUE not in caplog.text


async def test_a_key_list_rotates(redis: Redis) -> None:
    """`new,old` decrypts what the old key stashed, and encrypts with the new one."""
    old = await stash_values(redis, [{"key": "A", "value": "1"}], ttl_s=60, secret_key=OTHER_KEY)
    assert await read_values(redis, old, secret_key=f"{SECRET_KEY},{OTHER_KEY}") == [{"key": "A", "value": "1"}]
    new = await stash_values(redis, [{"key": "B", "value": "2"}], ttl_s=60, secret_key=f"{SECRET_KEY},{OTHER_KEY}")
    assert await read_values(redis, new, secret_key=SECRET_KEY) == [{"key": "B", "value": "2"}]


async def test_no_key_no_stash(redis: Redis) -> None:
    """Without a secret key nothing is written: values are never stored in plaintext."""
    with pytest.raises(ValueError, match="DEPLOYER_SECRET_KEY"):
        await stash_values(redis, [{"key": "A", "value": VALUE}], ttl_s=60, secret_key="")


async def test_the_deploy_stash_lives_no_longer_than_the_pipeline(redis_url: str, queue_name: str) -> None:
    """A deployment's stash expires once every attempt of its pipeline could have run, not hours later."""
    from saq import Queue

    timings = fast_timings()
    queue = Queue.from_url(redis_url, name=queue_name)
    await queue.connect()
    try:
        deployment_id = uuid.uuid4()
        await enqueue_deploy(queue, deployment_id, timings, env=[("A", VALUE)], secret_key=SECRET_KEY)
        ttl = await queue.redis.ttl(deploy_env_ref(deployment_id))  # type: ignore[attr-defined]
    finally:
        await queue.disconnect()
    options = deploy_job_options(timings)
    assert 0 < ttl <= options.timeout * (DEPLOY_ATTEMPTS + 1)


async def test_the_values_are_deleted_once_the_application_has_them(deps: Deps, world: World) -> None:
    """While the build still runs, the deployment's stashed values are already gone from Redis."""
    world.faults.add_spec("build_hangs")
    deployment = await new_deployment()
    ref = await stash_values(
        deps.redis, [{"key": "A", "value": VALUE}], ttl_s=60, secret_key=SECRET_KEY, ref=deploy_env_ref(deployment.id)
    )
    ctx: WorkerContext = {"deps": deps}  # type: ignore[typeddict-item]
    job = asyncio.create_task(deploy(ctx, deployment_id=str(deployment.id), env_ref=ref))
    try:
        while (await Deployment.get(id=deployment.id)).stage != DeploymentStage.WAIT_BUILD:
            assert not job.done(), job.result()
            await asyncio.sleep(0.02)
        assert await deps.redis.exists(ref) == 0
        app_uuid = (await Deployment.get(id=deployment.id)).application_uuid
        assert rows(world, str(app_uuid))[("A", False)]["value"] == VALUE
    finally:
        await Deployment.filter(id=deployment.id).update(cancel_requested=True)
        await asyncio.wait_for(job, 20)
