"""DigitalOcean's catalog (regions, sizes, images), cached, to refuse at `deploy` what DigitalOcean would refuse.

Without it a `region: "mars1"` is queued, takes a droplet slot and fails seconds later in the worker. The
catalog is read from `/v2/regions`, `/v2/sizes` and `/v2/images/{slug}` and kept for `ttl_s`; when a refresh
fails, the last catalog is used for up to `stale_s` more. With no usable catalog and DigitalOcean unreachable
the check raises `CatalogUnavailableError`, so the caller refuses rather than queue blind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from clients.digitalocean import DigitalOceanClient, Image, Region, Size
from clients.errors import CloudAPIError, NotFoundError

__all__ = ["Catalog", "CatalogUnavailableError", "Choice"]

logger = logging.getLogger("deployer.catalog")

#: How many valid choices an error message lists.
_EXAMPLES = 8


class CatalogUnavailableError(Exception):
    """DigitalOcean's catalog could not be read and no earlier copy is fresh enough to judge by."""


@dataclass(frozen=True)
class Choice:
    """The droplet a deployment asks for; each `*_field` names the input field to blame (e.g. `input.size`)."""

    region: str
    size: str
    image: str
    region_field: str = "region"
    size_field: str = "size"
    image_field: str = "image"


@dataclass(frozen=True)
class _Listing:
    regions: dict[str, Region]
    sizes: dict[str, Size]
    fetched_at: float


def _examples(slugs: Iterable[str]) -> str:
    names = sorted(slugs)
    more = f", … ({len(names)} in all)" if len(names) > _EXAMPLES else ""
    return ", ".join(names[:_EXAMPLES]) + more


class Catalog:
    """A cached view of DigitalOcean's regions, sizes and images, shared by every request of one process.

    Args:
        client: a DigitalOcean client (its token needs only read access).
        ttl_s: how long a catalog read is used before it is read again.
        stale_s: how much longer an old catalog is used while DigitalOcean cannot be reached.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        client: DigitalOceanClient,
        *,
        ttl_s: float = 600.0,
        stale_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._stale_s = stale_s
        self._clock = clock
        self._listing: _Listing | None = None
        self._images: dict[str, tuple[Image | None, float]] = {}
        self._lock = asyncio.Lock()

    async def problems(self, choice: Choice) -> list[tuple[str, str]]:
        """Every reason DigitalOcean would refuse this droplet, as (field, reason); empty when it is fine.

        Raises:
            CatalogUnavailableError: DigitalOcean cannot be read and no catalog copy is recent enough.
        """
        listing = await self._current_listing()
        found: list[tuple[str, str]] = []
        region = listing.regions.get(choice.region)
        if region is None:
            found.append((choice.region_field, f"is not a DigitalOcean region; regions: {_examples(listing.regions)}"))
        elif not region.available:
            found.append((choice.region_field, "is not accepting new droplets at the moment"))
        size = listing.sizes.get(choice.size)
        if size is None:
            found.append((choice.size_field, f"is not a DigitalOcean droplet size; sizes: {_examples(listing.sizes)}"))
        elif not size.available:
            found.append((choice.size_field, "is not available for new droplets at the moment"))
        elif region is not None and region.available and not _offered(size, region):
            offered = [s for s in listing.sizes.values() if s.available and _offered(s, region)]
            there = _examples(s.slug for s in offered)
            found.append((choice.size_field, f"is not offered in region {region.slug}; sizes there: {there}"))
        image = await self._image(choice.image)
        if image is None:
            found.append((choice.image_field, "is not a DigitalOcean image (slug or id)"))
        elif region is not None and image.regions and region.slug not in image.regions:
            found.append((choice.image_field, f"is not available in region {region.slug}"))
        return found

    async def _current_listing(self) -> _Listing:
        listing = self._listing
        if listing is not None and self._clock() - listing.fetched_at < self._ttl_s:
            return listing
        async with self._lock:  # one refresh at a time; the others use its result
            listing = self._listing
            now = self._clock()
            if listing is not None and now - listing.fetched_at < self._ttl_s:
                return listing
            try:
                regions, sizes = await asyncio.gather(self._client.list_regions(), self._client.list_sizes())
            except CloudAPIError as exc:
                if listing is not None and now - listing.fetched_at < self._ttl_s + self._stale_s:
                    logger.warning("DigitalOcean catalog refresh failed; using the copy from earlier: %s", exc)
                    return listing
                raise CatalogUnavailableError(f"DigitalOcean's catalog could not be read: {exc}") from exc
            self._listing = _Listing({r.slug: r for r in regions}, {s.slug: s for s in sizes}, now)
            return self._listing

    async def _image(self, slug: str) -> Image | None:
        cached = self._images.get(slug)
        now = self._clock()
        if cached is not None and now - cached[1] < self._ttl_s:
            return cached[0]
        try:
            image: Image | None = await self._client.get_image(slug)
        except NotFoundError:
            image = None
        except CloudAPIError as exc:
            if cached is not None and now - cached[1] < self._ttl_s + self._stale_s:
                return cached[0]
            raise CatalogUnavailableError(f"DigitalOcean's image {slug!r} could not be read: {exc}") from exc
        self._images[slug] = (image, now)
        return image


def _offered(size: Size, region: Region) -> bool:
    """Whether a size can be created in a region: the size's `regions`, else the region's `sizes`."""
    return region.slug in size.regions if size.regions else size.slug in region.sizes
