"""`Run`: one pipeline execution for one deployment, and the bounded poll every waiting step uses."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from clients.errors import APIConnectionError, RateLimitedError, UpstreamServerError
from jobs import progress
from jobs.context import Deps
from jobs.errors import CancelledByUserError, StepTimeoutError
from jobs.spec import DeploySpec
from models.deployment import Deployment, DeploymentStage, DeploymentStatus

logger = logging.getLogger("deployer.pipeline")

T = TypeVar("T")
#: Cloud errors worth another try: the request may succeed unchanged a little later.
TRANSIENT_ERRORS = (APIConnectionError, RateLimitedError, UpstreamServerError)


@dataclass
class Run:
    """The deployment being worked on, the worker's dependencies, and the job's secret-bearing inputs."""

    deployment: Deployment
    deps: Deps
    env: Sequence[tuple[str, str]] = field(default=(), repr=False)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    #: False while cleaning up: a cancel must not interrupt the cleanup it caused.
    checks_cancel: bool = True
    #: True when no earlier attempt ran for this deployment (it was still QUEUED when this job started), so
    #: nothing it would create can exist yet unless this run sent it (`sent`).
    fresh: bool = False
    #: The stages whose create request this run has sent (its answer may have been lost).
    sent: set[DeploymentStage] = field(default_factory=set)

    def may_have_created(self, stage: DeploymentStage) -> bool:
        """Whether `stage`'s create may already have been sent, by an earlier attempt or by this run: then the
        step looks for what it made before creating it again."""
        return not self.fresh or stage in self.sent

    def default_name(self) -> str:
        """The generated name (`<prefix>-<deployment id>`) used for the droplet, server and application."""
        return self.deployment.droplet_name or f"{self.deps.config.name_prefix}-{self.deployment.id}"

    def spec(self) -> DeploySpec:
        """What to deploy, from the stored spec with the worker's defaults."""
        return DeploySpec.from_stored(self.deployment.spec, default_name=self.default_name(), config=self.deps.config)

    async def check_cancel(self) -> None:
        """Raise `CancelledByUserError` when a cancel was requested since the job started."""
        if await Deployment.filter(id=self.deployment.id, cancel_requested=True).exists():
            self.deployment.cancel_requested = True
            raise CancelledByUserError("Cancelled on request")

    async def event(
        self,
        message: str,
        *,
        stage: DeploymentStage | None = None,
        status: DeploymentStatus | None = None,
        attempt: int | None = None,
        **changes: Any,
    ) -> progress.ProgressEvent:
        """Store and announce a progress event, applying column changes to the deployment first."""
        logger.info(message, extra={"deployment_id": str(self.deployment.id), "attempt": attempt})
        return await progress.record(
            self.deps.redis, self.deployment, message, stage=stage, status=status, attempt=attempt, **changes
        )

    async def poll(
        self,
        what: str,
        check: Callable[[int], Awaitable[tuple[T | None, str]]],
        *,
        interval: float,
        timeout: float,
    ) -> T:
        """Call `check(attempt)` every `interval` seconds until it returns a value, for at most `timeout` seconds.

        `check` returns `(value, description)`: a value ends the poll; otherwise the description (what was seen)
        becomes this attempt's progress event. Transient cloud errors count as "not yet". Raises
        `StepTimeoutError` naming `what` and the last thing seen.
        """
        deadline = self.clock() + timeout
        attempt = 0
        last_seen = "nothing yet"
        while True:
            attempt += 1
            try:
                value, last_seen = await check(attempt)
            except TRANSIENT_ERRORS as exc:
                value, last_seen = None, f"temporary error ({exc})"
            if value is not None:
                return value
            await self.event(f"Waiting for {what}: {last_seen} (attempt {attempt})", attempt=attempt)
            if self.checks_cancel:
                await self.check_cancel()
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise StepTimeoutError(
                    f"Timed out after {timeout:g} s waiting for {what}; last seen: {last_seen}", last_seen=last_seen
                )
            await self.sleep(min(interval, remaining))
