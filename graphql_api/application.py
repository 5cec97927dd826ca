"""What a deployment's application runs with, read live from Coolify: its env keys and its latest build log.

`Deployment.application` and `Deployment.buildLog` ask Coolify at the moment they are resolved (the API's
lifespan opens a `CoolifyClient` from the settings), so they show what Coolify has now, including changes made
in Coolify's UI. Values of environment variables are never read into a response: `envKeys` holds names and
flags only. An application that Coolify no longer has (a destroyed deployment, or one cleaned up after a
failure) is null. When the API process has no Coolify settings, or Coolify fails, the field is an
UPSTREAM_ERROR saying so.
"""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from clients.coolify import Application as CoolifyApplication
from clients.coolify import CoolifyClient, CoolifyDeployment
from clients.errors import CloudAPIError, NotFoundError
from graphql_api.context import Context
from graphql_api.errors import BadUserInputError, UpstreamError

#: Most lines `buildLog(lines:)` returns.
MAX_BUILD_LOG_LINES = 1000


def require_coolify(coolify: CoolifyClient | None) -> CoolifyClient:
    """The API's Coolify client; UPSTREAM_ERROR when this process was started without Coolify settings."""
    if coolify is None:
        raise UpstreamError(
            "Coolify is not configured for this API process: set COOLIFY_API_URL and COOLIFY_API_KEY to read"
            " applications and build logs"
        )
    return coolify


def upstream(exc: CloudAPIError) -> UpstreamError:
    """The contract's UPSTREAM_ERROR for a failed Coolify call (the client's message names the call and why)."""
    return UpstreamError(f"Coolify failed: {exc}")


@strawberry.type(description="One environment variable of an application: its key and flags, never its value.")
class EnvKey:
    """An env row's name and flags (production and preview rows are listed separately)."""

    key: str
    is_build_time: bool
    is_runtime: bool
    is_preview: bool
    is_literal: bool
    is_multiline: bool


async def resolve_env_keys(root: strawberry.Parent[Application], info: Info[Context, None]) -> list[EnvKey]:
    """Read the application's env rows from Coolify and drop their values."""
    coolify = require_coolify(info.context.coolify)
    try:
        rows = await coolify.list_envs(root.uuid)
    except CloudAPIError as exc:
        raise upstream(exc) from exc
    return [
        EnvKey(
            key=row.key,
            is_build_time=row.is_buildtime,
            is_runtime=row.is_runtime,
            is_preview=row.is_preview,
            is_literal=row.is_literal,
            is_multiline=row.is_multiline,
        )
        for row in rows
    ]


@strawberry.type(description="The deployment's Coolify application, read live from Coolify.")
class Application:
    """What Coolify says about the application now."""

    uuid: str
    name: str
    status: str | None = strawberry.field(description="Coolify's `state:health`, e.g. `running:healthy`.")
    fqdn: str | None
    build_pack: str | None

    env_keys: list[EnvKey] = strawberry.field(
        resolver=resolve_env_keys,
        description="The application's environment variables: keys and flags, never values.",
    )

    @classmethod
    def from_client(cls, app: CoolifyApplication) -> Application:
        """Build from the client's record."""
        return cls(uuid=app.uuid, name=app.name, status=app.status, fqdn=app.fqdn, build_pack=app.build_pack)


@strawberry.type(description="One visible line of a build log, without terminal colour codes.")
class BuildLogLine:
    """A line as Coolify's UI shows it (hidden debug entries are left out)."""

    text: str
    stream: str = strawberry.field(description="`stdout` or `stderr`.")
    at: str | None = strawberry.field(description="When Coolify logged it (Coolify's timestamp text).")
    command: str | None = strawberry.field(description="The command that printed it, when Coolify names one.")


@strawberry.type(description="The latest Coolify build (deployment) of an application and the end of its log.")
class BuildLog:
    """The tail of one Coolify deployment's log."""

    coolify_deployment_uuid: str
    status: str = strawberry.field(description="Coolify's status: queued, in_progress, finished, failed, ...")
    lines: list[BuildLogLine] = strawberry.field(description="The last `lines` visible lines, oldest first.")
    total_lines: int = strawberry.field(description="How many visible lines the log has in all.")
    visible: bool = strawberry.field(
        description="False when Coolify did not show the log (its API token lacks `read:sensitive`)."
    )

    @classmethod
    def from_client(cls, deployment: CoolifyDeployment, lines: int) -> BuildLog:
        """Build from the client's record, keeping the last `lines` lines."""
        log = deployment.log or ()
        tail = log[-lines:] if lines else ()
        return cls(
            coolify_deployment_uuid=deployment.uuid,
            status=deployment.status,
            lines=[BuildLogLine(text=x.text, stream=x.stream, at=x.timestamp, command=x.command) for x in tail],
            total_lines=len(log),
            visible=deployment.log is not None,
        )


async def read_application(coolify: CoolifyClient | None, application_uuid: str | None) -> Application | None:
    """The application as Coolify has it now; None when there is none (never created, or deleted since)."""
    if application_uuid is None:
        return None
    client = require_coolify(coolify)
    try:
        return Application.from_client(await client.get_application(application_uuid))
    except NotFoundError:
        return None
    except CloudAPIError as exc:
        raise upstream(exc) from exc


async def read_build_log(
    coolify: CoolifyClient | None, application_uuid: str | None, fallback_uuid: str | None, lines: int
) -> BuildLog | None:
    """The newest Coolify deployment of the application with the last `lines` lines of its log.

    Args:
        fallback_uuid: the Coolify deployment the pipeline started, read when the application lists none.
    """
    if not 0 <= lines <= MAX_BUILD_LOG_LINES:
        raise BadUserInputError([("lines", f"must be between 0 and {MAX_BUILD_LOG_LINES}")])
    if application_uuid is None:
        return None
    client = require_coolify(coolify)
    try:
        latest = await client.list_application_deployments(application_uuid, take=1)
        if not latest and fallback_uuid:
            latest = [await client.get_deployment(fallback_uuid)]
    except NotFoundError:
        return None  # the application (and with it every deployment log) is gone
    except CloudAPIError as exc:
        raise upstream(exc) from exc
    if not latest:
        return None
    deployment = latest[0]
    if deployment.log is None:  # the list may leave logs out; the single deployment is the authority
        try:
            deployment = await client.get_deployment(deployment.uuid)
        except NotFoundError:
            return None
        except CloudAPIError as exc:
            raise upstream(exc) from exc
    return BuildLog.from_client(deployment, lines)
