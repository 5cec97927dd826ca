"""Tests for clients/digitalocean.py: exact requests, records, SSH keys, pagination and retries."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from clients.digitalocean import (
    Account,
    DigitalOceanClient,
    Droplet,
    DropletStatus,
    SSHKey,
    ssh_key_fingerprint,
)
from clients.errors import (
    APITimeoutError,
    AuthError,
    CloudAPIError,
    ConflictError,
    NotFoundError,
    UpstreamServerError,
)
from clients.http import RetryPolicy
from tests.clients.conftest import FakeSleep

API_URL = "https://do.example.test"
V2 = f"{API_URL}/v2"
TOKEN = "dop_v1_0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}

# Generated with `ssh-keygen -t ed25519`; `ssh-keygen -E md5 -lf` prints the fingerprint below.
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPhAw6NokUdtW+lJI3wb5hSDX6S11yQgKzcE7vDLyuhj deployer@test"
FINGERPRINT = "39:f6:f0:bd:6d:1f:2b:b0:a6:41:2d:23:24:02:d9:ce"
KEY_JSON = {"ssh_key": {"id": 512190, "fingerprint": FINGERPRINT, "public_key": PUBLIC_KEY, "name": "deployer"}}


@pytest.fixture
async def do(sleep: FakeSleep) -> AsyncIterator[DigitalOceanClient]:
    """A client with a trailing slash in api_url, no jitter and the fake sleep."""
    async with DigitalOceanClient(
        api_url=API_URL + "/", token=TOKEN, retry=RetryPolicy(jitter=0.0), sleep=sleep
    ) as client:
        yield client


def droplet_json(
    droplet_id: int = 3164444,
    *,
    status: str = "active",
    v4: list[dict[str, Any]] | None = None,
    tags: list[str] | None = None,
) -> dict[str, Any]:
    """A droplet object shaped like DigitalOcean's."""
    return {
        "id": droplet_id,
        "name": f"eliza-{droplet_id}",
        "status": status,
        "locked": False,
        "memory": 1024,
        "vcpus": 1,
        "disk": 25,
        "size_slug": "s-1vcpu-1gb",
        "region": {"slug": "nyc3", "name": "New York 3"},
        "image": {"slug": "docker-20-04"},
        "tags": tags if tags is not None else ["deployer", "orch-1"],
        "networks": {"v4": v4 if v4 is not None else [], "v6": []},
    }


PRIVATE_FIRST: list[dict[str, Any]] = [
    {"ip_address": "10.10.0.5", "netmask": "255.255.0.0", "gateway": None, "type": "private"},
    {"ip_address": "203.0.113.7", "netmask": "255.255.240.0", "gateway": "203.0.113.1", "type": "public"},
]


# -- construction --------------------------------------------------------------------------------------


async def test_appends_v2_and_sends_bearer(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """The client appends /v2 to api_url and authenticates with the bearer token."""
    httpx_mock.add_response(
        method="GET",
        url=f"{V2}/account",
        match_headers=AUTH,
        json={"account": {"droplet_limit": 25, "status": "active", "email": "a@b.c", "uuid": "u"}},
    )
    assert await do.get_account() == Account(droplet_limit=25, status="active")


async def test_repr_hides_token(do: DigitalOceanClient) -> None:
    """repr() shows the base URL, never the token."""
    assert repr(do) == f"DigitalOceanClient(base_url='{V2}')"
    assert TOKEN not in repr(do)


async def test_aclose_closes_owned_client(httpx_mock: HTTPXMock) -> None:
    """After aclose() the owned HTTP client refuses requests."""
    client = DigitalOceanClient(api_url=API_URL, token=TOKEN)
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.get_account()


async def test_uses_given_transport() -> None:
    """A transport passed in receives the requests (the sandbox plugs in this way)."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == httpx.URL("http://sandbox/sandbox/digitalocean/v2/droplets/7")
        return httpx.Response(200, json={"droplet": droplet_json(7)})

    async with DigitalOceanClient(
        api_url="http://sandbox/sandbox/digitalocean", token=TOKEN, transport=httpx.MockTransport(handler)
    ) as client:
        assert (await client.get_droplet(7)).id == 7


async def test_logger_name(do: DigitalOceanClient, httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture) -> None:
    """Requests are logged on deployer.clients.digitalocean without the token."""
    caplog.set_level(logging.DEBUG, logger="deployer.clients.digitalocean")
    httpx_mock.add_response(url=f"{V2}/droplets/1", json={"droplet": droplet_json(1)})
    await do.get_droplet(1)
    records = [r for r in caplog.records if r.name == "deployer.clients.digitalocean"]
    assert [r.getMessage().split(" (")[0] for r in records] == ["GET /v2/droplets/1 -> 200"]
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_account_auth_error(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A 401 raises AuthError whose text never contains the token."""
    httpx_mock.add_response(
        url=f"{V2}/account",
        status_code=401,
        json={"id": "unauthorized", "message": "Unable to authenticate you"},
    )
    with pytest.raises(AuthError) as info:
        await do.get_account()
    assert str(info.value) == "digitalocean GET /v2/account -> 401 unauthorized: Unable to authenticate you"
    assert TOKEN not in str(info.value)


# -- SSH keys ------------------------------------------------------------------------------------------


def test_fingerprint_matches_ssh_keygen() -> None:
    """The MD5 fingerprint equals `ssh-keygen -E md5 -lf` output, comment or not."""
    assert ssh_key_fingerprint(PUBLIC_KEY) == FINGERPRINT
    assert ssh_key_fingerprint("  " + " ".join(PUBLIC_KEY.split()[:2]) + "\n") == FINGERPRINT


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ssh-ed25519",
        "ssh-ed25519 not*base64",
        "ssh-rsa " + PUBLIC_KEY.split()[1],
        "ssh-ed25519 AAAA",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ],
)
def test_fingerprint_rejects_bad_keys(bad: str) -> None:
    """Anything but '<type> <base64 blob of that type>' is a ValueError."""
    with pytest.raises(ValueError, match="not an OpenSSH public key"):
        ssh_key_fingerprint(bad)


async def test_ensure_ssh_key_found_by_fingerprint(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A key already on the account is found by fingerprint and not POSTed again."""
    httpx_mock.add_response(method="GET", url=f"{V2}/account/keys/{FINGERPRINT}", match_headers=AUTH, json=KEY_JSON)
    key = await do.ensure_ssh_key(name="deployer", public_key=PUBLIC_KEY)
    assert key == SSHKey(id=512190, fingerprint=FINGERPRINT, name="deployer")
    assert len(httpx_mock.get_requests()) == 1


async def test_ensure_ssh_key_created_once(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A missing key (404) is created with one POST of name and public key."""
    httpx_mock.add_response(
        method="GET",
        url=f"{V2}/account/keys/{FINGERPRINT}",
        status_code=404,
        json={"id": "not_found", "message": "The resource you were accessing could not be found."},
    )
    httpx_mock.add_response(
        method="POST",
        url=f"{V2}/account/keys",
        match_headers=JSON_AUTH,
        match_json={"name": "deployer", "public_key": PUBLIC_KEY},
        status_code=201,
        json=KEY_JSON,
    )
    key = await do.ensure_ssh_key(name="deployer", public_key=PUBLIC_KEY + "\n")
    assert key.id == 512190
    assert [r.method for r in httpx_mock.get_requests()] == ["GET", "POST"]


async def test_ensure_ssh_key_already_in_use_fetches_again(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A 422 'already in use' on POST (a race with another worker) resolves by fetching the key again."""
    httpx_mock.add_response(
        method="GET",
        url=f"{V2}/account/keys/{FINGERPRINT}",
        status_code=404,
        json={"id": "not_found", "message": "not found"},
    )
    httpx_mock.add_response(
        method="POST",
        url=f"{V2}/account/keys",
        status_code=422,
        json={"id": "unprocessable_entity", "message": "SSH Key is already in use on your account"},
    )
    httpx_mock.add_response(method="GET", url=f"{V2}/account/keys/{FINGERPRINT}", json=KEY_JSON)
    key = await do.ensure_ssh_key(name="deployer", public_key=PUBLIC_KEY)
    assert key.fingerprint == FINGERPRINT
    assert [r.method for r in httpx_mock.get_requests()] == ["GET", "POST", "GET"]


async def test_ensure_ssh_key_other_422_raises(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """Any other 422 on POST is raised as ConflictError."""
    httpx_mock.add_response(
        method="GET",
        url=f"{V2}/account/keys/{FINGERPRINT}",
        status_code=404,
        json={"id": "not_found", "message": "x"},
    )
    httpx_mock.add_response(
        method="POST",
        url=f"{V2}/account/keys",
        status_code=422,
        json={"id": "unprocessable_entity", "message": "Key invalid, key should be of the form ..."},
    )
    with pytest.raises(ConflictError, match="Key invalid"):
        await do.ensure_ssh_key(name="deployer", public_key=PUBLIC_KEY)


async def test_ensure_ssh_key_bad_key_sends_nothing(do: DigitalOceanClient) -> None:
    """A malformed public key fails before any request."""
    with pytest.raises(ValueError, match="not an OpenSSH public key"):
        await do.ensure_ssh_key(name="deployer", public_key="garbage")


# -- droplets ------------------------------------------------------------------------------------------


async def test_create_droplet_exact_request(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """create_droplet POSTs exactly name, region, size, image, ssh_keys, tags and user_data, and reads 202."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V2}/droplets",
        match_headers=JSON_AUTH,
        match_json={
            "name": "eliza-abc",
            "region": "nyc3",
            "size": "s-1vcpu-1gb",
            "image": "docker-20-04",
            "ssh_keys": [512190, FINGERPRINT],
            "tags": ["deployer", "orch-abc"],
            "user_data": "#cloud-config\n",
        },
        status_code=202,
        json={
            "droplet": droplet_json(3164444, status="new"),
            "links": {"actions": [{"id": 7515, "rel": "create", "href": f"{V2}/actions/7515"}]},
        },
    )
    droplet = await do.create_droplet(
        name="eliza-abc",
        region="nyc3",
        size="s-1vcpu-1gb",
        image="docker-20-04",
        ssh_keys=(512190, FINGERPRINT),
        tags=("deployer", "orch-abc"),
        user_data="#cloud-config\n",
    )
    assert droplet.id == 3164444
    assert droplet.status == DropletStatus.NEW
    assert droplet.public_ipv4 is None


async def test_create_droplet_omits_absent_user_data(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """Without user_data the body has no user_data key."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V2}/droplets",
        match_json={
            "name": "n",
            "region": "ams3",
            "size": "s",
            "image": "i",
            "ssh_keys": [],
            "tags": [],
        },
        status_code=202,
        json={"droplet": droplet_json(1, status="new")},
    )
    await do.create_droplet(name="n", region="ams3", size="s", image="i", ssh_keys=[], tags=[])


async def test_create_droplet_never_retried_on_5xx(
    do: DigitalOceanClient, httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """A create that fails with a 5xx is not re-sent: it may have made a droplet."""
    httpx_mock.add_response(
        method="POST", url=f"{V2}/droplets", status_code=500, json={"id": "server_error", "message": "Server Error"}
    )
    with pytest.raises(CloudAPIError):
        await do.create_droplet(name="n", region="r", size="s", image="i", ssh_keys=[], tags=[])
    assert len(httpx_mock.get_requests()) == 1
    assert sleep.calls == []


async def test_create_droplet_resent_after_429(do: DigitalOceanClient, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """A create refused with 429 made nothing (the limiter answers first): it is sent again after Retry-After."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V2}/droplets",
        status_code=429,
        json={"id": "too_many_requests", "message": "API Rate limit exceeded."},
        headers={"Retry-After": "3"},
    )
    httpx_mock.add_response(method="POST", url=f"{V2}/droplets", status_code=202, json={"droplet": droplet_json()})
    droplet = await do.create_droplet(name="n", region="r", size="s", image="i", ssh_keys=[], tags=[])
    assert droplet.id == droplet_json()["id"]
    assert sleep.calls == [3.0]


async def test_create_droplet_never_retried_on_timeout(
    do: DigitalOceanClient, httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """A create that times out is not re-sent either."""
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), method="POST", url=f"{V2}/droplets")
    with pytest.raises(APITimeoutError):
        await do.create_droplet(name="n", region="r", size="s", image="i", ssh_keys=[], tags=[])
    assert len(httpx_mock.get_requests()) == 1
    assert sleep.calls == []


async def test_create_droplet_limit_is_conflict(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """The 422 droplet-limit answer is a ConflictError with DO's id and message."""
    httpx_mock.add_response(
        method="POST",
        url=f"{V2}/droplets",
        status_code=422,
        json={
            "id": "unprocessable_entity",
            "message": "creating this/these droplet(s) will exceed your droplet limit",
            "request_id": "4b9c1d5e",
        },
    )
    with pytest.raises(ConflictError) as info:
        await do.create_droplet(name="n", region="r", size="s", image="i", ssh_keys=[], tags=[])
    assert info.value.error_id == "unprocessable_entity"
    assert "droplet limit" in info.value.message
    assert info.value.request_id == "4b9c1d5e"


async def test_get_droplet_public_ip_by_type(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """The public IPv4 is the v4 entry with type 'public', even when the private one comes first."""
    httpx_mock.add_response(
        method="GET", url=f"{V2}/droplets/3164444", json={"droplet": droplet_json(v4=PRIVATE_FIRST)}
    )
    droplet = await do.get_droplet(3164444)
    assert droplet == Droplet(
        id=3164444,
        name="eliza-3164444",
        status="active",
        public_ipv4="203.0.113.7",
        private_ipv4="10.10.0.5",
        tags=("deployer", "orch-1"),
        region="nyc3",
        size_slug="s-1vcpu-1gb",
        locked=False,
    )
    assert droplet.ready


def test_droplet_only_private_ip_has_no_public() -> None:
    """An active droplet with only a private address has no public IPv4 and is not ready."""
    droplet = Droplet.from_api(droplet_json(v4=PRIVATE_FIRST[:1]))
    assert droplet.public_ipv4 is None
    assert droplet.private_ipv4 == "10.10.0.5"
    assert not droplet.ready


def test_droplet_tolerates_sparse_objects() -> None:
    """Missing region, size_slug, tags, locked and networks read as None/empty/False."""
    droplet = Droplet.from_api({"id": 1, "name": "n", "status": "new", "region": {}})
    assert (droplet.region, droplet.size_slug, droplet.tags, droplet.locked, droplet.public_ipv4) == (
        None,
        None,
        (),
        False,
        None,
    )


async def test_get_droplet_not_found(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A 404 raises NotFoundError (not retried)."""
    httpx_mock.add_response(
        url=f"{V2}/droplets/5",
        status_code=404,
        json={"id": "not_found", "message": "The resource you were accessing could not be found."},
    )
    with pytest.raises(NotFoundError):
        await do.get_droplet(5)
    assert len(httpx_mock.get_requests()) == 1


async def test_get_droplet_malformed_body(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A body without a proper droplet object raises CloudAPIError naming the request."""
    httpx_mock.add_response(url=f"{V2}/droplets/5", json={"droplet": {"name": "no id"}})
    with pytest.raises(CloudAPIError, match=r"digitalocean GET /v2/droplets/5: unexpected shape of droplet"):
        await do.get_droplet(5)


async def test_get_droplet_retried_on_429_with_retry_after(
    do: DigitalOceanClient, httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """A GET answered 429 waits Retry-After seconds and tries again."""
    httpx_mock.add_response(
        url=f"{V2}/droplets/5",
        status_code=429,
        json={"id": "too_many_requests", "message": "API Rate limit exceeded."},
        headers={"retry-after": "3", "ratelimit-remaining": "0"},
    )
    httpx_mock.add_response(url=f"{V2}/droplets/5", json={"droplet": droplet_json(5)})
    assert (await do.get_droplet(5)).id == 5
    assert sleep.calls == [3.0]


async def test_get_droplet_gives_up_after_four_attempts(
    do: DigitalOceanClient, httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """A GET failing with 503 four times raises UpstreamServerError after three waits."""
    for _ in range(4):
        httpx_mock.add_response(url=f"{V2}/droplets/5", status_code=503, json={"id": "x", "message": "busy"})
    with pytest.raises(UpstreamServerError):
        await do.get_droplet(5)
    assert len(httpx_mock.get_requests()) == 4
    assert sleep.calls == [0.5, 1.0, 2.0]


async def test_list_droplets_by_tag_follows_pages(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """list_droplets asks for per_page=200 and follows links.pages.next until it is absent."""
    httpx_mock.add_response(
        method="GET",
        url=f"{V2}/droplets?per_page=200&tag_name=orch-1",
        match_headers=AUTH,
        json={
            "droplets": [droplet_json(1), droplet_json(2)],
            "links": {
                "pages": {
                    "next": f"{V2}/droplets?page=2&per_page=200&tag_name=orch-1",
                    "last": f"{V2}/droplets?page=2&per_page=200&tag_name=orch-1",
                }
            },
            "meta": {"total": 3},
        },
    )
    httpx_mock.add_response(
        method="GET",
        url=f"{V2}/droplets?page=2&per_page=200&tag_name=orch-1",
        match_headers=AUTH,
        json={
            "droplets": [droplet_json(3)],
            "links": {"pages": {"first": f"{V2}/droplets?page=1&per_page=200", "prev": f"{V2}/droplets?page=1"}},
            "meta": {"total": 3},
        },
    )
    droplets = await do.list_droplets(tag_name="orch-1")
    assert [d.id for d in droplets] == [1, 2, 3]


async def test_list_droplets_never_sends_token_to_another_host(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A next link on another host is followed on api_url with that link's query only."""
    httpx_mock.add_response(
        url=f"{V2}/droplets?per_page=200",
        json={
            "droplets": [droplet_json(1)],
            "links": {"pages": {"next": "https://elsewhere.example/v2/droplets?page=2&per_page=200"}},
            "meta": {"total": 2},
        },
    )
    httpx_mock.add_response(
        url=f"{V2}/droplets?page=2&per_page=200", json={"droplets": [droplet_json(2)], "meta": {"total": 2}}
    )
    assert [d.id for d in await do.list_droplets()] == [1, 2]
    assert {r.url.host for r in httpx_mock.get_requests()} == {"do.example.test"}


async def test_list_droplets_by_name_single_page(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A name filter is sent as name=; a result without links is one page."""
    httpx_mock.add_response(
        url=f"{V2}/droplets?per_page=200&name=eliza-1",
        json={"droplets": [], "links": {}, "meta": {"total": 0}},
    )
    assert await do.list_droplets(name="eliza-1") == []


async def test_list_droplets_rejects_both_filters(do: DigitalOceanClient) -> None:
    """tag_name and name cannot be combined (DigitalOcean refuses it)."""
    with pytest.raises(ValueError, match="cannot be combined"):
        await do.list_droplets(tag_name="t", name="n")


async def test_list_droplets_stops_on_looping_next(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A next link pointing back to a page already read raises instead of looping forever."""
    httpx_mock.add_response(
        url=f"{V2}/droplets?per_page=200",
        json={"droplets": [], "links": {"pages": {"next": f"{V2}/droplets?per_page=200"}}},
    )
    with pytest.raises(CloudAPIError, match="pagination"):
        await do.list_droplets()


async def test_list_droplets_retried_on_5xx(do: DigitalOceanClient, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """A list page that fails with 500 is retried."""
    httpx_mock.add_response(url=f"{V2}/droplets?per_page=200", status_code=500, json={"id": "e", "message": "m"})
    httpx_mock.add_response(url=f"{V2}/droplets?per_page=200", json={"droplets": [droplet_json(1)]})
    assert len(await do.list_droplets()) == 1
    assert sleep.calls == [0.5]


async def test_delete_droplet(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A 204 on DELETE means deleted now: True."""
    httpx_mock.add_response(method="DELETE", url=f"{V2}/droplets/9", match_headers=AUTH, status_code=204)
    assert await do.delete_droplet(9) is True


async def test_delete_droplet_already_gone(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A 404 on DELETE means it was already gone: False, no error."""
    httpx_mock.add_response(
        method="DELETE", url=f"{V2}/droplets/9", status_code=404, json={"id": "not_found", "message": "x"}
    )
    assert await do.delete_droplet(9) is False


async def test_delete_droplet_retried_then_gone(
    do: DigitalOceanClient, httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """DELETE is idempotent: retried on 5xx, and a 404 after the retry still reads as already gone."""
    httpx_mock.add_response(method="DELETE", url=f"{V2}/droplets/9", status_code=502)
    httpx_mock.add_response(method="DELETE", url=f"{V2}/droplets/9", status_code=404, json={"id": "not_found"})
    assert await do.delete_droplet(9) is False
    assert sleep.calls == [0.5]


# -- catalog ---------------------------------------------------------------------------------------------


async def test_list_regions_and_sizes_follow_pages(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """The catalog lists are read whole, page by page, into typed records."""
    httpx_mock.add_response(
        url=f"{V2}/regions?per_page=200",
        match_headers=AUTH,
        json={
            "regions": [{"slug": "nyc3", "name": "New York 3", "available": True, "sizes": ["s-1vcpu-1gb"]}],
            "links": {"pages": {"next": f"{V2}/regions?page=2&per_page=200"}},
            "meta": {"total": 2},
        },
    )
    httpx_mock.add_response(
        url=f"{V2}/regions?page=2&per_page=200",
        json={
            "regions": [{"slug": "ams3", "name": "Amsterdam 3", "available": False, "sizes": []}],
            "meta": {"total": 2},
        },
    )
    httpx_mock.add_response(
        url=f"{V2}/sizes?per_page=200",
        json={
            "sizes": [
                {
                    "slug": "s-1vcpu-1gb",
                    "available": True,
                    "regions": ["nyc3"],
                    "vcpus": 1,
                    "memory": 1024,
                    "price_monthly": 6.0,
                }
            ],
            "meta": {"total": 1},
        },
    )
    regions = await do.list_regions()
    assert [(r.slug, r.available, r.sizes) for r in regions] == [("nyc3", True, ("s-1vcpu-1gb",)), ("ams3", False, ())]
    [size] = await do.list_sizes()
    assert (size.slug, size.regions, size.vcpus, size.memory_mb, size.price_monthly) == (
        "s-1vcpu-1gb",
        ("nyc3",),
        1,
        1024,
        6.0,
    )


async def test_get_image_by_slug(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """An image by slug; an unknown one is NotFoundError."""
    httpx_mock.add_response(
        url=f"{V2}/images/ubuntu-24-04-x64",
        json={
            "image": {
                "id": 7,
                "slug": "ubuntu-24-04-x64",
                "name": "24.04 (LTS) x64",
                "distribution": "Ubuntu",
                "regions": ["nyc3"],
                "status": "available",
            }
        },
    )
    httpx_mock.add_response(
        url=f"{V2}/images/nope", status_code=404, json={"id": "not_found", "message": "The resource was not found."}
    )
    image = await do.get_image("ubuntu-24-04-x64")
    assert (image.id, image.slug, image.distribution, image.regions) == (7, "ubuntu-24-04-x64", "Ubuntu", ("nyc3",))
    with pytest.raises(NotFoundError):
        await do.get_image("nope")


@pytest.mark.parametrize(
    ("status", "body", "writable"),
    [
        (422, {"id": "unprocessable_entity", "message": "name is too short"}, True),
        (403, {"id": "forbidden", "message": "You do not have access for the attempted action."}, False),
        (401, {"id": "unauthorized", "message": "Unable to authenticate you."}, False),
    ],
)
async def test_can_write_probes_without_creating(
    do: DigitalOceanClient, httpx_mock: HTTPXMock, status: int, body: dict[str, str], writable: bool
) -> None:
    """An empty tag name is refused by validation for a writing token and by authorization for a read-only one."""
    httpx_mock.add_response(method="POST", url=f"{V2}/tags", match_json={"name": ""}, status_code=status, json=body)
    assert await do.can_write() is writable


async def test_can_write_refuses_a_created_tag(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A probe that created something is a broken API, reported rather than taken as a yes."""
    httpx_mock.add_response(method="POST", url=f"{V2}/tags", status_code=201, json={"tag": {"name": ""}})
    with pytest.raises(CloudAPIError):
        await do.can_write()
