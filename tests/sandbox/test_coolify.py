"""Tests for the simulated Coolify API: probes, servers, applications, deployments and env vars."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sandbox import ManualClock, World

CO = "/sandbox/coolify/api/v1"
KEY = "sandbox-private-key"


@pytest.fixture
async def server(client: httpx.AsyncClient, clock: ManualClock) -> str:
    """The uuid of a server validated with install (ready)."""
    created = await client.post(f"{CO}/servers", json={"name": "s1", "ip": "203.0.113.10", "private_key_uuid": KEY})
    uuid = str(created.json()["uuid"])
    await client.post(f"{CO}/servers/{uuid}/validate", json={"install": True})
    clock.advance(5)
    return uuid


def _public(server: str, **fields: Any) -> dict[str, Any]:
    body = {
        "project_uuid": "sandbox-project",
        "environment_name": "production",
        "server_uuid": server,
        "name": "web",
        "git_repository": "https://github.com/coollabsio/coolify-examples",
        "git_branch": "main",
        "build_pack": "nixpacks",
        "ports_exposes": "3000",
    }
    return {**body, **fields}


@pytest.fixture
async def app(client: httpx.AsyncClient, server: str) -> str:
    """The uuid of a public application on the ready server."""
    response = await client.post(f"{CO}/applications/public", json=_public(server))
    assert response.status_code == 201, response.text
    return str(response.json()["uuid"])


async def _deploy(client: httpx.AsyncClient, app: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"{CO}/deploy", json={"uuid": app, **body})
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = response.json()["deployments"][0]
    return entry


def _env(key: str, value: str = "v", **flags: Any) -> dict[str, Any]:
    body = {"key": key, "value": value, "is_preview": False, "is_literal": False, "is_multiline": False}
    return {
        **body,
        "is_shown_once": False,
        "is_runtime": True,
        "is_buildtime": True,
        "comment": None,
        **flags,
    }


# ---------------------------------------------------------------- probes, auth, errors


async def test_health_needs_no_token_and_is_plain_ok(client: httpx.AsyncClient) -> None:
    """/api/health and /api/v1/health answer plain OK without a token."""
    for path in ("/sandbox/coolify/api/health", f"{CO}/health"):
        response = await client.get(path, headers={"Authorization": ""})
        assert (response.status_code, response.text) == (200, "OK")


async def test_version_is_plain_text(client: httpx.AsyncClient) -> None:
    """/version answers the bare version string, not JSON."""
    response = await client.get(f"{CO}/version")
    assert (response.status_code, response.text) == (200, "4.3.11")
    assert response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer   ", "Token x"])
async def test_missing_token_is_unauthenticated(client: httpx.AsyncClient, header: str) -> None:
    """A missing or empty bearer token is 401 Unauthenticated."""
    response = await client.get(f"{CO}/servers", headers={"Authorization": header})
    assert (response.status_code, response.json()) == (401, {"message": "Unauthenticated."})


async def test_unknown_route_and_wrong_method(client: httpx.AsyncClient) -> None:
    """Unknown routes are Laravel's 404 JSON; a wrong method is 405 naming the supported methods."""
    missing = await client.get(f"{CO}/nothing-here")
    assert missing.json() == {"message": "Not found.", "docs": "https://coolify.io/docs"}
    wrong = await client.put(f"{CO}/servers")
    assert wrong.status_code == 405
    assert wrong.json()["message"].endswith("Supported methods: GET, HEAD, POST.")


async def test_throttle_headers_on_responses(client: httpx.AsyncClient) -> None:
    """Every token-guarded response carries X-RateLimit-Limit and X-RateLimit-Remaining."""
    response = await client.get(f"{CO}/projects")
    assert (response.headers["x-ratelimit-limit"], response.headers["x-ratelimit-remaining"]) == (
        "200",
        "199",
    )


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"content": b'{"ip": "1.2.3.4"}'}, "Content-Type must be application/json."),
        ({"content": b"{nope", "headers": {"Content-Type": "application/json"}}, "Invalid JSON."),
        ({"content": b"[]", "headers": {"Content-Type": "application/json"}}, "Invalid JSON."),
        ({"json": {}}, "Empty JSON."),
    ],
)
async def test_bodies_must_be_non_empty_json(client: httpx.AsyncClient, kwargs: dict[str, Any], error: str) -> None:
    """A body that is not JSON, not valid, or empty is a 400 "Invalid request."."""
    response = await client.post(f"{CO}/servers", **kwargs)
    assert (response.status_code, response.json()) == (400, {"message": "Invalid request.", "error": error})


# ---------------------------------------------------------------- keys and projects


async def test_seeded_private_key_and_project(client: httpx.AsyncClient, world: World) -> None:
    """The seeded private key shows its public key; the seeded project has a production environment."""
    [key] = (await client.get(f"{CO}/security/keys")).json()
    assert key["uuid"] == KEY
    assert key["public_key"] == " ".join(world.config.coolify_public_key.split()[:2])
    assert (await client.get(f"{CO}/security/keys/{KEY}")).json()["uuid"] == KEY
    assert (await client.get(f"{CO}/security/keys/nope")).status_code == 404
    [project] = (await client.get(f"{CO}/projects")).json()
    assert project["uuid"] == "sandbox-project"
    detail = (await client.get(f"{CO}/projects/sandbox-project")).json()
    assert [e["name"] for e in detail["environments"]] == ["production"]
    assert (await client.get(f"{CO}/projects/nope")).status_code == 404


# ---------------------------------------------------------------- servers


async def test_server_create_and_read(client: httpx.AsyncClient) -> None:
    """A new server is 201 {uuid}; the list copies the flags to the top level, GET one keeps them nested."""
    created = await client.post(f"{CO}/servers", json={"name": "s", "ip": "198.51.100.7", "private_key_uuid": KEY})
    assert created.status_code == 201
    uuid = created.json()["uuid"]
    [listed] = (await client.get(f"{CO}/servers")).json()
    assert (listed["uuid"], listed["is_reachable"], listed["is_usable"]) == (uuid, False, False)
    one = (await client.get(f"{CO}/servers/{uuid}")).json()
    assert "is_reachable" not in one
    assert (one["settings"]["is_reachable"], one["settings"]["force_disabled"], one["validation_logs"]) == (
        False,
        False,
        None,
    )
    assert (one["port"], one["user"], one["is_validating"]) == (22, "root", False)
    assert (await client.get(f"{CO}/servers/nope")).json() == {"message": "Server not found."}


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        ({"ip": "1.1.1.1", "private_key_uuid": KEY, "is_build_time": 1}, 422, {"is_build_time"}),
        ({"private_key_uuid": KEY}, 422, {"ip"}),
        ({"ip": "1.1.1.1"}, 422, {"private_key_uuid"}),
        ({"ip": "1.1.1.1", "private_key_uuid": KEY, "port": "ssh"}, 422, {"port"}),
        ({"ip": "1.1.1.1", "private_key_uuid": "missing"}, 404, "Private key not found."),
        ({"ip": "1.1.1.1", "private_key_uuid": KEY, "proxy_type": "nginx"}, 422, "Invalid proxy type."),
    ],
)
async def test_server_create_errors(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, expected: Any
) -> None:
    """Unknown fields, missing ip/key, bad types, unknown keys and proxy types are refused."""
    response = await client.post(f"{CO}/servers", json=body)
    assert response.status_code == status
    if isinstance(expected, set):
        assert set(response.json()["errors"]) == expected
    else:
        assert response.json()["message"] == expected


async def test_unknown_field_says_not_allowed(client: httpx.AsyncClient) -> None:
    """The strict allow-list answers "This field is not allowed." for an unknown key."""
    body = {"ip": "1.1.1.1", "private_key_uuid": KEY, "tags": ["x"]}
    response = await client.post(f"{CO}/servers", json=body)
    assert response.json() == {
        "message": "Validation failed.",
        "errors": {"tags": ["This field is not allowed."]},
    }


async def test_server_ip_is_unique(client: httpx.AsyncClient) -> None:
    """A second server with the same IP is a 400 "already in use"."""
    body = {"ip": "192.0.2.5", "private_key_uuid": KEY}
    assert (await client.post(f"{CO}/servers", json=body)).status_code == 201
    again = await client.post(f"{CO}/servers", json=body)
    assert (again.status_code, again.json()) == (
        400,
        {"message": "A server with this IP/Domain is already in use."},
    )


async def test_validate_is_async_and_post_only(client: httpx.AsyncClient, clock: ManualClock) -> None:
    """POST validate answers 201 at once; the job is picked up, installs Docker, then the flags flip; GET is 405."""
    uuid = (await client.post(f"{CO}/servers", json={"ip": "192.0.2.6", "private_key_uuid": KEY})).json()["uuid"]
    get = await client.get(f"{CO}/servers/{uuid}/validate")
    assert (get.status_code, get.headers["allow"]) == (405, "POST")
    assert get.json() == {"message": "This endpoint has changed to a POST request."}
    started = await client.post(f"{CO}/servers/{uuid}/validate", json={"install": True})
    assert (started.status_code, started.json()) == (201, {"message": "Validation and installation started."})
    queued = (await client.get(f"{CO}/servers/{uuid}")).json()
    assert (queued["is_validating"], queued["settings"]["is_reachable"]) == (False, False)  # not picked up yet
    clock.advance(0.5)
    during = (await client.get(f"{CO}/servers/{uuid}")).json()
    assert (during["is_validating"], during["settings"]["is_reachable"], during["settings"]["is_usable"]) == (
        True,
        True,
        False,
    )
    clock.advance(2)
    after = (await client.get(f"{CO}/servers/{uuid}")).json()
    assert (after["is_validating"], after["settings"]["is_reachable"], after["settings"]["is_usable"]) == (
        False,
        True,
        True,
    )
    assert after["proxy"]["status"] == "running"
    plain = await client.post(f"{CO}/servers/{uuid}/validate")
    assert plain.json() == {"message": "Validation started."}
    assert (await client.post(f"{CO}/servers/nope/validate")).status_code == 404
    bad = await client.post(f"{CO}/servers/{uuid}/validate", json={"install": "maybe"})
    assert (bad.status_code, bad.json()["errors"]) == (422, {"install": ["The install field must be true or false."]})


async def test_instant_validate_runs_plain_validation(client: httpx.AsyncClient, clock: ManualClock) -> None:
    """instant_validate queues plain validation, which does not install Docker on a fresh server."""
    body = {"ip": "192.0.2.7", "private_key_uuid": KEY, "instant_validate": True}
    uuid = (await client.post(f"{CO}/servers", json=body)).json()["uuid"]
    clock.advance(2)
    server = (await client.get(f"{CO}/servers/{uuid}")).json()
    assert (server["settings"]["is_reachable"], server["settings"]["is_usable"]) == (True, False)
    assert "Docker Engine is not installed" in server["validation_logs"]


async def test_server_delete_needs_force_while_it_has_resources(
    client: httpx.AsyncClient, server: str, app: str
) -> None:
    """Deleting a server with applications is 400 unless forced; forced, it is gone and its apps follow."""
    refused = await client.delete(f"{CO}/servers/{server}")
    assert (refused.status_code, refused.json()["message"]) == (
        400,
        "Server has resources, so you need to delete them before.",
    )
    deleted = await client.delete(f"{CO}/servers/{server}", params={"force": "true"})
    assert (deleted.status_code, deleted.json()) == (200, {"message": "Server deleted."})
    assert (await client.get(f"{CO}/servers/{server}")).status_code == 404
    assert (await client.delete(f"{CO}/servers/{server}")).status_code == 404


# ---------------------------------------------------------------- applications


async def test_create_public_application(client: httpx.AsyncClient, server: str) -> None:
    """POST /applications/public is 201 {uuid, domains} with an sslip.io domain; the app starts exited."""
    response = await client.post(f"{CO}/applications/public", json=_public(server))
    assert response.status_code == 201
    uuid, domains = response.json()["uuid"], response.json()["domains"]
    assert domains == f"http://{uuid}.203.0.113.10.sslip.io"
    app = (await client.get(f"{CO}/applications/{uuid}")).json()
    assert (app["name"], app["fqdn"], app["status"], app["build_pack"]) == (
        "web",
        domains,
        "exited",
        "nixpacks",
    )
    assert [a["uuid"] for a in (await client.get(f"{CO}/applications")).json()] == [uuid]


async def test_create_dockerimage_application(client: httpx.AsyncClient, server: str) -> None:
    """POST /applications/dockerimage takes the image name and tag, and environment_uuid works too."""
    body = {
        "project_uuid": "sandbox-project",
        "environment_uuid": "sandbox-production",
        "server_uuid": server,
        "docker_registry_image_name": "nginx",
        "docker_registry_image_tag": "1.27",
        "ports_exposes": "80",
        "domains": "https://web.example.com",
    }
    response = await client.post(f"{CO}/applications/dockerimage", json=body)
    assert (response.status_code, response.json()["domains"]) == (201, "https://web.example.com")
    app = (await client.get(f"{CO}/applications/{response.json()['uuid']}")).json()
    assert (app["docker_registry_image_name"], app["docker_registry_image_tag"]) == ("nginx", "1.27")


@pytest.mark.parametrize(
    ("fields", "status", "expected"),
    [
        ({"environment_name": None}, 422, "You need to provide at least one of"),
        ({"is_build_time": True}, 422, {"is_build_time": ["This field is not allowed."]}),
        ({"git_repository": None}, 422, {"git_repository": ["The git repository field is required."]}),
        ({"build_pack": "heroku"}, 422, {"build_pack": ["The selected build pack is invalid."]}),
        ({"ports_exposes": "web"}, 422, {"ports_exposes": ["The ports exposes field format is invalid."]}),
        ({"project_uuid": "nope"}, 404, "Project not found."),
        ({"environment_name": "staging"}, 404, "Environment not found."),
        ({"server_uuid": "nope"}, 404, "Server not found."),
    ],
)
async def test_create_application_errors(
    client: httpx.AsyncClient, server: str, fields: dict[str, Any], status: int, expected: Any
) -> None:
    """Missing environment, unknown fields, bad git fields and unknown ids are refused like Coolify does."""
    body = {k: v for k, v in _public(server, **fields).items() if v is not None}
    response = await client.post(f"{CO}/applications/public", json=body)
    assert response.status_code == status
    if isinstance(expected, dict):
        assert response.json()["errors"] == expected
    else:
        assert response.json()["message"].startswith(expected)


async def test_base_directory_is_stored_and_shown(client: httpx.AsyncClient, server: str) -> None:
    """base_directory is in the allow-list (public and dockerimage), stored, and shown by GET; default "/"."""
    created = await client.post(f"{CO}/applications/public", json=_public(server, base_directory="/apps/web"))
    assert created.status_code == 201, created.text
    app = (await client.get(f"{CO}/applications/{created.json()['uuid']}")).json()
    assert app["base_directory"] == "/apps/web"
    plain = (await client.post(f"{CO}/applications/public", json=_public(server, name="other"))).json()
    assert (await client.get(f"{CO}/applications/{plain['uuid']}")).json()["base_directory"] == "/"
    image = {
        "project_uuid": "sandbox-project",
        "environment_name": "production",
        "server_uuid": server,
        "docker_registry_image_name": "nginx",
        "base_directory": "/srv",
    }
    assert (await client.post(f"{CO}/applications/dockerimage", json=image)).status_code == 201


async def test_base_directory_must_be_an_absolute_path(client: httpx.AsyncClient, server: str) -> None:
    """A base_directory that is not ``/``-rooted is refused (ValidationPatterns::directoryPathRules)."""
    response = await client.post(f"{CO}/applications/public", json=_public(server, base_directory="apps/web"))
    assert (response.status_code, response.json()["errors"]) == (
        422,
        {"base_directory": ["The base directory field format is invalid."]},
    )


@pytest.mark.parametrize("domains", ["https://a.example.com", None, ""])
async def test_dockercompose_refuses_domains(client: httpx.AsyncClient, server: str, domains: str | None) -> None:
    """With the dockercompose build pack, any ``domains`` key (even null) is a 422 naming docker_compose_domains."""
    body = {**_public(server, build_pack="dockercompose"), "domains": domains}
    response = await client.post(f"{CO}/applications/public", json=body)
    assert (response.status_code, response.json()) == (
        422,
        {
            "message": "Validation failed.",
            "errors": {
                "domains": "The domains field cannot be used for dockercompose applications. "
                "Use docker_compose_domains instead to set domains for individual services."
            },
        },
    )
    without = await client.post(f"{CO}/applications/public", json=_public(server, build_pack="dockercompose"))
    assert without.status_code == 201


async def test_github_repositories_are_stored_as_owner_and_name(client: httpx.AsyncClient, server: str) -> None:
    """Coolify stores a github.com URL as ``owner/repo``; other hosts keep the URL as sent."""
    github = (await client.post(f"{CO}/applications/public", json=_public(server))).json()["uuid"]
    assert (await client.get(f"{CO}/applications/{github}")).json()["git_repository"] == "coollabsio/coolify-examples"
    url = "https://gitlab.com/group/project"
    other = await client.post(f"{CO}/applications/public", json=_public(server, name="gl", git_repository=url))
    assert (await client.get(f"{CO}/applications/{other.json()['uuid']}")).json()["git_repository"] == url


async def test_build_servers_cannot_host_applications(client: httpx.AsyncClient) -> None:
    """An app on a build server is the 422 with server_uuid in errors."""
    body = {"ip": "192.0.2.50", "private_key_uuid": KEY, "is_build_server": True}
    uuid = (await client.post(f"{CO}/servers", json=body)).json()["uuid"]
    response = await client.post(f"{CO}/applications/public", json=_public(uuid))
    assert (response.status_code, response.json()["errors"]) == (
        422,
        {"server_uuid": ["The specified server is configured as a build server and cannot host resources."]},
    )


async def test_create_does_not_require_a_usable_server(client: httpx.AsyncClient) -> None:
    """Like Coolify, creating an app on a never-validated server is accepted."""
    uuid = (await client.post(f"{CO}/servers", json={"ip": "192.0.2.9", "private_key_uuid": KEY})).json()["uuid"]
    assert (await client.post(f"{CO}/applications/public", json=_public(uuid))).status_code == 201


async def test_domain_conflicts_are_409_unless_overridden(client: httpx.AsyncClient, server: str) -> None:
    """A domain already used by another app is a 409 with the conflicts, unless force_domain_override."""
    first = _public(server, domains="https://a.example.com")
    assert (await client.post(f"{CO}/applications/public", json=first)).status_code == 201
    clash = await client.post(f"{CO}/applications/public", json=first)
    assert clash.status_code == 409
    assert clash.json()["conflicts"][0]["domain"] == "https://a.example.com"
    forced = _public(server, domains="https://a.example.com", force_domain_override=True)
    assert (await client.post(f"{CO}/applications/public", json=forced)).status_code == 201


async def test_application_delete_is_queued(client: httpx.AsyncClient, app: str, clock: ManualClock) -> None:
    """DELETE answers "deletion request queued"; the app is still readable until the delete runs, then 404."""
    response = await client.delete(f"{CO}/applications/{app}")
    assert response.json() == {"message": "Application deletion request queued."}
    assert (await client.get(f"{CO}/applications/{app}")).status_code == 200
    clock.advance(1)
    assert (await client.get(f"{CO}/applications/{app}")).json() == {"message": "Application not found."}
    assert (await client.delete(f"{CO}/applications/{app}")).status_code == 404


# ---------------------------------------------------------------- deploy and lifecycle


async def test_deploy_progresses_to_finished(client: httpx.AsyncClient, app: str, clock: ManualClock) -> None:
    """A deployment is queued, then in progress, then finished, and the app runs."""
    entry = await _deploy(client, app)
    assert entry["message"] == "Application web deployment queued."
    assert entry["resource_uuid"] == app
    url = f"{CO}/deployments/{entry['deployment_uuid']}"
    seen = []
    for _ in range(3):
        seen.append((await client.get(url)).json()["status"])
        clock.advance(2.5)
    assert seen == ["queued", "in_progress", "finished"]
    body = (await client.get(url)).json()
    assert (body["application_name"], body["finished_at"] is not None, body["is_api"]) == ("web", True, True)
    assert (await client.get(f"{CO}/applications/{app}")).json()["status"] == "running:healthy"


async def test_deploy_reads_the_uuid_from_the_query(client: httpx.AsyncClient, app: str) -> None:
    """/deploy also takes ``uuid`` and ``force`` as query parameters; GET is 405."""
    response = await client.post(f"{CO}/deploy", params={"uuid": app, "force": "false"})
    assert response.json()["deployments"][0]["resource_uuid"] == app
    assert (await client.get(f"{CO}/deploy", params={"uuid": app})).status_code == 405


async def test_deploy_dedup_returns_a_uuid_that_was_never_stored(client: httpx.AsyncClient, app: str) -> None:
    """A second deploy while one is queued says "already queued" with a bogus uuid that polls as 404."""
    live = (await _deploy(client, app))["deployment_uuid"]
    again = await _deploy(client, app)
    assert again["message"] == "Deployment already queued for this commit."
    assert again["deployment_uuid"] != live
    missing = await client.get(f"{CO}/deployments/{again['deployment_uuid']}")
    assert (missing.status_code, missing.json()) == (404, {"message": "Deployment not found."})
    listed = (await client.get(f"{CO}/deployments/applications/{app}")).json()
    assert (listed["count"], listed["deployments"][0]["deployment_uuid"]) == (1, live)


async def test_force_deploy_bypasses_dedup(client: httpx.AsyncClient, app: str) -> None:
    """force=true queues another deployment even while one is queued."""
    await _deploy(client, app)
    forced = await _deploy(client, app, force=True)
    assert forced["message"] == "Application web deployment queued."
    body = (await client.get(f"{CO}/deployments/{forced['deployment_uuid']}")).json()
    assert body["force_rebuild"] is True


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({}, 400, "You must provide uuid or tag."),
        ({"uuid": "x", "tag": "y"}, 400, "You can only use uuid or tag, not both."),
        ({"uuid": "unknown"}, 404, "No resources found."),
    ],
)
async def test_deploy_errors(client: httpx.AsyncClient, params: dict[str, str], status: int, message: str) -> None:
    """/deploy needs exactly one of uuid or tag and at least one known resource."""
    response = await client.post(f"{CO}/deploy", params=params)
    assert (response.status_code, response.json()["message"]) == (status, message)


async def test_deploy_by_tag_has_its_own_shape(client: httpx.AsyncClient, server: str) -> None:
    """Deploying by tag answers {message: [...], details: [...]}, not {deployments}."""
    uuid = (await client.post(f"{CO}/applications/public", json=_public(server, tags=["blue"]))).json()["uuid"]
    body = (await client.post(f"{CO}/deploy", params={"tag": "blue"})).json()
    assert body["details"][0]["resource_uuid"] == uuid
    assert isinstance(body["message"], list)


async def test_deployment_fails_on_a_server_that_is_not_usable(client: httpx.AsyncClient, clock: ManualClock) -> None:
    """Deploying to a server that never passed validation ends failed."""
    uuid = (await client.post(f"{CO}/servers", json={"ip": "192.0.2.11", "private_key_uuid": KEY})).json()["uuid"]
    app = (await client.post(f"{CO}/applications/public", json=_public(uuid))).json()["uuid"]
    entry = await _deploy(client, app)
    clock.advance(10)
    body = (await client.get(f"{CO}/deployments/{entry['deployment_uuid']}")).json()
    assert body["status"] == "failed"
    assert "failed" in body["logs"]


async def test_restart_dedup_has_no_uuid(client: httpx.AsyncClient, app: str, world: World, clock: ManualClock) -> None:
    """Restart during a queued deployment says "already queued" without a uuid; later it queues a restart."""
    await _deploy(client, app)
    dedup = await client.post(f"{CO}/applications/{app}/restart")
    assert dedup.json() == {"message": "Deployment already queued for this commit."}
    clock.advance(10)
    restarted = await client.post(f"{CO}/applications/{app}/restart")
    assert restarted.json()["message"] == "Restart request queued."
    body = (await client.get(f"{CO}/deployments/{restarted.json()['deployment_uuid']}")).json()
    assert body["restart_only"] is True
    assert len(world.calls("POST", rf"/applications/{app}/restart$")) == 2


async def test_start_stop_and_post_only(client: httpx.AsyncClient, app: str, clock: ManualClock) -> None:
    """Start queues a deployment, stop exits the app, and GET on either is 405."""
    started = await client.post(f"{CO}/applications/{app}/start")
    assert started.json()["message"] == "Deployment request queued."
    assert (await client.post(f"{CO}/applications/{app}/start")).json() == {
        "message": "Deployment already queued for this commit."
    }
    instant = await client.post(f"{CO}/applications/{app}/start", params={"instant_deploy": "true"})
    assert "deployment_uuid" in instant.json()
    clock.advance(20)
    assert (await client.get(f"{CO}/applications/{app}")).json()["status"] == "running:healthy"
    stopped = await client.post(f"{CO}/applications/{app}/stop")
    assert stopped.json() == {"message": "Application stopping request queued."}
    assert (await client.get(f"{CO}/applications/{app}")).json()["status"] == "exited"
    for verb in ("start", "stop", "restart"):
        response = await client.get(f"{CO}/applications/{app}/{verb}")
        assert (response.status_code, response.headers["allow"]) == (405, "POST")
    assert (await client.post(f"{CO}/applications/nope/restart")).status_code == 404


async def test_deployment_lists(client: httpx.AsyncClient, app: str, clock: ManualClock) -> None:
    """Per-app lists are {count, deployments}, newest first, with skip/take; /deployments shows live ones."""
    first = (await _deploy(client, app))["deployment_uuid"]
    clock.advance(10)
    second = (await _deploy(client, app))["deployment_uuid"]
    listed = (await client.get(f"{CO}/deployments/applications/{app}")).json()
    assert (listed["count"], [d["deployment_uuid"] for d in listed["deployments"]]) == (2, [second, first])
    paged = (await client.get(f"{CO}/deployments/applications/{app}", params={"skip": 1, "take": 1})).json()
    assert [d["deployment_uuid"] for d in paged["deployments"]] == [first]
    assert [d["deployment_uuid"] for d in (await client.get(f"{CO}/deployments")).json()] == [second]
    assert (await client.get(f"{CO}/deployments/applications/nope")).status_code == 404


async def test_cancel_deployment(client: httpx.AsyncClient, app: str, clock: ManualClock) -> None:
    """A live deployment can be cancelled once; a finished one cannot."""
    uuid = (await _deploy(client, app))["deployment_uuid"]
    cancelled = await client.post(f"{CO}/deployments/{uuid}/cancel")
    assert cancelled.json()["status"] == "cancelled-by-user"
    again = await client.post(f"{CO}/deployments/{uuid}/cancel")
    assert (again.status_code, again.json()["message"]) == (
        400,
        "Deployment cannot be cancelled. Current status: cancelled-by-user",
    )


async def test_deployments_vanish_with_their_application(
    client: httpx.AsyncClient, app: str, clock: ManualClock
) -> None:
    """Once the application is deleted its deployments answer 404."""
    uuid = (await _deploy(client, app))["deployment_uuid"]
    await client.delete(f"{CO}/applications/{app}")
    clock.advance(1)
    assert (await client.get(f"{CO}/deployments/{uuid}")).status_code == 404


async def test_instant_deploy_queues_without_returning_the_uuid(client: httpx.AsyncClient, server: str) -> None:
    """instant_deploy queues a deployment that only the deployment list reveals."""
    response = await client.post(f"{CO}/applications/public", json=_public(server, instant_deploy=True))
    assert set(response.json()) == {"uuid", "domains"}
    listed = (await client.get(f"{CO}/deployments/applications/{response.json()['uuid']}")).json()
    assert listed["count"] == 1


# ---------------------------------------------------------------- env vars


async def test_env_create_list_and_conflict(client: httpx.AsyncClient, app: str) -> None:
    """POST is 201 {uuid}; the same key again is 409; the list shows values (root token)."""
    envs = f"{CO}/applications/{app}/envs"
    created = await client.post(envs, json=_env("API_URL", "https://x"))
    assert (created.status_code, set(created.json())) == (201, {"uuid"})
    conflict = await client.post(envs, json=_env("API_URL", "https://y"))
    assert (conflict.status_code, conflict.json()["message"]) == (
        409,
        "Environment variable already exists. Use PATCH request to update it.",
    )
    [row] = (await client.get(envs)).json()
    assert (row["uuid"], row["key"], row["value"], row["real_value"]) == (
        created.json()["uuid"],
        "API_URL",
        "https://x",
        "https://x",
    )
    assert (row["is_runtime"], row["is_buildtime"], row["is_preview"]) == (True, True, False)


async def test_env_preview_rows_are_separate_and_listed_last(client: httpx.AsyncClient, app: str) -> None:
    """The same key may exist once for production and once for preview; production rows come first."""
    envs = f"{CO}/applications/{app}/envs"
    assert (await client.post(envs, json=_env("A", is_preview=True))).status_code == 201
    assert (await client.post(envs, json=_env("A"))).status_code == 201
    assert (await client.post(envs, json=_env("B"))).status_code == 201
    rows = (await client.get(envs)).json()
    assert [(r["key"], r["is_preview"]) for r in rows] == [("A", False), ("B", False), ("A", True)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_env("1BAD"), "key"),
        (_env("HAS-DASH"), "key"),
        (_env("K" * 256), "key"),
        (_env("OK", is_build_time=True), "is_build_time"),
        ({"value": "x"}, "key"),
        (_env("OK", is_literal="maybe"), "is_literal"),
    ],
)
async def test_env_validation(client: httpx.AsyncClient, app: str, body: dict[str, Any], field: str) -> None:
    """Bad keys, unknown fields (the old is_build_time) and non-boolean flags are 422."""
    response = await client.post(f"{CO}/applications/{app}/envs", json=body)
    assert response.status_code == 422
    assert field in response.json()["errors"]


async def test_env_key_is_trimmed(client: httpx.AsyncClient, app: str) -> None:
    """Surrounding spaces in the key are trimmed before it is checked and stored."""
    assert (await client.post(f"{CO}/applications/{app}/envs", json=_env("  PADDED "))).status_code == 201
    assert [r["key"] for r in (await client.get(f"{CO}/applications/{app}/envs")).json()] == ["PADDED"]


async def test_env_patch_by_key_resets_omitted_flags(client: httpx.AsyncClient, app: str) -> None:
    """PATCH finds the row by key, answers 201 with it, resets omitted is_literal/is_multiline/is_shown_once
    and keeps omitted is_runtime/is_buildtime/comment."""
    envs = f"{CO}/applications/{app}/envs"
    full = _env("K", "1", is_literal=True, is_multiline=True, is_runtime=False, is_buildtime=False, comment="c")
    await client.post(envs, json=full)
    patched = await client.patch(envs, json={"key": "K", "value": "2"})
    assert patched.status_code == 201
    row = patched.json()
    assert (row["value"], row["is_literal"], row["is_multiline"]) == ("2", False, False)
    assert (row["is_runtime"], row["is_buildtime"], row["comment"]) == (False, False, "c")
    flipped = (await client.patch(envs, json={"key": "K", "value": "3", "is_runtime": True})).json()
    assert (flipped["is_runtime"], flipped["is_buildtime"]) == (True, False)


async def test_env_patch_never_upserts(client: httpx.AsyncClient, app: str) -> None:
    """PATCH of a key that does not exist is 404 and creates nothing."""
    response = await client.patch(f"{CO}/applications/{app}/envs", json=_env("MISSING"))
    assert (response.status_code, response.json()) == (404, {"message": "Environment variable not found."})
    assert (await client.get(f"{CO}/applications/{app}/envs")).json() == []


async def test_env_bulk_upserts_and_drops_unknown_keys(client: httpx.AsyncClient, app: str) -> None:
    """Bulk creates and updates by key in order, keeps unlisted keys, and ignores is_build_time silently."""
    envs = f"{CO}/applications/{app}/envs"
    await client.post(envs, json=_env("KEEP", "k"))
    await client.post(envs, json=_env("A", "old", is_literal=True))
    bulk = {"data": [{"key": "A", "value": "new"}, {**_env("B", "b"), "is_build_time": False}]}
    response = await client.patch(f"{envs}/bulk", json=bulk)
    assert response.status_code == 201
    assert [(r["key"], r["value"]) for r in response.json()] == [("A", "new"), ("B", "b")]
    rows = {r["key"]: r for r in (await client.get(envs)).json()}
    assert set(rows) == {"KEEP", "A", "B"}
    assert rows["A"]["is_literal"] is False  # the PATCH reset rule applies to bulk updates too


async def test_env_bulk_is_not_a_transaction(client: httpx.AsyncClient, app: str) -> None:
    """An invalid item N is a 422 that leaves items 1..N-1 saved."""
    envs = f"{CO}/applications/{app}/envs"
    bulk = {"data": [_env("FIRST"), _env("bad-key"), _env("THIRD")]}
    response = await client.patch(f"{envs}/bulk", json=bulk)
    assert response.status_code == 422
    assert [r["key"] for r in (await client.get(envs)).json()] == ["FIRST"]


@pytest.mark.parametrize("body", [{"data": []}, {"other": 1}, {"data": "A=1"}])
async def test_env_bulk_needs_data(client: httpx.AsyncClient, app: str, body: dict[str, Any]) -> None:
    """A missing or empty ``data`` list is a 400 "Bulk data is required."."""
    response = await client.patch(f"{CO}/applications/{app}/envs/bulk", json=body)
    assert (response.status_code, response.json()) == (400, {"message": "Bulk data is required."})


async def test_env_delete_by_uuid_only(client: httpx.AsyncClient, app: str) -> None:
    """DELETE takes the env uuid; a key in its place is 404."""
    envs = f"{CO}/applications/{app}/envs"
    uuid = (await client.post(envs, json=_env("GONE"))).json()["uuid"]
    by_key = await client.delete(f"{envs}/GONE")
    assert (by_key.status_code, by_key.json()) == (404, {"message": "Environment variable not found."})
    deleted = await client.delete(f"{envs}/{uuid}")
    assert (deleted.status_code, deleted.json()) == (200, {"message": "Environment variable deleted."})
    assert (await client.get(envs)).json() == []


async def test_env_shown_once_hides_the_value(client: httpx.AsyncClient, app: str) -> None:
    """An is_shown_once variable never shows its value again."""
    envs = f"{CO}/applications/{app}/envs"
    await client.post(envs, json=_env("TOKEN", "secret", is_shown_once=True))
    [row] = (await client.get(envs)).json()
    assert "value" not in row
    assert "real_value" not in row


async def test_envs_of_an_unknown_application_are_404(client: httpx.AsyncClient) -> None:
    """Every env route answers 404 "Application not found." for an unknown application."""
    base = f"{CO}/applications/nope/envs"
    for method, url in (("GET", base), ("POST", base), ("PATCH", base), ("PATCH", f"{base}/bulk")):
        response = await client.request(method, url, json=_env("A"))
        assert (response.status_code, response.json()) == (404, {"message": "Application not found."})
