"""DigitalOcean's catalog as `deploy` sees it: what is refused and why, caching, and an unreachable API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from clients.digitalocean import DigitalOceanClient
from clients.http import RetryPolicy
from jobs.catalog import Catalog, CatalogUnavailableError, Choice

V2 = "https://do.example.test/v2"
REGIONS = {
    "regions": [
        {"slug": "nyc3", "name": "New York 3", "available": True, "sizes": ["s-1vcpu-1gb", "g-2vcpu-8gb"]},
        {"slug": "sfo3", "name": "San Francisco 3", "available": True, "sizes": ["s-1vcpu-1gb"]},
        {"slug": "nyc2", "name": "New York 2", "available": False, "sizes": []},
    ],
    "meta": {"total": 3},
}
SIZES = {
    "sizes": [
        {"slug": "s-1vcpu-1gb", "available": True, "regions": ["nyc3", "sfo3"], "vcpus": 1, "memory": 1024},
        {"slug": "g-2vcpu-8gb", "available": True, "regions": ["nyc3"], "vcpus": 2, "memory": 8192},
        {"slug": "s-old", "available": False, "regions": [], "vcpus": 1, "memory": 512},
    ],
    "meta": {"total": 3},
}


def image(slug: str, regions: list[str]) -> dict[str, Any]:
    """An image object shaped like DigitalOcean's."""
    return {"image": {"id": 1, "slug": slug, "name": slug, "distribution": "Ubuntu", "regions": regions}}


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def do() -> AsyncIterator[DigitalOceanClient]:
    """A client with no retries, so a failure reaches the catalog at once."""
    async with DigitalOceanClient(
        api_url="https://do.example.test", token="t", retry=RetryPolicy(max_attempts=1)
    ) as client:
        yield client


def serve_catalog(httpx_mock: HTTPXMock, *, reusable: bool = True, ubuntu: bool = True) -> None:
    """Answer the two catalog lists (and the ubuntu image)."""
    httpx_mock.add_response(url=f"{V2}/regions?per_page=200", json=REGIONS, is_reusable=reusable)
    httpx_mock.add_response(url=f"{V2}/sizes?per_page=200", json=SIZES, is_reusable=reusable)
    if ubuntu:
        httpx_mock.add_response(
            url=f"{V2}/images/ubuntu-24-04-x64", json=image("ubuntu-24-04-x64", []), is_reusable=reusable
        )


async def test_a_valid_choice_has_no_problems(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A known region, a size offered there and a known image pass."""
    serve_catalog(httpx_mock)
    assert await Catalog(do).problems(Choice("nyc3", "g-2vcpu-8gb", "ubuntu-24-04-x64")) == []


@pytest.mark.parametrize(
    ("choice", "field", "reason"),
    [
        (Choice("mars1", "s-1vcpu-1gb", "ubuntu-24-04-x64", region_field="input.region"), "input.region",
         "is not a DigitalOcean region; regions: nyc2, nyc3, sfo3"),
        (Choice("nyc2", "s-1vcpu-1gb", "ubuntu-24-04-x64"), "region", "is not accepting new droplets"),
        (Choice("nyc3", "s-huge", "ubuntu-24-04-x64", size_field="input.size"), "input.size",
         "is not a DigitalOcean droplet size"),
        (Choice("nyc3", "s-old", "ubuntu-24-04-x64"), "size", "is not available for new droplets"),
        (Choice("sfo3", "g-2vcpu-8gb", "ubuntu-24-04-x64"), "size",
         "is not offered in region sfo3; sizes there: s-1vcpu-1gb"),
    ],
)  # fmt: skip
async def test_refusals_name_the_field_and_why(
    do: DigitalOceanClient, httpx_mock: HTTPXMock, choice: Choice, field: str, reason: str
) -> None:
    """Each thing DigitalOcean would refuse is one problem naming the field, with what would be accepted."""
    serve_catalog(httpx_mock)
    problems = await Catalog(do).problems(choice)
    assert len(problems) == 1, problems
    assert problems[0][0] == field
    assert problems[0][1].startswith(reason)


async def test_unknown_and_misplaced_images(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """An image DigitalOcean does not know is refused; so is one not available in the region."""
    serve_catalog(httpx_mock, ubuntu=False)
    httpx_mock.add_response(url=f"{V2}/images/no-such", status_code=404, json={"id": "not_found", "message": "x"})
    httpx_mock.add_response(url=f"{V2}/images/snap", json=image("snap", ["ams3"]))
    catalog = Catalog(do)
    assert await catalog.problems(Choice("nyc3", "s-1vcpu-1gb", "no-such", image_field="input.image")) == [
        ("input.image", "is not a DigitalOcean image (slug or id)")
    ]
    assert await catalog.problems(Choice("nyc3", "s-1vcpu-1gb", "snap")) == [
        ("image", "is not available in region nyc3")
    ]


async def test_the_catalog_is_read_once_per_ttl(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """Within the TTL no request is repeated; after it the lists are read again."""
    serve_catalog(httpx_mock)
    clock = Clock()
    catalog = Catalog(do, ttl_s=600, clock=clock)
    choice = Choice("nyc3", "s-1vcpu-1gb", "ubuntu-24-04-x64")
    for _ in range(5):
        await catalog.problems(choice)
    assert len(httpx_mock.get_requests()) == 3
    clock.now = 601
    await catalog.problems(choice)
    assert len(httpx_mock.get_requests()) == 6


async def test_an_old_copy_is_used_while_digitalocean_is_down(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """A failed refresh falls back to the last catalog for `stale_s`, then refuses to judge."""
    serve_catalog(httpx_mock, reusable=False)
    clock = Clock()
    catalog = Catalog(do, ttl_s=10, stale_s=100, clock=clock)
    choice = Choice("mars1", "s-1vcpu-1gb", "ubuntu-24-04-x64")
    assert len(await catalog.problems(choice)) == 1
    httpx_mock.add_exception(httpx.ConnectError("down"), is_reusable=True)
    clock.now = 50
    assert len(await catalog.problems(choice)) == 1
    clock.now = 200
    with pytest.raises(CatalogUnavailableError, match="could not be read"):
        await catalog.problems(choice)


async def test_no_catalog_and_no_digitalocean_is_unavailable(do: DigitalOceanClient, httpx_mock: HTTPXMock) -> None:
    """With nothing cached and DigitalOcean unreachable the catalog refuses to judge."""
    httpx_mock.add_exception(httpx.ConnectError("down"), is_reusable=True)
    with pytest.raises(CatalogUnavailableError):
        await Catalog(do).problems(Choice("nyc3", "s-1vcpu-1gb", "ubuntu-24-04-x64"))
