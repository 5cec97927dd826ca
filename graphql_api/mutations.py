"""Mutations: `deploy` (validate, reserve a droplet slot, write the row and the first event, enqueue, return),
`cancelDeployment` and `destroyDeployment` (`graphql_api.lifecycle`) and the env mutations (`graphql_api.env`).

`deploy` never leaks a slot: once a slot is reserved, any failure (including cancellation) releases it and
deletes the half-written deployment before the error propagates.

With `idempotencyKey`, `deploy` looks the key up before it reserves anything, so a retry returns the
deployment the first call created even when every slot is held. Retries that race all reserve a slot and try
to insert the row and reserve a slot in one transaction; the unique key column lets exactly one in (a racing
insert waits for the first transaction), and every other caller rolls back and returns that row: one
deployment, one slot, one droplet.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import strawberry
from strawberry.types import Info
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from graphql_api.auth import CanChangeEnv, CanDeploy
from graphql_api.context import Context
from graphql_api.env import EnvUpdate, bulk_set_env, delete_env, set_env
from graphql_api.errors import BadUserInputError, DropletLimitReachedError, UpstreamError
from graphql_api.inputs import (
    IDEMPOTENCY_WINDOW_HOURS,
    DeployDefaults,
    DeployInput,
    DeployRequest,
    deploy_input_hash,
    idempotency_key,
    resolve_deploy_input,
    validate_deploy_input,
)
from graphql_api.lifecycle import cancel_deployment, destroy_deployment
from graphql_api.types import Deployment
from jobs.catalog import CatalogUnavailableError, Choice
from jobs.enqueue import enqueue_deploy
from jobs.progress import record
from models import deployment as db
from models.slot import release_slot, reserve_slot, slot_usage
from settings import Settings

logger = logging.getLogger("deployer.graphql")
#: Rounds of "look the key up, else try to create" before giving up on a key that keeps racing.
IDEMPOTENT_ATTEMPTS = 3


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


@dataclass(frozen=True)
class IdempotencyKey:
    """A caller's idempotency key and the hash of the input it came with."""

    key: str
    request_hash: str


async def _earlier_deployment(claim: IdempotencyKey) -> db.Deployment | None:
    """The deployment created with this key within the window; BAD_USER_INPUT when its input differed."""
    cutoff = datetime.now(UTC) - timedelta(hours=IDEMPOTENCY_WINDOW_HOURS)
    row = await db.Deployment.get_or_none(idempotency_key=claim.key, created_at__gte=cutoff)
    if row is None:
        return None
    if row.request_hash != claim.request_hash:
        raise BadUserInputError(
            [("input.idempotencyKey", "was already used with a different input; use a new key for a new deployment")]
        )
    return row


async def _store(
    deployment_id: uuid.UUID, request: DeployRequest, claim: IdempotencyKey | None, limit: int
) -> db.Deployment:
    """Insert the row and reserve its slot in one transaction: both happen, or neither.

    Raises:
        IntegrityError: a racing call committed a row with the same idempotency key first (on PostgreSQL the
            insert waits for that call's transaction, so no slot is held meanwhile).
        DropletLimitReachedError: every slot is held.
    """
    async with in_transaction():
        if claim is not None:  # a key older than the window is free again
            cutoff = datetime.now(UTC) - timedelta(hours=IDEMPOTENCY_WINDOW_HOURS)
            await db.Deployment.filter(idempotency_key=claim.key, created_at__lt=cutoff).update(idempotency_key=None)
        row = await db.Deployment.create(
            id=deployment_id,
            status=db.DeploymentStatus.QUEUED,
            stage=db.DeploymentStage.QUEUED,
            droplet_name=request.droplet_name,
            spec=request.spec,
            idempotency_key=claim.key if claim else None,
            request_hash=claim.request_hash if claim else None,
        )
        if await reserve_slot(deployment_id, limit) is None:
            raise DropletLimitReachedError(limit, held=(await slot_usage(limit)).active)
    return row


async def _announce_and_enqueue(context: Context, row: db.Deployment, request: DeployRequest) -> None:
    await record(
        context.redis,
        row,
        "Deployment queued",
        status=db.DeploymentStatus.QUEUED,
        stage=db.DeploymentStage.QUEUED,
    )
    await enqueue_deploy(
        context.queue, row.id, context.settings.timings, env=request.env, secret_key=context.settings.secret_key
    )


async def _undo(deployment_id: uuid.UUID) -> None:
    """Delete the half-written deployment and free its slot (shielded: it must finish even when cancelled)."""

    async def undo() -> None:
        await db.Deployment.filter(id=deployment_id).delete()
        await release_slot(deployment_id)

    try:
        await asyncio.shield(undo())
    except Exception:
        logger.exception("could not undo a failed deploy", extra={"deployment_id": str(deployment_id)})


async def _check_catalog(context: Context, request: DeployRequest) -> None:
    """Refuse a region, size or image DigitalOcean would refuse, before a slot is taken."""
    if context.catalog is None:
        return
    spec = request.spec
    choice = Choice(
        region=str(spec["region"]),
        size=str(spec["size"]),
        image=str(spec["image"]),
        region_field=_field_name("region", request, "DROPLET_REGION"),
        size_field=_field_name("size", request, "DROPLET_SIZE"),
        image_field=_field_name("image", request, "DROPLET_IMAGE"),
    )
    try:
        problems = await context.catalog.problems(choice)
    except CatalogUnavailableError as exc:
        raise UpstreamError(f"{exc}; the deployment was not queued (retry when DigitalOcean answers)") from exc
    if problems:
        raise BadUserInputError(problems)


def _field_name(name: str, request: DeployRequest, setting: str) -> str:
    """`input.<name>`, or, when the value came from the settings, which setting it came from."""
    return f"input.{name}" if name in request.given else f"input.{name} (default {setting})"


async def deploy(info: Info[Context, None], input: DeployInput | None = strawberry.UNSET) -> Deployment:
    """Validate the input, reserve a droplet slot, store the deployment and enqueue its pipeline.

    With an idempotency key, return the deployment already created with it (see the module docstring).
    """
    data = None if input is strawberry.UNSET else input
    problems = validate_deploy_input(data)
    if problems:
        raise BadUserInputError(problems)
    key = idempotency_key(data)
    claim = IdempotencyKey(key, deploy_input_hash(data)) if key is not None else None
    for _ in range(IDEMPOTENT_ATTEMPTS):
        if claim is not None and (earlier := await _earlier_deployment(claim)) is not None:
            return Deployment.from_model(earlier)
        row = await _deploy_once(info.context, data, claim)
        if row is not None:
            return Deployment.from_model(row)
    # Every attempt lost to a racing call whose deployment then vanished (its enqueue failed): say so.
    raise BadUserInputError([("input.idempotencyKey", "is being used by another deploy call; try again")])


async def _deploy_once(
    context: Context, data: DeployInput | None, claim: IdempotencyKey | None
) -> db.Deployment | None:
    """Store, reserve and enqueue; None when a racing call with the same idempotency key stored its row first."""
    settings = context.settings
    deployment_id = uuid.uuid4()
    request = resolve_deploy_input(data, defaults=deploy_defaults(settings), deployment_id=str(deployment_id))
    await _check_catalog(context, request)
    try:
        row = await _store(deployment_id, request, claim, settings.max_active_droplets)
    except IntegrityError:
        if claim is not None and await db.Deployment.exists(idempotency_key=claim.key):
            return None  # the unique key let a racing retry in first: return its deployment
        raise
    try:
        await _announce_and_enqueue(context, row, request)
    except BaseException:
        await _undo(deployment_id)
        raise
    caller = context.caller.name if context.caller else None
    logger.info("deployment queued", extra={"deployment_id": str(deployment_id), "caller": caller})
    return row


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
