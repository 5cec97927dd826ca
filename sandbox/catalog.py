"""DigitalOcean's catalog as the sandbox seeds it: regions, sizes and images, with their JSON shapes.

The data is a realistic slice of the real catalog (``GET /v2/regions``, ``/v2/sizes``, ``/v2/images``):
slugs, prices (hourly = monthly / 672, as DigitalOcean bills), and the awkward parts a client must handle:

- a region that is listed but ``available: false`` (``nyc2``: droplet creates answer 422 "Region is not
  available", digitalocean/api-v2#41, trailofbits/algo#677);
- sizes that are not offered everywhere (a create answers 422 "Size is not available in this region.",
  research digitalocean-api.md pitfall 6): ``s-1vcpu-512mb-10gb`` is not in blr1 or syd1, ``c-2`` not in
  syd1, ``g-2vcpu-8gb`` not in syd1 or tor1, ``m-2vcpu-16gb`` not in nyc1, blr1, syd1 or tor1;
- the marketplace image ``docker-20-04`` (Docker preinstalled), beside the plain distribution images.

Shapes follow the ``region``, ``size`` and ``image`` schemas of the official spec.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

__all__ = [
    "IMAGES",
    "REGIONS",
    "SIZES",
    "Image",
    "Region",
    "Size",
    "find_image",
    "image_json",
    "region_json",
    "size_json",
]

_FEATURES = ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"]


@dataclass(frozen=True)
class Region:
    """A datacenter region."""

    slug: str
    name: str
    available: bool = True


@dataclass(frozen=True)
class Size:
    """A droplet size, and the regions it is offered in."""

    slug: str
    memory: int  # MiB
    vcpus: int
    disk: int  # GB
    transfer: float  # TB
    price_monthly: float
    description: str
    missing_in: frozenset[str] = frozenset()  # available regions that do not offer it


@dataclass(frozen=True)
class Image:
    """A public image: a distribution (``base``) or a marketplace application."""

    id: int
    slug: str
    name: str
    distribution: str
    type: str
    min_disk_size: int
    size_gigabytes: float
    description: str
    created_at: str


REGIONS: dict[str, Region] = {
    r.slug: r
    for r in (
        Region("nyc1", "New York 1"),
        Region("nyc2", "New York 2", available=False),
        Region("nyc3", "New York 3"),
        Region("sfo3", "San Francisco 3"),
        Region("ams3", "Amsterdam 3"),
        Region("sgp1", "Singapore 1"),
        Region("lon1", "London 1"),
        Region("fra1", "Frankfurt 1"),
        Region("tor1", "Toronto 1"),
        Region("blr1", "Bangalore 1"),
        Region("syd1", "Sydney 1"),
    )
}

SIZES: dict[str, Size] = {
    s.slug: s
    for s in (
        Size("s-1vcpu-512mb-10gb", 512, 1, 10, 0.5, 4.0, "Basic", frozenset({"blr1", "syd1"})),
        Size("s-1vcpu-1gb", 1024, 1, 25, 1.0, 6.0, "Basic"),
        Size("s-1vcpu-2gb", 2048, 1, 50, 2.0, 12.0, "Basic"),
        Size("s-2vcpu-2gb", 2048, 2, 60, 3.0, 18.0, "Basic"),
        Size("s-2vcpu-4gb", 4096, 2, 80, 4.0, 24.0, "Basic"),
        Size("s-4vcpu-8gb", 8192, 4, 160, 5.0, 48.0, "Basic"),
        Size("s-8vcpu-16gb", 16384, 8, 320, 6.0, 96.0, "Basic"),
        Size("c-2", 4096, 2, 25, 4.0, 42.0, "CPU-Optimized", frozenset({"syd1"})),
        Size("g-2vcpu-8gb", 8192, 2, 25, 4.0, 63.0, "General Purpose", frozenset({"syd1", "tor1"})),
        Size("m-2vcpu-16gb", 16384, 2, 50, 4.0, 84.0, "Memory-Optimized", frozenset({"nyc1", "blr1", "syd1", "tor1"})),
    )
}

IMAGES: dict[str, Image] = {
    i.slug: i
    for i in (
        Image(
            160232537, "ubuntu-24-04-x64", "24.04 (LTS) x64", "Ubuntu", "base", 7, 2.36,
            "Ubuntu 24.04 (LTS) x64", "2024-07-23T17:18:06Z",
        ),
        Image(
            129211873, "ubuntu-22-04-x64", "22.04 (LTS) x64", "Ubuntu", "base", 7, 2.28,
            "Ubuntu 22.04 (LTS) x64", "2023-04-28T18:38:25Z",
        ),
        Image(
            157928799, "debian-12-x64", "12 x64", "Debian", "base", 7, 1.02,
            "Debian 12 x64 (bookworm)", "2024-06-19T11:48:10Z",
        ),
        # Marketplace images are listed with type "snapshot" and a larger minimum disk.
        Image(
            147993627, "docker-20-04", "Docker on Ubuntu 20.04", "Ubuntu", "snapshot", 25, 3.42,
            "Docker CE with Docker Compose preinstalled, on Ubuntu 20.04", "2024-01-10T10:02:44Z",
        ),
    )
}  # fmt: skip


def available_regions() -> list[str]:
    """Slugs of the regions that accept droplet creates."""
    return [r.slug for r in REGIONS.values() if r.available]


def size_regions(size: Size) -> list[str]:
    """The regions a size can be created in."""
    return [slug for slug in available_regions() if slug not in size.missing_in]


def region_sizes(region: Region) -> list[str]:
    """The sizes offered in a region (none in an unavailable one)."""
    if not region.available:
        return []
    return [s.slug for s in SIZES.values() if region.slug not in s.missing_in]


def find_image(identifier: str | int) -> Image | None:
    """A public image by numeric id (int or digits) or by slug."""
    if isinstance(identifier, int) or identifier.isdigit():
        return next((i for i in IMAGES.values() if i.id == int(identifier)), None)
    return IMAGES.get(identifier)


def region_json(slug: str) -> dict[str, Any]:
    """The ``region`` object (an unknown slug, only for records made outside the API, gets a bare one)."""
    region = REGIONS.get(slug, Region(slug, slug))
    return {
        "name": region.name,
        "slug": region.slug,
        "features": list(_FEATURES) if region.available else ["backups", "metadata"],
        "available": region.available,
        "sizes": region_sizes(region) if slug in REGIONS else [],
    }


def size_json(slug: str) -> dict[str, Any]:
    """The ``size`` object (an unknown slug, only for records made outside the API, gets 1 GiB figures)."""
    size = SIZES.get(slug) or Size(slug, 1024, 1, 25, 1.0, 6.0, "Basic")
    return {
        "slug": size.slug,
        "memory": size.memory,
        "vcpus": size.vcpus,
        "disk": size.disk,
        "transfer": size.transfer,
        "price_monthly": size.price_monthly,
        "price_hourly": round(size.price_monthly / 672, 5),
        "regions": size_regions(size),
        "available": True,
        "description": size.description,
        "disk_info": [{"type": "local", "size": {"amount": size.disk, "unit": "gib"}}],
    }


def image_json(identifier: str | int) -> dict[str, Any]:
    """The ``image`` object (an unknown image, only for records made outside the API, gets a bare one)."""
    image = find_image(identifier)
    if image is None:
        text = str(identifier)
        image = Image(
            100_000_000 + zlib.crc32(text.encode()) % 90_000_000, text, text, "Unknown", "snapshot", 25, 2.5,
            text, "2024-01-01T00:00:00Z",
        )  # fmt: skip
    return {
        "id": image.id,
        "name": image.name,
        "distribution": image.distribution,
        "slug": image.slug,
        "public": True,
        "regions": available_regions(),
        "created_at": image.created_at,
        "type": image.type,
        "min_disk_size": image.min_disk_size,
        "size_gigabytes": image.size_gigabytes,
        "description": image.description,
        "tags": [],
        "status": "available",
        "error_message": "",
    }
