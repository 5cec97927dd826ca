"""Tests for clients/coolify.py: exact requests, records, validate fallback, deploy dedup and env vars."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from clients.coolify import (
    Application,
    CoolifyClient,
    CoolifyDeployment,
    DeployResult,
    EnvVar,
    EnvVarSpec,
    PrivateKey,
    Project,
    Server,
    ValidationFailure,
    classify_validation_failure,
    parse_build_logs,
    validation_text,
)
from clients.errors import (
    APIStatusError,
    APITimeoutError,
    CloudAPIError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    UpstreamServerError,
)
from clients.http import RetryPolicy, request_deadline
from tests.clients.conftest import FakeSleep

API_URL = "https://coolify.example.test"
V1 = f"{API_URL}/api/v1"
TOKEN = "3|Wm9vb29vb29vb29vb29vb29vbXNlY3JldA"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}
APP = "app-uuid-1"
DEDUP = "Deployment already queued for this commit."

FULL_FLAGS = {
    "is_preview": False,
    "is_literal": False,
    "is_multiline": False,
    "is_shown_once": False,
    "is_runtime": True,
    "is_buildtime": True,
}


@pytest.fixture
async def coolify(sleep: FakeSleep) -> AsyncIterator[CoolifyClient]:
    """A client with no jitter and the fake sleep."""
    async with CoolifyClient(api_url=API_URL, token=TOKEN, retry=RetryPolicy(jitter=0.0), sleep=sleep) as client:
        yield client


def env_json(key: str = "PORT", value: str | None = "3000", **flags: Any) -> dict[str, Any]:
    """An env object shaped like Coolify's."""
    return {
        "uuid": f"env-{key.lower()}",
        "key": key,
        "value": value,
        "real_value": value,
        "is_preview": False,
        "is_literal": False,
        "is_multiline": False,
        "is_shown_once": False,
        "is_runtime": True,
        "is_buildtime": True,
        "is_shared": False,
        "comment": None,
        "version": "4.3.11",
        **flags,
    }


def deployment_json(uuid: str, status: str, finished_at: str | None = None) -> dict[str, Any]:
    """A deployment queue row shaped like Coolify's."""
    return {
        "id": 1,
        "deployment_uuid": uuid,
        "status": status,
        "application_id": "7",
        "application_name": "eliza",
        "server_name": "srv",
        "commit": "HEAD",
        "created_at": "2026-01-01T00:00:00.000000Z",
        "finished_at": finished_at,
    }


# -- construction and private keys ---------------------------------------------------------------------


async def test_appends_api_v1_and_sends_bearer(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """The client appends /api/v1 and sends the whole '<id>|<secret>' token as bearer."""
    httpx_mock.add_response(
        method="GET",
        url=f"{V1}/security/keys",
        match_headers=AUTH,
        json=[
            {
                "uuid": "pk-1",
                "name": "deployer",
                "description": None,
                "public_key": "ssh-ed25519 AAAA",
                "fingerprint": "SHA256:abc",
                "is_git_related": False,
                "team_id": 0,
            }
        ],
    )
    keys = await coolify.list_private_keys()
    assert keys == [PrivateKey(uuid="pk-1", name="deployer", public_key="ssh-ed25519 AAAA", fingerprint="SHA256:abc")]


async def test_version_reads_the_plain_text_body(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """GET /api/v1/version answers plain text (not JSON), which the client returns as it is."""
    httpx_mock.add_response(method="GET", url=f"{V1}/version", match_headers=AUTH, text="4.3.11")
    assert await coolify.version() == "4.3.11"


async def test_repr_and_logger(coolify: CoolifyClient, httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture) -> None:
    """repr() hides the token; requests log on deployer.clients.coolify without it."""
    caplog.set_level(logging.DEBUG, logger="deployer.clients.coolify")
    httpx_mock.add_response(url=f"{V1}/servers", json=[])
    await coolify.list_servers()
    assert TOKEN not in repr(coolify)
    messages = [r.getMessage() for r in caplog.records if r.name == "deployer.clients.coolify"]
    assert len(messages) == 1
    assert messages[0].startswith("GET /api/v1/servers -> 200")
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_sandbox_transport() -> None:
    """A transport passed in gets the requests under the sandbox prefix."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == httpx.URL("http://sandbox/sandbox/coolify/api/v1/servers")
        return httpx.Response(200, json=[])

    async with CoolifyClient(
        api_url="http://sandbox/sandbox/coolify/", token=TOKEN, transport=httpx.MockTransport(handler)
    ) as client:
        assert await client.list_servers() == []


async def test_token_not_in_error(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """A 403 naming the token never shows it in str() or repr()."""
    httpx_mock.add_response(
        url=f"{V1}/servers", status_code=403, json={"success": True, "message": f"API is disabled. {TOKEN}"}
    )
    with pytest.raises(APIStatusError) as info:
        await coolify.list_servers()
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value)
    assert str(info.value).startswith("coolify GET /api/v1/servers -> 403: API is disabled.")


# -- servers -------------------------------------------------------------------------------------------


async def test_list_servers_reads_top_level_flags(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """The list shape has is_reachable/is_usable at the top level."""
    httpx_mock.add_response(
        url=f"{V1}/servers",
        json=[
            {
                "uuid": "s1",
                "name": "one",
                "ip": "203.0.113.7",
                "user": "root",
                "port": 22,
                "is_reachable": True,
                "is_usable": True,
                "settings": {"force_disabled": False},
            }
        ],
    )
    [server] = await coolify.list_servers()
    assert (server.uuid, server.ip, server.is_reachable, server.is_usable) == (
        "s1",
        "203.0.113.7",
        True,
        True,
    )
    assert server.usable


@pytest.mark.parametrize("shape", ["array", "object"])
async def test_list_active_deployments_reads_both_shapes(
    coolify: CoolifyClient, httpx_mock: HTTPXMock, shape: str
) -> None:
    """GET /deployments is an array, or an object keyed by position when Coolify's sortBy reorders its keys."""
    entries = [
        {"deployment_uuid": "d2", "status": "in_progress", "application_name": "two"},
        {"deployment_uuid": "d1", "status": "queued", "application_name": "one"},
    ]
    body: Any = entries if shape == "array" else {"1": entries[0], "0": entries[1]}
    httpx_mock.add_response(method="GET", url=f"{V1}/deployments", json=body)
    listed = await coolify.list_active_deployments()
    assert sorted((d.uuid, d.status) for d in listed) == [("d1", "queued"), ("d2", "in_progress")]


async def test_get_server_reads_settings(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """The single-server shape keeps the flags in settings, plus validation_logs and is_validating."""
    httpx_mock.add_response(
        method="GET",
        url=f"{V1}/servers/s1",
        match_headers=AUTH,
        json={
            "uuid": "s1",
            "name": "one",
            "ip": "203.0.113.7",
            "validation_logs": None,
            "is_validating": True,
            "unreachable_count": 0,
            "settings": {"is_reachable": True, "is_usable": False, "force_disabled": False},
        },
    )
    server = await coolify.get_server("s1")
    assert server == Server(
        uuid="s1",
        name="one",
        ip="203.0.113.7",
        is_reachable=True,
        is_usable=False,
        force_disabled=False,
        is_validating=True,
        validation_logs=None,
    )
    assert not server.usable


@pytest.mark.parametrize(
    ("settings", "logs", "usable"),
    [
        ({"is_reachable": True, "is_usable": True, "force_disabled": False}, None, True),
        ({"is_reachable": True, "is_usable": True, "force_disabled": True}, None, False),
        ({"is_reachable": False, "is_usable": False}, "Server is not reachable.", False),
        # The install job never clears logs: an old failure next to good flags is still usable.
        ({"is_reachable": True, "is_usable": True}, "Server is not reachable. Error: Connection refused", True),
        ({}, None, False),
    ],
)
def test_server_usable_reads_flags_not_logs(settings: dict[str, Any], logs: str | None, usable: bool) -> None:
    """usable needs reachable, usable and not force-disabled; leftover validation_logs are no verdict."""
    server = Server.from_api({"uuid": "s", "name": "n", "ip": "1.2.3.4", "settings": settings, "validation_logs": logs})
    assert server.usable is usable


UNREACHABLE_LOG = (
    "Server is not reachable. Please validate your configuration and connection.<br>Check this "
    '<a target="_blank" class="underline" href="https://coolify.io/docs/knowledge-base/server/openssh">'
    "documentation</a> for further help. <br><br>Error: ssh: connect to host 203.0.113.7 port 22: "
    "Connection refused"
)


@pytest.mark.parametrize(
    ("logs", "kind"),
    [
        (UNREACHABLE_LOG, ValidationFailure.UNREACHABLE),
        (UNREACHABLE_LOG.replace("Connection refused", "Connection timed out"), ValidationFailure.UNREACHABLE),
        (UNREACHABLE_LOG.replace("Connection refused", "No route to host"), ValidationFailure.UNREACHABLE),
        (
            UNREACHABLE_LOG.replace("ssh: connect to host 203.0.113.7 port 22: Connection refused", ""),
            ValidationFailure.UNREACHABLE,
        ),
        (
            UNREACHABLE_LOG.replace(
                "ssh: connect to host 203.0.113.7 port 22: Connection refused",
                "root@203.0.113.7: Permission denied (publickey).",
            ),
            ValidationFailure.KEY_REJECTED,
        ),
        ("Docker Engine could not be installed after 3 attempts.", ValidationFailure.OTHER),
        ("Server OS type is not supported.", ValidationFailure.OTHER),
    ],
)
def test_classify_validation_failure(logs: str, kind: ValidationFailure) -> None:
    """A refused, timed-out or unroutable SSH is 'not yet'; a refused key is final; anything else is other."""
    assert classify_validation_failure(logs) is kind


def test_validation_text_is_plain_one_line() -> None:
    """HTML tags and entities are gone, whitespace collapsed."""
    text = validation_text(UNREACHABLE_LOG.replace("Connection refused", "&quot;refused&quot;"))
    assert "<" not in text
    assert text.endswith('Error: ssh: connect to host 203.0.113.7 port 22: "refused"')


@pytest.mark.parametrize("raw", [None, "", "not json", "{}", json.dumps([1, "x", {"output": 5}])])
def test_parse_build_logs_tolerates_garbage(raw: str | None) -> None:
    """Missing or malformed logs give no lines, never an error."""
    assert parse_build_logs(raw) == []


async def test_get_deployment_keeps_logs(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """The deployment record keeps the raw logs and reads its visible lines."""
    logs = json.dumps([{"output": "Step 1/3", "type": "stdout", "hidden": False}])
    httpx_mock.add_response(
        url=f"{V1}/deployments/d1", json={"deployment_uuid": "d1", "status": "failed", "logs": logs}
    )
    deployment = await coolify.get_deployment("d1")
    assert [line.text for line in deployment.log or ()] == ["Step 1/3"]
    assert "Step" not in repr(deployment)


async def test_get_private_key_and_project(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """A key by uuid with its public half; a project with its environments' names."""
    httpx_mock.add_response(
        url=f"{V1}/security/keys/k1",
        match_headers=AUTH,
        json={"uuid": "k1", "name": "key", "public_key": "ssh-ed25519 AAAA", "fingerprint": "SHA256:x"},
    )
    httpx_mock.add_response(
        url=f"{V1}/projects/p1",
        match_headers=AUTH,
        json={"uuid": "p1", "name": "proj", "environments": [{"id": 1, "name": "production"}, {"name": "staging"}]},
    )
    key = await coolify.get_private_key("k1")
    assert (key.uuid, key.public_key) == ("k1", "ssh-ed25519 AAAA")
    assert await coolify.get_project("p1") == Project(uuid="p1", name="proj", environments=("production", "staging"))


async def test_create_server_exact_body(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """create_server POSTs name, ip, port, user, private key and proxy type (no None fields) and reads 201."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/servers",
        match_headers=JSON_AUTH,
        match_json={
            "name": "eliza-1",
            "ip": "203.0.113.7",
            "port": 22,
            "user": "root",
            "private_key_uuid": "pk-1",
            "proxy_type": "traefik",
        },
        status_code=201,
        json={"uuid": "srv-1"},
    )
    assert await coolify.create_server(name="eliza-1", ip="203.0.113.7", private_key_uuid="pk-1") == "srv-1"


async def test_create_server_with_description(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """Optional description, port, user and proxy type are sent when given."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/servers",
        match_json={
            "name": "n",
            "ip": "h.example",
            "port": 2222,
            "user": "deploy",
            "private_key_uuid": "pk",
            "proxy_type": "caddy",
            "description": "d",
        },
        status_code=201,
        json={"uuid": "srv-2"},
    )
    uuid = await coolify.create_server(
        name="n",
        ip="h.example",
        private_key_uuid="pk",
        description="d",
        port=2222,
        user="deploy",
        proxy_type="caddy",
    )
    assert uuid == "srv-2"


async def test_create_server_ip_in_use_is_conflict(
    coolify: CoolifyClient, httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """Coolify's 400 'already in use' becomes ConflictError, sent once."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/servers",
        status_code=400,
        json={"message": "A server with this IP/Domain is already in use."},
    )
    with pytest.raises(ConflictError) as info:
        await coolify.create_server(name="n", ip="203.0.113.7", private_key_uuid="pk")
    assert info.value.status_code == 400
    assert isinstance(info.value.__cause__, APIStatusError)
    assert sleep.calls == []


async def test_create_server_other_400_stays_status_error(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """Other 400s are not re-classified."""
    httpx_mock.add_response(method="POST", url=f"{V1}/servers", status_code=400, json={"message": "Invalid token."})
    with pytest.raises(APIStatusError) as info:
        await coolify.create_server(name="n", ip="203.0.113.7", private_key_uuid="pk")
    assert type(info.value) is APIStatusError


async def test_create_server_not_retried_on_5xx(
    coolify: CoolifyClient, httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """A create answered 500 is not re-sent."""
    httpx_mock.add_response(method="POST", url=f"{V1}/servers", status_code=500, json={"message": "Server Error"})
    with pytest.raises(UpstreamServerError):
        await coolify.create_server(name="n", ip="203.0.113.7", private_key_uuid="pk")
    assert len(httpx_mock.get_requests()) == 1
    assert sleep.calls == []


@pytest.mark.parametrize("install", [True, False])
async def test_validate_server_posts_install(coolify: CoolifyClient, httpx_mock: HTTPXMock, install: bool) -> None:
    """validate_server POSTs {"install": …} with JSON headers."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/servers/s1/validate",
        match_headers=JSON_AUTH,
        match_json={"install": install},
        status_code=201,
        json={"message": "Validation and installation started."},
    )
    await coolify.validate_server("s1", install=install)


def test_validate_server_installs_by_default() -> None:
    """install defaults to True, so Docker and the proxy get installed."""
    import inspect

    assert inspect.signature(CoolifyClient.validate_server).parameters["install"].default is True


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, {"message": "Not found.", "docs": "https://coolify.io/docs"}),
        (405, {"message": "The POST method is not supported for route api/v1/servers/s1/validate."}),
    ],
)
async def test_validate_server_falls_back_to_get(
    coolify: CoolifyClient, httpx_mock: HTTPXMock, status: int, body: dict[str, Any]
) -> None:
    """On Coolify ≤ 4.1 (route 404 'Not found.' or 405) the validation is started with GET instead."""
    httpx_mock.add_response(method="POST", url=f"{V1}/servers/s1/validate", status_code=status, json=body)
    httpx_mock.add_response(
        method="GET",
        url=f"{V1}/servers/s1/validate",
        match_headers=AUTH,
        json={"message": "Validation started."},
    )
    await coolify.validate_server("s1")
    assert [r.method for r in httpx_mock.get_requests()] == ["POST", "GET"]


async def test_validate_unknown_server_does_not_fall_back(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """A 404 'Server not found.' is a real NotFoundError, not a missing route."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/servers/nope/validate",
        status_code=404,
        json={"message": "Server not found."},
    )
    with pytest.raises(NotFoundError, match="Server not found"):
        await coolify.validate_server("nope")
    assert len(httpx_mock.get_requests()) == 1


async def test_delete_server(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """delete_server sends force=true by default and reports True."""
    httpx_mock.add_response(
        method="DELETE",
        url=f"{V1}/servers/s1?force=true",
        match_headers=AUTH,
        json={"message": "Server deleted."},
    )
    assert await coolify.delete_server("s1") is True


async def test_delete_server_gone_and_unforced(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """force=False is sent as false; a 404 means already gone: False."""
    httpx_mock.add_response(
        method="DELETE",
        url=f"{V1}/servers/s1?force=false",
        status_code=404,
        json={"message": "Server not found."},
    )
    assert await coolify.delete_server("s1", force=False) is False


async def test_path_ids_are_escaped(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """An id with '/' or '?' stays one path segment."""
    httpx_mock.add_response(url=httpx.URL(f"{V1}/servers/a%2Fb%3Fc"), json={"uuid": "x", "ip": "1.1.1.1", "name": "n"})
    await coolify.get_server("a/b?c")


# -- applications --------------------------------------------------------------------------------------


async def test_list_and_get_application(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """Applications read uuid, name, status, fqdn and build pack."""
    app = {
        "uuid": APP,
        "name": "eliza",
        "status": "running:healthy",
        "fqdn": "https://eliza.example",
        "build_pack": "dockerfile",
        "git_repository": "https://github.com/x/y",
    }
    httpx_mock.add_response(method="GET", url=f"{V1}/applications", json=[app])
    httpx_mock.add_response(method="GET", url=f"{V1}/applications/{APP}", json=app)
    expected = Application(
        uuid=APP,
        name="eliza",
        status="running:healthy",
        fqdn="https://eliza.example",
        build_pack="dockerfile",
    )
    assert await coolify.list_applications() == [expected]
    assert await coolify.get_application(APP) == expected


async def test_get_application_not_found(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """An unknown application is NotFoundError."""
    httpx_mock.add_response(url=f"{V1}/applications/x", status_code=404, json={"message": "Application not found."})
    with pytest.raises(NotFoundError):
        await coolify.get_application("x")


async def test_create_public_application_exact_body(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """The public-repo create sends the required fields, ports_exposes and instant_deploy false."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/applications/public",
        match_headers=JSON_AUTH,
        match_json={
            "project_uuid": "proj",
            "environment_name": "production",
            "server_uuid": "srv",
            "name": "eliza",
            "git_repository": "https://github.com/elizaOS/eliza",
            "git_branch": "main",
            "build_pack": "dockerfile",
            "ports_exposes": "3000",
            "instant_deploy": False,
            "description": "d",
            "domains": "https://eliza.example",
            "base_directory": "/apps/web",
        },
        status_code=201,
        json={"uuid": APP, "domains": "https://eliza.example"},
    )
    app = await coolify.create_public_application(
        project_uuid="proj",
        environment_name="production",
        server_uuid="srv",
        name="eliza",
        git_repository="https://github.com/elizaOS/eliza",
        git_branch="main",
        build_pack="dockerfile",
        ports_exposes="3000",
        description="d",
        domains="https://eliza.example",
        base_directory="/apps/web",
    )
    assert app == Application(
        uuid=APP, name="eliza", status=None, fqdn="https://eliza.example", build_pack="dockerfile"
    )


async def test_create_dockerimage_application_exact_body(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """The image create maps image/tag to docker_registry_image_* and omits unset optionals."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/applications/dockerimage",
        match_headers=JSON_AUTH,
        match_json={
            "project_uuid": "proj",
            "environment_name": "production",
            "server_uuid": "srv",
            "name": "eliza",
            "docker_registry_image_name": "ghcr.io/elizaos/eliza",
            "docker_registry_image_tag": "v1",
            "ports_exposes": "3000",
            "instant_deploy": False,
        },
        status_code=201,
        json={"uuid": APP, "domains": "http://generated.sslip.io"},
    )
    app = await coolify.create_dockerimage_application(
        project_uuid="proj",
        environment_name="production",
        server_uuid="srv",
        name="eliza",
        image="ghcr.io/elizaos/eliza",
        tag="v1",
        ports_exposes="3000",
    )
    assert (app.uuid, app.fqdn, app.build_pack, app.status) == (
        APP,
        "http://generated.sslip.io",
        "dockerimage",
        None,
    )


async def test_create_application_without_uuid_is_an_error(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """A 201 without a uuid breaks the contract and raises CloudAPIError."""
    httpx_mock.add_response(method="POST", url=f"{V1}/applications/dockerimage", status_code=201, json={})
    with pytest.raises(CloudAPIError, match="no 'uuid'"):
        await coolify.create_dockerimage_application(
            project_uuid="p",
            environment_name="e",
            server_uuid="s",
            name="n",
            image="i",
            tag="t",
            ports_exposes="80",
        )


async def test_create_application_conflict(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """A 409 domain conflict is ConflictError."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/applications/public",
        status_code=409,
        json={"message": "Domain conflicts detected.", "conflicts": [], "warning": "w"},
    )
    with pytest.raises(ConflictError):
        await coolify.create_public_application(
            project_uuid="p",
            environment_name="e",
            server_uuid="s",
            name="n",
            git_repository="https://g/r",
            git_branch="main",
            build_pack="nixpacks",
            ports_exposes="80",
        )


async def test_delete_application(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """DELETE returns True when queued, False when the app was already gone."""
    httpx_mock.add_response(
        method="DELETE",
        url=f"{V1}/applications/{APP}",
        json={"message": "Application deletion request queued."},
    )
    httpx_mock.add_response(
        method="DELETE",
        url=f"{V1}/applications/gone",
        status_code=404,
        json={"message": "Application not found."},
    )
    assert await coolify.delete_application(APP) is True
    assert await coolify.delete_application("gone") is False


# -- deployments ---------------------------------------------------------------------------------------


async def test_deploy_exact_request(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """deploy POSTs /deploy with {"uuid", "force"} and returns the queued deployment's uuid."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/deploy",
        match_headers=JSON_AUTH,
        match_json={"uuid": APP, "force": False},
        json={
            "deployments": [
                {
                    "message": "Application eliza deployment queued.",
                    "resource_uuid": APP,
                    "deployment_uuid": "dep-1",
                }
            ]
        },
    )
    result = await coolify.deploy(APP)
    assert result == DeployResult(
        deployment_uuid="dep-1", already_queued=False, message="Application eliza deployment queued."
    )


async def test_deploy_force(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """force=True is sent in the body."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/deploy",
        match_json={"uuid": APP, "force": True},
        json={"deployments": [{"message": "queued", "resource_uuid": APP, "deployment_uuid": "dep-2"}]},
    )
    assert (await coolify.deploy(APP, force=True)).deployment_uuid == "dep-2"


async def test_deploy_dedup_resolves_live_deployment(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """The dedup message's bogus uuid is ignored; the live deployment comes from the app's deployment list."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/deploy",
        json={"deployments": [{"message": DEDUP, "resource_uuid": APP, "deployment_uuid": "bogus"}]},
    )
    httpx_mock.add_response(
        method="GET",
        url=f"{V1}/deployments/applications/{APP}?skip=0&take=10",
        match_headers=AUTH,
        json={
            "count": 3,
            "deployments": [
                deployment_json("dep-new", "in_progress"),
                deployment_json("dep-old", "finished", "2026-01-01T00:01:00Z"),
                deployment_json("dep-older", "failed", "2026-01-01T00:00:30Z"),
            ],
        },
    )
    result = await coolify.deploy(APP)
    assert result == DeployResult(deployment_uuid="dep-new", already_queued=True, message=DEDUP)


async def test_deploy_dedup_without_live_deployment(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """When nothing is queued or running any more, the dedup result has no deployment uuid."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/deploy",
        json={"deployments": [{"message": DEDUP, "resource_uuid": APP, "deployment_uuid": "bogus"}]},
    )
    httpx_mock.add_response(
        url=f"{V1}/deployments/applications/{APP}?skip=0&take=10",
        json={"count": 1, "deployments": [deployment_json("dep-old", "finished", "x")]},
    )
    result = await coolify.deploy(APP)
    assert (result.deployment_uuid, result.already_queued) == (None, True)


async def test_deploy_picks_entry_for_the_app(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """With several entries the one whose resource_uuid is the app wins."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/deploy",
        json={
            "deployments": [
                {"message": "Service x started.", "resource_uuid": "svc"},
                {"message": "queued", "resource_uuid": APP, "deployment_uuid": "dep-3"},
            ]
        },
    )
    assert (await coolify.deploy(APP)).deployment_uuid == "dep-3"


async def test_deploy_queue_full_waits_retry_after_within_the_deadline(
    coolify: CoolifyClient, httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """A 429 from /deploy (queue full) was not processed: inside a step deadline it is sent again after the
    full Retry-After, even past the retry policy's usual cap."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/deploy",
        status_code=429,
        json={"message": "Deployment queue is full."},
        headers={"Retry-After": "60"},
    )
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/deploy",
        json={"deployments": [{"message": "queued", "resource_uuid": APP, "deployment_uuid": "dep-1"}]},
    )
    with request_deadline(600):
        result = await coolify.deploy(APP)
    assert result.deployment_uuid == "dep-1"
    assert sleep.calls == [60.0]


async def test_deploy_queue_full_raised_when_the_wait_does_not_fit(
    coolify: CoolifyClient, httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """A 429 whose Retry-After ends after the step's deadline reaches the caller at once, with retry_after."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/deploy",
        status_code=429,
        json={"message": "Deployment queue is full."},
        headers={"Retry-After": "60"},
    )
    with request_deadline(10), pytest.raises(RateLimitedError) as info:
        await coolify.deploy(APP)
    assert info.value.retry_after == 60.0
    assert len(httpx_mock.get_requests()) == 1
    assert sleep.calls == []


async def test_deploy_not_retried_on_timeout(coolify: CoolifyClient, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """A /deploy that times out is not re-sent."""
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), method="POST", url=f"{V1}/deploy")
    with pytest.raises(APITimeoutError):
        await coolify.deploy(APP)
    assert sleep.calls == []


async def test_deploy_unexpected_body(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """A /deploy answer without deployments raises CloudAPIError."""
    httpx_mock.add_response(method="POST", url=f"{V1}/deploy", json={"message": ["x"], "details": []})
    with pytest.raises(CloudAPIError, match="deployments"):
        await coolify.deploy(APP)


async def test_restart_application(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """restart POSTs a JSON body to /applications/{uuid}/restart and returns the restart deployment."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/applications/{APP}/restart",
        match_headers=JSON_AUTH,
        match_content=b"{}",
        json={"message": "Restart request queued.", "deployment_uuid": "dep-r"},
    )
    result = await coolify.restart_application(APP)
    assert result == DeployResult(deployment_uuid="dep-r", already_queued=False, message="Restart request queued.")


async def test_restart_dedup_resolves_live_deployment(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """A deduplicated restart (no uuid) resolves the queued deployment from the list."""
    httpx_mock.add_response(method="POST", url=f"{V1}/applications/{APP}/restart", json={"message": DEDUP})
    httpx_mock.add_response(
        url=f"{V1}/deployments/applications/{APP}?skip=0&take=10",
        json={"count": 1, "deployments": [deployment_json("dep-q", "queued")]},
    )
    result = await coolify.restart_application(APP)
    assert result == DeployResult(deployment_uuid="dep-q", already_queued=True, message=DEDUP)


async def test_list_application_deployments(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """skip/take are sent in the query and {count, deployments} is unwrapped."""
    httpx_mock.add_response(
        url=f"{V1}/deployments/applications/{APP}?skip=10&take=5",
        json={"count": 11, "deployments": [deployment_json("d1", "finished", "2026-01-01T00:00:00Z")]},
    )
    deployments = await coolify.list_application_deployments(APP, skip=10, take=5)
    assert deployments == [
        CoolifyDeployment(uuid="d1", status="finished", application_name="eliza", finished_at="2026-01-01T00:00:00Z")
    ]


async def test_list_application_deployments_bare_array(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """A bare array (as the spec claims) is accepted too."""
    httpx_mock.add_response(
        url=f"{V1}/deployments/applications/{APP}?skip=0&take=10", json=[deployment_json("d1", "queued")]
    )
    assert [d.uuid for d in await coolify.list_application_deployments(APP)] == ["d1"]


@pytest.mark.parametrize(
    ("status", "terminal", "succeeded"),
    [
        ("queued", False, False),
        ("in_progress", False, False),
        ("finished", True, True),
        ("failed", True, False),
        ("cancelled-by-user", True, False),
    ],
)
async def test_get_deployment_status(
    coolify: CoolifyClient, httpx_mock: HTTPXMock, status: str, terminal: bool, succeeded: bool
) -> None:
    """terminal covers finished/failed/cancelled-by-user; only finished succeeded."""
    httpx_mock.add_response(url=f"{V1}/deployments/dep-1", match_headers=AUTH, json=deployment_json("dep-1", status))
    deployment = await coolify.get_deployment("dep-1")
    assert deployment.uuid == "dep-1"
    assert (deployment.terminal, deployment.succeeded) == (terminal, succeeded)


async def test_get_deployment_retried_on_5xx(coolify: CoolifyClient, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """Polling GETs ride out a transient 502."""
    httpx_mock.add_response(url=f"{V1}/deployments/dep-1", status_code=502)
    httpx_mock.add_response(url=f"{V1}/deployments/dep-1", json=deployment_json("dep-1", "queued"))
    assert (await coolify.get_deployment("dep-1")).status == "queued"
    assert sleep.calls == [0.5]


# -- env vars ------------------------------------------------------------------------------------------


def test_env_spec_body_has_full_flag_set() -> None:
    """to_body always carries every flag, with Coolify's defaults."""
    assert EnvVarSpec(key="PORT", value="3000").to_body() == {"key": "PORT", "value": "3000", **FULL_FLAGS}


def test_env_spec_hides_value_in_repr() -> None:
    """Neither the spec's nor the record's repr shows the value."""
    spec = EnvVarSpec(key="API_KEY", value="sk-secret-value")
    record = EnvVar.from_api(env_json("API_KEY", "sk-secret-value"))
    assert "sk-secret-value" not in repr(spec)
    assert "sk-secret-value" not in repr(record)
    assert record.value == "sk-secret-value"


@pytest.mark.parametrize("key", ["", "1ABC", "A-B", "A B", "X" * 256])
def test_env_spec_rejects_bad_keys(key: str) -> None:
    """Keys Coolify would reject fail before any request."""
    with pytest.raises(ValueError, match="invalid env key"):
        EnvVarSpec(key=key, value="v")


async def test_list_envs(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """list_envs reads every row; hidden values come back as None."""
    httpx_mock.add_response(
        url=f"{V1}/applications/{APP}/envs",
        json=[env_json("PORT", "3000"), env_json("SECRET", None, is_shown_once=True, is_preview=True)],
    )
    envs = await coolify.list_envs(APP)
    assert [(e.key, e.value, e.is_preview, e.is_shown_once) for e in envs] == [
        ("PORT", "3000", False, False),
        ("SECRET", None, True, True),
    ]


async def test_create_env_exact_body(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """create_env POSTs the full flag set and returns the new row's uuid."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/applications/{APP}/envs",
        match_headers=JSON_AUTH,
        match_json={
            "key": "NODE_ENV",
            "value": "production",
            **FULL_FLAGS,
            "is_literal": True,
            "comment": "c",
        },
        status_code=201,
        json={"uuid": "env-1"},
    )
    spec = EnvVarSpec(key="NODE_ENV", value="production", is_literal=True, comment="c")
    assert await coolify.create_env(APP, spec) == "env-1"


async def test_create_env_conflict(coolify: CoolifyClient, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """An existing key is a 409 ConflictError, sent once."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/applications/{APP}/envs",
        status_code=409,
        json={"message": "Environment variable already exists. Use PATCH request to update it."},
    )
    with pytest.raises(ConflictError, match="already exists"):
        await coolify.create_env(APP, EnvVarSpec(key="PORT", value="1"))
    assert sleep.calls == []


async def test_create_env_validation_error_hides_value(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """A 422 names the failing fields but the error text never carries the value sent."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V1}/applications/{APP}/envs",
        status_code=422,
        json={"message": "Validation failed.", "errors": {"is_build_time": ["This field is not allowed."]}},
    )
    with pytest.raises(ConflictError) as info:
        await coolify.create_env(APP, EnvVarSpec(key="PORT", value="super-secret-value"))
    assert "super-secret-value" not in str(info.value)
    assert "is_build_time" in str(info.value)


async def test_update_env_exact_body(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """update_env PATCHes by key with the full flag set and returns the updated row."""
    httpx_mock.add_response(
        method="PATCH",
        url=f"{V1}/applications/{APP}/envs",
        match_headers=JSON_AUTH,
        match_json={"key": "PORT", "value": "8080", **FULL_FLAGS, "is_runtime": False},
        status_code=201,
        json=env_json("PORT", "8080", is_runtime=False),
    )
    env = await coolify.update_env(APP, EnvVarSpec(key="PORT", value="8080", is_runtime=False))
    assert (env.uuid, env.key, env.value, env.is_runtime, env.is_buildtime) == (
        "env-port",
        "PORT",
        "8080",
        False,
        True,
    )


async def test_update_env_missing_key(coolify: CoolifyClient, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """PATCH of an unknown key is NotFoundError (no upsert), sent once."""
    httpx_mock.add_response(
        method="PATCH",
        url=f"{V1}/applications/{APP}/envs",
        status_code=404,
        json={"message": "Environment variable not found."},
    )
    with pytest.raises(NotFoundError):
        await coolify.update_env(APP, EnvVarSpec(key="NOPE", value="x"))
    assert len(httpx_mock.get_requests()) == 1


async def test_update_env_not_retried_on_5xx(coolify: CoolifyClient, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """PATCH is never re-sent, even on 503."""
    httpx_mock.add_response(method="PATCH", url=f"{V1}/applications/{APP}/envs", status_code=503)
    with pytest.raises(UpstreamServerError):
        await coolify.update_env(APP, EnvVarSpec(key="PORT", value="1"))
    assert len(httpx_mock.get_requests()) == 1
    assert sleep.calls == []


async def test_bulk_update_envs_exact_body(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """bulk_update_envs PATCHes {"data": [...]} with each item's full flag set."""
    httpx_mock.add_response(
        method="PATCH",
        url=f"{V1}/applications/{APP}/envs/bulk",
        match_headers=JSON_AUTH,
        match_json={
            "data": [
                {"key": "A", "value": "1", **FULL_FLAGS},
                {"key": "B", "value": "2", **FULL_FLAGS, "is_multiline": True, "is_buildtime": False},
            ]
        },
        status_code=201,
        json=[env_json("A", "1"), env_json("B", "2", is_multiline=True, is_buildtime=False)],
    )
    envs = await coolify.bulk_update_envs(
        APP,
        [
            EnvVarSpec(key="A", value="1"),
            EnvVarSpec(key="B", value="2", is_multiline=True, is_buildtime=False),
        ],
    )
    assert [(e.key, e.is_multiline, e.is_buildtime) for e in envs] == [("A", False, True), ("B", True, False)]


async def test_bulk_update_envs_rejects_empty(coolify: CoolifyClient) -> None:
    """An empty list fails locally instead of Coolify's 400 'Bulk data is required.'."""
    with pytest.raises(ValueError, match="must not be empty"):
        await coolify.bulk_update_envs(APP, [])


async def test_bulk_update_envs_bad_body(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """A non-array bulk answer raises CloudAPIError naming the PATCH."""
    httpx_mock.add_response(method="PATCH", url=f"{V1}/applications/{APP}/envs/bulk", status_code=201, json={})
    with pytest.raises(CloudAPIError, match=r"coolify PATCH /api/v1/applications/app-uuid-1/envs/bulk"):
        await coolify.bulk_update_envs(APP, [EnvVarSpec(key="A", value="1")])


async def test_delete_env(coolify: CoolifyClient, httpx_mock: HTTPXMock) -> None:
    """delete_env deletes by env uuid: True when deleted, False when already gone."""
    httpx_mock.add_response(
        method="DELETE",
        url=f"{V1}/applications/{APP}/envs/env-1",
        match_headers=AUTH,
        json={"message": "Environment variable deleted."},
    )
    httpx_mock.add_response(
        method="DELETE",
        url=f"{V1}/applications/{APP}/envs/env-2",
        status_code=404,
        json={"message": "Environment variable not found."},
    )
    assert await coolify.delete_env(APP, "env-1") is True
    assert await coolify.delete_env(APP, "env-2") is False


def test_parse_build_logs_keeps_visible_lines_without_colour_codes() -> None:
    """Hidden entries are skipped, ANSI sequences stripped, multi-line output split, and junk gives nothing."""
    import json

    from clients.coolify import BuildLogLine, parse_build_logs

    raw = json.dumps(
        [
            {"command": "docker build .", "output": "", "type": "stdout", "hidden": False, "timestamp": "t0"},
            {"command": None, "output": "\x1b[32mStep 1/2\x1b[0m\r\nStep 2/2\n", "type": "stdout", "hidden": False,
             "timestamp": "t1"},
            {"command": "[CMD]: secret", "output": "debug only", "type": "stdout", "hidden": True, "timestamp": "t2"},
            {"command": None, "output": "exit code 1", "type": "stderr", "hidden": False, "timestamp": "t3"},
        ]
    )  # fmt: skip
    assert parse_build_logs(raw) == [
        BuildLogLine("Step 1/2", "stdout", "t1", None),
        BuildLogLine("Step 2/2", "stdout", "t1", None),
        BuildLogLine("exit code 1", "stderr", "t3", None),
    ]
    assert parse_build_logs("not json") == []
    assert parse_build_logs(None) == []
    assert parse_build_logs('{"a": 1}') == []
