"""`deploymentUpdates`: every status or stage change of any deployment, live, for dashboards.

The subscription listens to every deployment's progress events through the process's `ProgressHub` and passes
on those that change the deployment's status or stage (poll attempts in between are left out). It does not
replay the past: a dashboard subscribes first, then reads `deployments`, and applies updates on top.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import cast

import strawberry
from strawberry.types import Info

from graphql_api.context import Context
from graphql_api.types import Deployment, DeploymentStage, DeploymentStatus
from jobs.progress import ProgressEvent
from models import deployment as db


async def resolve_current(root: strawberry.Parent[DeploymentUpdate]) -> Deployment | None:
    """The deployment's current row."""
    row = await db.Deployment.get_or_none(id=str(root.deployment_id))
    return Deployment.from_model(row) if row is not None else None


@strawberry.type(description="A deployment's status or stage changed.")
class DeploymentUpdate:
    """The event that made the change, and the deployment as it is when the update is sent."""

    deployment_id: strawberry.ID
    sequence: int = strawberry.field(description="The sequence of the event that made the change.")
    status: DeploymentStatus
    stage: DeploymentStage
    message: str
    at: datetime

    deployment: Deployment | None = strawberry.field(
        resolver=resolve_current, description="The deployment as stored now (null if it was deleted meanwhile)."
    )

    @classmethod
    def from_progress(cls, event: ProgressEvent) -> DeploymentUpdate:
        """Build from a progress event."""
        return cls(
            deployment_id=strawberry.ID(event.deployment_id),
            sequence=event.sequence,
            status=DeploymentStatus(event.status),
            stage=DeploymentStage(event.stage),
            message=event.message,
            at=event.at,
        )


async def _previous(event: ProgressEvent) -> tuple[DeploymentStatus, DeploymentStage] | None:
    """The status and stage before this event, from the stored event just before it."""
    if event.sequence <= 1:
        return None
    row = await db.DeploymentEvent.get_or_none(deployment_id=event.deployment_id, sequence=event.sequence - 1)
    return (DeploymentStatus(row.status), DeploymentStage(row.stage)) if row is not None else None


async def follow_updates(
    info: Info[Context, None], status: list[DeploymentStatus] | None = strawberry.UNSET
) -> AsyncGenerator[DeploymentUpdate, None]:
    """Every status or stage change of any deployment from now on; with `status`, only changes into those."""
    wanted = frozenset(DeploymentStatus(s) for s in status) if isinstance(status, list) and status else None
    known: dict[str, tuple[DeploymentStatus, DeploymentStage]] = {}
    events = cast("AsyncGenerator[ProgressEvent, None]", info.context.hub.listen_all())
    async with contextlib.aclosing(events):
        async for event in events:
            now = (DeploymentStatus(event.status), DeploymentStage(event.stage))
            before = known[event.deployment_id] if event.deployment_id in known else await _previous(event)
            known[event.deployment_id] = now
            if before == now or (wanted is not None and now[0] not in wanted):
                continue
            yield DeploymentUpdate.from_progress(event)
