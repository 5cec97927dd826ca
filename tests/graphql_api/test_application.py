"""`Deployment.application { envKeys }` and `Deployment.buildLog`: read live from Coolify (the sandbox, over
HTTP through ASGI), never with a value; null once Coolify has no application; UPSTREAM_ERROR without Coolify."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from graphql_api.app import create_app
from jobs.progress import record
from models import Deployment, DeploymentStage, DeploymentStatus
from sandbox.app import create_app as create_sandbox
from sandbox.state import SandboxConfig, World
from settings import CoolifySettings, Settings
from tests.env_support import sandbox_application
from tests.graphql_api.conftest import GraphQLClient, running

SECRET = "never-shown-value-123"
QUERY = """
query($id: ID!, $lines: Int) {
  deployment(id: $id) {
    application { uuid name status envKeys { key isBuildTime isRuntime isPreview isLiteral isMultiline } }
    buildLog(lines: $lines) { coolifyDeploymentUuid status totalLines visible lines { text stream at command } }
  }
}
"""


@pytest.fixture
def world() -> World:
    """A sandbox world with quick builds."""
    return World(SandboxConfig(build_queue_s=0.0, build_s=1.0, app_delete_s=0.5))


async def client_for(settings: Settings, world: World) -> AsyncIterator[GraphQLClient]:
    """A GraphQL client of an app whose Coolify client reaches the sandbox world through ASGI."""
    app = create_app(settings, cloud_transport=httpx.ASGITransport(create_sandbox(world)))
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http:
        yield GraphQLClient(http)


@pytest.fixture
async def gql(settings: Settings, world: World) -> AsyncIterator[GraphQLClient]:
    """The API, reading Coolify from the sandbox world."""
    async for client in client_for(settings, world):
        yield client


async def completed_deployment(redis: Redis, app_uuid: str | None) -> Deployment:
    """A stored COMPLETED deployment whose application is `app_uuid`."""
    row = await Deployment.create(spec={}, application_uuid=app_uuid)
    await record(redis, row, "done", status=DeploymentStatus.COMPLETED, stage=DeploymentStage.DONE)
    return row


async def test_env_keys_list_flags_and_never_values(gql: GraphQLClient, world: World, redis: Redis) -> None:
    """envKeys lists each env row's key and flags as Coolify has them, and no value appears in the response."""
    app_uuid = sandbox_application(world)
    world.add_env(app_uuid, "API_TOKEN", SECRET, is_buildtime=False, is_literal=True)
    world.add_env(app_uuid, "CERT", f"-----BEGIN\n{SECRET}", is_multiline=True)
    world.add_env(app_uuid, "API_TOKEN", SECRET, is_preview=True)
    row = await completed_deployment(redis, app_uuid)
    status, body = await gql(QUERY, {"id": str(row.id)})
    assert status == 200 and "errors" not in body, body
    application = body["data"]["deployment"]["application"]
    assert application["uuid"] == app_uuid and application["name"] == "web"
    keys = application["envKeys"]
    assert keys == [
        {"key": "API_TOKEN", "isBuildTime": False, "isRuntime": True, "isPreview": False, "isLiteral": True,
         "isMultiline": False},
        {"key": "CERT", "isBuildTime": True, "isRuntime": True, "isPreview": False, "isLiteral": False,
         "isMultiline": True},
        {"key": "API_TOKEN", "isBuildTime": True, "isRuntime": True, "isPreview": True, "isLiteral": False,
         "isMultiline": False},
    ]  # fmt: skip
    assert SECRET not in json.dumps(body)


async def test_build_log_is_the_tail_of_the_latest_build(gql: GraphQLClient, world: World, redis: Redis) -> None:
    """buildLog reads the newest Coolify deployment of the app and returns its last `lines` visible lines."""
    app_uuid = sandbox_application(world)
    app = world.applications[app_uuid]
    world.queue_deployment(app, outcome="finished", restart_only=False, force=False)
    world.advance(5)
    newest = world.queue_deployment(app, outcome="failed", restart_only=True, force=False)
    world.advance(5)
    row = await completed_deployment(redis, app_uuid)
    _, body = await gql(QUERY, {"id": str(row.id), "lines": 100})
    log = body["data"]["deployment"]["buildLog"]
    assert log["coolifyDeploymentUuid"] == newest.uuid
    assert log["status"] == "failed"
    assert log["visible"] is True
    assert log["totalLines"] == len(log["lines"]) >= 2
    assert any(line["stream"] == "stderr" and "Deployment failed" in line["text"] for line in log["lines"])
    _, body = await gql(QUERY, {"id": str(row.id), "lines": 1})
    tail = body["data"]["deployment"]["buildLog"]
    assert tail["lines"] == log["lines"][-1:] and tail["totalLines"] == log["totalLines"]


async def test_a_deleted_application_is_null(gql: GraphQLClient, world: World, redis: Redis) -> None:
    """Once Coolify has deleted the application, application and buildLog are null, without an error."""
    app_uuid = sandbox_application(world)
    world.queue_deployment(world.applications[app_uuid], outcome="finished", restart_only=False, force=False)
    world.delete_application(world.applications[app_uuid])
    world.advance(5)
    row = await completed_deployment(redis, app_uuid)
    _, body = await gql(QUERY, {"id": str(row.id)})
    assert "errors" not in body, body
    assert body["data"]["deployment"] == {"application": None, "buildLog": None}


async def test_a_deployment_without_application_has_none(gql: GraphQLClient, redis: Redis) -> None:
    """A deployment that never got an application answers null without asking Coolify."""
    row = await completed_deployment(redis, None)
    _, body = await gql(QUERY, {"id": str(row.id)})
    assert body["data"]["deployment"] == {"application": None, "buildLog": None}


async def test_lines_out_of_range_is_bad_user_input(gql: GraphQLClient, world: World, redis: Redis) -> None:
    """buildLog(lines:) accepts 0 to 1000."""
    row = await completed_deployment(redis, sandbox_application(world))
    _, body = await gql(QUERY, {"id": str(row.id), "lines": 1001})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "lines" in body["errors"][0]["message"]


async def test_without_coolify_settings_the_fields_are_upstream_errors(
    settings: Settings, world: World, redis: Redis
) -> None:
    """An API started without Coolify settings answers UPSTREAM_ERROR saying Coolify is not configured."""
    bare = settings.with_overrides(coolify=CoolifySettings())
    async for gql in client_for(bare, world):
        row = await completed_deployment(redis, sandbox_application(world))
        _, body = await gql(QUERY, {"id": str(row.id)})
        errors: list[dict[str, Any]] = body["errors"]
        assert {e["extensions"]["code"] for e in errors} == {"UPSTREAM_ERROR"}
        assert all("not configured" in e["message"] for e in errors)


async def test_coolify_failing_is_an_upstream_error(gql: GraphQLClient, world: World, redis: Redis) -> None:
    """A Coolify 5xx becomes UPSTREAM_ERROR naming Coolify."""
    row = await completed_deployment(redis, sandbox_application(world))
    world.faults.add_spec("server_error=500@GET:/applications/")
    _, body = await gql("query($id: ID!) { deployment(id: $id) { application { uuid } } }", {"id": str(row.id)})
    assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_ERROR"
    assert "Coolify" in body["errors"][0]["message"]
