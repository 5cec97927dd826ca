"""The env job: create, update or delete an application's environment variables in Coolify, then apply them.

Coolify's rules (research §7) shape this module: PATCH finds a variable by key and never creates it, so a
single set is "PATCH, and POST on 404"; the bulk PATCH upserts item by item without a transaction, so after a
failure the job reads the variables back to tell which keys really hold the wanted value and flags; DELETE
takes an env uuid, so a delete by key lists the variables and deletes every row (production and preview) with
that key. Omitted flags are reset by Coolify, so every request carries the full flag set (`EnvVarSpec`).

After the change the application is restarted (or redeployed) once, whatever the number of keys.

Values exist only in Redis for a moment (`jobs.envstash`) and in this job's memory: never in the job's
arguments, a log line, an error, the result or the database. The job never raises (SAQ would log its
arguments); every outcome, including a bug, is a result whose `error` says what went wrong. The audit row
(`EnvChange`) records keys, the action and the outcome.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from clients.coolify import CoolifyClient, EnvVar, EnvVarSpec
from clients.errors import CloudAPIError, ConflictError, NotFoundError
from clients.http import request_deadline
from jobs.context import WorkerContext
from jobs.envstash import take_values
from models.env import EnvChange

logger = logging.getLogger("deployer.env")

#: Actions (the `EnvAction` values of the audit row).
SET, BULK_SET, DELETE = "SET", "BULK_SET", "DELETE"
#: How a change is applied: AUTO is resolved to RESTART or REDEPLOY; NONE leaves the application alone.
AUTO, RESTART, REDEPLOY, NONE = "AUTO", "RESTART", "REDEPLOY", "NONE"
MODES = frozenset({AUTO, RESTART, REDEPLOY, NONE})
#: The Coolify work of one change must end within this budget, well inside the job's SAQ timeout.
WORK_BUDGET_S = 90.0


@dataclass
class EnvResult:
    """What happened, keys only: returned to the API and written to the audit row.

    Attributes:
        applied_keys: keys whose change Coolify confirmed (in request order).
        failed_keys: keys not changed, or whose change could not be confirmed.
        missing_keys: DELETE only: keys that did not exist (nothing to delete; not a failure).
        restart_mode: NONE, RESTART or REDEPLOY: what was asked of Coolify after the change.
        restart_deployment_uuid: Coolify's deployment uuid of that restart or redeploy.
        restart_already_queued: Coolify folded the request into a deployment already queued or running.
        error: why the change is incomplete (Coolify's status and message, never a value); None on success.
    """

    applied_keys: list[str] = field(default_factory=list)
    failed_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    restart_mode: str = NONE
    restart_deployment_uuid: str | None = None
    restart_already_queued: bool = False
    error: str | None = None


def spec_from_item(item: dict[str, Any]) -> EnvVarSpec:
    """The Coolify spec of one stashed variable (`key`, `value` and the `is_*` flags; Coolify's defaults)."""
    return EnvVarSpec(
        key=str(item["key"]),
        value=str(item["value"]),
        is_preview=bool(item.get("is_preview", False)),
        is_literal=bool(item.get("is_literal", False)),
        is_multiline=bool(item.get("is_multiline", False)),
        is_shown_once=bool(item.get("is_shown_once", False)),
        is_runtime=bool(item.get("is_runtime", True)),
        is_buildtime=bool(item.get("is_buildtime", True)),
        comment=item.get("comment"),
    )


def resolve_mode(requested: str, *, buildtime_touched: bool, builds_from_source: bool) -> str:
    """AUTO picks REDEPLOY when a build-time variable of an app built from source changed, else RESTART."""
    if requested != AUTO:
        return requested
    return REDEPLOY if buildtime_touched and builds_from_source else RESTART


async def set_one(coolify: CoolifyClient, app_uuid: str, spec: EnvVarSpec) -> None:
    """Create or update one variable: PATCH by key; on 404 POST; on a racing 409 PATCH again."""
    try:
        await coolify.update_env(app_uuid, spec)
    except NotFoundError:
        try:
            await coolify.create_env(app_uuid, spec)
        except ConflictError:
            await coolify.update_env(app_uuid, spec)


def holds(row: EnvVar, spec: EnvVarSpec) -> bool:
    """Whether a stored row has the wanted value and flags (a hidden value cannot be confirmed)."""
    return (
        row.key == spec.key
        and row.is_preview == spec.is_preview
        and row.value is not None
        and row.value == spec.value
        and row.is_buildtime == spec.is_buildtime
        and row.is_runtime == spec.is_runtime
        and row.is_literal == spec.is_literal
        and row.is_multiline == spec.is_multiline
    )


async def confirmed_keys(coolify: CoolifyClient, app_uuid: str, specs: list[EnvVarSpec]) -> list[str]:
    """Keys whose wanted value and flags Coolify now holds (read back after a failed bulk update)."""
    try:
        rows = await coolify.list_envs(app_uuid)
    except CloudAPIError as exc:
        logger.warning("could not read the variables of %s back after a failed bulk update: %s", app_uuid, exc)
        return []  # cannot confirm anything: report nothing as done
    return [spec.key for spec in specs if any(holds(row, spec) for row in rows)]


async def _set(coolify: CoolifyClient, app_uuid: str, specs: list[EnvVarSpec], result: EnvResult) -> None:
    for spec in specs:
        await set_one(coolify, app_uuid, spec)
        result.applied_keys.append(spec.key)


async def _bulk_set(coolify: CoolifyClient, app_uuid: str, specs: list[EnvVarSpec], result: EnvResult) -> None:
    try:
        await coolify.bulk_update_envs(app_uuid, specs)
    except CloudAPIError:
        result.applied_keys[:] = await confirmed_keys(coolify, app_uuid, specs)
        raise
    result.applied_keys[:] = [spec.key for spec in specs]


async def _delete(coolify: CoolifyClient, app_uuid: str, keys: list[str], result: EnvResult) -> bool:
    """Delete every row of each key; returns whether a deleted row was build-time."""
    rows = await coolify.list_envs(app_uuid)
    buildtime = False
    for key in keys:
        matching = [row for row in rows if row.key == key]
        if not matching:
            result.missing_keys.append(key)
            continue
        for row in matching:
            await coolify.delete_env(app_uuid, row.uuid)  # False: already gone, which is what we want
        buildtime = buildtime or any(row.is_buildtime for row in matching)
        result.applied_keys.append(key)
    return buildtime


async def _restart(coolify: CoolifyClient, app_uuid: str, mode: str, result: EnvResult) -> None:
    if mode == RESTART:
        outcome = await coolify.restart_application(app_uuid)
    elif mode == REDEPLOY:
        outcome = await coolify.deploy(app_uuid)
    else:
        return
    result.restart_deployment_uuid = outcome.deployment_uuid
    result.restart_already_queued = outcome.already_queued


async def _change(
    coolify: CoolifyClient,
    *,
    application_uuid: str,
    action: str,
    specs: list[EnvVarSpec],
    keys: list[str],
    mode: str,
    builds_from_source: bool,
    result: EnvResult,
) -> None:
    """Make the change, then restart or redeploy once if anything changed; fills `result` as it goes."""
    buildtime_touched = any(spec.is_buildtime for spec in specs)
    try:
        if action == SET:
            await _set(coolify, application_uuid, specs, result)
        elif action == BULK_SET:
            await _bulk_set(coolify, application_uuid, specs, result)
        else:
            buildtime_touched = await _delete(coolify, application_uuid, keys, result)
    except CloudAPIError as exc:
        result.error = f"Coolify refused the change: {exc}"
    if not result.applied_keys or mode == NONE:
        return
    effective = resolve_mode(mode, buildtime_touched=buildtime_touched, builds_from_source=builds_from_source)
    result.restart_mode = effective
    try:
        await _restart(coolify, application_uuid, effective, result)
    except CloudAPIError as exc:
        saved = "the variables were saved" if result.error is None else f"{result.error}; what was saved"
        result.error = f"{saved} but the {effective.lower()} failed: {exc}"


def _problem(action: str, mode: str, keys: list[str], items: list[dict[str, Any]] | None) -> str | None:
    """Why the job's arguments cannot be carried out, or None."""
    if items is None:
        return "the change expired or was withdrawn before a worker took it; nothing was changed"
    if action not in (SET, BULK_SET, DELETE):
        return f"unknown env action {action!r}"
    if mode not in MODES:
        return f"unknown apply mode {mode!r}"
    if action == DELETE:
        return None if keys and not items else "a delete takes keys only"
    if not items or [str(item.get("key")) for item in items] != keys:
        return "the stashed variables do not match the change's keys; nothing was changed"
    return None


async def apply_env_change(
    ctx: WorkerContext,
    *,
    change_id: int,
    application_uuid: str,
    action: str,
    keys: list[str],
    variables_ref: str,
    mode: str = AUTO,
    builds_from_source: bool = False,
) -> dict[str, Any]:
    """Apply one env change to a Coolify application, restart or redeploy it once, update the audit row.

    Args:
        change_id: the `EnvChange` audit row, updated with the outcome.
        action: SET or BULK_SET (values from `variables_ref`) or DELETE (of `keys`).
        keys: the keys the change touches, in request order.
        variables_ref: the `jobs.envstash` reference of the variables (key, value, flags; none for DELETE).
            It is the change's ticket: when it is gone (expired, or withdrawn by the API), nothing is done.
        mode: NONE, RESTART, REDEPLOY or AUTO (see `resolve_mode`).
        builds_from_source: whether Coolify builds the application (a git source), so build-time variables
            need a redeploy.

    Returns:
        `EnvResult` as a dict: keys and the restart, never a value.
    """
    deps = ctx["deps"]
    result = EnvResult()
    keys = list(keys)
    try:
        items = await take_values(deps.redis, variables_ref, secret_key=deps.config.secret_key)
        result.error = _problem(action, mode, keys, items)
        if result.error is None:
            specs = [spec_from_item(item) for item in items or []]
            # Inside the deadline a 429 (or a wait for the shared request budget) is waited out, not a failure.
            with request_deadline(WORK_BUDGET_S - 5.0):
                async with asyncio.timeout(WORK_BUDGET_S):
                    await _change(
                        deps.coolify,
                        application_uuid=application_uuid,
                        action=action,
                        specs=specs,
                        keys=keys,
                        mode=mode,
                        builds_from_source=builds_from_source,
                        result=result,
                    )
    except TimeoutError:
        result.error = f"Coolify did not answer within {WORK_BUDGET_S:.0f} s"
    except Exception as exc:  # a bug: report it as a result, since SAQ would log the job with its arguments
        logger.exception("env change %s failed unexpectedly (%s)", change_id, type(exc).__name__)
        result.error = "the env job failed unexpectedly"
    done = set(result.applied_keys) | set(result.missing_keys)
    result.failed_keys = [key for key in keys if key not in done]
    await _record(change_id, result)
    logger.info(
        "env change %s (%s) on application %s: applied %s, failed %s, missing %s, %s %s",
        change_id,
        action,
        application_uuid,
        result.applied_keys,
        result.failed_keys,
        result.missing_keys,
        result.restart_mode,
        result.restart_deployment_uuid or "-",
    )
    return asdict(result)


async def _record(change_id: int, result: EnvResult) -> None:
    """Write the outcome to the audit row (a database failure is logged, not raised)."""
    try:
        await EnvChange.filter(id=change_id).update(
            applied_keys=result.applied_keys,
            failed_keys=result.failed_keys,
            restart_mode=result.restart_mode,
            restart_deployment_uuid=result.restart_deployment_uuid,
            error=result.error,
        )
    except Exception as exc:
        logger.error("could not record the outcome of env change %s: %s", change_id, type(exc).__name__)
