"""`cancelDeployment` and `destroyDeployment`: stop a deployment, or delete what it runs on.

A cancel marks the deployment; the worker running it stops at its next check, deletes what it created and
ends CANCELLED. A deployment still waiting in the queue is cancelled right here: the API takes the
deployment's lease, so no worker can start it meanwhile, and nothing exists yet to delete.

A destroy of a finished deployment (COMPLETED, FAILED or CANCELLED) sets DESTROYING and enqueues the destroy
job, which deletes the Coolify server and the droplet, confirms both are gone, frees the slot and ends
DESTROYED. A destroy of a deployment still in flight is a cancel.
"""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry
from strawberry.types import Info

from graphql_api.context import Context
from graphql_api.errors import BadUserInputError
from graphql_api.queries import load_deployment
from graphql_api.types import Deployment
from jobs.deploy import deploy_lease
from jobs.enqueue import enqueue_destroy
from jobs.progress import record
from models import deployment as db
from models.slot import release_slot


async def _cancel(context: Context, row: db.Deployment) -> db.Deployment:
    await db.Deployment.filter(id=row.id).update(cancel_requested=True)
    lease = deploy_lease(context.redis, str(row.id), context.settings.timings.job_heartbeat_s)
    if await lease.acquire():
        try:
            await row.refresh_from_db()
            if row.status == db.DeploymentStatus.QUEUED and row.droplet_id is None:
                await release_slot(row.id)
                await record(
                    context.redis,
                    row,
                    "Deployment cancelled before it started; nothing was created",
                    status=db.DeploymentStatus.CANCELLED,
                    stage=db.DeploymentStage.DONE,
                    error="Cancelled on request",
                    resources_released=True,
                    cancel_requested=True,
                    finished_at=datetime.now(UTC),
                )
                return row
        finally:
            await lease.release()
    await record(context.redis, row, "Cancel requested: the worker stops at its next check and cleans up")
    return row


async def cancel_deployment(info: Info[Context, None], id: strawberry.ID) -> Deployment:
    """Stop a QUEUED or PROCESSING deployment and delete what it created."""
    row = await load_deployment(id)
    if row.status not in db.CANCELLABLE_STATUSES:
        raise BadUserInputError(
            [("id", f"deployment is {row.status.value}; only QUEUED or PROCESSING deployments can be cancelled")]
        )
    return Deployment.from_model(await _cancel(info.context, row))


async def destroy_deployment(info: Info[Context, None], id: strawberry.ID) -> Deployment:
    """Delete the server and droplet of a deployment and free its slot (a deployment in flight is cancelled)."""
    context = info.context
    row = await load_deployment(id)
    if row.status in db.CANCELLABLE_STATUSES:
        return Deployment.from_model(await _cancel(context, row))
    if row.status in (db.DeploymentStatus.DESTROYING, db.DeploymentStatus.DESTROYED):
        return Deployment.from_model(row)  # already on its way: destroying twice changes nothing
    await record(
        context.redis,
        row,
        "Destroy requested",
        status=db.DeploymentStatus.DESTROYING,
        stage=db.DeploymentStage.CLEANUP,
    )
    await enqueue_destroy(context.queue, row.id, context.settings.timings)
    return Deployment.from_model(row)
