"""Tests for the simulated DigitalOcean API: droplets, pagination, SSH keys, actions, auth and errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sandbox import ManualClock, SandboxConfig, World, create_app
from sandbox.state import DEFAULT_COOLIFY_PUBLIC_KEY

DO = "/sandbox/digitalocean/v2"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINkpihDRsHNYN9xL2F2sZBsPPO8npH5dU6VPLz9bL8/6 other"


async def _create(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    body = {"name": "eliza-1", "region": "nyc3", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64", **fields}
    return await client.post(f"{DO}/droplets", json=body)


# ---------------------------------------------------------------- auth and errors


@pytest.mark.parametrize("header", [None, "", "Bearer ", "Basic abc"])
async def test_missing_or_empty_token_is_401(client: httpx.AsyncClient, header: str | None) -> None:
    """Without a non-empty bearer token every route answers 401 ``unauthorized`` with rate headers."""
    headers = {} if header is None else {"Authorization": header}
    client.headers.pop("Authorization")
    response = await client.get(f"{DO}/account", headers=headers)
    assert response.status_code == 401
    assert response.json()["id"] == "unauthorized"
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "x-request-id"} <= set(response.headers)


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    """Unknown paths give 404 ``not_found``, wrong methods 405 with Allow, in DigitalOcean's error shape."""
    missing = await client.get(f"{DO}/volumes")
    assert (missing.status_code, missing.json()["id"]) == (404, "not_found")
    assert missing.json()["request_id"] == missing.headers["x-request-id"]
    wrong = await client.patch(f"{DO}/droplets")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "DELETE, GET, HEAD, POST"


async def test_account(client: httpx.AsyncClient, world: World) -> None:
    """GET /v2/account reports the configured droplet limit and an active status."""
    account = (await client.get(f"{DO}/account")).json()["account"]
    assert (account["droplet_limit"], account["status"]) == (world.config.droplet_limit, "active")


# ---------------------------------------------------------------- SSH keys


async def test_ssh_key_lifecycle(client: httpx.AsyncClient) -> None:
    """Keys are created (201), found by id or MD5 fingerprint, renamed, listed, deleted (204) and then 404."""
    created = await client.post(
        f"{DO}/account/keys", json={"name": "coolify", "public_key": DEFAULT_COOLIFY_PUBLIC_KEY}
    )
    assert created.status_code == 201
    key = created.json()["ssh_key"]
    assert key["fingerprint"] == "fc:5a:27:f8:8f:7f:98:c0:8f:4d:16:c4:4d:29:44:76"
    assert (await client.get(f"{DO}/account/keys/{key['id']}")).json()["ssh_key"] == key
    assert (await client.get(f"{DO}/account/keys/{key['fingerprint']}")).json()["ssh_key"] == key
    renamed = await client.put(f"{DO}/account/keys/{key['fingerprint']}", json={"name": "renamed"})
    assert renamed.json()["ssh_key"]["name"] == "renamed"
    listing = (await client.get(f"{DO}/account/keys")).json()
    assert (listing["meta"]["total"], listing["ssh_keys"][0]["id"]) == (1, key["id"])
    assert (await client.delete(f"{DO}/account/keys/{key['id']}")).status_code == 204
    assert (await client.get(f"{DO}/account/keys/{key['fingerprint']}")).status_code == 404
    assert (await client.delete(f"{DO}/account/keys/{key['id']}")).status_code == 404


async def test_ssh_key_already_in_use_is_422(client: httpx.AsyncClient) -> None:
    """Posting a key already on the account (even under another name or comment) is a 422."""
    await client.post(f"{DO}/account/keys", json={"name": "a", "public_key": DEFAULT_COOLIFY_PUBLIC_KEY})
    again = " ".join(DEFAULT_COOLIFY_PUBLIC_KEY.split()[:2]) + " another-comment"
    response = await client.post(f"{DO}/account/keys", json={"name": "b", "public_key": again})
    assert response.status_code == 422
    assert response.json()["id"] == "unprocessable_entity"
    assert response.json()["message"] == "SSH Key is already in use on your account"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "public_key": "not a key"},
        {"name": "", "public_key": DEFAULT_COOLIFY_PUBLIC_KEY},
        {"name": "x"},
    ],
)
async def test_invalid_ssh_key_is_422(client: httpx.AsyncClient, body: dict[str, str]) -> None:
    """A malformed key or a missing name or key is a 422."""
    assert (await client.post(f"{DO}/account/keys", json=body)).status_code == 422


# ---------------------------------------------------------------- droplet create


async def test_create_returns_202_new_without_addresses(client: httpx.AsyncClient) -> None:
    """Create answers 202 with status new, no IPv4 yet, the tags, and a rel=create action link."""
    response = await _create(client, tags=["eliza", "orch-1"])
    assert response.status_code == 202
    droplet = response.json()["droplet"]
    assert (droplet["status"], droplet["networks"]["v4"], droplet["tags"]) == ("new", [], ["eliza", "orch-1"])
    assert (droplet["size_slug"], droplet["region"]["slug"]) == ("s-1vcpu-1gb", "nyc3")
    [action] = response.json()["links"]["actions"]
    assert action["rel"] == "create"
    assert action["href"] == f"http://sandbox.test{DO}/actions/{action['id']}"
    status = (await client.get(action["href"])).json()["action"]
    assert (status["status"], status["resource_id"], status["completed_at"]) == (
        "in-progress",
        droplet["id"],
        None,
    )


async def test_droplet_becomes_active_then_gets_a_public_ip(client: httpx.AsyncClient, clock: ManualClock) -> None:
    """The droplet turns active after the boot time with only the private IPv4, listed first, then public."""
    droplet_id = (await _create(client)).json()["droplet"]["id"]
    clock.advance(4)
    active = (await client.get(f"{DO}/droplets/{droplet_id}")).json()["droplet"]
    assert active["status"] == "active"
    assert [n["type"] for n in active["networks"]["v4"]] == ["private"]
    clock.advance(1)
    networks = (await client.get(f"{DO}/droplets/{droplet_id}")).json()["droplet"]["networks"]["v4"]
    assert [n["type"] for n in networks] == ["private", "public"]  # v4[0] is NOT the public address
    assert networks[1]["ip_address"] != networks[0]["ip_address"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "eliza_1"}, "Only valid hostname characters"),
        ({"name": "eliza-"}, "Only valid hostname characters"),
        ({"name": ""}, "Name is required"),
        ({"size": None}, "Size is required"),
        ({"size": "huge"}, "invalid size"),
        ({"image": None}, "Image is required"),
        ({"image": "Not An Image"}, "invalid image"),
        ({"image": "fedora-39-x64"}, "You specified an invalid image for Droplet creation."),
        ({"image": 12345}, "You specified an invalid image for Droplet creation."),
        ({"size": "s-64vcpu-1tb"}, "You specified an invalid size for Droplet creation."),
        ({"region": "mars1"}, "You specified an invalid region for Droplet creation."),
        ({"region": "nyc2"}, "Region is not available"),
        ({"region": "syd1", "size": "c-2"}, "Size is not available in this region."),
        ({"region": "tor", "size": "g-2vcpu-8gb"}, "Size is not available in this region."),
        ({"tags": ["bad tag"]}, "Tag names"),
        ({"ssh_keys": [12345]}, "12345 are invalid key identifiers"),
        ({"ssh_keys": ["aa:bb"]}, "aa:bb are invalid key identifiers"),
        ({"user_data": "x" * (64 * 1024 + 1)}, "user_data"),
    ],
)
async def test_create_validation_errors_are_422(
    client: httpx.AsyncClient, fields: dict[str, Any], message: str
) -> None:
    """Invalid names (no ``_``), sizes, images, regions, tags, key ids and oversized user_data are 422."""
    response = await _create(client, **fields)
    assert response.status_code == 422
    assert response.json()["id"] == "unprocessable_entity"
    assert message in response.json()["message"]


async def test_create_accepts_registered_keys_by_id_or_fingerprint(client: httpx.AsyncClient) -> None:
    """ssh_keys may name registered keys by id or by fingerprint; a region prefix picks a datacenter."""
    key = await client.post(f"{DO}/account/keys", json={"name": "k", "public_key": DEFAULT_COOLIFY_PUBLIC_KEY})
    ssh = key.json()["ssh_key"]
    response = await _create(client, ssh_keys=[ssh["id"], ssh["fingerprint"]], region="ams")
    assert response.status_code == 202
    assert response.json()["droplet"]["region"]["slug"].startswith("ams")


async def test_create_takes_an_image_by_id_and_lets_digitalocean_pick_a_region(client: httpx.AsyncClient) -> None:
    """An image may be given by its numeric id; without a region the droplet lands where the size is offered."""
    image = (await client.get(f"{DO}/images/docker-20-04")).json()["image"]
    response = await _create(client, image=image["id"], region=None, size="m-2vcpu-16gb")
    assert response.status_code == 202, response.text
    droplet = response.json()["droplet"]
    assert (droplet["image"]["slug"], droplet["region"]["slug"]) == ("docker-20-04", "nyc3")
    assert droplet["size"]["memory"] == 16384


async def test_create_over_the_droplet_limit_is_422(clock: ManualClock) -> None:
    """Creating past the account's droplet limit is the 422 "will exceed your droplet limit"."""
    world = World(SandboxConfig(droplet_limit=1), clock=clock)
    transport = httpx.ASGITransport(app=create_app(world))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"Authorization": "Bearer x"}) as c:
        assert (await _create(c)).status_code == 202
        refused = await _create(c, name="eliza-2")
        assert refused.status_code == 422
        assert refused.json()["message"] == "creating this/these droplet(s) will exceed your droplet limit"


async def test_create_several_with_names(client: httpx.AsyncClient) -> None:
    """``names`` creates several droplets and answers with ``droplets`` and one action each."""
    response = await client.post(
        f"{DO}/droplets", json={"names": ["a-1", "a-2"], "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64"}
    )
    assert response.status_code == 202
    assert [d["name"] for d in response.json()["droplets"]] == ["a-1", "a-2"]
    assert len(response.json()["links"]["actions"]) == 2


async def test_malformed_body_is_400(client: httpx.AsyncClient) -> None:
    """A body that is not a JSON object is a 400 ``bad_request``."""
    response = await client.post(f"{DO}/droplets", content=b"{nope", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["id"]) == (400, "bad_request")


# ---------------------------------------------------------------- list, filters, pagination


async def test_list_filters_by_tag_and_exact_case_insensitive_name(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    """tag_name matches the tag; name matches the whole name ignoring case, never a prefix."""
    await _create(client, name="eliza-1", tags=["orch-a"])
    await _create(client, name="eliza-10", tags=["orch-b"])
    clock.advance(1)
    by_tag = (await client.get(f"{DO}/droplets", params={"tag_name": "orch-a"})).json()
    assert [d["name"] for d in by_tag["droplets"]] == ["eliza-1"]
    by_name = (await client.get(f"{DO}/droplets", params={"name": "ELIZA-1"})).json()
    assert [d["name"] for d in by_name["droplets"]] == ["eliza-1"]
    assert by_name["meta"]["total"] == 1


async def test_a_new_droplet_shows_in_lists_only_after_the_lag(client: httpx.AsyncClient, clock: ManualClock) -> None:
    """Right after a create, GET by id finds the droplet but the tag list does not, until list_lag_s."""
    droplet_id = (await _create(client, tags=["orch-lag"])).json()["droplet"]["id"]
    assert (await client.get(f"{DO}/droplets/{droplet_id}")).status_code == 200
    listed = (await client.get(f"{DO}/droplets", params={"tag_name": "orch-lag"})).json()
    assert (listed["droplets"], listed["meta"]["total"]) == ([], 0)
    clock.advance(0.4)
    assert (await client.get(f"{DO}/droplets", params={"tag_name": "orch-lag"})).json()["meta"]["total"] == 0
    clock.advance(0.2)
    listed = (await client.get(f"{DO}/droplets", params={"tag_name": "orch-lag"})).json()
    assert [d["id"] for d in listed["droplets"]] == [droplet_id]


async def test_list_refuses_tag_name_with_name(client: httpx.AsyncClient) -> None:
    """tag_name cannot be combined with name: 422."""
    response = await client.get(f"{DO}/droplets", params={"tag_name": "a", "name": "b"})
    assert response.status_code == 422


async def test_list_paginates_with_full_url_links(client: httpx.AsyncClient, clock: ManualClock) -> None:
    """Pages carry meta.total and full-URL first/prev/next/last links; following next visits every droplet."""
    for n in range(5):
        await _create(client, name=f"d-{n}")
    clock.advance(1)
    first = (await client.get(f"{DO}/droplets", params={"per_page": 2})).json()
    assert first["meta"]["total"] == 5
    assert set(first["links"]["pages"]) == {"next", "last"}
    assert first["links"]["pages"]["last"].startswith(f"http://sandbox.test{DO}/droplets?")
    names, url = [], f"{DO}/droplets?per_page=2"
    while url:
        page = (await client.get(url)).json()
        names += [d["name"] for d in page["droplets"]]
        url = page["links"].get("pages", {}).get("next")
    assert names == [f"d-{n}" for n in range(5)]
    assert set(page["links"]["pages"]) == {"first", "prev"}


async def test_list_caps_per_page_at_200(client: httpx.AsyncClient, clock: ManualClock) -> None:
    """per_page above 200 is served as 200 (a single page here has no links)."""
    for n in range(3):
        await _create(client, name=f"d-{n}")
    clock.advance(1)
    body = (await client.get(f"{DO}/droplets", params={"per_page": 1000})).json()
    assert (len(body["droplets"]), body["links"]) == (3, {})


# ---------------------------------------------------------------- delete


async def test_delete_is_204_then_404_and_gone_from_lists(client: httpx.AsyncClient) -> None:
    """A deleted droplet answers 404 and disappears from lists; deleting again is 404."""
    droplet_id = (await _create(client)).json()["droplet"]["id"]
    response = await client.delete(f"{DO}/droplets/{droplet_id}")
    assert (response.status_code, response.content) == (204, b"")
    assert (await client.get(f"{DO}/droplets/{droplet_id}")).status_code == 404
    assert (await client.get(f"{DO}/droplets")).json()["droplets"] == []
    assert (await client.delete(f"{DO}/droplets/{droplet_id}")).status_code == 404
    assert (await client.get(f"{DO}/droplets/not-a-number")).status_code == 404


async def test_delete_by_tag(client: httpx.AsyncClient, world: World) -> None:
    """DELETE /v2/droplets?tag_name= removes every droplet with the tag, and needs the tag."""
    await _create(client, name="a", tags=["sweep"])
    await _create(client, name="b", tags=["keep"])
    assert (await client.delete(f"{DO}/droplets", params={"tag_name": "sweep"})).status_code == 204
    assert [d.name for d in world.droplets.values()] == ["b"]
    assert (await client.delete(f"{DO}/droplets")).status_code == 422


async def test_actions_stay_after_the_droplet_is_gone(client: httpx.AsyncClient, clock: ManualClock) -> None:
    """The create action completes with the boot and stays queryable after the droplet is deleted."""
    created = (await _create(client)).json()
    action_id = created["links"]["actions"][0]["id"]
    clock.advance(4)
    await client.delete(f"{DO}/droplets/{created['droplet']['id']}")
    action = (await client.get(f"{DO}/actions/{action_id}")).json()["action"]
    assert (action["status"], action["type"]) == ("completed", "create")
    assert (await client.get(f"{DO}/actions/1")).status_code == 404


async def test_request_log_records_method_path_status(client: httpx.AsyncClient, world: World) -> None:
    """Every answered request is logged as (method, path, status) without its body."""
    await _create(client)
    await client.get(f"{DO}/droplets/9")
    assert [(r.api, r.method, r.path, r.status) for r in world.requests] == [
        ("digitalocean", "POST", f"{DO}/droplets", 202),
        ("digitalocean", "GET", f"{DO}/droplets/9", 404),
    ]
    assert "ubuntu" not in repr(world.requests)


async def test_other_keys_are_kept_apart(client: httpx.AsyncClient) -> None:
    """Two different keys get two different fingerprints."""
    a = (await client.post(f"{DO}/account/keys", json={"name": "a", "public_key": DEFAULT_COOLIFY_PUBLIC_KEY})).json()
    b = (await client.post(f"{DO}/account/keys", json={"name": "b", "public_key": OTHER_KEY})).json()
    assert a["ssh_key"]["fingerprint"] != b["ssh_key"]["fingerprint"]


# ---------------------------------------------------------------- catalog


async def test_regions_are_listed_with_availability_and_sizes(client: httpx.AsyncClient) -> None:
    """GET /v2/regions lists every region, nyc2 unavailable with no sizes, each region's sizes consistent."""
    body = (await client.get(f"{DO}/regions", params={"per_page": 200})).json()
    regions = {r["slug"]: r for r in body["regions"]}
    assert body["meta"]["total"] == len(regions) == 11
    assert (regions["nyc2"]["available"], regions["nyc2"]["sizes"]) == (False, [])
    assert regions["nyc3"]["available"] is True
    assert "c-2" not in regions["syd1"]["sizes"]
    assert "s-1vcpu-1gb" in regions["syd1"]["sizes"]
    sizes = {s["slug"]: s for s in (await client.get(f"{DO}/sizes", params={"per_page": 200})).json()["sizes"]}
    for slug, region in regions.items():
        assert sorted(region["sizes"]) == sorted(s for s, size in sizes.items() if slug in size["regions"])


async def test_sizes_are_paginated_with_prices(client: httpx.AsyncClient) -> None:
    """GET /v2/sizes pages like every list; prices are monthly and monthly/672 hourly."""
    first = (await client.get(f"{DO}/sizes", params={"per_page": 4})).json()
    assert (len(first["sizes"]), first["meta"]["total"]) == (4, 10)
    assert set(first["links"]["pages"]) == {"next", "last"}
    small = first["sizes"][1]
    assert (small["slug"], small["memory"], small["vcpus"], small["price_monthly"]) == ("s-1vcpu-1gb", 1024, 1, 6.0)
    assert small["price_hourly"] == round(6.0 / 672, 5)
    last = (await client.get(first["links"]["pages"]["last"])).json()
    assert [s["slug"] for s in last["sizes"]] == ["g-2vcpu-8gb", "m-2vcpu-16gb"]


@pytest.mark.parametrize("ident", ["ubuntu-24-04-x64", "160232537"])
async def test_image_by_slug_or_id(client: httpx.AsyncClient, ident: str) -> None:
    """GET /v2/images/{slug or id} finds a public image."""
    image = (await client.get(f"{DO}/images/{ident}")).json()["image"]
    assert (image["id"], image["slug"], image["distribution"], image["public"]) == (
        160232537,
        "ubuntu-24-04-x64",
        "Ubuntu",
        True,
    )


async def test_unknown_image_is_404(client: httpx.AsyncClient) -> None:
    """An unknown image slug or id is a 404 not_found."""
    for ident in ("windows-11", "1"):
        response = await client.get(f"{DO}/images/{ident}")
        assert (response.status_code, response.json()["id"]) == (404, "not_found")


# ---------------------------------------------------------------- rate limits per token


async def test_limits_are_per_token(clock: ManualClock) -> None:
    """Each token has its own burst window; ratelimit-remaining counts one token's requests."""
    world = World(SandboxConfig(do_rate_limit_per_minute=2), clock=clock)
    transport = httpx.ASGITransport(app=create_app(world))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        a, b = {"Authorization": "Bearer token-a"}, {"Authorization": "Bearer token-b"}
        assert [(await c.get(f"{DO}/account", headers=a)).status_code for _ in range(3)] == [200, 200, 429]
        other = await c.get(f"{DO}/account", headers=b)
        assert (other.status_code, other.headers["ratelimit-remaining"]) == (200, "4999")


async def test_the_burst_window_rolls(clock: ManualClock) -> None:
    """The window rolls: a request frees up exactly one minute after it was made, not at a fixed boundary."""
    world = World(SandboxConfig(do_rate_limit_per_minute=2), clock=clock)
    transport = httpx.ASGITransport(app=create_app(world))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"Authorization": "Bearer x"}) as c:
        await c.get(f"{DO}/account")
        clock.advance(30)
        await c.get(f"{DO}/account")
        limited = await c.get(f"{DO}/account")
        assert (limited.status_code, limited.headers["retry-after"]) == (429, "30")
        assert limited.json() == {
            "id": "too_many_requests",
            "message": "API Rate limit exceeded.",
            "request_id": limited.headers["x-request-id"],
        }
        clock.advance(30)
        assert (await c.get(f"{DO}/account")).status_code == 200
        assert (await c.get(f"{DO}/account")).status_code == 429  # the second one still counts


async def test_time_scale_shrinks_windows_and_allows_fractional_retry_after(clock: ManualClock) -> None:
    """At time_scale 10 a "minute" lasts 6 s, and Retry-After / ratelimit-reset may carry fractions."""
    world = World(SandboxConfig(do_rate_limit_per_minute=1, time_scale=10), clock=clock)
    transport = httpx.ASGITransport(app=create_app(world))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"Authorization": "Bearer x"}) as c:
        first = await c.get(f"{DO}/account")
        clock.advance(1.5)
        limited = await c.get(f"{DO}/account")
        assert (limited.status_code, limited.headers["retry-after"]) == (429, "4.5")
        assert float(first.headers["ratelimit-reset"]) == pytest.approx(world.now() - 1.5 + 360)
        clock.advance(4.5)
        assert (await c.get(f"{DO}/account")).status_code == 200


async def test_tags_create_and_refuse_bad_names(client: httpx.AsyncClient) -> None:
    """POST /v2/tags creates (or returns) a tag; an empty or invalid name is 422 and creates nothing."""
    created = await client.post(f"{DO}/tags", json={"name": "Deployer"})
    assert created.status_code == 201
    assert created.json()["tag"]["name"] == "Deployer"
    again = await client.post(f"{DO}/tags", json={"name": "deployer"})
    assert again.json()["tag"]["name"] == "Deployer"  # case-stable: the first spelling is kept
    for bad in ("", "has space", "x" * 256):
        refused = await client.post(f"{DO}/tags", json={"name": bad})
        assert refused.status_code == 422
        assert refused.json()["id"] == "unprocessable_entity"


async def test_read_only_tokens_may_only_read() -> None:
    """A token listed in SANDBOX_DO_READ_ONLY_TOKENS reads, but any write is 403 forbidden, before the route."""
    world = World(SandboxConfig(do_read_only_tokens="viewer-token"))
    transport = httpx.ASGITransport(app=create_app(world))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sandbox.test", headers={"Authorization": "Bearer viewer-token"}
    ) as viewer:
        assert (await viewer.get(f"{DO}/account")).status_code == 200
        refused = await viewer.post(f"{DO}/tags", json={"name": ""})
        assert refused.status_code == 403
        assert refused.json()["id"] == "forbidden"
        assert (await viewer.post(f"{DO}/droplets", json={"name": "x"})).status_code == 403
    assert world.droplets == {}
