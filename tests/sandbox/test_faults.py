"""Tests for fault switches: the grammar, the control API, and what each fault does to the clouds."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sandbox import Fault, FaultKind, Faults, ManualClock, SandboxConfig, World, create_app
from sandbox.faults import FaultSpecError
from sandbox.state import DEFAULT_COOLIFY_PUBLIC_KEY

DO = "/sandbox/digitalocean/v2"
CO = "/sandbox/coolify/api/v1"
CONTROL = "/sandbox/_control"


async def _droplet(client: httpx.AsyncClient, **extra: Any) -> httpx.Response:
    body = {"name": "d1", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64", **extra}
    return await client.post(f"{DO}/droplets", json=body)


async def _ready_app(client: httpx.AsyncClient, world: World) -> str:
    """A validated server on a droplet with the Coolify key, with one public application; returns its uuid."""
    key = await client.post(f"{DO}/account/keys", json={"name": "c", "public_key": DEFAULT_COOLIFY_PUBLIC_KEY})
    droplet = (await _droplet(client, ssh_keys=[key.json()["ssh_key"]["id"]])).json()["droplet"]
    world.advance(10)
    ip = world.droplet_public_ip(world.droplets[droplet["id"]])
    server = (await client.post(f"{CO}/servers", json={"ip": ip, "private_key_uuid": "sandbox-private-key"})).json()
    await client.post(f"{CO}/servers/{server['uuid']}/validate", json={"install": True})
    world.advance(5)
    body = {
        "project_uuid": "sandbox-project",
        "environment_name": "production",
        "server_uuid": server["uuid"],
        "git_repository": "https://github.com/a/b",
        "git_branch": "main",
        "build_pack": "nixpacks",
    }
    app = await client.post(f"{CO}/applications/public", json=body)
    assert app.status_code == 201, app.text
    return str(app.json()["uuid"])


# ---------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("build_fails", Fault(FaultKind.BUILD_FAILS)),
        ("rate_limit:2@GET:/v2/droplets.*", Fault(FaultKind.RATE_LIMIT, 2, "GET", "/v2/droplets.*")),
        ("rate_limit=30:1", Fault(FaultKind.RATE_LIMIT, 1, param=30.0)),
        ("server_error=503@/deploy$", Fault(FaultKind.SERVER_ERROR, path="/deploy$", param=503.0)),
        ("droplet_no_ip:1@post:/droplets", Fault(FaultKind.DROPLET_NO_IP, 1, "POST", "/droplets")),
        ("server_unreachable@*:/x:y", Fault(FaultKind.SERVER_UNREACHABLE, path="/x:y")),
        ("sshd_never:1", Fault(FaultKind.SSHD_NEVER, 1)),
        ("wrong_key@POST:/v2/droplets$", Fault(FaultKind.WRONG_KEY, method="POST", path="/v2/droplets$")),
        ("response_lost=502:1@POST:/servers$", Fault(FaultKind.RESPONSE_LOST, 1, "POST", "/servers$", 502.0)),
    ],
)
def test_fault_parse_reads_the_grammar(text: str, expected: Fault) -> None:
    """``KIND[=PARAM][:COUNT][@[METHOD:]PATH]`` parses into the matching fault."""
    assert Fault.parse(text) == expected


def test_fault_text_round_trips() -> None:
    """A fault's text form parses back to the same fault."""
    for text in ("build_hangs", "rate_limit=5:2@GET:/v2/droplets$", "server_error=500@/deploy"):
        assert str(Fault.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "explode",
        "build_fails:0",
        "rate_limit@GET:([",
        "server_error=404",
        "build_fails:x",
        "rate_limit=-1",
        "response_lost=200",
    ],
)
def test_fault_parse_rejects_bad_text(text: str) -> None:
    """Unknown kinds, zero counts, bad regexes and non-5xx statuses raise FaultSpecError."""
    with pytest.raises(FaultSpecError):
        Fault.parse(text)


def test_faults_parse_a_comma_separated_list() -> None:
    """The spec is a comma-separated list; empty entries are ignored."""
    faults = Faults.parse("build_fails, droplet_no_ip:1,,")
    assert [f.kind for f in faults.active] == [FaultKind.BUILD_FAILS, FaultKind.DROPLET_NO_IP]


def test_take_consumes_counted_hits_within_scope() -> None:
    """A counted fault matches only its method and path and disappears once used up."""
    faults = Faults.parse("rate_limit:2@GET:/v2/droplets$")
    assert faults.take(FaultKind.RATE_LIMIT, "POST", "/sandbox/digitalocean/v2/droplets") is None
    assert faults.take(FaultKind.RATE_LIMIT, "GET", "/sandbox/digitalocean/v2/droplets/1") is None
    assert faults.take(FaultKind.RATE_LIMIT, "GET", "/sandbox/digitalocean/v2/droplets") is not None
    assert faults.take(FaultKind.SERVER_ERROR, "GET", "/sandbox/digitalocean/v2/droplets") is None
    assert faults.take(FaultKind.RATE_LIMIT, "get", "/sandbox/digitalocean/v2/droplets") is not None
    assert len(faults) == 0


def test_uncounted_faults_last_until_cleared() -> None:
    """A fault without a count keeps matching; ``clear(kind)`` removes only that kind."""
    faults = Faults.parse("build_fails,droplet_no_ip")
    for _ in range(5):
        assert faults.take(FaultKind.BUILD_FAILS, "POST", "/x") is not None
    assert faults.clear(FaultKind.BUILD_FAILS) == 1
    assert [f.kind for f in faults.active] == [FaultKind.DROPLET_NO_IP]
    assert faults.clear() == 1


# ---------------------------------------------------------------- request faults over HTTP


async def test_rate_limit_fault_on_digitalocean(client: httpx.AsyncClient, world: World) -> None:
    """A DigitalOcean 429 has the error shape, Retry-After and ratelimit headers, then service resumes."""
    world.faults.add_spec("rate_limit=7:1@GET:/v2/droplets$")
    limited = await client.get(f"{DO}/droplets")
    assert limited.status_code == 429
    assert limited.json()["id"] == "too_many_requests"
    assert limited.json()["request_id"] == limited.headers["x-request-id"]
    assert (limited.headers["retry-after"], limited.headers["ratelimit-remaining"]) == ("7", "0")
    assert (await client.get(f"{DO}/droplets")).status_code == 200


async def test_rate_limit_fault_on_coolify(client: httpx.AsyncClient, world: World) -> None:
    """A Coolify 429 says "Too Many Attempts." with Retry-After and X-RateLimit headers."""
    world.faults.add_spec("rate_limit:1@/api/v1/servers")
    limited = await client.get(f"{CO}/servers")
    assert limited.status_code == 429
    assert limited.json() == {"message": "Too Many Attempts."}
    assert limited.headers["retry-after"] == "1"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert "x-ratelimit-reset" in limited.headers
    assert (await client.get(f"{CO}/servers")).status_code == 200


async def test_server_error_fault_status_and_shapes(client: httpx.AsyncClient, world: World) -> None:
    """server_error answers the configured 5xx in each API's error shape."""
    world.faults.add_spec("server_error=503:1@/digitalocean/,server_error:1@/coolify/")
    do_error = await client.get(f"{DO}/account")
    co_error = await client.get(f"{CO}/servers")
    assert (do_error.status_code, do_error.json()["id"]) == (503, "service_unavailable")
    assert (co_error.status_code, co_error.json()) == (500, {"message": "Server Error"})
    assert world.calls(path="/v2/account")[-1].status == 503


async def test_request_faults_come_after_auth(client: httpx.AsyncClient, world: World) -> None:
    """A request without a token gets its 401 and does not consume a fault."""
    world.faults.add_spec("server_error:1")
    assert (await client.get(f"{DO}/account", headers={"Authorization": ""})).status_code == 401
    assert len(world.faults) == 1


# ---------------------------------------------------------------- event faults


async def test_droplet_create_rejected(client: httpx.AsyncClient, world: World) -> None:
    """droplet_create_rejected answers the droplet-limit 422 and creates nothing."""
    world.faults.add_spec("droplet_create_rejected:1")
    rejected = await _droplet(client)
    assert rejected.status_code == 422
    assert rejected.json()["message"] == "creating this/these droplet(s) will exceed your droplet limit"
    assert world.droplets == {}
    assert (await _droplet(client)).status_code == 202


async def test_droplet_no_ip(client: httpx.AsyncClient, world: World) -> None:
    """droplet_no_ip gives an active droplet that never lists a public IPv4."""
    world.faults.add_spec("droplet_no_ip:1")
    droplet_id = (await _droplet(client)).json()["droplet"]["id"]
    world.advance(3600)
    droplet = (await client.get(f"{DO}/droplets/{droplet_id}")).json()["droplet"]
    assert droplet["status"] == "active"
    assert [n["type"] for n in droplet["networks"]["v4"]] == ["private"]


async def test_server_unreachable(client: httpx.AsyncClient, world: World) -> None:
    """server_unreachable makes the validation end unreachable with validation logs."""
    world.faults.add_spec("server_unreachable:1")
    server = await client.post(f"{CO}/servers", json={"ip": "1.2.3.4", "private_key_uuid": "sandbox-private-key"})
    uuid = server.json()["uuid"]
    assert (await client.post(f"{CO}/servers/{uuid}/validate", json={"install": True})).status_code == 201
    world.advance(2)
    body = (await client.get(f"{CO}/servers/{uuid}")).json()
    assert (body["settings"]["is_reachable"], body["settings"]["is_usable"]) == (False, False)
    assert "not reachable" in body["validation_logs"]


async def _droplet_ip(client: httpx.AsyncClient, world: World, fault: str) -> str:
    """Register the Coolify key, create a droplet with it under ``fault``, let it boot; its public IPv4."""
    world.faults.add_spec(fault)
    keys = (await client.get(f"{DO}/account/keys")).json()["ssh_keys"]
    if not keys:
        new = await client.post(f"{DO}/account/keys", json={"name": "c", "public_key": DEFAULT_COOLIFY_PUBLIC_KEY})
        keys = [new.json()["ssh_key"]]
    droplet = (await _droplet(client, ssh_keys=[keys[0]["id"]])).json()["droplet"]
    world.advance(3600)
    return world.droplet_public_ip(world.droplets[droplet["id"]]) or ""


async def _validated(client: httpx.AsyncClient, world: World, ip: str) -> dict[str, Any]:
    server = (await client.post(f"{CO}/servers", json={"ip": ip, "private_key_uuid": "sandbox-private-key"})).json()
    await client.post(f"{CO}/servers/{server['uuid']}/validate", json={"install": True})
    world.advance(5)
    body: dict[str, Any] = (await client.get(f"{CO}/servers/{server['uuid']}")).json()
    return body


async def test_sshd_never(client: httpx.AsyncClient, world: World) -> None:
    """sshd_never: the droplet boots and gets its IP, but every validation ends "Connection timed out"."""
    ip = await _droplet_ip(client, world, "sshd_never:1@POST:/v2/droplets$")
    server = await _validated(client, world, ip)
    assert (server["settings"]["is_reachable"], server["is_validating"]) == (False, False)
    assert server["validation_logs"].endswith(f"Error: ssh: connect to host {ip} port 22: Connection timed out")


async def test_wrong_key(client: httpx.AsyncClient, world: World) -> None:
    """wrong_key: the droplet was created with the Coolify key, yet SSH says Permission denied (publickey)."""
    ip = await _droplet_ip(client, world, "wrong_key:1")
    server = await _validated(client, world, ip)
    assert server["settings"]["is_reachable"] is False
    assert server["validation_logs"].endswith(f"Error: root@{ip}: Permission denied (publickey).")
    other = await _droplet_ip(client, world, "build_hangs:1@/nothing")  # the fault was used up: next one is fine
    assert (await _validated(client, world, other))["settings"]["is_usable"] is True


async def test_response_lost_creates_the_droplet_but_answers_500(client: httpx.AsyncClient, world: World) -> None:
    """response_lost: the droplet exists (GET by tag finds it after the lag) although the create got a 500."""
    world.faults.add_spec("response_lost:1@POST:/v2/droplets$")
    lost = await _droplet(client, tags=["orch-lost"])
    assert (lost.status_code, lost.json()["id"]) == (500, "server_error")
    assert lost.json()["request_id"] == lost.headers["x-request-id"]
    assert len(world.droplets) == 1
    world.advance(1)
    listed = (await client.get(f"{DO}/droplets", params={"tag_name": "orch-lost"})).json()
    assert listed["meta"]["total"] == 1
    assert world.calls("POST", "/v2/droplets$")[-1].status == 500


async def test_response_lost_on_coolify_creates(client: httpx.AsyncClient, world: World) -> None:
    """response_lost=502 on a Coolify server create: the server exists, the caller saw Laravel's 502."""
    world.faults.add_spec("response_lost=502:1@POST:/servers$")
    lost = await client.post(f"{CO}/servers", json={"ip": "192.0.2.77", "private_key_uuid": "sandbox-private-key"})
    assert (lost.status_code, lost.json()) == (502, {"message": "Server Error"})
    assert [s["ip"] for s in (await client.get(f"{CO}/servers")).json()] == ["192.0.2.77"]
    again = await client.post(f"{CO}/servers", json={"ip": "192.0.2.77", "private_key_uuid": "sandbox-private-key"})
    assert again.status_code == 400  # "already in use": the first create did happen


async def test_build_fails(client: httpx.AsyncClient, world: World) -> None:
    """build_fails makes the next deployment end failed and leaves the app exited."""
    app = await _ready_app(client, world)
    world.faults.add_spec("build_fails:1@POST:/deploy$")
    deployment = (await client.post(f"{CO}/deploy", json={"uuid": app})).json()["deployments"][0]["deployment_uuid"]
    world.advance(5)
    body = (await client.get(f"{CO}/deployments/{deployment}")).json()
    assert body["status"] == "failed"
    assert body["finished_at"] is not None
    assert (await client.get(f"{CO}/applications/{app}")).json()["status"] == "exited"


async def test_build_hangs(client: httpx.AsyncClient, world: World) -> None:
    """build_hangs keeps the deployment in progress forever (listed by GET /deployments)."""
    app = await _ready_app(client, world)
    world.faults.add_spec("build_hangs:1")
    deployment = (await client.post(f"{CO}/deploy?uuid={app}")).json()["deployments"][0]["deployment_uuid"]
    world.advance(86_400)
    assert (await client.get(f"{CO}/deployments/{deployment}")).json()["status"] == "in_progress"
    active = (await client.get(f"{CO}/deployments")).json()
    assert [d["deployment_uuid"] for d in active] == [deployment]


async def test_faults_from_the_sandbox_faults_setting(clock: ManualClock) -> None:
    """Faults configured by SANDBOX_FAULTS are active from the start and come back after a reset."""
    world = World(SandboxConfig.from_env({"SANDBOX_FAULTS": "rate_limit:1@GET:/v2/account$"}), clock=clock)
    transport = httpx.ASGITransport(app=create_app(world))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"Authorization": "Bearer x"}) as c:
        assert (await c.get(f"{DO}/account")).status_code == 429
        assert (await c.get(f"{DO}/account")).status_code == 200
        assert (await c.post(f"{CONTROL}/reset")).status_code == 200
        assert (await c.get(f"{DO}/account")).status_code == 429


# ---------------------------------------------------------------- control API


async def test_control_faults_add_list_clear(client: httpx.AsyncClient) -> None:
    """Faults can be added as a spec or as objects, listed, and cleared by kind or all at once."""
    added = await client.post(f"{CONTROL}/faults", json={"spec": "build_fails,rate_limit:2@GET:/v2/droplets"})
    assert added.status_code == 201
    assert [f["spec"] for f in added.json()["added"]] == ["build_fails", "rate_limit:2@GET:/v2/droplets"]
    one = {"kind": "server_error", "param": 503, "count": 1, "path": "/deploy$"}
    assert (await client.post(f"{CONTROL}/faults", json={"faults": [one]})).status_code == 201
    assert (await client.post(f"{CONTROL}/faults", json={"kind": "droplet_no_ip"})).status_code == 201
    listed = (await client.get(f"{CONTROL}/faults")).json()["faults"]
    assert [f["kind"] for f in listed] == ["build_fails", "rate_limit", "server_error", "droplet_no_ip"]
    assert (await client.delete(f"{CONTROL}/faults?kind=build_fails")).json()["cleared"] == 1
    assert (await client.delete(f"{CONTROL}/faults")).json() == {"cleared": 3, "faults": []}


@pytest.mark.parametrize(
    "body",
    [
        {"spec": "explode"},
        {"kind": "rate_limit", "count": "two"},
        {"faults": ["x"]},
        [1],
        {"kind": "x", "bad": 1},
    ],
)
async def test_control_faults_reject_bad_input(client: httpx.AsyncClient, body: Any) -> None:
    """A bad fault description is a 400 that says why."""
    response = await client.post(f"{CONTROL}/faults", json=body)
    assert response.status_code == 400
    assert response.json()["error"]


async def test_control_state_requests_advance_and_reset(client: httpx.AsyncClient, world: World) -> None:
    """The control API shows state and the request log, moves time and resets the world."""
    droplet_id = (await _droplet(client)).json()["droplet"]["id"]
    state = (await client.get(f"{CONTROL}/state")).json()
    assert [(d["id"], d["status"]) for d in state["droplets"]] == [(droplet_id, "new")]
    assert (await client.post(f"{CONTROL}/advance", json={"seconds": 60})).status_code == 200
    assert (await client.get(f"{CONTROL}/state")).json()["droplets"][0]["status"] == "active"
    assert (await client.post(f"{CONTROL}/advance", json={"seconds": -1})).status_code == 400
    log = (await client.get(f"{CONTROL}/requests?method=POST&path=/droplets")).json()
    assert log == [{"api": "digitalocean", "method": "POST", "path": f"{DO}/droplets", "status": 202}]
    assert (await client.post(f"{CONTROL}/reset")).json() == {"message": "Sandbox reset."}
    assert (await client.get(f"{CONTROL}/state")).json()["droplets"] == []
    assert world.requests == []


# ---------------------------------------------------------------- the clouds' own rate limits


async def test_digitalocean_burst_limit(clock: ManualClock) -> None:
    """Past the per-minute limit DigitalOcean answers 429 with Retry-After until the window rolls."""
    world = World(SandboxConfig(do_rate_limit_per_minute=2), clock=clock)
    transport = httpx.ASGITransport(app=create_app(world))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"Authorization": "Bearer x"}) as c:
        assert [(await c.get(f"{DO}/account")).status_code for _ in range(2)] == [200, 200]
        limited = await c.get(f"{DO}/account")
        assert (limited.status_code, limited.headers["retry-after"]) == (429, "60")
        clock.advance(60)
        assert (await c.get(f"{DO}/account")).status_code == 200


async def test_digitalocean_key_listing_limit(client: httpx.AsyncClient) -> None:
    """GET /v2/account/keys allows 10 requests a minute; lookups by fingerprint are not limited by it."""
    statuses = [(await client.get(f"{DO}/account/keys")).status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    assert (await client.get(f"{DO}/account/keys/1")).status_code == 404


async def test_digitalocean_hourly_headers_count_down(client: httpx.AsyncClient) -> None:
    """Every DigitalOcean response carries ratelimit headers, remaining counting down."""
    first = await client.get(f"{DO}/account")
    second = await client.get(f"{DO}/account")
    assert first.headers["ratelimit-limit"] == "5000"
    assert int(first.headers["ratelimit-remaining"]) - int(second.headers["ratelimit-remaining"]) == 1
    assert int(first.headers["ratelimit-reset"]) > 0


async def test_coolify_throttle(clock: ManualClock) -> None:
    """Past API_RATE_LIMIT per minute Coolify answers 429 Too Many Attempts; health is never throttled."""
    world = World(SandboxConfig(coolify_rate_limit_per_minute=1), clock=clock)
    transport = httpx.ASGITransport(app=create_app(world))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"Authorization": "Bearer x"}) as c:
        ok = await c.get(f"{CO}/servers")
        assert (ok.status_code, ok.headers["x-ratelimit-remaining"]) == (200, "0")
        limited = await c.get(f"{CO}/servers")
        assert (limited.status_code, limited.json()["message"]) == (429, "Too Many Attempts.")
        assert int(limited.headers["retry-after"]) > 0
        assert (await c.get(f"{CO}/health")).status_code == 200
