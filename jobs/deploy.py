"""The deploy and destroy jobs: claim the deployment's lease, do the work, record the outcome.

While the work runs, the worker's keeper (`jobs.keeper`) renews the lease together with every other lease and
SAQ heartbeat of the worker, in one Redis round trip per beat. If the lease is lost (this worker stalled past
its TTL and another worker may have taken over), the work is cancelled at once, so two workers never drive one
deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from jobs.context import Deps, WorkerContext
from jobs.envstash import read_values
from jobs.keeper import Keeper
from jobs.lease import Lease
from jobs.outages import unavailable_service
from jobs.pipeline import cleanup, fail, run_pipeline
from jobs.run import Run
from models.deployment import Deployment, DeploymentStage, DeploymentStatus
from models.slot import release_slot

logger = logging.getLogger("deployer.jobs")

#: Stages before the application's environment is set: a job resuming here needs the initial env values.
ENV_NOT_YET_SET = frozenset(
    {
        DeploymentStage.QUEUED,
        DeploymentStage.CREATE_DROPLET,
        DeploymentStage.WAIT_DROPLET,
        DeploymentStage.REGISTER_SERVER,
        DeploymentStage.VALIDATE_SERVER,
        DeploymentStage.CREATE_APPLICATION,
    }
)


def deploy_lease(redis: Any, deployment_id: str, heartbeat_s: float) -> Lease:
    """The lease a deploy or destroy job holds on its deployment: it lives one heartbeat period, and the
    keeper renews it three times per period."""
    return Lease(redis, f"deploy:{deployment_id}", ttl_s=heartbeat_s)


@contextlib.asynccontextmanager
async def _keeper(ctx: WorkerContext, deps: Deps) -> AsyncIterator[Keeper]:
    """The worker's keeper, or (for a job called outside a worker, as tests do) a private one."""
    keeper = ctx.get("keeper")
    if keeper is not None:
        yield keeper
        return
    async with Keeper.running(deps.redis, ttl_s=deps.config.timings.job_heartbeat_s) as private:
        yield private


async def _leased(
    ctx: WorkerContext, deps: Deps, deployment: Deployment, work: Callable[[], Coroutine[Any, Any, None]]
) -> str | None:
    """Run `work` holding the deployment's lease; returns BUSY or LEASE_LOST when it did not run to the end."""
    lease = deploy_lease(deps.redis, str(deployment.id), deps.config.timings.job_heartbeat_s)
    if not await lease.acquire():
        logger.info("another worker holds this deployment; leaving it", extra={"deployment_id": str(deployment.id)})
        return "BUSY"
    lost = asyncio.Event()
    try:
        async with _keeper(ctx, deps) as keeper:
            task = asyncio.create_task(work())

            def on_lost() -> None:
                lost.set()
                task.cancel()

            keeper.hold(lease, on_lost)
            try:
                await task
            except asyncio.CancelledError:
                if not lost.is_set():
                    raise
                return "LEASE_LOST"
            finally:
                keeper.drop(lease)
                if not task.done():  # we were cancelled (worker shutdown): stop the work before letting go
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    finally:
        if not lost.is_set():
            await lease.release()
    return None


def backing_service_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it, or was being handled) says the database or Redis could not be reached,
    rather than a bug."""
    return unavailable_service(exc, implicit_context=True) is not None


async def deploy(ctx: WorkerContext, *, deployment_id: str, env_ref: str | None = None) -> str:
    """Run (or resume) the pipeline of one deployment and return its final status.

    A deployment that is no longer QUEUED or PROCESSING is left alone, and so is one whose lease another live
    worker holds, so a duplicate or late delivery does nothing. An unexpected error is re-raised for SAQ to
    retry the job while attempts remain; on the last attempt it fails the deployment (with cleanup) instead,
    so no deployment is left PROCESSING.
    """
    deployment = await Deployment.get_or_none(id=deployment_id)
    if deployment is None:
        logger.warning("deploy job for an unknown deployment", extra={"deployment_id": deployment_id})
        return "MISSING"
    if deployment.status not in (DeploymentStatus.QUEUED, DeploymentStatus.PROCESSING):
        return str(deployment.status.value)
    deps = ctx["deps"]
    job = ctx.get("job")

    async def work() -> None:
        await deployment.refresh_from_db()  # the lease is ours: read what the last holder stored
        if deployment.status not in (DeploymentStatus.QUEUED, DeploymentStatus.PROCESSING):
            return
        stashed = await read_values(deps.redis, env_ref, secret_key=deps.config.secret_key) if env_ref else []
        if env_ref and deployment.stage not in ENV_NOT_YET_SET:  # the application has its env: drop the values
            await deps.redis.delete(env_ref)
        run = Run(
            deployment=deployment,
            deps=deps,
            env=[(str(v["key"]), str(v["value"])) for v in stashed or []],
            fresh=deployment.status == DeploymentStatus.QUEUED,
        )
        if deployment.status == DeploymentStatus.PROCESSING:  # an earlier attempt started and did not finish
            await run.event(f"Resuming after an interrupted attempt, at {deployment.stage.value}")
        if stashed is None and deployment.spec.get("env_keys") and deployment.stage in ENV_NOT_YET_SET:
            # The values lived only in Redis (never in the database) and Redis lost them: deploying without
            # them would silently drop the user's variables.
            await fail(run, "the initial environment values were lost (Redis was reset or flushed); deploy again")
            return
        try:
            await run_pipeline(run)
        except Exception as exc:
            last_attempt = job is None or job.attempts >= job.retries
            logger.exception("deploy job crashed", extra={"deployment_id": deployment_id, "last_attempt": last_attempt})
            if not last_attempt or backing_service_unavailable(exc):
                # An outage of the database or Redis is not the deployment's fault: leave it PROCESSING, and
                # the reaper re-queues it once both answer again.
                raise
            await fail(run, f"internal error during {deployment.stage.value}; see the worker log")

    outcome = await _leased(ctx, deps, deployment, work)
    if env_ref and deployment.is_terminal:
        await deps.redis.delete(env_ref)
    return outcome or deployment.status.value


async def destroy(ctx: WorkerContext, *, deployment_id: str) -> str:
    """Delete a deployment's Coolify server and droplet, confirm both are gone, free its slot: DESTROYED.

    If something cannot be confirmed deleted the deployment stays DESTROYING, and the reaper re-queues it.
    """
    deployment = await Deployment.get_or_none(id=deployment_id)
    if deployment is None:
        return "MISSING"
    if deployment.status != DeploymentStatus.DESTROYING:
        return str(deployment.status.value)
    deps = ctx["deps"]

    async def work() -> None:
        await deployment.refresh_from_db()
        if deployment.status != DeploymentStatus.DESTROYING:
            return
        run = Run(deployment=deployment, deps=deps, checks_cancel=False)
        await run.event("Deleting the Coolify server and the droplet", stage=DeploymentStage.CLEANUP)
        problems = await cleanup(run)
        if problems:
            await run.event(f"Destroy incomplete, to be retried: {'; '.join(problems)}")
            return
        await release_slot(deployment.id)
        await run.event(
            "Deployment destroyed: its server and droplet are deleted and the droplet slot is free",
            status=DeploymentStatus.DESTROYED,
            stage=DeploymentStage.DONE,
            resources_released=True,
            finished_at=datetime.now(UTC),
        )

    outcome = await _leased(ctx, deps, deployment, work)
    return outcome or deployment.status.value
