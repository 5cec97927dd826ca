"""The deploy job: load the deployment, run the pipeline, record the outcome; keep the job's heartbeat alive."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from jobs.context import WorkerContext
from jobs.enqueue import HEARTBEAT_S
from jobs.envstash import read_values
from jobs.pipeline import fail, run_pipeline
from jobs.run import Run
from models.deployment import Deployment

logger = logging.getLogger("deployer.jobs")


async def _heartbeat(job: Any, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await job.update()
        except Exception:  # a missed beat is retried; the job itself must go on
            logger.warning("job heartbeat failed", exc_info=True)


async def deploy(ctx: WorkerContext, *, deployment_id: str, env_ref: str | None = None) -> str:
    """Run (or resume) the pipeline of one deployment and return its final status.

    A deployment that is already final is left alone, so a duplicate or late retry does nothing. An unexpected
    error is re-raised for SAQ to retry the job while attempts remain; on the last attempt it fails the
    deployment (with cleanup) instead, so no deployment is left PROCESSING.
    """
    deployment = await Deployment.get_or_none(id=deployment_id)
    if deployment is None:
        logger.warning("deploy job for an unknown deployment", extra={"deployment_id": deployment_id})
        return "MISSING"
    if deployment.is_terminal:
        return deployment.status.value
    deps = ctx["deps"]
    stashed = await read_values(deps.redis, env_ref) if env_ref else []
    if stashed is None:
        logger.warning(
            "initial environment expired before the deploy job read it", extra={"deployment_id": deployment_id}
        )
    run = Run(deployment=deployment, deps=deps, env=[(str(v["key"]), str(v["value"])) for v in stashed or []])
    job = ctx.get("job")
    beat = asyncio.create_task(_heartbeat(job, HEARTBEAT_S / 3)) if job is not None else None
    try:
        if job is not None and job.attempts > 1:
            await run.event(f"Resuming after an interrupted attempt (attempt {job.attempts} of {job.retries})")
        try:
            await run_pipeline(run)
        except Exception:
            last_attempt = job is None or job.attempts >= job.retries
            logger.exception("deploy job crashed", extra={"deployment_id": deployment_id, "last_attempt": last_attempt})
            if not last_attempt:
                raise
            await fail(run, f"internal error during {deployment.stage.value}; see the worker log")
    finally:
        if env_ref and deployment.is_terminal:
            await deps.redis.delete(env_ref)
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
    return deployment.status.value
