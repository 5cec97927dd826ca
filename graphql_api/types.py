"""GraphQL output types, kept apart from the ORM models; each is built with `from_model()` (or similar).

A `Deployment` exposes what the pipeline learned plus the safe parts of the stored spec. Environment values
never reach the database, and the spec only holds their keys, exposed as `envKeys`.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import strawberry
from strawberry.types import Info

from graphql_api.application import Application, BuildLog, read_application, read_build_log
from graphql_api.context import Context
from graphql_api.errors import BadUserInputError
from jobs.progress import ProgressEvent, stored_events
from models import deployment as db
from models.slot import SlotUsage, slot_holders

#: The models' enums, exposed as they are: one definition, so the API can never drift from the database.
strawberry.enum(db.DeploymentStatus, description="Where a deployment is in its life.")
strawberry.enum(
    db.DeploymentStage, description="The pipeline step a deployment is in (or failed in), in pipeline order."
)
DeploymentStatus = db.DeploymentStatus
DeploymentStage = db.DeploymentStage


@strawberry.enum(description="How Coolify builds a git source.")
class BuildPack(enum.Enum):
    """Coolify's build packs (stored in lowercase, as Coolify spells them)."""

    NIXPACKS = "nixpacks"
    STATIC = "static"
    DOCKERFILE = "dockerfile"
    DOCKERCOMPOSE = "dockercompose"
    RAILPACK = "railpack"


@strawberry.enum(description="Where the application comes from.")
class SourceKind(enum.Enum):
    """A git repository built by Coolify, or a ready Docker image."""

    GIT = "git"
    DOCKER = "docker"


@strawberry.type(description="One progress event; `sequence` counts 1, 2, 3, ... per deployment.")
class DeploymentEvent:
    """A stored or live progress event."""

    sequence: int
    deployment_id: strawberry.ID
    status: DeploymentStatus
    stage: DeploymentStage
    message: str
    attempt: int | None
    at: datetime

    @classmethod
    def from_progress(cls, event: ProgressEvent) -> DeploymentEvent:
        """Build from a `jobs.progress.ProgressEvent` (stored or announced)."""
        return cls(
            sequence=event.sequence,
            deployment_id=strawberry.ID(event.deployment_id),
            status=DeploymentStatus(event.status),
            stage=DeploymentStage(event.stage),
            message=event.message,
            attempt=event.attempt,
            at=event.at,
        )

    @classmethod
    def from_model(cls, event: db.DeploymentEvent) -> DeploymentEvent:
        """Build from a stored row."""
        return cls.from_progress(ProgressEvent.from_model(event))


@strawberry.type(description="What is deployed: a git repository or a Docker image.")
class DeploymentSource:
    """The source part of the stored spec."""

    kind: SourceKind
    description: str = strawberry.field(description="One line such as `docker nginx:alpine`.")
    repository: str | None = None
    branch: str | None = None
    build_pack: BuildPack | None = None
    base_directory: str | None = None
    image: str | None = None
    tag: str | None = None

    @classmethod
    def from_spec(cls, raw: Any) -> DeploymentSource | None:
        """Build from `spec["source"]`; None when the spec has no source."""
        if not isinstance(raw, Mapping):
            return None
        if raw.get("kind") == "git":
            pack = str(raw.get("build_pack") or BuildPack.NIXPACKS.value).lower()
            repository = _opt_str(raw.get("repository"))
            branch = _opt_str(raw.get("branch")) or "main"
            build_pack = BuildPack(pack) if pack in BuildPack._value2member_map_ else None
            return cls(
                kind=SourceKind.GIT,
                description=f"git {repository}@{branch} ({build_pack.name if build_pack else pack})",
                repository=repository,
                branch=branch,
                build_pack=build_pack,
                base_directory=_opt_str(raw.get("base_directory")),
            )
        if raw.get("kind") == "docker":
            image, tag = _opt_str(raw.get("image")), _opt_str(raw.get("tag")) or "latest"
            return cls(kind=SourceKind.DOCKER, description=f"docker {image}:{tag}", image=image, tag=tag)
        return None


async def resolve_events(
    root: strawberry.Parent[Deployment], after_sequence: int | None = strawberry.UNSET
) -> list[DeploymentEvent]:
    """A deployment's stored events, ordered by sequence."""
    after = after_sequence if isinstance(after_sequence, int) else 0
    if after < 0:
        raise BadUserInputError([("afterSequence", "must be 0 or more")])
    return [DeploymentEvent.from_progress(event) for event in await stored_events(root.id, after=after)]


async def resolve_application(root: strawberry.Parent[Deployment], info: Info[Context, None]) -> Application | None:
    """The deployment's Coolify application, read live (null when it has none or Coolify deleted it)."""
    return await read_application(info.context.coolify, root.application_uuid)


async def resolve_build_log(
    root: strawberry.Parent[Deployment], info: Info[Context, None], lines: int | None = 100
) -> BuildLog | None:
    """The newest Coolify build of the deployment's application, read live (null when there is none)."""
    count = 100 if lines is None else lines
    return await read_build_log(info.context.coolify, root.application_uuid, root.coolify_deployment_uuid, count)


@strawberry.type(description="One requested deployment and everything the pipeline has learned about it.")
class Deployment:
    """A deployment as clients see it."""

    id: strawberry.ID
    status: DeploymentStatus
    stage: DeploymentStage
    failed_stage: DeploymentStage | None
    error: str | None
    droplet_id: strawberry.ID | None
    droplet_name: str | None
    ip_address: str | None
    server_uuid: str | None
    application_uuid: str | None
    application_url: str | None = strawberry.field(description="The first of the application's domains.")
    domains: list[str]
    coolify_deployment_uuid: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    name: str | None
    source: DeploymentSource | None
    ports: list[int]
    region: str | None
    size: str | None
    image: str | None = strawberry.field(description="The droplet's image slug.")
    env_keys: list[str] = strawberry.field(description="Keys of the initial environment; values are never shown.")

    events: list[DeploymentEvent] = strawberry.field(
        resolver=resolve_events,
        description="Stored progress events in order; only those after `afterSequence` if given.",
    )
    application: Application | None = strawberry.field(
        resolver=resolve_application,
        description="The Coolify application as Coolify has it now; null when none exists (any more).",
    )
    build_log: BuildLog | None = strawberry.field(
        resolver=resolve_build_log,
        description=(
            "The latest Coolify build of the application with its last `lines` visible lines (at most 1000),"
            " read live; null when Coolify has none (a failed deployment's application is deleted by its cleanup:"
            " its `error` keeps the reason)."
        ),
    )

    @classmethod
    def from_model(cls, row: db.Deployment) -> Deployment:
        """Build from a stored row (never reading anything that could hold a secret)."""
        spec: Mapping[str, Any] = row.spec if isinstance(row.spec, Mapping) else {}
        domains = _domains(row.application_domains) or _str_list(spec.get("domains"))
        return cls(
            id=strawberry.ID(str(row.id)),
            status=DeploymentStatus(row.status),
            stage=DeploymentStage(row.stage),
            failed_stage=DeploymentStage(row.failed_stage) if row.failed_stage else None,
            error=row.error,
            droplet_id=strawberry.ID(str(row.droplet_id)) if row.droplet_id is not None else None,
            droplet_name=row.droplet_name,
            ip_address=row.ip_address,
            server_uuid=row.server_uuid,
            application_uuid=row.application_uuid,
            application_url=domains[0] if domains else None,
            domains=domains,
            coolify_deployment_uuid=row.coolify_deployment_uuid,
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
            name=_opt_str(spec.get("name")),
            source=DeploymentSource.from_spec(spec.get("source")),
            ports=_ports(spec.get("ports")),
            region=_opt_str(spec.get("region")),
            size=_opt_str(spec.get("size")),
            image=_opt_str(spec.get("image")),
            env_keys=_str_list(spec.get("env_keys")),
        )


async def resolve_holders() -> list[Deployment]:
    """The deployments that hold droplet slots, by slot number."""
    ids = await slot_holders()
    rows = {row.id: row for row in await db.Deployment.filter(id__in=ids)} if ids else {}
    return [Deployment.from_model(rows[i]) for i in ids if i in rows]


@strawberry.type(description="Droplet slots: held, the limit, and how many are free.")
class DropletCount:
    """What `dropletCount` reports."""

    active: int
    limit: int
    available: int

    holders: list[Deployment] = strawberry.field(
        resolver=resolve_holders,
        description="The deployments holding a slot; destroyDeployment frees the slot of a COMPLETED one.",
    )

    @classmethod
    def from_usage(cls, usage: SlotUsage) -> DropletCount:
        """Build from `models.slot.slot_usage()`."""
        return cls(active=usage.active, limit=usage.limit, available=usage.available)


def parse_deployment_id(raw: str) -> uuid.UUID | None:
    """The UUID of a deployment id argument, or None when it is malformed."""
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        return None


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list):
        return [str(item) for item in value]
    return []


def _domains(value: str | None) -> list[str]:
    return _str_list(value) if value else []


def _ports(value: Any) -> list[int]:
    items = _str_list(value) if isinstance(value, str) else value if isinstance(value, list) else []
    ports: list[int] = []
    for item in items:
        try:
            ports.append(int(item))
        except (TypeError, ValueError):
            continue
    return ports
