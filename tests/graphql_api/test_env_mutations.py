"""`setEnv`, `bulkSetEnv` and `deleteEnv` through the HTTP app, with a real SAQ worker talking to the sandbox:
validation before any call, NOT_FOUND for applications deployer did not deploy, one restart per change,
partial failure as UPSTREAM_ERROR, the `env` scope, the audit row, and no value in any response or log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from saq import Worker
from starlette.applications import Starlette

from graphql_api.inputs import MAX_ENV_VALUE_LENGTH
from jobs.enqueue import EnvJobError
from jobs.worker import worker_settings
from models import Deployment
from models.deployment import DeploymentStage, DeploymentStatus
from models.env import EnvChange
from sandbox.app import create_app as create_sandbox
from sandbox.state import World
from settings import Settings
from tests.conftest import FAST_WORLD
from tests.env_support import RejectBulkItem, rows, sandbox_application
from tests.graphql_api.conftest import ADMIN_TOKEN, DEPLOY, DEPLOY_TOKEN, TOKENS, GraphQLClient, running

# saq stores finished jobs with redis-py's deprecated `setex`; that is saq's business, not a failure here.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")

SECRET = "sup3r-s3cret-env-value"
RESTART = r"/applications/[^/]+/restart$"
#: One call of each env mutation (query, variables other than the application uuid).
EACH_MUTATION: list[tuple[str, dict[str, Any]]] = [
    ("SET", {"key": "A", "value": SECRET}),
    ("BULK", {"variables": [{"key": "A", "value": SECRET}]}),
    ("DELETE", {"key": "A"}),
]
UPDATE = "fragment U on EnvUpdate { changeId applicationUuid deploymentId action keys appliedKeys failedKeys"
UPDATE += " missingKeys deleted restart { mode deploymentUuid alreadyQueued } }"
SET_ENV = (
    """
mutation Set($app: ID!, $key: String!, $value: String!, $restart: Boolean, $apply: EnvApplyMode,
             $literal: Boolean, $buildTime: Boolean) {
  setEnv(applicationUuid: $app, key: $key, value: $value, restart: $restart, apply: $apply,
         isLiteral: $literal, isBuildTime: $buildTime) { ...U }
}
"""
    + UPDATE
)
BULK_SET_ENV = (
    """
mutation Bulk($app: ID!, $variables: [EnvVarInput!]!, $restart: Boolean, $apply: EnvApplyMode) {
  bulkSetEnv(applicationUuid: $app, variables: $variables, restart: $restart, apply: $apply) { ...U }
}
"""
    + UPDATE
)
DELETE_ENV = (
    """
mutation Delete($app: ID!, $key: String!, $restart: Boolean) {
  deleteEnv(applicationUuid: $app, key: $key, restart: $restart) { ...U }
}
"""
    + UPDATE
)


class _TestWorker(Worker[Any]):
    """A SAQ worker that leaves SIGINT/SIGTERM alone (pytest owns them)."""

    SIGNALS = []


@pytest.fixture
def world() -> World:
    """A fresh sandbox world with fast, real-time transitions."""
    return World(FAST_WORLD)


@pytest.fixture
def coolify(world: World) -> RejectBulkItem:
    """The sandbox as the worker sees it; arm it to make a bulk update fail at its third item."""
    proxy = RejectBulkItem(create_sandbox(world), index=2)
    proxy.armed = False
    return proxy


@pytest.fixture
async def worker(settings: Settings, coolify: RejectBulkItem, world: World) -> AsyncIterator[None]:
    """A SAQ worker on the test queue, running in this event loop, with clouds served by the sandbox.

    The worker's start-up check of both clouds is dropped from the sandbox's request log, so tests see only
    the requests their mutations caused."""
    options = worker_settings(settings.with_overrides(worker_concurrency=4), transport=httpx.ASGITransport(app=coolify))
    # Short dequeue polls let the idle worker stop within the grace period instead of cancelling Redis calls
    # that may still be connecting (which takes seconds).
    instance = _TestWorker(**{**options, "dequeue_timeout": 0.1, "shutdown_grace_period_s": 0.5})
    await instance.queue.connect()
    task = asyncio.create_task(instance.start())
    async with asyncio.timeout(10):  # stopping a worker still starting up would leave its tasks running
        while not instance.tasks:
            await asyncio.sleep(0.01)
    world.requests.clear()
    try:
        yield
    finally:
        await instance.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await instance.queue.disconnect()


@pytest.fixture
async def env_gql(app: Starlette, worker: None) -> AsyncIterator[GraphQLClient]:
    """A GraphQL client for the app (auth off), with the worker running."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http:
        yield GraphQLClient(http)


async def deployed(world: World, *, git: bool = False, status: DeploymentStatus = DeploymentStatus.COMPLETED) -> str:
    """An application in the sandbox plus the deployment row that says deployer created it; returns its uuid."""
    app_uuid = sandbox_application(world, git=git)
    source = (
        {"kind": "git", "repository": "https://github.com/acme/site", "branch": "main", "build_pack": "nixpacks"}
        if git
        else {"kind": "docker", "image": "nginx", "tag": "alpine"}
    )
    await Deployment.create(
        status=status, stage=DeploymentStage.DONE, application_uuid=app_uuid, spec={"source": source}
    )
    return app_uuid


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    """The one error of a response, asserting there is exactly one and no data."""
    assert body.get("data") is None, body
    assert len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    return error


async def test_set_env_creates_a_variable_and_restarts_once(env_gql: GraphQLClient, world: World) -> None:
    """`setEnv` stores the variable in Coolify, restarts the app once and returns keys and the restart uuid."""
    app_uuid = await deployed(world)
    status, body = await env_gql(SET_ENV, {"app": app_uuid, "key": "API_KEY", "value": SECRET})
    assert status == 200 and "errors" not in body, body
    update = body["data"]["setEnv"]
    assert update["action"] == "SET"
    assert (update["keys"], update["appliedKeys"], update["failedKeys"]) == (["API_KEY"], ["API_KEY"], [])
    assert update["deleted"] is None
    assert update["restart"]["mode"] == "RESTART"
    assert update["restart"]["deploymentUuid"] in world.deployments
    assert len(world.calls("POST", RESTART)) == 1
    assert rows(world, app_uuid)[("API_KEY", False)]["value"] == SECRET
    audit = await EnvChange.get(id=int(update["changeId"]))
    assert (audit.application_uuid, audit.action.value, audit.keys, audit.caller) == (
        app_uuid,
        "SET",
        ["API_KEY"],
        "anonymous",
    )
    assert str(audit.deployment_id) == update["deploymentId"]
    assert audit.restart_deployment_uuid == update["restart"]["deploymentUuid"]
    assert SECRET not in str(body)


async def test_set_env_sends_the_flags(env_gql: GraphQLClient, world: World) -> None:
    """Flags given to `setEnv` reach Coolify; omitted ones take Coolify's defaults."""
    app_uuid = await deployed(world)
    variables = {"app": app_uuid, "key": "TPL", "value": "$HOME", "literal": True, "buildTime": False}
    status, body = await env_gql(SET_ENV, variables)
    assert status == 200 and "errors" not in body, body
    assert rows(world, app_uuid)[("TPL", False)] == {
        "value": "$HOME",
        "is_buildtime": False,
        "is_runtime": True,
        "is_literal": True,
        "is_multiline": False,
    }


async def test_bulk_set_env_upserts_everything_with_one_restart(env_gql: GraphQLClient, world: World) -> None:
    """`bulkSetEnv` creates and updates several keys (flags included) and restarts once."""
    app_uuid = await deployed(world)
    world.add_env(app_uuid, "EXISTING", "old")
    variables = [
        {"key": "EXISTING", "value": SECRET},
        {"key": "NEW_ONE", "value": "1", "isMultiline": True},
        {"key": "PREVIEW_ONLY", "value": "2", "isPreview": True},
    ]
    status, body = await env_gql(BULK_SET_ENV, {"app": app_uuid, "variables": variables})
    assert status == 200 and "errors" not in body, body
    update = body["data"]["bulkSetEnv"]
    assert update["appliedKeys"] == ["EXISTING", "NEW_ONE", "PREVIEW_ONLY"] and update["failedKeys"] == []
    stored = rows(world, app_uuid)
    assert stored[("EXISTING", False)]["value"] == SECRET
    assert stored[("NEW_ONE", False)]["is_multiline"] is True
    assert ("PREVIEW_ONLY", True) in stored and ("PREVIEW_ONLY", False) not in stored
    assert len(world.calls("PATCH", "/envs/bulk$")) == 1
    assert len(world.calls("POST", RESTART)) == 1
    assert SECRET not in str(body)


async def test_delete_env_removes_both_rows_then_reports_a_missing_key(env_gql: GraphQLClient, world: World) -> None:
    """`deleteEnv` deletes the production and preview rows; deleting again says the key did not exist."""
    app_uuid = await deployed(world)
    world.add_env(app_uuid, "OLD", SECRET)
    world.add_env(app_uuid, "OLD", SECRET, is_preview=True)
    status, body = await env_gql(DELETE_ENV, {"app": app_uuid, "key": "OLD"})
    assert status == 200 and "errors" not in body, body
    update = body["data"]["deleteEnv"]
    assert (update["deleted"], update["appliedKeys"], update["missingKeys"]) == (True, ["OLD"], [])
    assert update["restart"]["mode"] == "RESTART"
    assert rows(world, app_uuid) == {}
    assert len(world.calls("DELETE", "/envs/")) == 2

    status, body = await env_gql(DELETE_ENV, {"app": app_uuid, "key": "OLD"})
    assert status == 200 and "errors" not in body, body
    again = body["data"]["deleteEnv"]
    assert (again["deleted"], again["appliedKeys"], again["missingKeys"]) == (False, [], ["OLD"])
    assert again["restart"] == {"mode": "NONE", "deploymentUuid": None, "alreadyQueued": False}
    assert len(world.calls("POST", RESTART)) == 1


@pytest.mark.parametrize(
    ("query", "variables", "fields"),
    [
        (SET_ENV, {"key": "9LIVES", "value": SECRET}, ["key"]),
        (SET_ENV, {"key": "K" * 256, "value": SECRET}, ["key"]),
        (SET_ENV, {"key": "BIG", "value": SECRET + "x" * MAX_ENV_VALUE_LENGTH}, ["value"]),
        (DELETE_ENV, {"key": "has space"}, ["key"]),
        (BULK_SET_ENV, {"variables": []}, ["variables"]),
        (
            BULK_SET_ENV,
            {
                "variables": [
                    {"key": "A", "value": SECRET},
                    {"key": "-bad", "value": SECRET},
                    {"key": "A", "value": "again"},
                    {"key": "OK", "value": SECRET * 5000},
                ]
            },
            ["variables[1].key", "variables[2].key", "variables[3].value"],
        ),
    ],
)
async def test_invalid_input_is_refused_before_any_call(
    env_gql: GraphQLClient, world: World, query: str, variables: dict[str, Any], fields: list[str]
) -> None:
    """Invalid keys, values or lists are BAD_USER_INPUT naming every bad item; nothing reaches Coolify."""
    app_uuid = await deployed(world)
    status, body = await env_gql(query, {"app": app_uuid, **variables})
    assert status == 200
    error = error_of(body)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert [problem["field"] for problem in error["extensions"]["fields"]] == fields
    assert world.requests == []
    assert await EnvChange.all().count() == 0
    assert SECRET not in str(body)


async def test_a_duplicate_key_names_its_first_occurrence(env_gql: GraphQLClient, world: World) -> None:
    """The message says which item repeats which."""
    app_uuid = await deployed(world)
    variables = [{"key": "A", "value": "1"}, {"key": "B", "value": "2"}, {"key": "A", "value": "3"}]
    _, body = await env_gql(BULK_SET_ENV, {"app": app_uuid, "variables": variables})
    assert "variables[2].key: repeats variables[0].key" in error_of(body)["message"]


@pytest.mark.parametrize("case", ["unknown", "not-deployed-by-us", "failed-deployment"])
async def test_applications_deployer_did_not_deploy_are_not_found(
    env_gql: GraphQLClient, world: World, case: str
) -> None:
    """Unknown uuids, Coolify apps deployer did not create and failed deployments' apps are NOT_FOUND."""
    if case == "unknown":
        app_uuid = str(uuid.uuid4())
    elif case == "not-deployed-by-us":
        app_uuid = sandbox_application(world, name="someone-elses")
    else:
        app_uuid = await deployed(world, status=DeploymentStatus.FAILED)
    for name, variables in EACH_MUTATION:
        query = {"SET": SET_ENV, "BULK": BULK_SET_ENV, "DELETE": DELETE_ENV}[name]
        _, body = await env_gql(query, {"app": app_uuid, **variables})
        error = error_of(body)
        assert (error["extensions"]["code"], error["extensions"]["status"]) == ("NOT_FOUND", 404)
    assert world.requests == []


async def test_a_bulk_failing_part_way_is_an_upstream_error_naming_the_keys(
    env_gql: GraphQLClient, world: World, coolify: RejectBulkItem
) -> None:
    """Coolify rejects the third item: UPSTREAM_ERROR with applied A, B and failed C, D; the sandbox agrees."""
    app_uuid = await deployed(world)
    coolify.armed = True
    variables = [{"key": key, "value": SECRET} for key in ("A", "B", "C", "D")]
    status, body = await env_gql(BULK_SET_ENV, {"app": app_uuid, "variables": variables})
    assert status == 200
    error = error_of(body)
    extensions = error["extensions"]
    assert (extensions["code"], extensions["status"]) == ("UPSTREAM_ERROR", 502)
    assert (extensions["appliedKeys"], extensions["failedKeys"]) == (["A", "B"], ["C", "D"])
    assert extensions["restart"]["mode"] == "RESTART" and extensions["restart"]["deploymentUuid"]
    assert "applied: A, B; not applied: C, D" in error["message"]
    assert "422" in error["message"]
    assert {key for key, _ in rows(world, app_uuid)} == {"A", "B"}
    audit = await EnvChange.get(id=int(extensions["changeId"]))
    assert (audit.applied_keys, audit.failed_keys) == (["A", "B"], ["C", "D"])
    assert SECRET not in str(body)


async def test_restart_false_and_apply_modes(env_gql: GraphQLClient, world: World) -> None:
    """`restart: false` restarts nothing; AUTO redeploys a git app for a build-time key; RESTART forces it."""
    docker_app = await deployed(world)
    _, body = await env_gql(SET_ENV, {"app": docker_app, "key": "A", "value": "1", "restart": False})
    assert body["data"]["setEnv"]["restart"] == {"mode": "NONE", "deploymentUuid": None, "alreadyQueued": False}
    assert world.calls("POST", RESTART) == [] and world.calls("POST", "/deploy$") == []

    git_app = await deployed(world, git=True)
    _, body = await env_gql(SET_ENV, {"app": git_app, "key": "A", "value": "1"})
    assert body["data"]["setEnv"]["restart"]["mode"] == "REDEPLOY"
    assert len(world.calls("POST", "/deploy$")) == 1 and world.calls("POST", RESTART) == []

    _, body = await env_gql(SET_ENV, {"app": git_app, "key": "B", "value": "1", "buildTime": False})
    assert body["data"]["setEnv"]["restart"]["mode"] == "RESTART"
    _, body = await env_gql(SET_ENV, {"app": docker_app, "key": "C", "value": "1", "apply": "REDEPLOY"})
    assert body["data"]["setEnv"]["restart"]["mode"] == "REDEPLOY"


async def test_a_change_no_worker_finished_is_an_upstream_error(
    env_gql: GraphQLClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the job gives no result, the error says whether anything can have changed, never a value."""
    app_uuid = await deployed(world)

    async def withdrawn(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise EnvJobError("no worker finished the env change within 130 s", started=False)

    monkeypatch.setattr("graphql_api.env.run_env_change", withdrawn)
    _, body = await env_gql(SET_ENV, {"app": app_uuid, "key": "A", "value": SECRET})
    error = error_of(body)
    assert error["extensions"]["code"] == "UPSTREAM_ERROR"
    assert error["extensions"]["failedKeys"] == ["A"] and "nothing was changed" in error["message"]
    audit = await EnvChange.get(id=int(error["extensions"]["changeId"]))
    assert audit.failed_keys == ["A"] and audit.error is not None
    assert SECRET not in str(body)


@pytest.fixture
async def secured_gql(make_app: Callable[..., Starlette], worker: None) -> AsyncIterator[GraphQLClient]:
    """A GraphQL client for an app with API tokens configured."""
    app = make_app(api_tokens=TOKENS)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http:
        yield GraphQLClient(http)


async def test_env_mutations_need_the_env_scope(secured_gql: GraphQLClient, world: World) -> None:
    """A token without the `env` scope gets FORBIDDEN for all three; one with it works and is audited."""
    app_uuid = await deployed(world)
    for name, variables in EACH_MUTATION:
        query = {"SET": SET_ENV, "BULK": BULK_SET_ENV, "DELETE": DELETE_ENV}[name]
        _, body = await secured_gql(query, {"app": app_uuid, **variables}, token=DEPLOY_TOKEN)
        assert error_of(body)["extensions"]["code"] == "FORBIDDEN"
    assert world.requests == []
    _, body = await secured_gql(SET_ENV, {"app": app_uuid, "key": "A", "value": SECRET}, token=ADMIN_TOKEN)
    assert "errors" not in body, body
    audit = await EnvChange.get(id=int(body["data"]["setEnv"]["changeId"]))
    assert audit.caller == "admin"


async def wait_completed(gql: GraphQLClient, deployment_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Poll `deployment` until it reaches a final status."""
    query = "query D($id: ID!) { deployment(id: $id) { status error applicationUuid envKeys } }"
    async with asyncio.timeout(timeout):
        while True:
            _, body = await gql(query, {"id": deployment_id})
            deployment: dict[str, Any] = body["data"]["deployment"]
            if deployment["status"] in ("COMPLETED", "FAILED"):
                return deployment
            await asyncio.sleep(0.05)


async def test_deploy_then_set_bulk_set_and_delete(
    env_gql: GraphQLClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """End to end: deploy, then change the environment three times; Coolify holds the values, each change
    restarted the app once, and no value appears in any response or captured log line."""
    caplog.set_level(logging.DEBUG)
    responses: list[dict[str, Any]] = []
    _, body = await env_gql(DEPLOY, {"input": {"env": [{"key": "INITIAL", "value": SECRET}]}})
    responses.append(body)
    deployment = await wait_completed(env_gql, body["data"]["deploy"]["id"])
    assert deployment["status"] == "COMPLETED", deployment["error"]
    app_uuid = deployment["applicationUuid"]
    assert ("INITIAL", False) in rows(world, app_uuid)
    restarts_before = len(world.calls("POST", RESTART))

    _, body = await env_gql(SET_ENV, {"app": app_uuid, "key": "ONE", "value": SECRET + "1"})
    responses.append(body)
    variables = [{"key": "TWO", "value": SECRET + "2"}, {"key": "INITIAL", "value": SECRET + "0"}]
    _, body = await env_gql(BULK_SET_ENV, {"app": app_uuid, "variables": variables})
    responses.append(body)
    _, body = await env_gql(DELETE_ENV, {"app": app_uuid, "key": "ONE"})
    responses.append(body)
    _, body = await env_gql(SET_ENV, {"app": app_uuid, "key": "1nvalid", "value": SECRET})
    responses.append(body)

    assert all("errors" not in b for b in responses[:-1]), responses
    assert error_of(responses[-1])["extensions"]["code"] == "BAD_USER_INPUT"
    stored = {key: row["value"] for (key, _), row in rows(world, app_uuid).items()}
    assert stored == {"INITIAL": SECRET + "0", "TWO": SECRET + "2"}
    assert len(world.calls("POST", RESTART)) - restarts_before == 3
    updates = [b["data"][name] for b, name in zip(responses[1:4], ["setEnv", "bulkSetEnv", "deleteEnv"], strict=True)]
    assert all(u["restart"]["mode"] == "RESTART" and u["restart"]["deploymentUuid"] for u in updates)
    assert await EnvChange.filter(application_uuid=app_uuid).count() == 3
    assert SECRET not in str(responses)
    assert caplog.records
    assert SECRET not in caplog.text
