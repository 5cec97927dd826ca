"""The `deploy` mutation: validation, slot reservation, the stored row and event, the enqueued job."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import httpx
from redis.exceptions import ConnectionError as RedisConnectionError
from saq import Queue
from starlette.applications import Starlette

from graphql_api.app import create_app
from graphql_api.context import Services
from jobs.enqueue import DEPLOY_FUNCTION, deploy_job_key
from jobs.envstash import read_values
from models import Deployment, DeploymentEvent, DropletSlot
from settings import Settings
from tests.graphql_api.conftest import DEPLOY, DROPLET_COUNT, GraphQLClient, running

SECRET = "s3cr3t-value-that-must-never-leak"


async def test_deploy_without_input_queues_the_default_image(gql: GraphQLClient, queue: Queue) -> None:
    """A bare `deploy` returns QUEUED with the defaults and enqueues exactly one job."""
    status, body = await gql("mutation { deploy { id status stage dropletName source { kind image tag } ports } }")
    assert status == 200
    assert "errors" not in body
    deployment = body["data"]["deploy"]
    assert deployment["status"] == "QUEUED"
    assert deployment["stage"] == "QUEUED"
    assert deployment["dropletName"] == f"eliza-{deployment['id']}"
    assert deployment["source"] == {"kind": "DOCKER", "image": "nginx", "tag": "alpine"}
    assert deployment["ports"] == [80]
    assert await queue.count("queued") == 1
    job = await queue.job(deploy_job_key(deployment["id"]))
    assert job is not None
    assert job.function == DEPLOY_FUNCTION
    assert job.kwargs is not None
    assert job.kwargs["deployment_id"] == deployment["id"]


async def test_deploy_stores_row_spec_and_first_event(gql: GraphQLClient, queue: Queue) -> None:
    """The row holds the spec with env keys only, and event 1 says the deployment is queued."""
    variables = {
        "input": {
            "name": "my-app",
            "source": {"git": {"repository": "https://github.com/acme/site", "buildPack": "STATIC"}},
            "ports": [3000, 443],
            "domains": ["https://app.example.com"],
            "region": "ams3",
            "env": [{"key": "API_KEY", "value": SECRET}],
        }
    }
    status, body = await gql(DEPLOY, variables)
    assert status == 200, body
    deployment = body["data"]["deploy"]
    row = await Deployment.get(id=deployment["id"])
    assert row.spec == {
        "name": "my-app",
        "source": {
            "kind": "git",
            "repository": "https://github.com/acme/site",
            "branch": "main",
            "build_pack": "static",
            "base_directory": None,
        },
        "ports": "3000,443",
        "domains": ["https://app.example.com"],
        "region": "ams3",
        "size": "s-1vcpu-1gb",
        "image": "ubuntu-24-04-x64",
        "env_keys": ["API_KEY"],
    }
    assert SECRET not in str(row.spec)
    events = await DeploymentEvent.filter(deployment_id=row.id)
    assert [(e.sequence, e.status.value, e.message) for e in events] == [(1, "QUEUED", "Deployment queued")]
    assert deployment["source"]["description"] == "git https://github.com/acme/site@main (STATIC)"
    assert deployment["envKeys"] == ["API_KEY"]
    assert SECRET not in str(body)


async def test_deploy_enqueues_env_with_defaults_and_input_winning(
    make_app: Any, gql: GraphQLClient, queue: Queue, settings: Settings
) -> None:
    """The job's stashed env is DEPLOYER_DEFAULT_ENV plus the input env (input wins); no value is in its arguments."""
    app = make_app(default_env=(("REGION", "eu"), ("API_KEY", "default")))
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http,
    ):
        client = GraphQLClient(http)
        env = [{"key": "API_KEY", "value": SECRET}, {"key": "DEBUG", "value": "1"}]
        status, body = await client(DEPLOY, {"input": {"env": env}})
    assert status == 200, body
    deployment = body["data"]["deploy"]
    job = await queue.job(deploy_job_key(deployment["id"]))
    assert job is not None
    assert job.kwargs is not None
    assert SECRET not in repr(job)
    stashed = await read_values(queue.redis, job.kwargs["env_ref"], secret_key=settings.secret_key)
    assert stashed == [
        {"key": "REGION", "value": "eu"},
        {"key": "API_KEY", "value": SECRET},
        {"key": "DEBUG", "value": "1"},
    ]
    assert deployment["envKeys"] == ["REGION", "API_KEY", "DEBUG"]


async def test_invalid_input_names_each_field_and_writes_nothing(gql: GraphQLClient, queue: Queue) -> None:
    """BAD_USER_INPUT lists every field path and reason; no row, no slot, no job."""
    variables = {
        "input": {
            "ports": [80, 70000, 80],
            "region": "NYC 3",
            "domains": ["ftp://x.example.com"],
            "source": {"git": {"repository": "https://github.com/a/b"}, "docker": {"image": "nginx"}},
            "env": [
                {"key": "1BAD", "value": SECRET},
                {"key": "OK", "value": "x"},
                {"key": "OK", "value": "y"},
            ],
        }
    }
    status, body = await gql(DEPLOY, variables)
    assert status == 200
    assert body["data"] is None
    [error] = body["errors"]
    extensions = error["extensions"]
    assert extensions["code"] == "BAD_USER_INPUT"
    assert extensions["status"] == 400
    fields = {item["field"]: item["message"] for item in extensions["fields"]}
    assert fields == {
        "input.source": "give exactly one of git or docker, not both",
        "input.ports[1]": "must be between 1 and 65535",
        "input.ports[2]": "repeats input.ports[0]",
        "input.domains[0]": "must be a URL starting with http:// or https://",
        "input.region": "must be a DigitalOcean slug: lowercase letters, digits and '-'",
        "input.env[0].key": "must start with a letter or '_' and hold only letters, digits, '_' and '.'",
        "input.env[2].key": "repeats input.env[1].key",
    }
    assert "input.ports[1]: must be between 1 and 65535" in error["message"]
    assert SECRET not in str(body)
    assert await Deployment.all().count() == 0
    assert await DropletSlot.filter(deployment_id__isnull=False).count() == 0
    assert await queue.count("queued") == 0


async def test_variable_coercion_error_is_bad_user_input_without_the_value(gql: GraphQLClient, queue: Queue) -> None:
    """A value of the wrong GraphQL type is BAD_USER_INPUT, and the value itself is not echoed."""
    status, body = await gql(DEPLOY, {"input": {"env": [{"key": "A", "value": 918273645}]}})
    assert status == 200
    [error] = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "status": 400}
    assert "env[0].value" in error["message"]
    assert "918273645" not in str(body)
    assert await queue.count("queued") == 0


async def test_fourth_deploy_hits_the_droplet_limit(gql: GraphQLClient, queue: Queue) -> None:
    """Three deployments take the three slots; the fourth gets DROPLET_LIMIT_REACHED (429) with the limit."""
    for _ in range(3):
        _, body = await gql("mutation { deploy { id } }")
        assert "errors" not in body, body
    _, body = await gql("mutation { deploy { id } }")
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "DROPLET_LIMIT_REACHED", "status": 429, "limit": 3, "held": 3}
    assert "limit of 3" in error["message"]
    assert await Deployment.all().count() == 3
    assert await queue.count("queued") == 3
    _status, body = await gql(DROPLET_COUNT)
    assert body["data"]["dropletCount"] == {"active": 3, "limit": 3, "available": 0}


async def test_concurrent_deploys_never_exceed_the_limit(gql: GraphQLClient, queue: Queue) -> None:
    """Twenty concurrent deploys on one app: exactly three are accepted."""
    results = await asyncio.gather(*(gql("mutation { deploy { id } }") for _ in range(20)))
    codes = [body["errors"][0]["extensions"]["code"] if "errors" in body else "OK" for _, body in results]
    assert codes.count("OK") == 3
    assert codes.count("DROPLET_LIMIT_REACHED") == 17
    assert await queue.count("queued") == 3


class FailingQueue:
    """A queue whose enqueue fails with `error` (the env stash still reaches the real Redis first)."""

    def __init__(self, real: Queue, error: Exception) -> None:
        self.redis = real.redis  # type: ignore[attr-defined]
        self.error = error

    async def enqueue(self, *args: object, **kwargs: object) -> None:
        """Fail as told."""
        raise self.error


async def assert_nothing_kept() -> None:
    """No deployment, event or held slot is left of a refused deploy."""
    assert await Deployment.all().count() == 0
    assert await DeploymentEvent.all().count() == 0
    assert await DropletSlot.filter(deployment_id__isnull=False).count() == 0


async def test_a_lost_redis_after_reservation_is_an_outage_and_releases_the_slot(
    app: Starlette, gql: GraphQLClient
) -> None:
    """Redis goes away between the reservation and the enqueue: the slot is released, the row removed, and the
    client is told that Redis is not answering and when to retry (SERVICE_UNAVAILABLE, not a masked bug)."""
    services: Services = app.state.services
    services.queue = FailingQueue(services.queue, RedisConnectionError("Error 111 connecting to 127.0.0.1:6379."))  # type: ignore[assignment]
    _status, body = await gql("mutation { deploy { id } }")
    [error] = body["errors"]
    assert error["extensions"] == {"code": "SERVICE_UNAVAILABLE", "status": 503, "retryAfter": 5}
    assert error["message"] == "Redis is not answering; try again in 5 s"
    assert "6379" not in str(body)
    await assert_nothing_kept()


async def test_failure_after_reservation_releases_the_slot(app: Starlette, gql: GraphQLClient) -> None:
    """When enqueueing fails with a bug, the slot is released and the row removed; the client sees a masked error."""
    services: Services = app.state.services
    services.queue = FailingQueue(services.queue, RuntimeError("queue broken"))  # type: ignore[assignment]
    _status, body = await gql("mutation { deploy { id } }")
    [error] = body["errors"]
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "status": 500}
    assert error["message"] == "Internal server error"
    assert "queue broken" not in str(body)
    await assert_nothing_kept()


async def test_deploy_id_is_a_uuid(gql: GraphQLClient) -> None:
    """The returned id is a UUID the deployment query accepts."""
    _, body = await gql("mutation { deploy { id } }")
    deployment_id = body["data"]["deploy"]["id"]
    assert uuid.UUID(deployment_id)
    _, body = await gql("query($id: ID!) { deployment(id: $id) { id } }", {"id": deployment_id})
    assert body["data"]["deployment"]["id"] == deployment_id


# -- DigitalOcean's catalog, checked before a slot is taken --------------------------------------------------


def problems_of(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) pairs of a BAD_USER_INPUT answer."""
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    return [(f["field"], f["message"]) for f in error["extensions"]["fields"]]


async def test_deploy_refuses_what_digitalocean_would_refuse(gql: GraphQLClient, queue: Queue) -> None:
    """An unknown region, a size not offered in the region and an unknown image are refused, each named, before a
    slot is taken or anything is queued."""
    status, body = await gql(DEPLOY, {"input": {"region": "mars1", "image": "windows-95"}})
    assert status == 200
    fields = dict(problems_of(body))
    assert fields["input.region"].startswith("is not a DigitalOcean region; regions: ")
    assert fields["input.image"] == "is not a DigitalOcean image (slug or id)"
    status, body = await gql(DEPLOY, {"input": {"region": "syd1", "size": "g-2vcpu-8gb"}})
    [(field, message)] = problems_of(body)
    assert field == "input.size"
    assert message.startswith("is not offered in region syd1; sizes there: ")
    assert await queue.count("queued") == 0
    assert await DropletSlot.filter(deployment_id__isnull=False).count() == 0
    assert await Deployment.all().count() == 0


async def test_a_bad_default_is_named_by_its_setting(make_app: Any, settings: Settings) -> None:
    """A default region DigitalOcean does not know is blamed on DROPLET_REGION, not on the caller."""
    app = make_app(digitalocean=replace(settings.digitalocean, region="atlantis1"))
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http:
        _, body = await GraphQLClient(http)(DEPLOY, {})
    [(field, message)] = problems_of(body)
    assert field == "input.region (default DROPLET_REGION)"
    assert message.startswith("is not a DigitalOcean region")


async def test_deploy_refuses_rather_than_queue_blind(settings: Settings, queue: Queue) -> None:
    """With no catalog read yet and DigitalOcean unreachable, deploy is UPSTREAM_ERROR and nothing is held."""
    app = create_app(
        settings.with_overrides(digitalocean=replace(settings.digitalocean, api_url="http://127.0.0.1:9")),
    )
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http:
        _, body = await GraphQLClient(http)(DEPLOY, {})
    [error] = body["errors"]
    assert error["extensions"]["code"] == "UPSTREAM_ERROR"
    assert "DigitalOcean's catalog could not be read" in error["message"]
    assert "not queued" in error["message"]
    assert await queue.count("queued") == 0
    assert await DropletSlot.filter(deployment_id__isnull=False).count() == 0


async def test_domains_with_dockercompose_are_refused(gql: GraphQLClient) -> None:
    """Coolify takes no `domains` for compose apps: refused up front, naming the field."""
    source = {"git": {"repository": "https://github.com/acme/stack", "buildPack": "DOCKERCOMPOSE"}}
    _, body = await gql(DEPLOY, {"input": {"source": source, "domains": ["https://app.example.com"]}})
    [(field, message)] = problems_of(body)
    assert field == "input.domains"
    assert "DOCKERCOMPOSE" in message


async def test_base_directory_is_stored_for_the_worker(gql: GraphQLClient) -> None:
    """baseDirectory is kept in the spec the worker builds the Coolify application from."""
    source = {"git": {"repository": "https://github.com/acme/mono", "baseDirectory": "/apps/web"}}
    _, body = await gql(DEPLOY, {"input": {"source": source}})
    assert "errors" not in body, body
    row = await Deployment.get(id=body["data"]["deploy"]["id"])
    assert row.spec["source"]["base_directory"] == "/apps/web"  # type: ignore[index]
