"""The env job against the sandbox (through ASGI): set, bulk set and delete with Coolify's rules, partial
failure, one restart or redeploy per change, the audit row, and no value anywhere but in Coolify."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from saq import Queue

from clients.coolify import CoolifyClient
from clients.digitalocean import DigitalOceanClient
from clients.http import RetryPolicy
from jobs.context import Deps, PipelineConfig, WorkerContext
from jobs.enqueue import EnvJobError, run_env_change
from jobs.envjob import apply_env_change, resolve_mode
from jobs.envstash import discard_values, stash_values, take_values
from models.env import EnvAction, EnvChange
from sandbox.app import create_app as create_sandbox
from sandbox.state import SandboxConfig, World
from settings import Settings
from tests.conftest import SECRET_KEY
from tests.env_support import COOLIFY_MAX_COMMENT, rows, sandbox_application

SECRET = "s3cr3t-env-value-never-logged"
FAST_WORLD = SandboxConfig(build_queue_s=0.05, build_s=0.1)
RESTART = r"/applications/[^/]+/restart$"


@pytest.fixture
def world() -> World:
    """A fresh sandbox world with fast, real-time transitions."""
    return World(FAST_WORLD)


@pytest.fixture
async def deps(world: World, redis: Redis, settings: Settings) -> AsyncIterator[Deps]:
    """Clients wired to the sandbox through ASGI, with no real sleeping between client retries."""
    transport = httpx.ASGITransport(app=create_sandbox(world))
    retry = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, jitter=0)
    digitalocean = DigitalOceanClient(
        api_url=settings.digitalocean.api_url, token="do-token", transport=transport, retry=retry
    )
    coolify = CoolifyClient(api_url=settings.coolify.api_url, token="1|coolify-token", transport=transport, retry=retry)
    yield Deps(
        digitalocean=digitalocean,
        coolify=coolify,
        redis=redis,
        config=PipelineConfig.from_settings(settings),
    )
    await digitalocean.aclose()
    await coolify.aclose()


@pytest.fixture
def app_uuid(world: World) -> str:
    """A docker-image application in the sandbox."""
    return sandbox_application(world)


def var(key: str, value: str = SECRET, **flags: Any) -> dict[str, Any]:
    """One variable as the API hands it to the job (Coolify's flag names)."""
    return {"key": key, "value": value, **flags}


async def change(
    deps: Deps,
    app_uuid: str,
    action: str,
    items: list[dict[str, Any]] | None = None,
    *,
    keys: list[str] | None = None,
    mode: str = "AUTO",
    builds_from_source: bool = False,
) -> tuple[dict[str, Any], EnvChange]:
    """Write the audit row, stash the values and run the job as a worker would; returns (result, row)."""
    keys = keys if keys is not None else [item["key"] for item in items or []]
    row = await EnvChange.create(application_uuid=app_uuid, action=EnvAction(action), keys=keys)
    ref = await stash_values(deps.redis, items or [], ttl_s=60, secret_key=SECRET_KEY)
    ctx: WorkerContext = {"deps": deps}  # type: ignore[typeddict-item]
    result = await apply_env_change(
        ctx,
        change_id=row.id,
        application_uuid=app_uuid,
        action=action,
        keys=keys,
        variables_ref=ref,
        mode=mode,
        builds_from_source=builds_from_source,
    )
    return result, await EnvChange.get(id=row.id)


def calls(world: World, method: str, path: str) -> list[tuple[str, int]]:
    """(method, status) of the sandbox requests matching a method and a path regex."""
    return [(r.method, r.status) for r in world.calls(method, path)]


async def test_set_creates_then_updates_and_restarts_once_each_time(deps: Deps, world: World, app_uuid: str) -> None:
    """A first set is PATCH 404 then POST; a second is a PATCH; each change restarts the app exactly once."""
    result, audit = await change(deps, app_uuid, "SET", [var("API_KEY", "one")])
    assert calls(world, "PATCH", "/envs$") == [("PATCH", 404)]
    assert calls(world, "POST", "/envs$") == [("POST", 201)]
    assert result["applied_keys"] == ["API_KEY"] and result["failed_keys"] == [] and result["error"] is None
    assert result["restart_mode"] == "RESTART"
    restarts = world.calls("POST", RESTART)
    assert len(restarts) == 1
    assert result["restart_deployment_uuid"] in world.deployments
    assert world.deployments[result["restart_deployment_uuid"]].restart_only
    assert (audit.applied_keys, audit.restart_mode) == (["API_KEY"], "RESTART")
    assert audit.restart_deployment_uuid == result["restart_deployment_uuid"]

    world.advance(5)  # let the restart finish, so the next one is not folded into it
    result, _ = await change(deps, app_uuid, "SET", [var("API_KEY", "two")])
    assert calls(world, "PATCH", "/envs$") == [("PATCH", 404), ("PATCH", 201)]
    assert len(world.calls("POST", "/envs$")) == 1
    assert rows(world, app_uuid)[("API_KEY", False)]["value"] == "two"
    assert len(world.calls("POST", RESTART)) == 2
    assert result["restart_already_queued"] is False


async def test_set_sends_every_flag_so_coolify_resets_nothing(deps: Deps, world: World, app_uuid: str) -> None:
    """Updating a literal, multiline, runtime-only variable keeps its flags, since the full flag set is sent."""
    flags = {"is_literal": True, "is_multiline": True, "is_buildtime": False, "is_runtime": True}
    await change(deps, app_uuid, "SET", [var("CERT", "a\nb", **flags)], mode="NONE")
    await change(deps, app_uuid, "SET", [var("CERT", "c\nd", **flags)], mode="NONE")
    assert rows(world, app_uuid)[("CERT", False)] == {"value": "c\nd", **flags}
    await change(deps, app_uuid, "SET", [var("CERT", "plain")], mode="NONE")  # defaults are sent explicitly
    assert rows(world, app_uuid)[("CERT", False)] == {
        "value": "plain",
        "is_buildtime": True,
        "is_runtime": True,
        "is_literal": False,
        "is_multiline": False,
    }


async def test_set_of_a_preview_row_leaves_the_production_row(deps: Deps, world: World, app_uuid: str) -> None:
    """`is_preview` picks the row: production and preview copies of a key are separate."""
    await change(deps, app_uuid, "SET", [var("MODE", "prod")], mode="NONE")
    await change(deps, app_uuid, "SET", [var("MODE", "preview", is_preview=True)], mode="NONE")
    stored = rows(world, app_uuid)
    assert stored[("MODE", False)]["value"] == "prod"
    assert stored[("MODE", True)]["value"] == "preview"


async def test_bulk_creates_and_updates_in_one_call_and_one_restart(deps: Deps, world: World, app_uuid: str) -> None:
    """A bulk set upserts every item with one PATCH, keeps unlisted keys and restarts once."""
    world.add_env(app_uuid, "KEEP", "kept")
    world.add_env(app_uuid, "B", "old", is_literal=True)
    items = [var("A", "1"), var("B", "2"), var("C", "3", is_buildtime=False)]
    result, audit = await change(deps, app_uuid, "BULK_SET", items)
    assert len(world.calls("PATCH", "/envs/bulk$")) == 1
    stored = rows(world, app_uuid)
    assert {key: row["value"] for (key, _), row in stored.items()} == {"KEEP": "kept", "B": "2", "A": "1", "C": "3"}
    assert stored[("B", False)]["is_literal"] is False  # sent explicitly, not reset by omission
    assert stored[("C", False)]["is_buildtime"] is False
    assert result["applied_keys"] == ["A", "B", "C"] and result["failed_keys"] == []
    assert len(world.calls("POST", RESTART)) == 1
    assert audit.applied_keys == ["A", "B", "C"] and audit.error is None


async def test_bulk_failing_at_its_third_item_reports_what_was_applied(deps: Deps, world: World, app_uuid: str) -> None:
    """Coolify saves items 1-2 and rejects item 3: applied A, B; failed C, D; confirmed by reading back."""
    world.add_env(app_uuid, "D", "before")
    items = [var("A"), var("B"), var("C", comment="x" * (COOLIFY_MAX_COMMENT + 1)), var("D", "after")]
    result, audit = await change(deps, app_uuid, "BULK_SET", items)
    assert calls(world, "PATCH", "/envs/bulk$") == [("PATCH", 422)]
    assert result["applied_keys"] == ["A", "B"]
    assert result["failed_keys"] == ["C", "D"]
    assert "422" in result["error"]
    stored = rows(world, app_uuid)
    assert {key for key, _ in stored} == {"A", "B", "D"}
    assert stored[("D", False)]["value"] == "before"
    assert len(world.calls("GET", "/envs$")) == 1  # the read-back
    assert result["restart_mode"] == "RESTART"  # what was saved is applied, once
    assert len(world.calls("POST", RESTART)) == 1
    assert (audit.applied_keys, audit.failed_keys) == (["A", "B"], ["C", "D"])
    assert audit.error is not None and SECRET not in audit.error


async def test_bulk_refused_whole_applies_nothing_and_does_not_restart(deps: Deps, world: World, app_uuid: str) -> None:
    """A 500 on the bulk update leaves nothing applied: every key failed, no restart."""
    world.faults.add_spec("server_error=500:1@PATCH:/envs/bulk$")
    result, _ = await change(deps, app_uuid, "BULK_SET", [var("A"), var("B")])
    assert result["applied_keys"] == [] and result["failed_keys"] == ["A", "B"]
    assert "500" in result["error"]
    assert result["restart_mode"] == "NONE"
    assert world.calls("POST", RESTART) == []


async def test_unconfirmable_keys_are_not_reported_as_applied(deps: Deps, world: World, app_uuid: str) -> None:
    """When the read-back after a failed bulk fails too, no key is reported as applied."""
    world.faults.add_spec("server_error=500:1@PATCH:/envs/bulk$,server_error=500@GET:/envs$")
    result, _ = await change(deps, app_uuid, "BULK_SET", [var("A"), var("B")])
    assert result["applied_keys"] == [] and result["failed_keys"] == ["A", "B"]


async def test_delete_removes_production_and_preview_rows(deps: Deps, world: World, app_uuid: str) -> None:
    """Deleting a key deletes both of its rows by uuid, keeps other keys and restarts once."""
    world.add_env(app_uuid, "GONE", "p")
    world.add_env(app_uuid, "GONE", "q", is_preview=True)
    world.add_env(app_uuid, "STAYS", "s")
    result, audit = await change(deps, app_uuid, "DELETE", keys=["GONE"])
    assert calls(world, "DELETE", "/envs/") == [("DELETE", 200), ("DELETE", 200)]
    assert set(rows(world, app_uuid)) == {("STAYS", False)}
    assert result["applied_keys"] == ["GONE"] and result["missing_keys"] == [] and result["failed_keys"] == []
    assert len(world.calls("POST", RESTART)) == 1
    assert audit.applied_keys == ["GONE"]


async def test_deleting_a_missing_key_says_so_and_does_not_restart(deps: Deps, world: World, app_uuid: str) -> None:
    """A key that does not exist is reported missing; nothing is deleted and nothing restarted."""
    result, audit = await change(deps, app_uuid, "DELETE", keys=["NOPE"])
    assert result["missing_keys"] == ["NOPE"]
    assert result["applied_keys"] == [] and result["failed_keys"] == [] and result["error"] is None
    assert result["restart_mode"] == "NONE"
    assert world.calls("DELETE") == [] and world.calls("POST", RESTART) == []
    assert audit.restart_mode == "NONE"


@pytest.mark.parametrize(
    ("requested", "buildtime", "from_source", "expected"),
    [
        ("AUTO", True, True, "REDEPLOY"),
        ("AUTO", False, True, "RESTART"),
        ("AUTO", True, False, "RESTART"),
        ("RESTART", True, True, "RESTART"),
        ("REDEPLOY", False, False, "REDEPLOY"),
        ("NONE", True, True, "NONE"),
    ],
)
def test_resolve_mode(requested: str, buildtime: bool, from_source: bool, expected: str) -> None:
    """AUTO redeploys only for a build-time variable of an app built from source; other modes stay."""
    assert resolve_mode(requested, buildtime_touched=buildtime, builds_from_source=from_source) == expected


async def test_a_build_time_variable_of_a_git_app_is_redeployed(deps: Deps, world: World) -> None:
    """AUTO on a git-built app with a build-time variable calls /deploy once and no restart."""
    app_uuid = sandbox_application(world, git=True)
    result, audit = await change(deps, app_uuid, "SET", [var("NODE_ENV", "production")], builds_from_source=True)
    assert result["restart_mode"] == "REDEPLOY"
    assert len(world.calls("POST", "/deploy$")) == 1
    assert world.calls("POST", RESTART) == []
    deployment = world.deployments[result["restart_deployment_uuid"]]
    assert not deployment.restart_only
    assert audit.restart_mode == "REDEPLOY"


async def test_a_runtime_only_variable_of_a_git_app_is_restarted(deps: Deps, world: World) -> None:
    """AUTO restarts a git-built app when no changed variable is build-time."""
    app_uuid = sandbox_application(world, git=True)
    items = [var("LOG", "debug", is_buildtime=False)]
    result, _ = await change(deps, app_uuid, "BULK_SET", items, builds_from_source=True)
    assert result["restart_mode"] == "RESTART"
    assert len(world.calls("POST", RESTART)) == 1 and world.calls("POST", "/deploy$") == []


async def test_restart_false_changes_without_restarting(deps: Deps, world: World, app_uuid: str) -> None:
    """Mode NONE saves the change and neither restarts nor redeploys."""
    result, _ = await change(deps, app_uuid, "SET", [var("A")], mode="NONE")
    assert result["applied_keys"] == ["A"] and result["restart_mode"] == "NONE"
    assert result["restart_deployment_uuid"] is None
    assert world.calls("POST", RESTART) == [] and world.calls("POST", "/deploy$") == []


async def test_a_restart_already_running_is_reported_as_folded(deps: Deps, world: World, app_uuid: str) -> None:
    """A second change while the first restart still runs gets that restart's uuid, marked already queued."""
    first, _ = await change(deps, app_uuid, "SET", [var("A")])
    second, _ = await change(deps, app_uuid, "SET", [var("B")])
    assert second["restart_already_queued"] is True
    assert second["restart_deployment_uuid"] == first["restart_deployment_uuid"]


async def test_a_failed_restart_is_an_error_after_a_saved_change(deps: Deps, world: World, app_uuid: str) -> None:
    """The variables are saved and reported applied; the error says the restart failed."""
    world.faults.add_spec("server_error=503:1@POST:/restart$")
    result, audit = await change(deps, app_uuid, "SET", [var("A")])
    assert result["applied_keys"] == ["A"] and result["failed_keys"] == []
    assert "restart failed" in result["error"] and "503" in result["error"]
    assert rows(world, app_uuid)[("A", False)]["value"] == SECRET
    assert audit.error == result["error"]


async def test_an_unknown_application_fails_without_restart(deps: Deps, world: World) -> None:
    """An application missing from Coolify fails the change with Coolify's 404 and restarts nothing."""
    result, _ = await change(deps, "no-such-app", "SET", [var("A")])
    assert result["failed_keys"] == ["A"] and "404" in result["error"]
    assert result["restart_mode"] == "NONE"


@pytest.mark.parametrize("action", ["SET", "DELETE"])
async def test_an_expired_or_withdrawn_change_does_nothing(
    deps: Deps, world: World, app_uuid: str, action: str
) -> None:
    """A job whose stash is gone makes no Coolify call and reports every key failed."""
    world.add_env(app_uuid, "A", "kept")
    row = await EnvChange.create(application_uuid=app_uuid, action=EnvAction(action), keys=["A"])
    ref = await stash_values(deps.redis, [var("A")] if action == "SET" else [], ttl_s=60, secret_key=SECRET_KEY)
    assert await discard_values(deps.redis, ref)
    ctx: WorkerContext = {"deps": deps}  # type: ignore[typeddict-item]
    result = await apply_env_change(
        ctx, change_id=row.id, application_uuid=app_uuid, action=action, keys=["A"], variables_ref=ref
    )
    assert result["failed_keys"] == ["A"] and "withdrawn" in result["error"]
    assert world.requests == []
    assert rows(world, app_uuid)[("A", False)]["value"] == "kept"


async def test_the_values_are_taken_once(deps: Deps, app_uuid: str) -> None:
    """The job deletes the stashed values as it takes them."""
    ref = await stash_values(deps.redis, [var("A")], ttl_s=60, secret_key=SECRET_KEY)
    assert await take_values(deps.redis, ref, secret_key=SECRET_KEY) == [var("A")]
    assert await take_values(deps.redis, ref, secret_key=SECRET_KEY) is None
    assert await take_values(deps.redis, "some:other:key", secret_key=SECRET_KEY) is None
    assert await discard_values(deps.redis, ref) is False  # already taken: too late to withdraw


async def test_no_value_reaches_a_log_the_result_or_the_database(
    deps: Deps, world: World, app_uuid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Through set, a failing bulk and delete, values appear only in Coolify's rows."""
    caplog.set_level(logging.DEBUG)
    results = [
        await change(deps, app_uuid, "SET", [var("A")]),
        await change(deps, app_uuid, "BULK_SET", [var("B"), var("C", comment="x" * 300)]),
        await change(deps, app_uuid, "DELETE", keys=["A"]),
    ]
    assert rows(world, app_uuid)[("B", False)]["value"] == SECRET
    assert caplog.records
    assert SECRET not in caplog.text
    for result, audit in results:
        assert SECRET not in repr(result)
        assert SECRET not in repr(
            [audit.keys, audit.applied_keys, audit.failed_keys, audit.error, audit.restart_deployment_uuid]
        )


async def test_run_env_change_without_a_worker_withdraws_the_change(
    redis: Redis, redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no worker, the API gives up after its wait and withdraws the change, so a late worker does nothing."""
    refs: list[str] = []

    async def stash(redis: Redis, variables: Any, *, ttl_s: int, secret_key: str) -> str:
        refs.append(await stash_values(redis, variables, ttl_s=ttl_s, secret_key=secret_key))
        return refs[-1]

    monkeypatch.setattr("jobs.enqueue.stash_values", stash)
    queue = Queue.from_url(redis_url, name=queue_name)
    await queue.connect()
    try:
        with pytest.raises(EnvJobError) as caught:
            await run_env_change(
                queue,
                redis,
                change_id=1,
                application_uuid="app",
                action="SET",
                variables=[var("A")],
                keys=["A"],
                wait_s=0.2,
                secret_key=SECRET_KEY,
            )
        assert caught.value.started is False
        assert SECRET not in str(caught.value)
        assert len(refs) == 1 and await redis.exists(*refs) == 0
    finally:
        await queue.disconnect()
