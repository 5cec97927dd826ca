"""SAQ worker settings factory: the queue, the job functions, and startup/shutdown that build clients.

`worker_settings(settings)` returns the keyword arguments of `saq.Worker`; `run_worker(settings)` runs one
until cancelled. Several workers on several machines may share one Redis and one database.

A worker runs up to `WORKER_CONCURRENCY` jobs (1,000 by default) on at most `WORKER_REDIS_CONNECTIONS` Redis
connections (32): the queue and the jobs share one bounded pool, and only one task at a time waits in the
blocking dequeue (`jobs.queue`). A job holds a connection only for the length of a command, so running jobs
cost no connections while they wait between polls.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from typing import Any, cast

import httpx
from redis.asyncio import Redis
from saq import Worker
from saq.job import Job, Status
from saq.utils import cancel_tasks, millis

from clients.coolify import CoolifyClient
from clients.digitalocean import DigitalOceanClient
from jobs.budget import client_hooks, cloud_budgets
from jobs.context import Deps, PipelineConfig, WorkerContext
from jobs.deploy import deploy, destroy
from jobs.doctor import log_checks, run_checks
from jobs.enqueue import bounded_redis_pool
from jobs.envjob import apply_env_change
from jobs.keeper import Keeper
from jobs.logcontext import bind_job, unbind_job
from jobs.looplag import LoopLagMonitor
from jobs.polls import PollLists, polls_prefix
from jobs.queue import DeployerQueue
from jobs.reaper import run_reaper, stop_reaper
from jobs.steps import OWNER_TAG
from models.db import close_db, init_db
from models.slot import ensure_slots
from settings import Settings

logger = logging.getLogger("deployer.worker")
#: On SIGTERM, running jobs get this long before they are cancelled. A cancelled deploy job releases its
#: lease and goes back on the queue, and another worker resumes it from the database, so there is no reason
#: to hold a shutdown for a build that may take many minutes. (SAQ's upkeep loops also wait this long.)
SHUTDOWN_GRACE_S = 2


#: Running jobs whose abort marks one round trip reads (SAQ's own check reads and parses every running job).
ABORT_CHECK_CHUNK = 200


class DeployerWorker(Worker[WorkerContext]):
    """SAQ's worker with an abort check that stays cheap with a thousand jobs running, and a stop that does
    not wait for nothing.

    SAQ checks every second whether a running job was aborted (`Queue.abort`) by fetching and parsing every
    running job's record: with 1,000 jobs, one burst of tens of milliseconds each second, during which every
    other job of the process waits. `Queue.abort` also sets a short-lived mark (`Job.abort_id`), so this check
    reads only those small marks, a chunk per round trip, and parses only the jobs that have one.

    SAQ's stop waits the whole shutdown grace period for its upkeep loops and its waiting dequeue, which only
    end when cancelled at the end of it; with no job running there is nothing to wait for (see :meth:`stop`).
    """

    async def stop(self) -> None:
        """SAQ's stop; with no job running, the idle loops are cancelled at once instead of after the grace.

        A job dequeued in the same instant, before it was marked ACTIVE, stays in the active list unmarked; the
        sweep puts it back on the queue after its dequeue grace (`jobs.queue`), as after any lost dequeue.
        """
        if not self.job_task_contexts:
            self.event.set()  # before cancelling: a finished process task must not start another
            for task in list(self.tasks):
                task.cancel()
        await super().stop()

    async def abort(self, abort_threshold: float) -> None:
        """Cancel the running jobs that were aborted, as SAQ's check does, reading only their marks first."""
        running = [job for job in self.job_task_contexts if (job.duration("running") or 0) >= millis(abort_threshold)]
        redis = cast(DeployerQueue, self.queue).redis
        marked: list[Job] = []
        for start in range(0, len(running), ABORT_CHECK_CHUNK):
            chunk = running[start : start + ABORT_CHECK_CHUNK]
            marks = await redis.mget([job.abort_id for job in chunk])
            marked.extend(job for job, mark in zip(chunk, marks, strict=True) if mark is not None)
        if marked:
            await self._abort_marked(marked)

    async def _abort_marked(self, jobs: list[Job]) -> None:
        # SAQ's `Worker.abort`, for the jobs found marked.
        for job in await self.queue.jobs(job.key for job in jobs):
            if not job or job.status not in (Status.ABORTING, Status.ABORTED):
                continue
            task_data = self.job_task_contexts.get(job)
            if not task_data:
                continue
            task = task_data["task"]
            logger.info("Aborting %s", job.id)
            if not task.done():
                task_data["aborted"] = "abort" if job.error is None else job.error
                await cancel_tasks([task], None)
            await self.queue.finish_abort(job)


async def track_job(ctx: WorkerContext) -> None:
    """SAQ `before_process`: the keeper refreshes this job's heartbeat from now on."""
    keeper, job = ctx.get("keeper"), ctx.get("job")
    if keeper is not None and job is not None:
        keeper.track(job.id)


async def untrack_job(ctx: WorkerContext) -> None:
    """SAQ `after_process`: the job is over; stop refreshing its heartbeat."""
    keeper, job = ctx.get("keeper"), ctx.get("job")
    if keeper is not None and job is not None:
        keeper.untrack(job.id)


def worker_client_name(settings: Settings) -> str:
    """The name a worker's Redis connections carry (`CLIENT LIST`): `deployer-worker:<queue>:<pid>`."""
    return f"deployer-worker:{settings.queue_name}:{os.getpid()}"


def worker_settings(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> dict[str, Any]:
    """Keyword arguments for `saq.Worker`, built from settings.

    Args:
        transport: an httpx transport for both cloud clients (tests pass the sandbox's ASGI transport).
    """
    # One pool for the queue (one blocking dequeue, SAQ's upkeep, job updates) and the jobs (leases, keeper,
    # progress, env stash): the process never opens more than WORKER_REDIS_CONNECTIONS, and a command that
    # finds them all busy waits its turn. The queue's sweep never touches a job whose worker (its keeper) is
    # alive or whose lease is held.
    pool = bounded_redis_pool(
        settings.redis_url, settings.worker_redis_connections, client_name=worker_client_name(settings)
    )
    queue = DeployerQueue(Redis(connection_pool=pool), name=settings.queue_name)
    # SAQ writes this dict into its worker info every few seconds; the loop-lag monitor keeps it current.
    metadata: dict[str, Any] = {}

    async def startup(ctx: WorkerContext) -> None:
        await init_db(settings.database_url)
        await ensure_slots(settings.max_active_droplets)
        redis = Redis(connection_pool=pool)
        # Every request either client sends draws from the budget all workers and API processes share.
        budgets = cloud_budgets(redis, settings)
        digitalocean = DigitalOceanClient(
            api_url=settings.digitalocean.api_url,
            token=settings.digitalocean.api_key,
            transport=transport,
            **client_hooks(budgets.digitalocean),
        )
        coolify = CoolifyClient(
            api_url=settings.coolify.api_url,
            token=settings.coolify.api_key,
            transport=transport,
            **client_hooks(budgets.coolify),
        )
        ctx["deps"] = Deps(
            digitalocean=digitalocean,
            coolify=coolify,
            redis=redis,
            config=PipelineConfig.from_settings(settings),
            # Every worker of this queue shares one list call per interval for each kind of wait.
            polls=PollLists(
                redis,
                digitalocean,
                coolify,
                prefix=polls_prefix(
                    settings.queue_name,
                    settings.digitalocean.api_url,
                    settings.digitalocean.api_key,
                    settings.coolify.api_url,
                    settings.coolify.api_key,
                ),
                droplet_tag=OWNER_TAG,
            ),
        )
        # One beat renews this worker's liveness, every lease it holds and every running job's heartbeat.
        keeper = Keeper(
            ctx["deps"].redis,
            ttl_s=settings.timings.job_heartbeat_s,
            alive_key=queue.alive_key(ctx["worker"].id),
        )
        await keeper.start()
        ctx["keeper"] = keeper
        ctx["reaper_stopping"] = reaper_stopping = asyncio.Event()
        ctx["reaper"] = asyncio.create_task(
            run_reaper(ctx["deps"], queue, keeper, stopping=reaper_stopping), name="reaper"
        )
        # The same read-only checks as `deployer doctor`, logged: a warning only, since a cloud that is down
        # now may be up by the time a deployment needs it.
        log_checks(await run_checks(settings, ctx["deps"].digitalocean, ctx["deps"].coolify))
        # From here on the worker takes jobs: its loop's lag is what every job waits on top of its own work.
        ctx["looplag"] = LoopLagMonitor(metadata=metadata)
        ctx["looplag"].start()

    async def shutdown(ctx: WorkerContext) -> None:
        await stop_reaper(ctx.get("reaper"), ctx.get("reaper_stopping"))
        keeper = ctx.get("keeper")
        if keeper is not None:
            await keeper.stop()
        deps = ctx.get("deps")
        if deps is not None:
            await deps.digitalocean.aclose()
            await deps.coolify.aclose()
            await deps.redis.aclose()
            # The pool is shared with the queue, so closing a client leaves it open; the worker is done with it
            # (`run_worker` disconnects the queue afterwards, which finds nothing left to close).
            await pool.disconnect()
        await close_db()
        looplag = ctx.get("looplag")
        if looplag is not None:
            logger.info("event loop lag of this worker: %s", (await looplag.stop()).describe())

    return {
        "queue": queue,
        "functions": [deploy, destroy, apply_env_change],
        "concurrency": settings.worker_concurrency,
        "startup": startup,
        "shutdown": shutdown,
        "before_process": [bind_job, track_job],
        "after_process": [untrack_job, unbind_job],
        # Sweep for jobs whose worker died (expired heartbeat) every few seconds instead of SAQ's 60.
        "timers": {"sweep": max(1, math.ceil(settings.timings.worker_sweep_s))},
        "shutdown_grace_period_s": SHUTDOWN_GRACE_S,
        "metadata": metadata,
    }


async def run_worker(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
    """Run one worker until it is cancelled or receives SIGINT/SIGTERM."""
    worker = DeployerWorker(**worker_settings(settings, transport=transport))
    await worker.queue.connect()
    try:
        await worker.start()
    finally:
        await worker.queue.disconnect()


def settings_from_env() -> dict[str, Any]:
    """For `saq jobs.worker.settings_from_env`: worker settings from the process environment.

    It refuses what `deployer worker` refuses: no DEPLOYER_SECRET_KEY (the API's, to read stashed env values).
    """
    settings = Settings.from_env(os.environ)
    settings.check_secret_key()
    return worker_settings(settings)
