"""The API's only way into jobs: typed enqueue helpers with SAQ settings fit for minutes-long work.

SAQ's defaults (10 s timeout, one attempt, no heartbeat) would kill a deployment mid-way and never resume it.
A deploy job instead gets a timeout covering every stage's deadline plus cleanup, a heartbeat that a live
worker renews (so a killed worker's job is noticed and retried elsewhere), and a few retries with backoff; the
steps are idempotent, so a retry resumes from what the database already records.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from saq import Job, Queue

from settings import Timings

DEPLOY_FUNCTION = "deploy"
ENV_FUNCTION = "apply_env_change"
#: How long a job may go without a heartbeat before the sweeper considers its worker dead.
HEARTBEAT_S = 30
#: Attempts of one deploy job (the first run plus retries after a worker died or a bug).
DEPLOY_ATTEMPTS = 3
#: Env jobs hold secret values in their arguments; keep the finished job in Redis only briefly.
ENV_JOB_TTL_S = 60


@dataclass(frozen=True)
class JobOptions:
    """SAQ job options for one kind of job."""

    timeout: int
    heartbeat: int
    retries: int
    retry_delay: float
    retry_backoff: float


def deploy_job_options(timings: Timings) -> JobOptions:
    """Options for a deploy job: long enough for every deadline, retried after a crash."""
    return JobOptions(
        timeout=math.ceil(timings.pipeline_budget_s),
        heartbeat=HEARTBEAT_S,
        retries=DEPLOY_ATTEMPTS,
        retry_delay=1.0,
        retry_backoff=30.0,
    )


def deploy_job_key(deployment_id: uuid.UUID | str) -> str:
    """One job key per deployment, so enqueueing twice cannot start two pipelines."""
    return f"deploy:{deployment_id}"


async def enqueue_deploy(
    queue: Queue,
    deployment_id: uuid.UUID,
    timings: Timings,
    *,
    env: Sequence[tuple[str, str]] = (),
) -> Job | None:
    """Enqueue the pipeline of one deployment; returns None when it is already enqueued.

    Args:
        env: initial environment variables (key, value). They travel in the job's arguments in Redis and are
            never written to the database.
    """
    options = deploy_job_options(timings)
    return await queue.enqueue(
        DEPLOY_FUNCTION,
        key=deploy_job_key(deployment_id),
        timeout=options.timeout,
        heartbeat=options.heartbeat,
        retries=options.retries,
        retry_delay=options.retry_delay,
        retry_backoff=options.retry_backoff,
        deployment_id=str(deployment_id),
        env=[[key, value] for key, value in env],
    )


#: How long the API waits for an env change (Coolify calls plus the restart request).
ENV_JOB_TIMEOUT_S = 120


async def run_env_change(
    queue: Queue,
    *,
    change_id: int,
    application_uuid: str,
    action: str,
    variables: Sequence[dict[str, object]] = (),
    keys: Sequence[str] = (),
    mode: str = "AUTO",
    builds_from_source: bool = False,
) -> dict[str, object]:
    """Run an env change on a worker and wait for its result (keys and restart, never values).

    Not retried: a half-applied change is reported as such rather than replayed behind the caller's back.
    """
    result = await queue.apply(
        ENV_FUNCTION,
        timeout=ENV_JOB_TIMEOUT_S,
        poll_interval=0.05,
        retries=1,
        ttl=ENV_JOB_TTL_S,
        change_id=change_id,
        application_uuid=application_uuid,
        action=action,
        variables=list(variables),
        keys=list(keys),
        mode=mode,
        builds_from_source=builds_from_source,
    )
    return dict(result)
