"""The API's only way into jobs: typed enqueue helpers with SAQ settings fit for minutes-long work.

SAQ's defaults (10 s timeout, one attempt, no heartbeat) would kill a deployment mid-way and never resume it.
A deploy job instead gets a timeout covering every stage's deadline plus cleanup, a heartbeat that a live
worker renews (so a killed worker's job is noticed and retried elsewhere), and a few retries with backoff; the
steps are idempotent, so a retry resumes from what the database already records.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from saq import Job, Queue
from saq.job import TERMINAL_STATUSES, Status
from saq.queue.redis import RedisQueue

from jobs.envstash import deploy_env_ref, discard_values, stash_values
from settings import Timings

#: Re-sends of a command whose connection broke (a Redis restart leaves every pooled connection dead).
REDIS_RETRIES = 3


def redis_from_url(url: str, **kwargs: Any) -> Redis:
    """A Redis client that reconnects on its own: a command on a connection that broke (Redis restarted) is
    sent again on a fresh one, a few times within about a second, before the error reaches the caller.

    Every command deployer sends is safe to repeat: job keys are unique, leases are SET NX, progress
    announcements are de-duplicated by sequence, and a dequeue whose reply was lost is swept back.
    """
    return Redis.from_url(url, **_reconnecting(), **kwargs)


def bounded_redis_pool(
    url: str, max_connections: int, *, client_name: str | None = None, wait_s: float = 30.0
) -> BlockingConnectionPool:
    """A pool of at most `max_connections` connections that reconnect like `redis_from_url`'s; a command that
    finds them all busy waits for one (up to `wait_s`, then a ConnectionError) instead of opening another.

    Clients built on it (`Redis(connection_pool=pool)`) share the cap; closing a client leaves the pool open.

    Args:
        client_name: the name its connections give themselves (`CLIENT LIST` shows it).
    """
    return BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=wait_s, client_name=client_name, **_reconnecting()
    )


def _reconnecting() -> dict[str, Any]:
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), REDIS_RETRIES)
    return {"retry": retry, "retry_on_error": [RedisConnectionError, RedisTimeoutError]}


DEPLOY_FUNCTION = "deploy"
DESTROY_FUNCTION = "destroy"
ENV_FUNCTION = "apply_env_change"
#: Attempts of one deploy job (the first run plus retries after a worker died or a bug).
DEPLOY_ATTEMPTS = 3
#: How long a finished env job (keys and outcome only) stays in Redis.
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
        heartbeat=max(1, math.ceil(timings.job_heartbeat_s)),
        retries=DEPLOY_ATTEMPTS,
        retry_delay=1.0,
        retry_backoff=30.0,
    )


def deploy_job_key(deployment_id: uuid.UUID | str) -> str:
    """One job key per deployment, so enqueueing twice cannot start two pipelines."""
    return f"deploy:{deployment_id}"


async def _enqueue_pipeline_job(
    queue: Queue, function: str, key: str, deployment_id: uuid.UUID | str, timings: Timings, **kwargs: Any
) -> Job | None:
    """Enqueue a deploy or destroy job with the long-running job options."""
    options = deploy_job_options(timings)
    return await queue.enqueue(
        function,
        key=key,
        timeout=options.timeout,
        heartbeat=options.heartbeat,
        retries=options.retries,
        retry_delay=options.retry_delay,
        retry_backoff=options.retry_backoff,
        deployment_id=str(deployment_id),
        **kwargs,
    )


async def enqueue_deploy(
    queue: Queue,
    deployment_id: uuid.UUID,
    timings: Timings,
    *,
    env: Sequence[tuple[str, str]] = (),
    secret_key: str,
) -> Job | None:
    """Enqueue the pipeline of one deployment; returns None when it is already enqueued.

    Args:
        env: initial environment variables (key, value). The values are stashed in Redis, encrypted, under a
            key of the deployment's (`jobs.envstash`) and the job gets only that key: SAQ logs a job's
            arguments, and the database never holds values. The stash lives as long as every attempt of the
            pipeline may take, and is deleted as soon as the application has its environment.
        secret_key: `DEPLOYER_SECRET_KEY`, which encrypts the stash.
    """
    options = deploy_job_options(timings)
    env_ref = await stash_values(
        cast("RedisQueue", queue).redis,
        [{"key": key, "value": value} for key, value in env],
        ttl_s=options.timeout * (options.retries + 1),
        secret_key=secret_key,
        ref=deploy_env_ref(deployment_id),
    )
    return await _enqueue_pipeline_job(
        queue, DEPLOY_FUNCTION, deploy_job_key(deployment_id), deployment_id, timings, env_ref=env_ref
    )


async def requeue_deploy(queue: Queue, deployment_id: uuid.UUID | str, timings: Timings) -> Job | None:
    """Enqueue a fresh job for a deployment whose job was lost (the reaper's way back into the pipeline).

    It has the deployment's usual key: SAQ refuses it (None) while a job of that key still waits, runs or
    waits for a retry, and replaces a finished one. The deployment's lease keeps two deliveries from ever
    running at once anyway.
    """
    return await _enqueue_pipeline_job(
        queue,
        DEPLOY_FUNCTION,
        deploy_job_key(deployment_id),
        deployment_id,
        timings,
        env_ref=deploy_env_ref(deployment_id),
    )


def destroy_job_key(deployment_id: uuid.UUID | str) -> str:
    """One destroy job key per deployment, so a destroy is never queued twice at once."""
    return f"destroy:{deployment_id}"


async def enqueue_destroy(queue: Queue, deployment_id: uuid.UUID | str, timings: Timings) -> Job | None:
    """Enqueue the job that deletes a deployment's server and droplet; None when one is already queued."""
    return await _enqueue_pipeline_job(queue, DESTROY_FUNCTION, destroy_job_key(deployment_id), deployment_id, timings)


#: SAQ's timeout of one env job; the job ends its Coolify work sooner (`jobs.envjob.WORK_BUDGET_S`).
ENV_JOB_TIMEOUT_S = 120
#: How long the API waits for an env job's result (a little over its timeout, so a result is never missed).
ENV_WAIT_S = ENV_JOB_TIMEOUT_S + 10
#: How long stashed values wait for a worker; a job that starts later finds nothing and changes nothing.
ENV_STASH_TTL_S = ENV_WAIT_S
_POLL_S = (0.02, 0.05, 0.1, 0.25)


class EnvJobError(Exception):
    """The env job did not report a result: no worker took it in time, or it failed (the message is safe)."""

    def __init__(self, message: str, *, started: bool) -> None:
        super().__init__(message)
        self.message = message
        #: Whether a worker had started the job (its outcome is then unknown rather than "nothing done").
        self.started = started


async def run_env_change(
    queue: Queue,
    redis: Redis,
    *,
    change_id: int,
    application_uuid: str,
    action: str,
    variables: Sequence[dict[str, object]] = (),
    keys: Sequence[str] = (),
    mode: str = "AUTO",
    builds_from_source: bool = False,
    wait_s: float = ENV_WAIT_S,
    secret_key: str,
) -> dict[str, Any]:
    """Run an env change on a worker and wait for its result (keys and restart, never values).

    The values (in `variables`: key, value and `is_*` flags) are stashed in Redis, encrypted with
    `secret_key` (`jobs.envstash`), never put in the job's arguments.
    The job runs once: a half-applied change is reported as such rather than
    replayed behind the caller's back.

    Raises:
        EnvJobError: no result within `wait_s` (a change no worker had started is withdrawn: it will never
            run), or the job failed.
    """
    ref = await stash_values(redis, variables, ttl_s=ENV_STASH_TTL_S, secret_key=secret_key)
    job = await queue.enqueue(
        ENV_FUNCTION,
        timeout=ENV_JOB_TIMEOUT_S,
        retries=1,
        ttl=ENV_JOB_TTL_S,
        change_id=change_id,
        application_uuid=application_uuid,
        action=action,
        keys=list(keys),
        variables_ref=ref,
        mode=mode,
        builds_from_source=builds_from_source,
    )
    if job is None:  # the key is random, so this cannot happen; never wait on a job that is not there
        await discard_values(redis, ref)
        raise EnvJobError("the env change could not be enqueued", started=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    polls = 0
    while True:
        current = await queue.job(job.key)
        if current is not None and current.status in TERMINAL_STATUSES:
            if current.status is Status.COMPLETE and isinstance(current.result, dict):
                return dict(current.result)
            raise EnvJobError(f"the env job ended with status {current.status.name.lower()}", started=True)
        if loop.time() >= deadline:
            # Withdraw the change: if no worker took the values yet, none ever will (the job finds nothing).
            started = not await discard_values(redis, ref)
            raise EnvJobError(f"no worker finished the env change within {wait_s:g} s", started=started)
        await asyncio.sleep(_POLL_S[min(polls, len(_POLL_S) - 1)])
        polls += 1
