"""SAQ worker settings factory: the queue, the job functions, and startup/shutdown that build clients.

`worker_settings(settings)` returns the keyword arguments of `saq.Worker`; `run_worker(settings)` runs one
until cancelled. Several workers on several machines may share one Redis and one database.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from typing import Any

import httpx
from redis.asyncio import Redis
from saq import Worker
from saq.queue.redis import RedisQueue as Queue

from clients.coolify import CoolifyClient
from clients.digitalocean import DigitalOceanClient
from clients.errors import CloudAPIError
from jobs.context import Deps, PipelineConfig, WorkerContext
from jobs.deploy import deploy, destroy
from jobs.envjob import apply_env_change
from jobs.logcontext import bind_job, unbind_job
from jobs.reaper import run_reaper, stop_reaper
from models.db import close_db, init_db
from models.slot import ensure_slots
from settings import Settings

logger = logging.getLogger("deployer.worker")
#: Redis connections beyond one per concurrency slot (sweep, schedule, stats, heartbeats, aborts).
UPKEEP_CONNECTIONS = 32
#: On SIGTERM, running jobs get this long before they are cancelled. A cancelled deploy job releases its
#: lease and goes back on the queue, and another worker resumes it from the database, so there is no reason
#: to hold a shutdown for a build that may take many minutes. (SAQ's upkeep loops also wait this long.)
SHUTDOWN_GRACE_S = 2


async def check_clouds(deps: Deps) -> None:
    """Say at start whether both clouds answer with these credentials (a warning, never fatal: a cloud that is
    down now may be up by the time a deployment needs it)."""
    try:
        account = await deps.digitalocean.get_account()
        logger.info("DigitalOcean reachable: account %s, droplet limit %s", account.status, account.droplet_limit)
    except CloudAPIError as exc:
        logger.warning("DigitalOcean is not usable with these settings: %s", exc)
    try:
        logger.info("Coolify reachable: version %s", await deps.coolify.version())
    except CloudAPIError as exc:
        logger.warning("Coolify is not usable with these settings: %s", exc)


def worker_settings(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> dict[str, Any]:
    """Keyword arguments for `saq.Worker`, built from settings.

    Args:
        transport: an httpx transport for both cloud clients (tests pass the sandbox's ASGI transport).
    """
    # Every concurrency slot holds a connection in a blocking dequeue; upkeep, heartbeats and progress need
    # more. redis-py's default pool (100) would run dry at the default concurrency.
    queue = Queue(
        Redis.from_url(settings.redis_url, max_connections=settings.worker_concurrency + UPKEEP_CONNECTIONS),
        name=settings.queue_name,
    )

    async def startup(ctx: WorkerContext) -> None:
        await init_db(settings.database_url)
        await ensure_slots(settings.max_active_droplets)
        ctx["deps"] = Deps(
            digitalocean=DigitalOceanClient(
                api_url=settings.digitalocean.api_url,
                token=settings.digitalocean.api_key,
                transport=transport,
            ),
            coolify=CoolifyClient(
                api_url=settings.coolify.api_url, token=settings.coolify.api_key, transport=transport
            ),
            redis=Redis.from_url(settings.redis_url),
            config=PipelineConfig.from_settings(settings),
        )
        ctx["reaper"] = asyncio.create_task(run_reaper(ctx["deps"], queue, ctx["deps"].redis), name="reaper")
        await check_clouds(ctx["deps"])

    async def shutdown(ctx: WorkerContext) -> None:
        await stop_reaper(ctx.get("reaper"))
        deps = ctx.get("deps")
        if deps is not None:
            await deps.digitalocean.aclose()
            await deps.coolify.aclose()
            await deps.redis.aclose()
        await close_db()

    return {
        "queue": queue,
        "functions": [deploy, destroy, apply_env_change],
        "concurrency": settings.worker_concurrency,
        "startup": startup,
        "shutdown": shutdown,
        "before_process": bind_job,
        "after_process": unbind_job,
        # Sweep for jobs whose worker died (expired heartbeat) every few seconds instead of SAQ's 60.
        "timers": {"sweep": max(1, math.ceil(settings.timings.worker_sweep_s))},
        "shutdown_grace_period_s": SHUTDOWN_GRACE_S,
    }


async def run_worker(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
    """Run one worker until it is cancelled or receives SIGINT/SIGTERM."""
    worker: Worker[Any] = Worker(**worker_settings(settings, transport=transport))
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
