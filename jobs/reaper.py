"""The reaper: finds work that lost its worker and puts it back on track.

One pass (at most one per interval across all workers, by a Redis lock):

1. A deployment still QUEUED, PROCESSING or DESTROYING with no progress for `stall_after_s` and no live lease lost its
   worker (SIGKILL, a lost machine, a job SAQ dropped): it gets a fresh deploy (or destroy) job, which
   resumes from what the database records.
2. A FAILED or CANCELLED deployment whose droplet was not confirmed deleted gets its cleanup retried; its slot is freed
   once the droplet is confirmed gone.
3. A slot held for a deployment row that never got written (the API died between reserving and inserting)
   is freed after `orphan_slot_after_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from saq import Queue
from saq.job import Status

from jobs.context import Deps
from jobs.deploy import deploy_lease
from jobs.enqueue import deploy_job_key, enqueue_destroy, requeue_deploy
from jobs.lease import is_held
from jobs.pipeline import cleanup
from jobs.run import Run
from models.deployment import ACTIVE_STATUSES, Deployment, DeploymentStatus
from models.slot import DropletSlot, release_slot

logger = logging.getLogger("deployer.reaper")

REAPER_LOCK = "deployer:reaper"
#: A slot reserved this long ago for a deployment that does not exist is an orphan.
ORPHAN_SLOT_AFTER_S = 300.0


@dataclass
class ReapReport:
    """What one pass did (deployment ids)."""

    requeued: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    freed_slots: list[str] = field(default_factory=list)


async def _waiting_in_queue(queue: Queue, deployment_id: str) -> bool:
    job = await queue.job(deploy_job_key(deployment_id))
    return job is not None and job.status == Status.QUEUED


async def reap_once(deps: Deps, queue: Queue, *, now: datetime | None = None) -> ReapReport:
    """Run one reaper pass (without the cluster-wide lock; `run_reaper` takes it)."""
    timings = deps.config.timings
    now = now or datetime.now(UTC)
    report = ReapReport()
    stalled = await Deployment.filter(
        status__in=[*ACTIVE_STATUSES, DeploymentStatus.DESTROYING],
        updated_at__lt=now - timedelta(seconds=timings.stall_after_s),
    )
    for deployment in stalled:
        if await is_held(deps.redis, f"deploy:{deployment.id}"):
            continue  # a live worker is on it (a long request, a slow backoff)
        if deployment.status == DeploymentStatus.QUEUED and await _waiting_in_queue(queue, str(deployment.id)):
            continue  # not lost, just waiting for a free worker
        await Run(deployment=deployment, deps=deps).event(
            f"No progress for over {timings.stall_after_s:g} s and no live worker; re-queued by the reaper"
        )
        if deployment.status == DeploymentStatus.DESTROYING:
            await enqueue_destroy(queue, deployment.id, timings)
        else:
            await requeue_deploy(queue, deployment.id, timings)
        report.requeued.append(str(deployment.id))
    leftovers = await Deployment.filter(
        status__in=[DeploymentStatus.FAILED, DeploymentStatus.CANCELLED],
        resources_released=False,
        updated_at__lt=now - timedelta(seconds=timings.stall_after_s),
    )
    for deployment in leftovers:
        lease = deploy_lease(deps.redis, str(deployment.id), timings.job_heartbeat_s)
        if not await lease.acquire():
            continue
        try:
            run = Run(deployment=deployment, deps=deps)
            problems = await cleanup(run)
            if problems:
                await run.event(f"Reaper cleanup still incomplete: {'; '.join(problems)}")
            else:
                await release_slot(deployment.id)
                await run.event("Reaper finished the cleanup; the droplet slot is free", resources_released=True)
                report.cleaned.append(str(deployment.id))
        finally:
            await lease.release()
    orphan_cutoff = now - timedelta(seconds=ORPHAN_SLOT_AFTER_S)
    for slot in await DropletSlot.filter(deployment_id__isnull=False, reserved_at__lt=orphan_cutoff):
        if slot.deployment_id is not None and not await Deployment.exists(id=slot.deployment_id):
            await release_slot(slot.deployment_id)
            report.freed_slots.append(str(slot.deployment_id))
    return report


async def run_reaper(deps: Deps, queue: Queue, redis: Redis) -> None:
    """Run reaper passes forever, one per interval cluster-wide; errors are logged, never fatal."""
    interval = deps.config.timings.reaper_interval_s
    while True:
        try:
            if await redis.set(REAPER_LOCK, "1", nx=True, px=max(1, int(interval * 1000))):
                report = await reap_once(deps, queue)
                if report.requeued or report.cleaned or report.freed_slots:
                    logger.warning(
                        "reaper acted",
                        extra={"requeued": report.requeued, "cleaned": report.cleaned, "freed": report.freed_slots},
                    )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reaper pass failed")
        await asyncio.sleep(interval)


async def stop_reaper(task: asyncio.Task[None] | None) -> None:
    """Cancel a running reaper task and wait for it."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
