"""Queries: one deployment by id, and the droplet slot count."""

from __future__ import annotations

from collections.abc import Mapping

import strawberry
from strawberry.types import Info

from graphql_api.auth import CanRead
from graphql_api.context import Context
from graphql_api.errors import NotFoundError
from graphql_api.listing import DeploymentConnection, resolve_deployments
from graphql_api.types import Deployment, DropletCount, parse_deployment_id
from models import deployment as db
from models.slot import slot_usage
from settings import Settings


async def load_deployment(raw_id: str) -> db.Deployment:
    """The stored deployment with this id; NOT_FOUND for an unknown or malformed id."""
    deployment_id = parse_deployment_id(raw_id)
    row = await db.Deployment.get_or_none(id=deployment_id) if deployment_id is not None else None
    if row is None:
        raise NotFoundError("deployment", str(raw_id))
    return row


async def find_deployment(settings: Settings, arguments: Mapping[str, str]) -> Deployment:
    """`deployment(id)`'s value (NOT_FOUND for an unknown id): what the resolver and the short path both run."""
    return Deployment.from_model(await load_deployment(arguments["id"]))


async def count_droplets(settings: Settings, arguments: Mapping[str, str]) -> DropletCount:
    """`dropletCount`'s value: held droplet slots against MAX_ACTIVE_DROPLETS."""
    return DropletCount.from_usage(await slot_usage(settings.max_active_droplets))


#: The root fields `graphql_api.hotpath` may answer without Strawberry, by GraphQL name.
HOT_ROOTS = {"deployment": find_deployment, "dropletCount": count_droplets}


async def resolve_deployment(info: Info[Context, None], id: strawberry.ID) -> Deployment | None:
    """Look a deployment up by id."""
    return await find_deployment(info.context.settings, {"id": id})


async def resolve_droplet_count(info: Info[Context, None]) -> DropletCount:
    """Count held droplet slots against MAX_ACTIVE_DROPLETS."""
    return await count_droplets(info.context.settings, {})


@strawberry.type
class Query:
    """Read-only operations; they need the `read` scope."""

    deployment: Deployment | None = strawberry.field(
        resolver=resolve_deployment,
        permission_classes=[CanRead],
        description="One deployment; null plus a NOT_FOUND error when unknown.",
    )
    droplet_count: DropletCount = strawberry.field(
        resolver=resolve_droplet_count,
        permission_classes=[CanRead],
        description="Droplet slots held, the limit, and free slots.",
    )
    deployments: DeploymentConnection = strawberry.field(
        resolver=resolve_deployments,
        permission_classes=[CanRead],
        description=(
            "Deployments, newest first, optionally only those in some statuses (or the one that created"
            " `applicationUuid`): a Relay connection of at most 100 per page (`first`, default 20), continued with"
            " `after: pageInfo.endCursor`."
        ),
    )
