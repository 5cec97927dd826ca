"""Cancel and destroy against the sandbox: the pipeline stops and cleans up; destroy deletes and frees."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from saq import Queue

from jobs.context import Deps, WorkerContext
from jobs.deploy import deploy, destroy
from jobs.enqueue import destroy_job_key
from jobs.progress import stored_events
from jobs.reaper import reap_once
from models.deployment import Deployment, DeploymentStage, DeploymentStatus
from models.slot import slot_usage
from sandbox.state import World
from tests.jobs.conftest import new_deployment, run


async def test_cancel_stops_a_running_pipeline_and_cleans_up(deps: Deps, world: World) -> None:
    """A cancel requested while the build runs ends CANCELLED with the server and droplet deleted."""
    world.faults.add_spec("build_hangs")
    deployment = await new_deployment()
    ctx: WorkerContext = {"deps": deps}  # type: ignore[typeddict-item]
    job = asyncio.create_task(deploy(ctx, deployment_id=str(deployment.id)))
    while (await Deployment.get(id=deployment.id)).stage != DeploymentStage.WAIT_BUILD:
        await asyncio.sleep(0.02)
    await Deployment.filter(id=deployment.id).update(cancel_requested=True)
    assert await asyncio.wait_for(job, 10) == "CANCELLED"
    done = await Deployment.get(id=deployment.id)
    assert done.failed_stage == DeploymentStage.WAIT_BUILD
    assert done.error == "Cancelled on request"
    assert world.snapshot()["droplets"] == []
    assert world.snapshot()["servers"] == []
    assert (await slot_usage(3)).active == 0


async def test_destroy_deletes_a_completed_deployment_and_frees_its_slot(deps: Deps, world: World) -> None:
    """Destroying a COMPLETED deployment deletes its server and droplet, frees the slot, ends DESTROYED."""
    done = await run(deps, await new_deployment())
    assert done.status == DeploymentStatus.COMPLETED
    done.status = DeploymentStatus.DESTROYING
    await done.save()
    ctx: WorkerContext = {"deps": deps}  # type: ignore[typeddict-item]
    assert await destroy(ctx, deployment_id=str(done.id)) == "DESTROYED"
    assert world.snapshot()["droplets"] == []
    assert world.snapshot()["servers"] == []
    assert (await slot_usage(3)).active == 0
    events = await stored_events(done.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].status == DeploymentStatus.DESTROYED


async def test_an_incomplete_destroy_stays_destroying_and_is_requeued(deps: Deps, world: World, redis_url: str,
                                                                      queue_name: str) -> None:  # fmt: skip
    """When the droplet cannot be deleted the deployment stays DESTROYING, and the reaper re-queues it."""
    done = await run(deps, await new_deployment())
    done.status = DeploymentStatus.DESTROYING
    await done.save()
    world.faults.add_spec("server_error=500@DELETE:/v2/droplets/")
    ctx: WorkerContext = {"deps": deps}  # type: ignore[typeddict-item]
    assert await destroy(ctx, deployment_id=str(done.id)) == "DESTROYING"
    assert (await slot_usage(3)).active == 1
    queue = Queue.from_url(redis_url, name=queue_name)
    await queue.connect()
    try:
        report = await reap_once(deps, queue, now=datetime.now(UTC) + timedelta(hours=1))
        assert report.requeued == [str(done.id)]
        jobs = [job async for job in queue.iter_jobs()]
        assert [(job.function, job.key) for job in jobs] == [("destroy", destroy_job_key(done.id))]
    finally:
        await queue.disconnect()


async def test_lost_initial_env_values_fail_the_deployment_instead_of_dropping_them(deps: Deps, world: World) -> None:
    """When Redis lost the stashed initial env before the app got it, the deployment fails and says why."""
    deployment = await new_deployment(env_keys=["API_KEY"])
    ctx: WorkerContext = {"deps": deps}  # type: ignore[typeddict-item]
    result = await deploy(ctx, deployment_id=str(deployment.id), env_ref="deployer:env-values:deploy:gone")
    assert result == "FAILED"
    done = await Deployment.get(id=deployment.id)
    assert done.error is not None and "initial environment values were lost" in done.error
    assert world.snapshot()["droplets"] == []
    assert (await slot_usage(3)).active == 0
