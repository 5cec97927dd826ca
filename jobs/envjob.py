"""The env job: create, update or delete an application's environment variables in Coolify, then apply them.

Coolify's rules (research §7) shape this module: PATCH finds a variable by key and never creates it, so a
single set is "PATCH, and POST on 404"; the bulk PATCH upserts item by item without a transaction, so after a
failure the job reads the variables back to tell which keys really hold the wanted value; DELETE takes an env
uuid, so a delete by key lists the variables and deletes every row (production and preview) with that key.
Omitted flags are reset by Coolify, so every request carries the full flag set.

Values exist only in this job's arguments and in memory: never in a log line, an error, the result or the
database. The audit row (`EnvChange`) records keys, the action and the outcome.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Literal

from clients.coolify import CoolifyClient, EnvVar, EnvVarSpec
from clients.errors import CloudAPIError, ConflictError, NotFoundError
from jobs.context import WorkerContext
from models.env import EnvChange

logger = logging.getLogger("deployer.env")

ApplyMode = Literal["NONE", "RESTART", "REDEPLOY", "AUTO"]


@dataclass
class EnvResult:
    """What happened, keys only: returned to the API and written to the audit row."""

    applied_keys: list[str]
    failed_keys: list[str]
    missing_keys: list[str]
    restart_mode: str
    restart_deployment_uuid: str | None
    error: str | None


def _spec(item: dict[str, Any]) -> EnvVarSpec:
    return EnvVarSpec(
        key=item["key"],
        value=item["value"],
        is_preview=bool(item.get("is_preview", False)),
        is_literal=bool(item.get("is_literal", False)),
        is_multiline=bool(item.get("is_multiline", False)),
        is_shown_once=bool(item.get("is_shown_once", False)),
        is_runtime=bool(item.get("is_runtime", True)),
        is_buildtime=bool(item.get("is_buildtime", True)),
        comment=item.get("comment"),
    )


async def _set_one(coolify: CoolifyClient, app_uuid: str, spec: EnvVarSpec) -> None:
    """Create or update one variable: PATCH by key; on 404 POST; on a racing 409 PATCH again."""
    try:
        await coolify.update_env(app_uuid, spec)
    except NotFoundError:
        try:
            await coolify.create_env(app_uuid, spec)
        except ConflictError:
            await coolify.update_env(app_uuid, spec)


def _holds(row: EnvVar, spec: EnvVarSpec) -> bool:
    return (
        row.key == spec.key
        and row.is_preview == spec.is_preview
        and row.value == spec.value
        and row.is_buildtime == spec.is_buildtime
        and row.is_runtime == spec.is_runtime
    )


async def _confirmed_keys(coolify: CoolifyClient, app_uuid: str, specs: list[EnvVarSpec]) -> list[str]:
    """Keys whose wanted value and flags Coolify now holds (read back after a partial failure)."""
    try:
        rows = await coolify.list_envs(app_uuid)
    except CloudAPIError:
        return []  # cannot confirm anything: report nothing as done
    return [spec.key for spec in specs if any(_holds(row, spec) for row in rows)]


async def _apply(coolify: CoolifyClient, app_uuid: str, mode: str) -> str | None:
    if mode == "RESTART":
        result = await coolify.restart_application(app_uuid)
    elif mode == "REDEPLOY":
        result = await coolify.deploy(app_uuid)
    else:
        return None
    return result.deployment_uuid


def resolve_mode(requested: str, *, buildtime_touched: bool, builds_from_source: bool) -> str:
    """AUTO picks REDEPLOY when a build-time variable of an app built from source changed, else RESTART."""
    if requested != "AUTO":
        return requested
    return "REDEPLOY" if buildtime_touched and builds_from_source else "RESTART"


async def apply_env_change(
    ctx: WorkerContext,
    *,
    change_id: int,
    application_uuid: str,
    action: str,
    variables: list[dict[str, Any]] | None = None,
    keys: list[str] | None = None,
    mode: str = "AUTO",
    builds_from_source: bool = False,
) -> dict[str, Any]:
    """Apply one env change to a Coolify application and restart or redeploy it once.

    Args:
        action: SET or BULK_SET (with `variables`, each a dict of key, value and flags) or DELETE (with `keys`).
        mode: NONE, RESTART, REDEPLOY or AUTO (see `resolve_mode`).
    """
    coolify = ctx["deps"].coolify
    specs = [_spec(item) for item in variables or []]
    wanted = [spec.key for spec in specs] if action != "DELETE" else list(keys or [])
    applied: list[str] = []
    missing: list[str] = []
    error: str | None = None
    buildtime_touched = any(spec.is_buildtime for spec in specs)
    try:
        if action == "SET":
            for spec in specs:
                await _set_one(coolify, application_uuid, spec)
                applied.append(spec.key)
        elif action == "BULK_SET":
            try:
                await coolify.bulk_update_envs(application_uuid, specs)
                applied = [spec.key for spec in specs]
            except CloudAPIError:
                applied = await _confirmed_keys(coolify, application_uuid, specs)
                raise
        elif action == "DELETE":
            rows = await coolify.list_envs(application_uuid)
            for key in wanted:
                matching = [row for row in rows if row.key == key]
                if not matching:
                    missing.append(key)
                    continue
                buildtime_touched = buildtime_touched or any(row.is_buildtime for row in matching)
                for row in matching:
                    await coolify.delete_env(application_uuid, row.uuid)
                applied.append(key)
        else:
            raise ValueError(f"unknown env action {action!r}")
    except CloudAPIError as exc:
        error = f"Coolify refused the change: {exc}"
    failed = [key for key in wanted if key not in applied and key not in missing]
    effective = resolve_mode(mode, buildtime_touched=buildtime_touched, builds_from_source=builds_from_source)
    restart_uuid: str | None = None
    if not applied:
        effective = "NONE"
    else:
        try:
            restart_uuid = await _apply(coolify, application_uuid, effective)
        except CloudAPIError as exc:
            error = f"{error + '; ' if error else ''}the change was saved but the {effective.lower()} failed: {exc}"
    result = EnvResult(applied, failed, missing, effective, restart_uuid, error)
    await EnvChange.filter(id=change_id).update(
        applied_keys=applied,
        failed_keys=failed,
        restart_mode=effective,
        restart_deployment_uuid=restart_uuid,
        error=error,
    )
    logger.info(
        "env change applied",
        extra={"application_uuid": application_uuid, "action": action, "keys": wanted, "failed": failed},
    )
    return asdict(result)
