"""The environment-variable mutations `setEnv`, `bulkSetEnv` and `deleteEnv`, and their result `EnvUpdate`.

Each mutation validates its input before anything else (nothing reaches Coolify when it is invalid), accepts
only applications that deployer itself deployed (NOT_FOUND otherwise: this is not a proxy to the whole
Coolify team), writes an `EnvChange` audit row (keys, never values), then runs `jobs.envjob` on a worker and
waits for it. A change that Coolify did not fully apply, or whose restart failed, is an UPSTREAM_ERROR whose
message and extensions say which keys were applied and which were not. Values are never returned, logged,
stored or put in an error.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from graphql_api.context import Context
from graphql_api.errors import BadUserInputError, NotFoundError, Problem, UpstreamError
from graphql_api.inputs import (
    MAX_ENV_VALUE_LENGTH,
    EnvVarInput,
    check_application_uuid,
    check_env_key,
    check_env_value,
    check_env_vars,
)
from jobs.enqueue import EnvJobError, run_env_change
from models import deployment as db
from models import env as envdb

logger = logging.getLogger("deployer.graphql")


@strawberry.enum(description="How a changed environment reaches the running application.")
class EnvApplyMode(enum.Enum):
    """What to ask of Coolify after the change (unless `restart: false`)."""

    AUTO = strawberry.enum_value(
        "AUTO",
        description=(
            "REDEPLOY when a changed or deleted variable is build-time and Coolify builds the application"
            " from a git source; RESTART otherwise."
        ),
    )
    RESTART = strawberry.enum_value("RESTART", description="Restart the containers with the new environment.")
    REDEPLOY = strawberry.enum_value(
        "REDEPLOY",
        description="Deploy again (a rebuild for git sources), so build-time variables take effect.",
    )


@strawberry.enum(description="Which mutation made an env change.")
class EnvAction(enum.Enum):
    """Mirrors `models.env.EnvAction`."""

    SET = "SET"
    BULK_SET = "BULK_SET"
    DELETE = "DELETE"


@strawberry.enum(description="What was asked of Coolify after an env change.")
class EnvRestartMode(enum.Enum):
    """NONE when `restart: false` or when nothing changed."""

    NONE = "NONE"
    RESTART = "RESTART"
    REDEPLOY = "REDEPLOY"


@strawberry.type(description="The restart or redeploy that applies an env change.")
class EnvRestart:
    """What was asked of Coolify, and the Coolify deployment that carries it out."""

    mode: EnvRestartMode
    deployment_uuid: str | None = strawberry.field(
        description="Coolify's deployment uuid of the restart or redeploy; null when mode is NONE."
    )
    already_queued: bool = strawberry.field(
        description=(
            "Coolify folded the request into a deployment that was already queued or running"
            " (`deploymentUuid` is that one)."
        )
    )

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> EnvRestart:
        """Build from the env job's result."""
        return cls(
            mode=EnvRestartMode(str(result.get("restart_mode") or "NONE")),
            deployment_uuid=_opt_str(result.get("restart_deployment_uuid")),
            already_queued=bool(result.get("restart_already_queued")),
        )


@strawberry.type(description="The outcome of an env change: the keys touched and the restart, never a value.")
class EnvUpdate:
    """What `setEnv`, `bulkSetEnv` and `deleteEnv` return."""

    change_id: strawberry.ID = strawberry.field(description="The audit record of this change.")
    application_uuid: strawberry.ID
    deployment_id: strawberry.ID = strawberry.field(description="The deployment that created the application.")
    action: EnvAction
    keys: list[str] = strawberry.field(description="The keys the change asked for, in request order.")
    applied_keys: list[str] = strawberry.field(description="Keys Coolify changed (or deleted).")
    failed_keys: list[str] = strawberry.field(
        description="Keys not changed, or whose change could not be confirmed (empty on success)."
    )
    missing_keys: list[str] = strawberry.field(
        description="deleteEnv: keys that did not exist, so nothing was deleted (not an error)."
    )
    deleted: bool | None = strawberry.field(
        description="deleteEnv: whether the key existed and its rows were removed; null when setting."
    )
    restart: EnvRestart

    @classmethod
    def from_result(
        cls,
        *,
        change_id: int,
        deployment: db.Deployment,
        action: EnvAction,
        keys: Sequence[str],
        result: Mapping[str, Any],
    ) -> EnvUpdate:
        """Build from the env job's result (which never holds a value)."""
        applied = _str_list(result.get("applied_keys"))
        return cls(
            change_id=strawberry.ID(str(change_id)),
            application_uuid=strawberry.ID(str(deployment.application_uuid)),
            deployment_id=strawberry.ID(str(deployment.id)),
            action=action,
            keys=list(keys),
            applied_keys=applied,
            failed_keys=_str_list(result.get("failed_keys")),
            missing_keys=_str_list(result.get("missing_keys")),
            deleted=bool(applied) if action is EnvAction.DELETE else None,
            restart=EnvRestart.from_result(result),
        )


# --- resolvers ---------------------------------------------------------------------------------------------

_APP_DOC = "The Coolify uuid of an application deployer deployed (`Deployment.applicationUuid`)."
_RESTART_DOC = "Apply the change with one restart or redeploy (see `apply`); false leaves the app as it runs."
_APPLY_DOC = "How the change is applied when `restart` is true; AUTO picks the right one."

ApplicationUuid = Annotated[strawberry.ID, strawberry.argument(description=_APP_DOC)]
Restart = Annotated[bool | None, strawberry.argument(description=_RESTART_DOC)]
Apply = Annotated[EnvApplyMode | None, strawberry.argument(description=_APPLY_DOC)]


async def set_env(
    info: Info[Context, None],
    application_uuid: ApplicationUuid,
    key: Annotated[str, strawberry.argument(description="Coolify's rule: `^[A-Za-z_][A-Za-z0-9_.]*$`, ≤ 255.")],
    value: Annotated[str, strawberry.argument(description=f"At most {MAX_ENV_VALUE_LENGTH} characters.")],
    restart: Restart = True,
    is_build_time: Annotated[bool | None, strawberry.argument(description="Available while Coolify builds.")] = True,
    is_runtime: Annotated[bool | None, strawberry.argument(description="Available to the running container.")] = True,
    is_literal: Annotated[
        bool | None, strawberry.argument(description="`$OTHER` references are not expanded.")
    ] = False,
    is_multiline: Annotated[bool | None, strawberry.argument(description="The value spans several lines.")] = False,
    is_preview: Annotated[bool | None, strawberry.argument(description="Set the preview row, not production.")] = False,
    apply: Apply = EnvApplyMode.AUTO,
) -> EnvUpdate:
    """Create or update one variable, then restart the application once."""
    item = EnvVarInput(
        key=key,
        value=value,
        is_build_time=is_build_time,
        is_runtime=is_runtime,
        is_literal=is_literal,
        is_multiline=is_multiline,
        is_preview=is_preview,
    )
    _reject(
        check_application_uuid("applicationUuid", application_uuid)
        + check_env_key("key", key)
        + check_env_value("value", value)
    )
    return await _change(info, EnvAction.SET, application_uuid, [item], [key], restart=restart, apply=apply)


async def bulk_set_env(
    info: Info[Context, None],
    application_uuid: ApplicationUuid,
    variables: Annotated[
        list[EnvVarInput],
        strawberry.argument(description="1 to 200 variables, each key at most once; unlisted keys stay."),
    ],
    restart: Restart = True,
    apply: Apply = EnvApplyMode.AUTO,
) -> EnvUpdate:
    """Create or update many variables (in order, not atomically), then restart the application once."""
    problems = check_application_uuid("applicationUuid", application_uuid) + check_env_vars("variables", variables)
    if not variables:
        problems.append(("variables", "must list at least one variable"))
    _reject(problems)
    keys = [item.key for item in variables]
    return await _change(info, EnvAction.BULK_SET, application_uuid, variables, keys, restart=restart, apply=apply)


async def delete_env(
    info: Info[Context, None],
    application_uuid: ApplicationUuid,
    key: Annotated[str, strawberry.argument(description="Both its production and its preview rows go.")],
    restart: Restart = True,
    apply: Apply = EnvApplyMode.AUTO,
) -> EnvUpdate:
    """Delete a key (production and preview rows), then restart the application once if it existed."""
    _reject(check_application_uuid("applicationUuid", application_uuid) + check_env_key("key", key))
    return await _change(info, EnvAction.DELETE, application_uuid, [], [key], restart=restart, apply=apply)


def _mode(restart: bool | None, apply: EnvApplyMode | None) -> str:
    """The env job's mode: NONE for `restart: false`; a null argument takes its default."""
    if restart is False:
        return "NONE"
    return (apply or EnvApplyMode.AUTO).name


def _reject(problems: list[Problem]) -> None:
    if problems:
        raise BadUserInputError(problems)


async def deployed_application(application_uuid: str) -> db.Deployment:
    """The deployment that created this Coolify application; NOT_FOUND when deployer did not deploy it.

    A failed deployment's application is not offered: its server and droplet were deleted.
    """
    row = (
        await db.Deployment.filter(application_uuid=str(application_uuid))
        .exclude(status=db.DeploymentStatus.FAILED)
        .order_by("-created_at")
        .first()
    )
    if row is None:
        raise NotFoundError("application", str(application_uuid))
    return row


def builds_from_source(deployment: db.Deployment) -> bool:
    """Whether Coolify builds the app from a git source (build-time variables then need a redeploy)."""
    spec = deployment.spec if isinstance(deployment.spec, Mapping) else {}
    source = spec.get("source")
    return isinstance(source, Mapping) and source.get("kind") == "git"


async def _change(
    info: Info[Context, None],
    action: EnvAction,
    application_uuid: str,
    items: Sequence[EnvVarInput],
    keys: list[str],
    *,
    restart: bool | None,
    apply: EnvApplyMode | None,
) -> EnvUpdate:
    """Record the change, run it on a worker, and turn its result into an `EnvUpdate` or an UPSTREAM_ERROR."""
    context = info.context
    deployment = await deployed_application(application_uuid)
    caller = context.caller.name if context.caller else None
    change = await envdb.EnvChange.create(
        application_uuid=str(deployment.application_uuid),
        deployment_id=deployment.id,
        action=envdb.EnvAction(action.value),
        keys=keys,
        caller=caller,
    )
    logger.info(
        "env change %s (%s) on application %s by %s: keys %s",
        change.id,
        action.value,
        deployment.application_uuid,
        caller,
        keys,
    )
    try:
        result = await run_env_change(
            context.queue,
            context.redis,
            change_id=change.id,
            application_uuid=str(deployment.application_uuid),
            action=action.value,
            variables=[item.to_job_item() for item in items],
            keys=keys,
            mode=_mode(restart, apply),
            builds_from_source=builds_from_source(deployment),
            secret_key=context.settings.secret_key,
        )
    except EnvJobError as exc:
        raise await _job_failed(change.id, str(deployment.application_uuid), keys, exc) from None
    update = EnvUpdate.from_result(change_id=change.id, deployment=deployment, action=action, keys=keys, result=result)
    error = _opt_str(result.get("error"))
    if error is not None or update.failed_keys:
        raise _incomplete(update, error)
    return update


async def _job_failed(change_id: int, application_uuid: str, keys: list[str], exc: EnvJobError) -> UpstreamError:
    """Record a change whose job gave no result; returns the error to raise."""
    if exc.started:
        message = f"Env change {change_id} on application {application_uuid}: {exc.message}; its outcome is unknown"
        await envdb.EnvChange.filter(id=change_id).update(error=exc.message)
        details: dict[str, object] = {"changeId": str(change_id)}
    else:
        message = f"Env change {change_id} on application {application_uuid}: {exc.message}; nothing was changed"
        await envdb.EnvChange.filter(id=change_id).update(error=exc.message, failed_keys=keys)
        details = {"changeId": str(change_id), "appliedKeys": [], "failedKeys": keys}
    logger.warning("%s", message)
    return UpstreamError(message, details=details)


def _incomplete(update: EnvUpdate, error: str | None) -> UpstreamError:
    """The UPSTREAM_ERROR of a change Coolify did not fully apply (or whose restart failed)."""
    applied = ", ".join(update.applied_keys) or "none"
    failed = ", ".join(update.failed_keys) or "none"
    message = (
        f"Env change {update.change_id} on application {update.application_uuid} is incomplete:"
        f" applied: {applied}; not applied: {failed}"
    )
    if error:
        message += f". {error}"
    restart = update.restart
    details: dict[str, object] = {
        "changeId": str(update.change_id),
        "appliedKeys": list(update.applied_keys),
        "failedKeys": list(update.failed_keys),
        "missingKeys": list(update.missing_keys),
        "restart": {
            "mode": restart.mode.value,
            "deploymentUuid": restart.deployment_uuid,
            "alreadyQueued": restart.already_queued,
        },
    }
    return UpstreamError(message, details=details)


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _str_list(value: Any) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []
