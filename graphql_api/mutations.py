"""Mutations: `deploy` (validate, reserve a droplet slot, write the row and the first event, enqueue, return),
`cancelDeployment` and `destroyDeployment` (`graphql_api.lifecycle`) and the env mutations (`graphql_api.env`).

`deploy` never leaks a slot: once a slot is reserved, any failure (including cancellation) releases it and
deletes the half-written deployment before the error propagates.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import strawberry
from strawberry.types import Info

from graphql_api.auth import CanChangeEnv, CanDeploy
from graphql_api.context import Context
from graphql_api.env import EnvUpdate, bulk_set_env, delete_env, set_env
from graphql_api.errors import BadUserInputError, DropletLimitReachedError
from graphql_api.inputs import (
    DeployDefaults,
    DeployInput,
    DeployRequest,
    resolve_deploy_input,
    validate_deploy_input,
)
from graphql_api.lifecycle import cancel_deployment, destroy_deployment
from graphql_api.types import Deployment
from jobs.enqueue import enqueue_deploy
from jobs.progress import record
from models import deployment as db
from models.slot import release_slot, reserve_slot
from settings import Settings

logger = logging.getLogger("deployer.graphql")


def deploy_defaults(settings: Settings) -> DeployDefaults:
    """The values omitted `DeployInput` fields take."""
    return DeployDefaults(
        name_prefix=settings.digitalocean.name_prefix,
        region=settings.digitalocean.region,
        size=settings.digitalocean.size,
        image=settings.digitalocean.image,
        app_image=settings.app_image,
        app_port=settings.app_port,
        default_env=settings.default_env,
    )


async def _create_and_enqueue(context: Context, deployment_id: uuid.UUID, request: DeployRequest) -> db.Deployment:
    row = await db.Deployment.create(
        id=deployment_id,
        status=db.DeploymentStatus.QUEUED,
        stage=db.DeploymentStage.QUEUED,
        droplet_name=request.droplet_name,
        spec=request.spec,
    )
    await record(
        context.redis,
        row,
        "Deployment queued",
        status=db.DeploymentStatus.QUEUED,
        stage=db.DeploymentStage.QUEUED,
    )
    await enqueue_deploy(
        context.queue, deployment_id, context.settings.timings, env=request.env, secret_key=context.settings.secret_key
    )
    return row


async def _undo(deployment_id: uuid.UUID) -> None:
    """Delete the half-written deployment and free its slot (shielded: it must finish even when cancelled)."""

    async def undo() -> None:
        await db.Deployment.filter(id=deployment_id).delete()
        await release_slot(deployment_id)

    try:
        await asyncio.shield(undo())
    except Exception:
        logger.exception("could not undo a failed deploy", extra={"deployment_id": str(deployment_id)})


async def deploy(info: Info[Context, None], input: DeployInput | None = strawberry.UNSET) -> Deployment:
    """Validate the input, reserve a droplet slot, store the deployment and enqueue its pipeline."""
    data = None if input is strawberry.UNSET else input
    problems = validate_deploy_input(data)
    if problems:
        raise BadUserInputError(problems)
    settings = info.context.settings
    deployment_id = uuid.uuid4()
    request = resolve_deploy_input(data, defaults=deploy_defaults(settings), deployment_id=str(deployment_id))
    if await reserve_slot(deployment_id, settings.max_active_droplets) is None:
        raise DropletLimitReachedError(settings.max_active_droplets)
    try:
        row = await _create_and_enqueue(info.context, deployment_id, request)
    except BaseException:
        await _undo(deployment_id)
        raise
    caller = info.context.caller.name if info.context.caller else None
    logger.info("deployment queued", extra={"deployment_id": str(deployment_id), "caller": caller})
    return Deployment.from_model(row)


@strawberry.type
class Mutation:
    """Operations that change something."""

    deploy: Deployment = strawberry.mutation(
        resolver=deploy,
        permission_classes=[CanDeploy],
        description="Queue a deployment; returns at once with status QUEUED. Every input field is optional.",
    )
    cancel_deployment: Deployment = strawberry.mutation(
        resolver=cancel_deployment,
        permission_classes=[CanDeploy],
        description=(
            "Stop a QUEUED or PROCESSING deployment: the pipeline stops at its next check, deletes the server and"
            " droplet it created, frees the slot and ends CANCELLED (at once when it had not started)."
        ),
    )
    destroy_deployment: Deployment = strawberry.mutation(
        resolver=destroy_deployment,
        permission_classes=[CanDeploy],
        description=(
            "Delete a deployment's Coolify server and droplet, confirm both are gone and free its droplet slot:"
            " DESTROYING, then DESTROYED. A deployment still in flight is cancelled instead."
        ),
    )
    set_env: EnvUpdate = strawberry.mutation(
        resolver=set_env,
        permission_classes=[CanChangeEnv],
        description=(
            "Create or update one environment variable of an application deployer deployed, then restart it"
            " once (unless `restart: false`). Flags default to Coolify's defaults and are always all sent."
        ),
    )
    bulk_set_env: EnvUpdate = strawberry.mutation(
        resolver=bulk_set_env,
        permission_classes=[CanChangeEnv],
        description=(
            "Create or update many variables, then restart once. Coolify applies them in order without a"
            " transaction: a failure part-way is an UPSTREAM_ERROR naming the applied and the failed keys."
        ),
    )
    delete_env: EnvUpdate = strawberry.mutation(
        resolver=delete_env,
        permission_classes=[CanChangeEnv],
        description=(
            "Delete a variable (its production and preview rows), then restart once; a key that did not"
            " exist is reported in `missingKeys` with `deleted: false`."
        ),
    )
