"""The reaper and the deploy job's lease: lost work is re-queued, duplicates stand down, leftovers are cleaned."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from saq import Queue

from jobs.context import Deps, WorkerContext
from jobs.deploy import deploy, deploy_lease
from jobs.enqueue import deploy_job_key, enqueue_deploy
from jobs.envstash import deploy_env_ref
from jobs.progress import stored_events
from jobs.reaper import ORPHAN_SLOT_AFTER_S, reap_once
from models.deployment import Deployment, DeploymentStage, DeploymentStatus
from models.slot import DropletSlot, reserve_slot, slot_usage
from sandbox.state import World
from tests.jobs.conftest import new_deployment, run

LATER = datetime.now(UTC) + timedelta(hours=1)


async def test_a_deployment_without_lease_or_job_is_requeued_once(deps: Deps, redis_url: str, queue_name: str) -> None:
    """A PROCESSING deployment with no lease and no job (Redis lost it) gets its job back under its usual key,
    with an event saying why; a second pass finds that job waiting and does nothing."""
    queue = Queue.from_url(redis_url, name=queue_name)
    await queue.connect()
    try:
        deployment = await new_deployment()
        deployment.status = DeploymentStatus.PROCESSING
        await deployment.save()
        report = await reap_once(deps, queue, now=LATER)
        assert report.requeued == [str(deployment.id)]
        assert await queue.count("queued") == 1
        job = await queue.job(deploy_job_key(deployment.id))
        assert job is not None
        assert job.kwargs == {"deployment_id": str(deployment.id), "env_ref": deploy_env_ref(deployment.id)}
        events = await stored_events(deployment.id)
        assert "re-queued by the reaper" in events[-1].message
        again = await reap_once(deps, queue, now=LATER + timedelta(hours=1))
        assert again.requeued == []
        assert await queue.count("queued") == 1
    finally:
        await queue.disconnect()


async def test_a_recent_deployment_is_not_taken_for_lost(deps: Deps, redis_url: str, queue_name: str) -> None:
    """A deployment that changed within `lost_after_s` (its row written, its job not enqueued yet) is left alone."""
    queue = Queue.from_url(redis_url, name=queue_name)
    await queue.connect()
    try:
        await new_deployment()
        assert (await reap_once(deps, queue)).requeued == []
        assert await queue.count("queued") == 0
    finally:
        await queue.disconnect()


async def test_a_leased_or_waiting_deployment_is_left_alone(deps: Deps, redis_url: str, queue_name: str) -> None:
    """A deployment whose lease is held, or whose job still waits in the queue, is not re-queued."""
    queue = Queue.from_url(redis_url, name=queue_name)
    await queue.connect()
    try:
        leased = await new_deployment()
        leased.status = DeploymentStatus.PROCESSING
        await leased.save()
        lease = deploy_lease(deps.redis, str(leased.id), 5)
        assert await lease.acquire()
        waiting = await new_deployment()
        await enqueue_deploy(queue, waiting.id, deps.config.timings, secret_key=deps.config.secret_key)
        report = await reap_once(deps, queue, now=LATER)
        assert report.requeued == []
        await lease.release()
    finally:
        await queue.disconnect()


async def test_a_duplicate_delivery_stands_down(deps: Deps, world: World) -> None:
    """A deploy job whose deployment is leased by another worker does nothing and creates nothing."""
    deployment = await new_deployment()
    lease = deploy_lease(deps.redis, str(deployment.id), 5)
    assert await lease.acquire()
    ctx: WorkerContext = {"deps": deps}  # type: ignore[typeddict-item]
    assert await deploy(ctx, deployment_id=str(deployment.id)) == "BUSY"
    assert world.snapshot()["droplets"] == []
    await lease.release()


async def test_a_lost_lease_stops_the_pipeline(deps: Deps, world: World, redis: Redis) -> None:
    """When another owner takes the lease, the running job stops instead of racing it."""
    world.faults.add_spec("build_hangs")
    deployment = await new_deployment()
    ctx: WorkerContext = {"deps": deps}  # type: ignore[typeddict-item]
    job = asyncio.create_task(deploy(ctx, deployment_id=str(deployment.id)))
    while (await Deployment.get(id=deployment.id)).stage != DeploymentStage.WAIT_BUILD:
        await asyncio.sleep(0.02)
    lease = deploy_lease(redis, str(deployment.id), 5)
    await redis.set(lease.key, "someone-else")
    assert await asyncio.wait_for(job, 10) == "LEASE_LOST"
    await redis.delete(lease.key)


async def test_unfinished_cleanup_is_retried_and_frees_the_slot(deps: Deps, world: World) -> None:
    """A FAILED deployment whose droplet was left behind is cleaned by the reaper, which then frees its slot."""
    world.faults.add_spec("build_fails")
    deployment = await run(deps, await new_deployment())
    assert deployment.status == DeploymentStatus.FAILED
    # Pretend the droplet deletion was never confirmed: recreate the leftover state.
    world.faults.clear()
    leftover = await new_deployment()
    done = await run(deps, leftover)
    assert done.status == DeploymentStatus.COMPLETED
    done.status, done.resources_released = DeploymentStatus.FAILED, False
    await done.save()
    report = await reap_once(deps, Queue.from_url("redis://unused"), now=LATER)
    assert report.cleaned == [str(done.id)]
    assert world.snapshot()["droplets"] == []
    assert (await slot_usage(3)).active == 0
    assert (await Deployment.get(id=done.id)).resources_released


async def test_a_slot_without_a_deployment_is_freed_after_a_while(deps: Deps) -> None:
    """A slot reserved for a deployment row that never got written is freed once it is old enough."""
    ghost = uuid.uuid4()
    assert await reserve_slot(ghost, 3) is not None
    soon = await reap_once(deps, Queue.from_url("redis://unused"))
    assert soon.freed_slots == []
    later = datetime.now(UTC) + timedelta(seconds=ORPHAN_SLOT_AFTER_S + 60)
    report = await reap_once(deps, Queue.from_url("redis://unused"), now=later)
    assert report.freed_slots == [str(ghost)]
    assert not await DropletSlot.filter(deployment_id=ghost).exists()
