"""The ordered steps of a deployment and the runner that drives them, stops on failure and cleans up.

On success the deployment ends COMPLETED. On a failure or timeout the runner records the failed stage and the
reason, deletes the Coolify server and the droplet, confirms both are gone, frees the droplet slot and ends
FAILED. If the droplet cannot be confirmed deleted, the slot stays held (the droplet may still exist and
cost money) and the error says so.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from clients.errors import CloudAPIError, NotFoundError, RateLimitedError
from clients.http import request_deadline
from jobs import steps
from jobs.errors import CancelledByUserError, StepFailedError
from jobs.run import TRANSIENT_ERRORS, Run
from models.deployment import DeploymentStage, DeploymentStatus
from models.slot import release_slot
from settings import Timings

logger = logging.getLogger("deployer.pipeline")

Step = Callable[[Run], Awaitable[None]]

#: The pipeline, in order. Every step is idempotent: it skips what the deployment row already records.
STEPS: tuple[Step, ...] = (
    steps.create_droplet,
    steps.wait_droplet,
    steps.register_server,
    steps.validate_server,
    steps.create_application,
    steps.start_deployment,
    steps.wait_build,
)
#: Re-runs of one step after a transient cloud error (its lookups make a re-run safe).
STEP_ATTEMPTS = 3


def step_budget(step: Step, timings: Timings) -> float:
    """Seconds one step may take, rate-limit waits included: the deadline of the stage it belongs to."""
    if step in (steps.create_droplet, steps.wait_droplet):
        return timings.droplet_timeout_s
    if step in (steps.register_server, steps.validate_server):
        return timings.server_timeout_s
    return timings.build_timeout_s


async def run_pipeline(run: Run) -> None:
    """Run every step in order; on an expected failure clean up and record FAILED.

    Unexpected exceptions (bugs) propagate, so SAQ can retry the job; `fail()` handles the last attempt.
    """
    try:
        for step in STEPS:
            await run.check_cancel()
            await _run_step(run, step)
    except CancelledByUserError as exc:
        await fail(run, str(exc), status=DeploymentStatus.CANCELLED)
        return
    except StepFailedError as exc:
        await fail(run, str(exc))
        return
    except CloudAPIError as exc:
        await fail(run, f"{exc.api} request failed: {exc}")
        return
    await run.event(
        "Deployment completed",
        status=DeploymentStatus.COMPLETED,
        stage=DeploymentStage.DONE,
        finished_at=datetime.now(UTC),
    )


async def _run_step(run: Run, step: Step) -> None:
    """Run one step, re-running it after a transient cloud error.

    Inside the step's deadline the clients wait out every 429 as long as the API asks; a 429 that still reaches
    here could not be waited for before the deadline, so the step fails at once with that reason.
    """
    with request_deadline(step_budget(step, run.deps.config.timings)):
        for attempt in range(1, STEP_ATTEMPTS + 1):
            try:
                await step(run)
                return
            except RateLimitedError:
                raise
            except TRANSIENT_ERRORS as exc:
                if attempt == STEP_ATTEMPTS:
                    raise
                await run.event(f"Temporary error ({exc}); retrying the step (attempt {attempt + 1})")
                await run.sleep(min(30.0, run.deps.config.step_retry_delay_s * 2 ** (attempt - 1)))


async def fail(run: Run, reason: str, *, status: DeploymentStatus = DeploymentStatus.FAILED) -> None:
    """Record why the deployment stopped, delete what it created, free the slot, end FAILED (or CANCELLED)."""
    deployment = run.deployment
    run.checks_cancel = False
    stopped_stage = deployment.stage
    cancelled = status == DeploymentStatus.CANCELLED
    await run.event(
        f"{'Cancelled' if cancelled else 'Failed'} during {stopped_stage.value}: {reason}",
        stage=DeploymentStage.CLEANUP,
        failed_stage=stopped_stage,
        error=reason,
    )
    problems = await cleanup(run)
    released = not problems
    if released:
        await release_slot(deployment.id)
    error = reason if released else f"{reason}; cleanup incomplete: {'; '.join(problems)}"
    outcome = "cancelled" if cancelled else "failed"
    await run.event(
        f"Deployment {outcome}; everything it created was deleted"
        if released
        else f"Deployment {outcome}; cleanup incomplete, the droplet slot stays held until the reaper finishes it",
        status=status,
        stage=DeploymentStage.DONE,
        error=error,
        resources_released=released,
        finished_at=datetime.now(UTC),
    )


async def cleanup(run: Run) -> list[str]:
    """Delete the Coolify server and the droplet and confirm both are gone; returns what could not be done."""
    with request_deadline(2 * run.deps.config.cleanup_timeout_s):
        return await _delete_resources(run)


async def _delete_resources(run: Run) -> list[str]:
    problems: list[str] = []
    deployment = run.deployment
    coolify, do = run.deps.coolify, run.deps.digitalocean
    interval = max(0.05, min(5.0, run.deps.config.timings.droplet_poll_interval_s))
    timeout = run.deps.config.cleanup_timeout_s
    if deployment.server_uuid:
        server_uuid = deployment.server_uuid
        try:
            await coolify.delete_server(server_uuid, force=True)
            gone = _gone(lambda: coolify.get_server(server_uuid))
            await run.poll("the Coolify server to be deleted", gone, interval=interval, timeout=timeout)
            await run.event(f"Deleted Coolify server {server_uuid}")
        except (CloudAPIError, StepFailedError) as exc:
            problems.append(f"Coolify server {server_uuid} not confirmed deleted ({exc})")
    droplet_ids = {deployment.droplet_id} if deployment.droplet_id is not None else set()
    try:  # a create whose response was lost leaves a tagged droplet the row does not know
        droplet_ids.update(d.id for d in await do.list_droplets(tag_name=steps.deployment_tag(run)))
    except CloudAPIError as exc:
        problems.append(f"could not list droplets tagged {steps.deployment_tag(run)} ({exc})")
    for droplet_id in sorted(droplet_ids):
        try:
            await do.delete_droplet(droplet_id)
            gone = _gone(functools.partial(do.get_droplet, droplet_id))
            await run.poll("the droplet to be deleted", gone, interval=interval, timeout=timeout)
            await run.event(f"Deleted droplet {droplet_id}")
        except (CloudAPIError, StepFailedError) as exc:
            problems.append(f"droplet {droplet_id} not confirmed deleted ({exc})")
    return problems


def _gone(get: Callable[[], Awaitable[object]]) -> Callable[[int], Awaitable[tuple[bool | None, str]]]:
    """A poll check that is done once `get()` answers 404."""

    async def check(attempt: int) -> tuple[bool | None, str]:
        try:
            await get()
        except NotFoundError:
            return True, "gone"
        return None, "still present"

    return check
