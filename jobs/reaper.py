"""The reaper: finds work that lost its job and puts it back on track.

SAQ's sweep (`jobs.queue.DeployerQueue.sweep`) hands the job of a dead worker to another worker. The reaper
covers what the queue cannot know about: deployments whose job is gone altogether (Redis restarted without
persistence, the API died between writing the row and enqueueing it, a job ran out of attempts). One pass
(at most one per interval across all workers, by a Redis lock):

1. A deployment still QUEUED, PROCESSING or DESTROYING, with no progress for `lost_after_s`, no lease held and
   no job waiting or running in the queue, gets its job again (the same job key, so a job still in the queue
   is never doubled); the job resumes from what the database records.
2. A FAILED or CANCELLED deployment whose droplet was not confirmed deleted gets its cleanup retried; its slot
   is freed once the droplet is confirmed gone.
3. A slot held for a deployment row that never got written (the API died between reserving and inserting)
   is freed after `orphan_slot_after_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from saq import Queue
from saq.job import TERMINAL_STATUSES as JOB_TERMINAL_STATUSES

from jobs.context import Deps
from jobs.deploy import deploy_lease
from jobs.enqueue import deploy_job_key, destroy_job_key, enqueue_destroy, requeue_deploy
from jobs.keeper import Keeper
from jobs.lease import lease_key
from jobs.pipeline import cleanup
from jobs.run import Run
from models.deployment import ACTIVE_STATUSES, Deployment, DeploymentStatus
from models.slot import DropletSlot, release_slot
from settings import Timings

logger = logging.getLogger("deployer.reaper")

REAPER_LOCK = "deployer:reaper"
#: A slot reserved this long ago for a deployment that does not exist is an orphan.
ORPHAN_SLOT_AFTER_S = 300.0


def lost_after_s(timings: Timings) -> float:
    """How long a deployment without a lease or a job must have been quiet before it is re-queued.

    Long enough to cover the moments between writing a row and enqueueing its job; short, because a live job
    always holds its lease or sits in the queue, so nothing else can look lost.
    """
    return max(1.0, timings.job_heartbeat_s / 3)


@dataclass
class ReapReport:
    """What one pass did (deployment ids)."""

    requeued: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    freed_slots: list[str] = field(default_factory=list)


async def _has_live_job(queue: Queue, key: str) -> bool:
    job = await queue.job(key)
    return job is not None and job.status not in JOB_TERMINAL_STATUSES


async def reap_once(
    deps: Deps, queue: Queue, *, keeper: Keeper | None = None, now: datetime | None = None
) -> ReapReport:
    """Run one reaper pass (without the cluster-wide lock; `run_reaper` takes it).

    Args:
        keeper: renews the lease of a cleanup the reaper runs itself (a private one when None).
    """
    timings = deps.config.timings
    now = now or datetime.now(UTC)
    report = ReapReport()
    quiet = await Deployment.filter(
        status__in=[*ACTIVE_STATUSES, DeploymentStatus.DESTROYING],
        updated_at__lt=now - timedelta(seconds=lost_after_s(timings)),
    )
    if quiet:
        async with deps.redis.pipeline(transaction=False) as pipe:
            for deployment in quiet:
                pipe.exists(lease_key(f"deploy:{deployment.id}"))
            held = await pipe.execute()
    for deployment, is_held in zip(quiet, held if quiet else [], strict=True):
        if is_held:
            continue  # a live worker is on it (a long request, a slow backoff)
        destroying = deployment.status == DeploymentStatus.DESTROYING
        key = destroy_job_key(deployment.id) if destroying else deploy_job_key(deployment.id)
        if await _has_live_job(queue, key):
            continue  # waiting for a free worker, or running (a dead worker's job is the sweep's)
        await Run(deployment=deployment, deps=deps).event(
            "No live worker and no job for this deployment; re-queued by the reaper"
        )
        if destroying:
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
            async with contextlib.AsyncExitStack() as stack:
                if keeper is None:
                    keeper = await stack.enter_async_context(Keeper.running(deps.redis, ttl_s=timings.job_heartbeat_s))
                work = asyncio.create_task(_finish_cleanup(deps, deployment, report))
                keeper.hold(lease, work.cancel)
                try:
                    await work
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise  # the reaper itself is stopping
                    logger.warning("reaper cleanup lost its lease", extra={"deployment_id": str(deployment.id)})
                finally:
                    keeper.drop(lease)
        finally:
            await lease.release()
    orphan_cutoff = now - timedelta(seconds=ORPHAN_SLOT_AFTER_S)
    for slot in await DropletSlot.filter(deployment_id__isnull=False, reserved_at__lt=orphan_cutoff):
        if slot.deployment_id is not None and not await Deployment.exists(id=slot.deployment_id):
            await release_slot(slot.deployment_id)
            report.freed_slots.append(str(slot.deployment_id))
    return report


async def _finish_cleanup(deps: Deps, deployment: Deployment, report: ReapReport) -> None:
    run = Run(deployment=deployment, deps=deps)
    problems = await cleanup(run)
    if problems:
        await run.event(f"Reaper cleanup still incomplete: {'; '.join(problems)}")
    else:
        await release_slot(deployment.id)
        await run.event("Reaper finished the cleanup; the droplet slot is free", resources_released=True)
        report.cleaned.append(str(deployment.id))


#: How long a worker's shutdown waits for a reaper pass under way before cancelling it.
STOP_WAIT_S = 10.0


async def run_reaper(
    deps: Deps, queue: Queue, keeper: Keeper | None = None, *, stopping: asyncio.Event | None = None
) -> None:
    """Run reaper passes, one per interval cluster-wide, until `stopping` is set; errors are logged, never fatal."""
    interval = deps.config.timings.reaper_interval_s
    stopping = stopping or asyncio.Event()
    while not stopping.is_set():
        try:
            if await deps.redis.set(REAPER_LOCK, "1", nx=True, px=max(1, int(interval * 1000))):
                report = await reap_once(deps, queue, keeper=keeper)
                if report.requeued or report.cleaned or report.freed_slots:
                    logger.warning(
                        "reaper acted",
                        extra={"requeued": report.requeued, "cleaned": report.cleaned, "freed": report.freed_slots},
                    )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reaper pass failed")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stopping.wait()


async def stop_reaper(task: asyncio.Task[None] | None, stopping: asyncio.Event | None = None) -> None:
    """Stop a running reaper task and wait for it.

    With `stopping`, a pass under way is let finish (for up to `STOP_WAIT_S`) before the task is cancelled:
    cancelling it inside a database transaction can leave Tortoise's SQLite connection locked, and the
    worker's `close_db()` then never returns.
    """
    if task is None:
        return
    if stopping is not None:
        stopping.set()
        await asyncio.wait([task], timeout=STOP_WAIT_S)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
