"""Simulated DigitalOcean API v2: droplets, account, SSH keys, actions and the catalog.

Served under ``/sandbox/digitalocean/v2/...``. Behaviour follows the real API where a client could trip:
202 on create with ``status: "new"`` and no addresses, the public IPv4 arriving a while after ``active``
and listed *after* the private one, a new droplet missing from lists for ``list_lag_s``, 422 for the droplet
limit, for duplicate SSH keys and for a region, size or image the catalog (sandbox.catalog) lacks or does not
offer together, exact case-insensitive ``name`` filtering, pagination capped at 200 with full-URL
``links.pages``, per-token rate limits with headers on every response and ``{id, message, request_id}`` error
bodies.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.catalog import REGIONS, SIZES, find_image, image_json, region_json, size_json
from sandbox.faults import Fault, FaultKind
from sandbox.gate import ApiGate, Caller, allowed_methods, request_id
from sandbox.ratelimit import RollingWindow, header_seconds
from sandbox.state import Action, Droplet, SSHKey, World, isoformat, md5_fingerprint, ssh_key_blob

__all__ = ["DigitalOceanPolicy", "create_digitalocean_app"]

T = TypeVar("T")

_NAME = re.compile(r"^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$")
_TAG = re.compile(r"^[a-zA-Z0-9_\-:]{1,255}$")
_NOT_FOUND = "The resource you were accessing could not be found."
_USER_DATA_MAX = 64 * 1024


_DEFAULT_REGION = "nyc3"


def _pick_region(requested: object, size: str) -> str:
    """The region a create lands in, or ``"!<422 message>"``.

    A bare prefix (``nyc``) or no region at all lets DigitalOcean pick a datacenter (research
    digitalocean-api.md, create request): the sandbox picks one that is available and offers the size.
    Messages: unknown region (digitalocean/api-v2#52), "Region is not available" (api-v2#41), "Size is not
    available in this region." (research pitfall 6).
    """
    offered = [slug for slug, r in REGIONS.items() if r.available and slug not in SIZES[size].missing_in]
    if requested is None or requested == "":
        if not offered:
            return "!Region is not available"
        return _DEFAULT_REGION if _DEFAULT_REGION in offered else offered[0]
    if not isinstance(requested, str):
        return "!You specified an invalid region for Droplet creation."
    if requested not in REGIONS:
        in_prefix = [slug for slug in REGIONS if slug.rstrip("0123456789") == requested]
        if not in_prefix:
            return "!You specified an invalid region for Droplet creation."
        choices = [slug for slug in sorted(in_prefix, reverse=True) if slug in offered]
        return choices[0] if choices else "!Size is not available in this region."
    if not REGIONS[requested].available:
        return "!Region is not available"
    if requested not in offered:
        return "!Size is not available in this region."
    return requested


def _error(rid: str, status: int, error_id: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"id": error_id, "message": message, "request_id": rid}, status, headers=headers)


def _unprocessable(request: Request, message: str) -> Response:
    return _error(request_id(request), 422, "unprocessable_entity", message)


def _not_found(request: Request) -> Response:
    return _error(request_id(request), 404, "not_found", _NOT_FOUND)


class DigitalOceanPolicy:
    """Gate policy: DigitalOcean auth errors, rate limits (hourly, burst, key listing) and headers."""

    api = "digitalocean"

    def __init__(self, world: World) -> None:
        self.world = world
        self._read_only = frozenset(t.strip() for t in world.config.do_read_only_tokens.split(",") if t.strip())

    def is_public(self, path: str) -> bool:
        """Every DigitalOcean route needs a token."""
        return False

    def unauthenticated(self, rid: str) -> Response:
        """401 ``unauthorized``."""
        return _error(rid, 401, "unauthorized", "Unable to authenticate you")

    def fault_response(self, fault: Fault, rid: str) -> Response:
        """429 ``too_many_requests`` with Retry-After, or a 5xx ``server_error``."""
        if fault.kind is FaultKind.RATE_LIMIT:
            retry = fault.param if fault.param is not None else 1
            headers = {"retry-after": str(math.ceil(retry)), "ratelimit-remaining": "0"}
            return _error(rid, 429, "too_many_requests", "API Rate limit exceeded.", headers)
        status = int(fault.param or 500)
        if status == 503:
            return _error(rid, 503, "service_unavailable", "The service is temporarily unavailable.")
        return _error(rid, status, "server_error", "Server was unable to give you a response.")

    def _retry_after(self, window: RollingWindow, now: float) -> str:
        return header_seconds(window.retry_after(now), self.world.config.time_scale, minimum=1e-3)

    def admit(self, method: str, caller: Caller, rid: str) -> Response | None:
        """Apply the caller's 10/min key-listing limit, 250/min burst limit and 5000/h limit.

        Limits are per token and roll (research digitalocean-api.md, "Rate limits"). Only the burst limits
        send ``retry-after``; a refused request is not counted.
        """
        world, now, key = self.world, self.world.now(), caller.key
        if method != "GET" and caller.token in self._read_only:
            # A read-only (or under-scoped) token is refused before anything happens: DigitalOcean's 403.
            return _error(rid, 403, "forbidden", "You do not have access for the attempted action.")
        listing = world.do_keys_list[key]
        if method == "GET" and caller.path.endswith("/v2/account/keys") and not listing.hit(now):
            headers = {"retry-after": self._retry_after(listing, now)}
            return _error(rid, 429, "too_many_requests", "API Rate limit exceeded.", headers)
        burst = world.do_burst[key]
        if not burst.hit(now):
            headers = {"retry-after": self._retry_after(burst, now)}
            return _error(rid, 429, "too_many_requests", "API Rate limit exceeded.", headers)
        if not world.do_hourly[key].hit(now):  # the hourly limit sends no Retry-After
            return _error(rid, 429, "too_many_requests", "API Rate limit exceeded.", {"ratelimit-remaining": "0"})
        return None

    def headers(self, rid: str, caller: Caller) -> dict[str, str]:
        """``ratelimit-limit/remaining/reset`` (the caller's hourly window) and ``x-request-id``, always."""
        window, now = self.world.do_hourly[caller.key], self.world.now()
        limit = window.limit or 5000
        remaining = window.remaining(now) if window.limit else limit
        return {
            "ratelimit-limit": str(limit),
            "ratelimit-remaining": str(remaining),
            "ratelimit-reset": header_seconds(window.reset_at(now), self.world.config.time_scale),
            "x-request-id": rid,
        }


# ---------------------------------------------------------------- rendering


def _droplet_json(world: World, droplet: Droplet) -> dict[str, Any]:
    size = size_json(droplet.size)
    v4: list[dict[str, Any]] = []
    private_ip = world.droplet_private_ip(droplet)
    if private_ip is not None:  # the VPC address comes first: clients must not take v4[0]
        v4.append({"ip_address": private_ip, "netmask": "255.255.240.0", "gateway": "<nil>", "type": "private"})
    public_ip = world.droplet_public_ip(droplet)
    if public_ip is not None:
        gateway = public_ip.rsplit(".", 1)[0] + ".1"
        v4.append({"ip_address": public_ip, "netmask": "255.255.240.0", "gateway": gateway, "type": "public"})
    return {
        "id": droplet.id,
        "name": droplet.name,
        "memory": size["memory"],
        "vcpus": size["vcpus"],
        "disk": size["disk"],
        "disk_info": [{"type": "local", "size": {"amount": size["disk"], "unit": "gib"}}],
        "locked": False,
        "status": world.droplet_status(droplet),
        "kernel": None,
        "created_at": isoformat(droplet.created_at),
        "features": ["droplet_agent", "private_networking"],
        "backup_ids": [],
        "next_backup_window": None,
        "snapshot_ids": [],
        "image": image_json(droplet.image),
        "volume_ids": [],
        "size": size,
        "size_slug": droplet.size,
        "networks": {"v4": v4, "v6": []},
        "region": region_json(droplet.region),
        "tags": list(droplet.tags),
        "vpc_uuid": f"5a4981aa-{zlib.crc32(droplet.region.encode()) % 10**4:04d}-4f9d-8e1c-000000000001",
    }


def _action_json(world: World, action: Action) -> dict[str, Any]:
    status = world.action_status(action)
    return {
        "id": action.id,
        "status": status,
        "type": action.type,
        "started_at": isoformat(action.started_at),
        "completed_at": isoformat(action.completed_at) if status == "completed" else None,
        "resource_id": action.resource_id,
        "resource_type": "droplet",
        "region": region_json(action.region),
        "region_slug": action.region,
    }


def _key_json(key: SSHKey) -> dict[str, Any]:
    return {"id": key.id, "fingerprint": key.fingerprint, "public_key": key.public_key, "name": key.name}


def _paginate(request: Request, items: list[T]) -> tuple[list[T], dict[str, Any], dict[str, Any]]:
    """One page of ``items`` plus ``links`` (full URLs) and ``meta``; per_page is capped at 200."""

    def number(name: str, default: int) -> int:
        try:
            return int(request.query_params.get(name, default))
        except ValueError:
            return default

    per_page = min(max(number("per_page", 20), 1), 200)
    page = max(number("page", 1), 1)
    last = max(1, math.ceil(len(items) / per_page))

    def url(n: int) -> str:
        return str(request.url.include_query_params(page=n, per_page=per_page))

    pages: dict[str, str] = {}
    if page > 1:
        pages.update(first=url(1), prev=url(min(page - 1, last)))
    if page < last:
        pages.update(next=url(page + 1), last=url(last))
    links: dict[str, Any] = {"pages": pages} if pages else {}
    return items[(page - 1) * per_page : page * per_page], links, {"total": len(items)}


async def _json_body(request: Request) -> dict[str, Any] | Response:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return _error(request_id(request), 400, "bad_request", "unable to parse the request body as JSON")
    if not isinstance(data, dict):
        return _error(request_id(request), 400, "bad_request", "the request body must be a JSON object")
    return data


# ---------------------------------------------------------------- handlers


class DigitalOceanAPI:
    """Route handlers of the simulated DigitalOcean API, bound to one world."""

    def __init__(self, world: World) -> None:
        self.world = world

    def routes(self) -> list[Route]:
        """The routes served, with paths relative to the mount point."""
        return [
            Route("/v2/account", self.get_account, methods=["GET"]),
            Route("/v2/account/keys", self.list_keys, methods=["GET"]),
            Route("/v2/account/keys", self.create_key, methods=["POST"]),
            Route("/v2/account/keys/{ssh_key_identifier}", self.get_key, methods=["GET"]),
            Route("/v2/account/keys/{ssh_key_identifier}", self.update_key, methods=["PUT"]),
            Route("/v2/account/keys/{ssh_key_identifier}", self.delete_key, methods=["DELETE"]),
            Route("/v2/droplets", self.list_droplets, methods=["GET"]),
            Route("/v2/droplets", self.create_droplet, methods=["POST"]),
            Route("/v2/droplets", self.delete_droplets_by_tag, methods=["DELETE"]),
            Route("/v2/droplets/{droplet_id}", self.get_droplet, methods=["GET"]),
            Route("/v2/droplets/{droplet_id}", self.delete_droplet, methods=["DELETE"]),
            Route("/v2/actions/{action_id}", self.get_action, methods=["GET"]),
            Route("/v2/regions", self.list_regions, methods=["GET"]),
            Route("/v2/sizes", self.list_sizes, methods=["GET"]),
            Route("/v2/images/{image_id}", self.get_image, methods=["GET"]),
            Route("/v2/tags", self.create_tag, methods=["POST"]),
        ]

    # ---- account and keys

    async def get_account(self, request: Request) -> Response:
        """GET /v2/account."""
        limit = self.world.config.droplet_limit
        account = {
            "droplet_limit": limit,
            "floating_ip_limit": 3,
            "volume_limit": 100,
            "email": "sandbox@example.com",
            "name": "Sandbox",
            "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
            "email_verified": True,
            "status": "active",
            "status_message": "",
            "team": {"uuid": "5df3e3004a4b2b8b9a7c8a3f1e6f0a7a", "name": "Sandbox team"},
        }
        return JSONResponse({"account": account})

    async def list_keys(self, request: Request) -> Response:
        """GET /v2/account/keys (paginated)."""
        keys, links, meta = _paginate(request, sorted(self.world.ssh_keys.values(), key=lambda k: k.id))
        return JSONResponse({"ssh_keys": [_key_json(k) for k in keys], "links": links, "meta": meta})

    async def create_key(self, request: Request) -> Response:
        """POST /v2/account/keys: 201, or 422 for a bad or already registered key."""
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        name, public_key = body.get("name"), body.get("public_key")
        if not isinstance(name, str) or not name.strip():
            return _unprocessable(request, "Name can't be blank")
        if not isinstance(public_key, str) or not public_key.strip():
            return _unprocessable(request, "Public key can't be blank")
        blob = ssh_key_blob(public_key)
        if blob is None:
            return _unprocessable(request, "Key invalid, key should be of the format `type key [comment]`")
        if self.world.find_ssh_key(md5_fingerprint(blob)) is not None:
            return _unprocessable(request, "SSH Key is already in use on your account")
        key = self.world.add_ssh_key(name.strip(), public_key)
        return JSONResponse({"ssh_key": _key_json(key)}, 201)

    async def get_key(self, request: Request) -> Response:
        """GET /v2/account/keys/{id or fingerprint}."""
        key = self.world.find_ssh_key(request.path_params["ssh_key_identifier"])
        return _not_found(request) if key is None else JSONResponse({"ssh_key": _key_json(key)})

    async def update_key(self, request: Request) -> Response:
        """PUT /v2/account/keys/{id or fingerprint}: rename."""
        key = self.world.find_ssh_key(request.path_params["ssh_key_identifier"])
        if key is None:
            return _not_found(request)
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        name = body.get("name")
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                return _unprocessable(request, "Name can't be blank")
            key.name = name.strip()
        return JSONResponse({"ssh_key": _key_json(key)})

    async def delete_key(self, request: Request) -> Response:
        """DELETE /v2/account/keys/{id or fingerprint}: 204."""
        key = self.world.find_ssh_key(request.path_params["ssh_key_identifier"])
        if key is None:
            return _not_found(request)
        del self.world.ssh_keys[key.id]
        return Response(status_code=204)

    # ---- droplets

    async def create_droplet(self, request: Request) -> Response:
        """POST /v2/droplets: 202 with the droplet in status ``new``, or 422."""
        world = self.world
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        if "names" in body and "name" not in body:
            names = body["names"]
            if not isinstance(names, list) or not 1 <= len(names) <= 10:
                return _unprocessable(request, "names must be a list of 1 to 10 names")
        else:
            names = [body.get("name")]
        for name in names:
            if not isinstance(name, str) or not name:
                return _unprocessable(request, "Name is required")
            if len(name) > 255 or not _NAME.match(name):
                return _unprocessable(request, "Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)")
        size = body.get("size")
        if not isinstance(size, str) or not size:
            return _unprocessable(request, "Size is required")
        if size not in SIZES:
            return _unprocessable(request, "You specified an invalid size for Droplet creation.")
        raw_image = body.get("image")
        if raw_image is None or raw_image == "":
            return _unprocessable(request, "Image is required")
        known = isinstance(raw_image, int | str) and not isinstance(raw_image, bool)
        found = find_image(raw_image) if known else None
        if found is None:
            return _unprocessable(request, "You specified an invalid image for Droplet creation.")
        image = found.slug
        region = _pick_region(body.get("region"), size)
        if region.startswith("!"):
            return _unprocessable(request, region[1:])
        ssh_keys_raw = body.get("ssh_keys") or []
        tags = body.get("tags") or []
        if not isinstance(ssh_keys_raw, list) or not isinstance(tags, list):
            return _unprocessable(request, "ssh_keys and tags must be arrays")
        keys: list[SSHKey] = []
        bad: list[str] = []
        for ident in ssh_keys_raw:
            key = world.find_ssh_key(ident) if isinstance(ident, int | str) and not isinstance(ident, bool) else None
            if key is None:
                bad.append(str(ident))
            else:
                keys.append(key)
        if bad:
            return _unprocessable(request, f"{', '.join(bad)} are invalid key identifiers for Droplet creation.")
        if not all(isinstance(t, str) and _TAG.match(t) for t in tags):
            return _unprocessable(
                request,
                "Tag names may only contain letters, numbers, colons, dashes, and underscores (255 max).",
            )
        user_data = body.get("user_data")
        if user_data is not None and (not isinstance(user_data, str) or len(user_data.encode()) > _USER_DATA_MAX):
            return _unprocessable(request, "user_data must be a string of at most 64 KiB")
        public_networking = body.get("public_networking", True) is not False
        if not public_networking and body.get("ipv6"):
            return _unprocessable(request, "ipv6 requires public networking")
        rejected = world.faults.take(FaultKind.DROPLET_CREATE_REJECTED, request.method, request.url.path)
        if rejected or len(world.droplets) + len(names) > world.config.droplet_limit:
            return _unprocessable(request, "creating this/these droplet(s) will exceed your droplet limit")
        created: list[Droplet] = []
        for name in names:
            no_ip = world.faults.take(FaultKind.DROPLET_NO_IP, request.method, request.url.path) is not None
            sshd_never = world.faults.take(FaultKind.SSHD_NEVER, request.method, request.url.path) is not None
            wrong_key = world.faults.take(FaultKind.WRONG_KEY, request.method, request.url.path) is not None
            created.append(
                world.create_droplet(
                    name=name,
                    region=region,
                    size=size,
                    image=image,
                    tags=tags,
                    ssh_keys=keys,
                    user_data=user_data,
                    public_networking=public_networking,
                    no_ip=no_ip,
                    sshd_never=sshd_never,
                    wrong_key=wrong_key,
                )
            )
        root = request.scope.get("root_path", "")
        actions = [
            {
                "id": d.action_id,
                "rel": "create",
                "href": str(request.url.replace(path=f"{root}/v2/actions/{d.action_id}", query="")),
            }
            for d in created
        ]
        if "name" in body or (len(created) == 1 and "names" not in body):
            return JSONResponse({"droplet": _droplet_json(world, created[0]), "links": {"actions": actions}}, 202)
        return JSONResponse(
            {"droplets": [_droplet_json(world, d) for d in created], "links": {"actions": actions}}, 202
        )

    def _droplet(self, request: Request) -> Droplet | None:
        raw = str(request.path_params["droplet_id"])
        return self.world.droplets.get(int(raw)) if raw.isdigit() else None

    async def get_droplet(self, request: Request) -> Response:
        """GET /v2/droplets/{id}: 404 once deleted."""
        droplet = self._droplet(request)
        return _not_found(request) if droplet is None else JSONResponse({"droplet": _droplet_json(self.world, droplet)})

    async def list_droplets(self, request: Request) -> Response:
        """GET /v2/droplets with ``tag_name`` or ``name`` (exact, case-insensitive) and pagination."""
        query = request.query_params
        tag, name, kind = query.get("tag_name"), query.get("name"), query.get("type")
        if tag is not None and (name is not None or kind is not None):
            return _unprocessable(request, "tag_name cannot be combined with name or type")
        if kind is not None and kind not in ("droplets", "gpus"):
            return _unprocessable(request, "type must be droplets or gpus")
        # A new droplet shows in lists only list_lag_s after its create: DigitalOcean does not document how
        # soon lists see a create (research digitalocean-api.md, open questions), so clients must look again.
        droplets = sorted((d for d in self.world.droplets.values() if self.world.droplet_listed(d)), key=lambda d: d.id)
        if kind == "gpus":
            droplets = []
        if tag is not None:
            droplets = [d for d in droplets if tag in d.tags]
        if name is not None:
            droplets = [d for d in droplets if d.name.casefold() == name.casefold()]
        page, links, meta = _paginate(request, droplets)
        return JSONResponse({"droplets": [_droplet_json(self.world, d) for d in page], "links": links, "meta": meta})

    async def delete_droplet(self, request: Request) -> Response:
        """DELETE /v2/droplets/{id}: 204, then the droplet is gone (404)."""
        droplet = self._droplet(request)
        if droplet is None:
            return _not_found(request)
        del self.world.droplets[droplet.id]
        return Response(status_code=204)

    async def delete_droplets_by_tag(self, request: Request) -> Response:
        """DELETE /v2/droplets?tag_name=T: 204, every droplet carrying the tag is gone."""
        tag = request.query_params.get("tag_name")
        if not tag:
            return _unprocessable(request, "tag_name is required")
        for droplet in [d for d in self.world.droplets.values() if tag in d.tags]:
            del self.world.droplets[droplet.id]
        return Response(status_code=204)

    async def get_action(self, request: Request) -> Response:
        """GET /v2/actions/{id}: actions stay queryable after their droplet is gone."""
        raw = str(request.path_params["action_id"])
        action = self.world.actions.get(int(raw)) if raw.isdigit() else None
        return _not_found(request) if action is None else JSONResponse({"action": _action_json(self.world, action)})

    # ---- catalog

    async def list_regions(self, request: Request) -> Response:
        """GET /v2/regions (paginated): every region, ``available`` false where creates are refused."""
        page, links, meta = _paginate(request, list(REGIONS))
        return JSONResponse({"regions": [region_json(r) for r in page], "links": links, "meta": meta})

    async def list_sizes(self, request: Request) -> Response:
        """GET /v2/sizes (paginated), each with the regions that offer it."""
        page, links, meta = _paginate(request, list(SIZES))
        return JSONResponse({"sizes": [size_json(s) for s in page], "links": links, "meta": meta})

    async def get_image(self, request: Request) -> Response:
        """GET /v2/images/{id or slug}: a public image, or 404."""
        image = find_image(str(request.path_params["image_id"]))
        return _not_found(request) if image is None else JSONResponse({"image": image_json(image.slug)})

    async def create_tag(self, request: Request) -> Response:
        """POST /v2/tags: 201 with the tag (creating an existing one returns it); a bad name is 422.

        Tag names are letters, digits, `_`, `-` and `:`, at most 255 (spec `tags.name`), case-stable.
        """
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        name = body.get("name")
        if not isinstance(name, str) or not _TAG.match(name):
            return _unprocessable(request, "name must be 1-255 letters, numbers, colons, dashes and underscores")
        tag = self.world.canonical_tag(name)
        tagged = sum(1 for d in self.world.droplets.values() if tag in d.tags)
        resources = {
            "count": tagged,
            "droplets": {"count": tagged},
            "images": {"count": 0},
            "volumes": {"count": 0},
            "volume_snapshots": {"count": 0},
            "databases": {"count": 0},
        }
        return JSONResponse({"tag": {"name": tag, "resources": resources}}, status_code=201)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    rid = request_id(request)
    if exc.status_code == 405:
        allow = {"Allow": allowed_methods(request)}
        return _error(rid, 405, "method_not_allowed", "Method Not Allowed", allow)
    if exc.status_code == 404:
        return _error(rid, 404, "not_found", _NOT_FOUND)
    return _error(rid, exc.status_code, "error", exc.detail)


def create_digitalocean_app(world: World) -> ApiGate:
    """The DigitalOcean sandbox as an ASGI app, to mount at ``/sandbox/digitalocean``."""
    app = Starlette(routes=DigitalOceanAPI(world).routes(), exception_handlers={HTTPException: _http_error})
    return ApiGate(app, world=world, policy=DigitalOceanPolicy(world))
