"""DigitalOcean API v2 client: the account, SSH keys, droplets and the catalog, as small typed records.

Only the calls deployer needs: the pipeline's, and the catalog (regions, sizes, images) that `deploy` checks
its input against. Creates are sent once and never retried (see :mod:`clients.http`);
a caller whose create failed ambiguously should look the droplet up by its unique tag before trying again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import httpx

from clients.errors import APIStatusError, AuthError, ConflictError, NotFoundError
from clients.http import APIClient, JSONObject, path_segment

__all__ = [
    "ACTIVE_DROPLET_STATUSES",
    "Account",
    "DigitalOceanClient",
    "Droplet",
    "DropletStatus",
    "Image",
    "Region",
    "SSHKey",
    "Size",
    "ssh_key_fingerprint",
]

API = "digitalocean"
logger = logging.getLogger("deployer.clients.digitalocean")

#: Largest page DigitalOcean serves.
PER_PAGE = 200
T = TypeVar("T")


class DropletStatus(StrEnum):
    """The droplet ``status`` values DigitalOcean documents."""

    NEW = "new"
    ACTIVE = "active"
    OFF = "off"
    ARCHIVE = "archive"


#: Statuses of a droplet that exists and counts against the droplet limit.
ACTIVE_DROPLET_STATUSES = frozenset({DropletStatus.NEW, DropletStatus.ACTIVE, DropletStatus.OFF})


@dataclass(frozen=True)
class Account:
    """The parts of ``GET /v2/account`` the pipeline checks before creating droplets."""

    droplet_limit: int
    status: str

    @classmethod
    def from_api(cls, data: JSONObject) -> Account:
        """Build from the ``account`` object."""
        return cls(droplet_limit=int(data["droplet_limit"]), status=str(data["status"]))


@dataclass(frozen=True)
class Region:
    """A datacenter region and the sizes it offers."""

    slug: str
    name: str
    available: bool
    sizes: tuple[str, ...]

    @classmethod
    def from_api(cls, data: JSONObject) -> Region:
        """Build from an entry of ``GET /v2/regions``."""
        return cls(
            slug=str(data["slug"]),
            name=str(data.get("name") or data["slug"]),
            available=bool(data.get("available", True)),
            sizes=tuple(str(s) for s in data.get("sizes") or ()),
        )


@dataclass(frozen=True)
class Size:
    """A droplet size and the regions it is offered in."""

    slug: str
    available: bool
    regions: tuple[str, ...]
    vcpus: int
    memory_mb: int
    price_monthly: float

    @classmethod
    def from_api(cls, data: JSONObject) -> Size:
        """Build from an entry of ``GET /v2/sizes``."""
        return cls(
            slug=str(data["slug"]),
            available=bool(data.get("available", True)),
            regions=tuple(str(r) for r in data.get("regions") or ()),
            vcpus=int(data.get("vcpus") or 0),
            memory_mb=int(data.get("memory") or 0),
            price_monthly=float(data.get("price_monthly") or 0.0),
        )


@dataclass(frozen=True)
class Image:
    """A droplet image (distribution, application or snapshot) and where it can be used."""

    id: int
    slug: str | None
    name: str
    distribution: str
    regions: tuple[str, ...]
    status: str

    @classmethod
    def from_api(cls, data: JSONObject) -> Image:
        """Build from the ``image`` object of ``GET /v2/images/{id or slug}``."""
        return cls(
            id=int(data["id"]),
            slug=str(data["slug"]) if data.get("slug") else None,
            name=str(data.get("name") or ""),
            distribution=str(data.get("distribution") or ""),
            regions=tuple(str(r) for r in data.get("regions") or ()),
            status=str(data.get("status") or "available"),
        )


@dataclass(frozen=True)
class SSHKey:
    """An SSH public key registered on the account; ``id`` or ``fingerprint`` goes into a droplet create."""

    id: int
    fingerprint: str
    name: str

    @classmethod
    def from_api(cls, data: JSONObject) -> SSHKey:
        """Build from the ``ssh_key`` object."""
        return cls(id=int(data["id"]), fingerprint=str(data["fingerprint"]), name=str(data["name"]))


def _ipv4(networks: object, kind: str) -> str | None:
    if not isinstance(networks, dict):
        return None
    for entry in networks.get("v4") or ():
        if isinstance(entry, dict) and entry.get("type") == kind and entry.get("ip_address"):
            return str(entry["ip_address"])
    return None


@dataclass(frozen=True)
class Droplet:
    """A droplet as the pipeline sees it.

    ``public_ipv4`` is the ``networks.v4`` entry with ``type == "public"`` (never simply the first entry: in a
    VPC the private address often comes first). It is ``None`` until DigitalOcean assigns it, which can be
    after ``status`` is already ``active``.
    """

    id: int
    name: str
    status: str
    public_ipv4: str | None
    private_ipv4: str | None
    tags: tuple[str, ...]
    region: str | None
    size_slug: str | None
    locked: bool

    @classmethod
    def from_api(cls, data: JSONObject) -> Droplet:
        """Build from a ``droplet`` object of the API."""
        region = data.get("region")
        region_slug = region.get("slug") if isinstance(region, dict) else None
        size_slug = data.get("size_slug")
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            status=str(data["status"]),
            public_ipv4=_ipv4(data.get("networks"), "public"),
            private_ipv4=_ipv4(data.get("networks"), "private"),
            tags=tuple(str(t) for t in data.get("tags") or ()),
            region=str(region_slug) if region_slug else None,
            size_slug=str(size_slug) if size_slug else None,
            locked=bool(data.get("locked", False)),
        )

    @property
    def ready(self) -> bool:
        """True once the droplet is ``active`` and has a public IPv4 address."""
        return self.status == DropletStatus.ACTIVE and self.public_ipv4 is not None


def ssh_key_fingerprint(public_key: str) -> str:
    """Return the MD5 fingerprint DigitalOcean uses for an OpenSSH public key (``aa:bb:...``).

    The hash covers the base64-decoded key blob, as ``ssh-keygen -E md5 -lf`` does. Raises ``ValueError``
    when the text is not ``<type> <base64 blob> [comment]`` or the blob does not start with its type.
    """
    parts = public_key.strip().split()
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key: expected '<type> <base64> [comment]'")
    key_type, blob_b64 = parts[0], parts[1]
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not an OpenSSH public key: the key blob is not valid base64") from exc
    if len(blob) < 4:
        raise ValueError("not an OpenSSH public key: the key blob is too short")
    type_len = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + type_len] != key_type.encode("ascii", "replace"):
        raise ValueError(f"not an OpenSSH public key: the key blob does not match its type {key_type!r}")
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _field(body: Any, key: str) -> Any:
    return body.get(key) if isinstance(body, dict) else None


class DigitalOceanClient(APIClient):
    """Async client for the DigitalOcean v2 API.

    ``api_url`` is the API root without the version (``https://api.digitalocean.com``, or the sandbox's
    ``http://127.0.0.1:9000/sandbox/digitalocean``); the client appends ``/v2``. Use as ``async with`` or call
    :meth:`aclose`. ``transport`` / ``http_client`` swap the network (tests, the in-process sandbox);
    ``sleep`` replaces the wait between retries.
    """

    API = API
    VERSION_PATH = "/v2"
    LOG = logger

    async def get_account(self) -> Account:
        """``GET /v2/account``: droplet limit and account status."""
        body = await self._http.send_json("GET", "/account")
        return self._http.parse(Account.from_api, _field(body, "account"), "account", "GET", "/account")

    async def get_ssh_key(self, key_id_or_fingerprint: int | str) -> SSHKey:
        """``GET /v2/account/keys/{id or fingerprint}``; raises :class:`NotFoundError` when absent."""
        path = f"/account/keys/{path_segment(key_id_or_fingerprint)}"
        body = await self._http.send_json("GET", path)
        return self._http.parse(SSHKey.from_api, _field(body, "ssh_key"), "ssh_key", "GET", path)

    async def ensure_ssh_key(self, *, name: str, public_key: str) -> SSHKey:
        """Return the account's key for ``public_key``, registering it under ``name`` if it is missing.

        Looks the key up by MD5 fingerprint first (a POST of a known key is a 422). If the POST still answers
        422 "already in use" (another worker registered it meanwhile), the key is fetched again.
        Raises ``ValueError`` for a malformed public key before any request.
        """
        fingerprint = ssh_key_fingerprint(public_key)
        try:
            return await self.get_ssh_key(fingerprint)
        except NotFoundError:
            pass
        try:
            body = await self._http.send_json(
                "POST", "/account/keys", json={"name": name, "public_key": public_key.strip()}
            )
        except ConflictError as err:
            if "already in use" not in err.message.lower():
                raise
            logger.info("ssh key %s is already registered; fetching it", fingerprint)
            return await self.get_ssh_key(fingerprint)
        return self._http.parse(SSHKey.from_api, _field(body, "ssh_key"), "ssh_key", "POST", "/account/keys")

    async def create_droplet(
        self,
        *,
        name: str,
        region: str,
        size: str,
        image: str,
        ssh_keys: Sequence[int | str],
        tags: Sequence[str],
        user_data: str | None = None,
    ) -> Droplet:
        """``POST /v2/droplets`` (202): ask for one droplet. Sent exactly once, never retried.

        The returned droplet is usually ``new`` without an IP; poll :meth:`get_droplet`. Give it a unique tag
        so that after an ambiguous failure :meth:`list_droplets` can tell whether it was created.
        """
        payload: JSONObject = {
            "name": name,
            "region": region,
            "size": size,
            "image": image,
            "ssh_keys": list(ssh_keys),
            "tags": list(tags),
        }
        if user_data is not None:
            payload["user_data"] = user_data
        body = await self._http.send_json("POST", "/droplets", json=payload)
        return self._http.parse(Droplet.from_api, _field(body, "droplet"), "droplet", "POST", "/droplets")

    async def get_droplet(self, droplet_id: int) -> Droplet:
        """``GET /v2/droplets/{id}``; raises :class:`NotFoundError` once it is gone (or placement failed)."""
        path = f"/droplets/{int(droplet_id)}"
        body = await self._http.send_json("GET", path)
        return self._http.parse(Droplet.from_api, _field(body, "droplet"), "droplet", "GET", path)

    async def list_droplets(self, *, tag_name: str | None = None, name: str | None = None) -> list[Droplet]:
        """``GET /v2/droplets``, every page, optionally filtered by tag or by exact (case-insensitive) name.

        DigitalOcean cannot combine both filters, so passing both is a ``ValueError``.
        """
        if tag_name is not None and name is not None:
            raise ValueError("list_droplets: tag_name and name cannot be combined")
        params: dict[str, str | int | bool] = {}
        if tag_name is not None:
            params["tag_name"] = tag_name
        if name is not None:
            params["name"] = name
        return await self._list_all("/droplets", "droplets", Droplet.from_api, "droplet", params)

    async def list_regions(self) -> list[Region]:
        """``GET /v2/regions``, every page."""
        return await self._list_all("/regions", "regions", Region.from_api, "region")

    async def list_sizes(self) -> list[Size]:
        """``GET /v2/sizes``, every page."""
        return await self._list_all("/sizes", "sizes", Size.from_api, "size")

    async def get_image(self, id_or_slug: int | str) -> Image:
        """``GET /v2/images/{id or slug}``; raises :class:`NotFoundError` for an unknown image."""
        path = f"/images/{path_segment(id_or_slug)}"
        body = await self._http.send_json("GET", path)
        return self._http.parse(Image.from_api, _field(body, "image"), "image", "GET", path)

    async def can_write(self) -> bool:
        """Whether the token may create resources, found without creating anything.

        ``POST /v2/tags`` with an empty name: a token allowed to write gets past authorization and is refused
        by validation (400 or 422); a read-only or under-scoped token gets 401/403. Any other answer is raised.
        """
        try:
            await self._http.send("POST", "/tags", json={"name": ""})
        except AuthError:
            return False
        except APIStatusError as err:
            if err.status_code in (400, 422):  # authorised, invalid name: nothing was created
                return True
            raise
        raise self._http.fail("POST /v2/tags with an empty name was accepted", "POST", "/tags")

    async def _list_all(
        self,
        path: str,
        key: str,
        build: Callable[[JSONObject], T],
        what: str,
        filters: dict[str, str | int | bool] | None = None,
    ) -> list[T]:
        """Every page of a DigitalOcean collection.

        Pages are followed through ``links.pages.next``; only that link's query is used and the request goes to
        ``api_url``, so the token never travels to another host.
        """
        params: dict[str, str | int | bool] = {"per_page": PER_PAGE, **(filters or {})}
        items: list[T] = []
        seen: set[tuple[tuple[str, str], ...]] = {tuple(sorted((k, str(v)) for k, v in params.items()))}
        while True:
            body = await self._http.send_json("GET", path, params=params)
            page = _field(body, key)
            if not isinstance(page, list):
                raise self._http.fail(f"response has no '{key}' list", "GET", path)
            items.extend(self._http.parse(build, item, what, "GET", path) for item in page)
            next_url = _next_page(body)
            if next_url is None:
                return items
            next_params = dict(httpx.URL(next_url).params.multi_items())
            page_key = tuple(sorted(next_params.items()))
            if page_key in seen:
                raise self._http.fail("pagination loops back to a page already read", "GET", path)
            seen.add(page_key)
            params = dict(next_params)

    async def delete_droplet(self, droplet_id: int) -> bool:
        """``DELETE /v2/droplets/{id}``: True when deleted now (204), False when it was already gone (404)."""
        try:
            await self._http.send("DELETE", f"/droplets/{int(droplet_id)}")
        except NotFoundError:
            return False
        return True


def _next_page(body: Any) -> str | None:
    links = _field(body, "links")
    pages = links.get("pages") if isinstance(links, dict) else None
    nxt = pages.get("next") if isinstance(pages, dict) else None
    return nxt if isinstance(nxt, str) and nxt else None
