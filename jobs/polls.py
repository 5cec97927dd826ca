"""Shared list polls: deployments waiting at the same stage share one list call per poll interval.

Every waiting deployment used to poll its own droplet, server or build, so the polling grew with the fleet:
200 deployments at a 5 s interval are 2,400 requests a minute against DigitalOcean's 250. Instead, each kind of
wait reads one list of the cloud, fetched at most once per interval by all worker processes together:

- DigitalOcean droplets carrying deployer's tag (``GET /v2/droplets?tag_name=deployer``, paged by 200);
- Coolify servers (``GET /servers``: ``is_reachable`` / ``is_usable``, but no ``is_validating``);
- Coolify's running deployments (``GET /deployments``: only ``queued`` and ``in_progress`` ones).

How one fetch is shared: inside a process, one task per list does the work and every caller awaits it. Across
processes, the snapshot lives in Redis with the wall-clock time its fetch started; a process that needs a
fresher one takes a short ``SET NX PX`` lock and fetches, and the others wait for its snapshot. A caller gets
``None`` when the list call failed, when no fresh snapshot appeared in time, or when the item is not listed (a
droplet the list does not show yet, a build that has finished): it then reads that one item itself, as before.
The droplet list holds the droplets of every live app too; a process whose waiting deployments are fewer than its
pages does not fetch it (see `SharedList`'s `cost`).

Snapshots hold only what the waits decide on (a droplet's status and address, a server's flags, a build's
status), never anything secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from clients.coolify import CoolifyClient
from clients.digitalocean import PER_PAGE as DROPLETS_PER_PAGE
from clients.digitalocean import DigitalOceanClient
from clients.errors import CloudAPIError

__all__ = ["BuildView", "DropletView", "PollLists", "ServerView", "SharedList", "Snapshot", "polls_prefix"]

logger = logging.getLogger("deployer.polls")

T = TypeVar("T")
#: How long a fetching process holds the lock at most; others wait this long for its snapshot.
LOCK_S = 15.0
#: How long a snapshot stays in Redis (readers judge freshness by its fetch time, not by this).
SNAPSHOT_TTL_S = 600.0
#: Between two looks at Redis while another process fetches, at most (shorter for short intervals).
WAIT_STEP_S = 0.1

# Delete the lock only while it is still ours (it may have expired and been taken by another process).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Snapshot(Generic[T]):
    """One fetch of a list: when it started (wall clock, seconds) and the items by id."""

    fetched_at: float
    items: Mapping[str, T]


@dataclass(frozen=True)
class DropletView:
    """What ``wait_droplet`` needs of a listed droplet."""

    status: str
    public_ipv4: str | None


@dataclass(frozen=True)
class ServerView:
    """What ``GET /servers`` says of a server: its flags, without ``is_validating`` or the logs."""

    is_reachable: bool
    is_usable: bool
    force_disabled: bool

    @property
    def usable(self) -> bool:
        """Coolify can deploy to it (the same rule as :attr:`clients.coolify.Server.usable`)."""
        return self.is_reachable and self.is_usable and not self.force_disabled


@dataclass(frozen=True)
class BuildView:
    """A Coolify deployment that ``GET /deployments`` lists, so it is still queued or in progress."""

    status: str


Fetch = Callable[[], Awaitable[dict[str, dict[str, Any]]]]


def polls_prefix(queue: str, *accounts: str) -> str:
    """The Redis key prefix of one installation's lists: its queue and a digest of the cloud accounts it lists
    (API URLs and tokens), so that installations sharing a Redis server never read each other's snapshots.
    Only the digest reaches Redis, never a token."""
    digest = hashlib.sha256("\n".join(("deployer-polls", *accounts)).encode()).hexdigest()[:16]
    return f"deployer:polls:{queue}:{digest}"


class SharedList(Generic[T]):
    """One cloud list, fetched at most once per `max_age` by every process sharing `redis`.

    Args:
        key: the Redis key of the snapshot; the lock is ``key + ":lock"``.
        fetch: the list call, returning each item as a small JSON-safe dict keyed by its id.
        build: turns one such dict back into a typed view.
        cost: how many requests a fetch of that many items takes (pages). When a fetch would cost more than
            the items this process asked for within `max_age`, the process does not fetch and its callers read
            their items themselves: a tag list that holds every live app's droplet can be many pages long
            while only a few deployments wait. A fresh snapshot another process fetched is always used.
        clock: wall-clock seconds (snapshots cross processes and machines, so not `time.monotonic`).
    """

    def __init__(
        self,
        redis: Redis,
        key: str,
        fetch: Fetch,
        build: Callable[[dict[str, Any]], T],
        *,
        lock_s: float = LOCK_S,
        cost: Callable[[int], int] = lambda items: 1,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._redis = redis
        self._cost = cost
        #: Requests the last fetch (or snapshot read) says a fetch takes; one until a snapshot is seen.
        self._fetch_cost = 1
        #: When this process last asked for each item: how many reads a fetch would replace.
        self._asked: dict[str, float] = {}
        self.key = key
        self._lock_key = f"{key}:lock"
        self._fetch = fetch
        self._build = build
        self._lock_s = lock_s
        self._clock = clock
        self._sleep = sleep
        self._local: Snapshot[T] | None = None
        self._inflight: asyncio.Task[Snapshot[T] | None] | None = None
        #: List calls this process made (successful or not), for logs and the bench.
        self.fetches = 0

    async def snapshot(self, max_age: float) -> Snapshot[T] | None:
        """A snapshot fetched at most `max_age` seconds before this call, or None when none could be had."""
        not_before = self._clock() - max_age
        local = self._local
        if local is not None and local.fetched_at >= not_before:
            return local
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._refresh(not_before, max_age), name=f"poll-list {self.key}")
        # A caller cancelled while waiting (its job was cancelled) must not cancel the others' fetch.
        return await asyncio.shield(self._inflight)

    async def item(self, item_id: str, max_age: float) -> T | None:
        """The item as a fresh snapshot lists it; None when it is not listed or there is no fresh snapshot."""
        self._asked[item_id] = self._clock()
        snap = await self.snapshot(max_age)
        return None if snap is None else snap.items.get(item_id)

    async def _refresh(self, not_before: float, max_age: float) -> Snapshot[T] | None:
        try:
            snap = await self._shared(not_before, max_age)
        except RedisError as exc:
            logger.warning("shared list %s: Redis failed (%s); polling items one by one", self.key, exc)
            return None
        except Exception:
            # The list is an optimisation: whatever goes wrong with it, every deployment can still read its own
            # item, so no deployment fails because of it.
            logger.exception("shared list %s failed; polling items one by one", self.key)
            return None
        if snap is not None:
            self._local = snap
            self._fetch_cost = max(1, self._cost(len(snap.items)))
        return snap

    def _demand(self, max_age: float) -> int:
        """Items this process asked for within `max_age`: the reads one fetch would stand in for."""
        since = self._clock() - max_age
        self._asked = {item: at for item, at in self._asked.items() if at >= since}
        return len(self._asked)

    async def _shared(self, not_before: float, max_age: float) -> Snapshot[T] | None:
        snap = await self._read()
        if snap is not None and snap.fetched_at >= not_before:
            return snap
        if snap is not None:
            self._fetch_cost = max(1, self._cost(len(snap.items)))
        if self._fetch_cost > max(1, self._demand(max_age)):
            return None  # fewer reads than the list's pages: the callers read their items themselves
        token = secrets.token_hex(8)
        if await self._redis.set(self._lock_key, token, nx=True, px=max(1, int(self._lock_s * 1000))):
            try:
                # Another process may have stored a fresh snapshot between our read and our lock.
                snap = await self._read()
                if snap is not None and snap.fetched_at >= not_before:
                    return snap
                return await self._fetch_and_store()
            finally:
                await self._redis.eval(_RELEASE, 1, self._lock_key, token)
        # Another process is fetching: wait for its snapshot rather than asking the cloud again.
        step = max(0.005, min(WAIT_STEP_S, max_age / 4))
        deadline = self._clock() + self._lock_s
        while self._clock() < deadline:
            await self._sleep(step)
            snap = await self._read()
            if snap is not None and snap.fetched_at >= not_before:
                return snap
            if not await self._redis.exists(self._lock_key):
                # That fetch ended without a snapshot (its list call failed): the callers read their items
                # themselves this round, as they would after a failed fetch of our own.
                snap = await self._read()
                return snap if snap is not None and snap.fetched_at >= not_before else None
        return None

    async def _fetch_and_store(self) -> Snapshot[T] | None:
        started = self._clock()
        self.fetches += 1
        try:
            raw = await self._fetch()
        except CloudAPIError as exc:
            logger.info("shared list %s failed (%s); polling items one by one", self.key, exc)
            return None
        payload = json.dumps({"fetched_at": started, "items": raw}, separators=(",", ":"))
        await self._redis.set(self.key, payload, px=int(SNAPSHOT_TTL_S * 1000))
        return Snapshot(started, {item_id: self._build(item) for item_id, item in raw.items()})

    async def _read(self) -> Snapshot[T] | None:
        raw = await self._redis.get(self.key)
        if raw is None:
            return None
        local = self._local
        try:
            data = json.loads(raw)
            fetched_at = float(data["fetched_at"])
            if local is not None and local.fetched_at == fetched_at:
                return local  # the same snapshot: no need to rebuild every item
            items = {str(k): self._build(v) for k, v in dict(data["items"]).items()}
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("shared list %s: unreadable snapshot in Redis (%s); ignoring it", self.key, exc)
            return None
        return Snapshot(fetched_at, items)


class PollLists:
    """The three lists waiting deployments share, for one DigitalOcean account and one Coolify instance.

    Args:
        prefix: Redis key prefix; deployer passes one per queue, so that installations sharing a Redis server
            (and test runs) never read each other's snapshots.
        droplet_tag: the tag on every droplet deployer creates.
    """

    def __init__(
        self,
        redis: Redis,
        digitalocean: DigitalOceanClient,
        coolify: CoolifyClient,
        *,
        prefix: str,
        droplet_tag: str,
        lock_s: float = LOCK_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        async def droplets() -> dict[str, dict[str, Any]]:
            return {
                str(d.id): {"status": d.status, "public_ipv4": d.public_ipv4}
                for d in await digitalocean.list_droplets(tag_name=droplet_tag)
            }

        async def servers() -> dict[str, dict[str, Any]]:
            return {
                s.uuid: {"is_reachable": s.is_reachable, "is_usable": s.is_usable, "force_disabled": s.force_disabled}
                for s in await coolify.list_servers()
            }

        async def builds() -> dict[str, dict[str, Any]]:
            return {d.uuid: {"status": d.status} for d in await coolify.list_active_deployments()}

        def shared(
            name: str, fetch: Fetch, build: Callable[[dict[str, Any]], T], cost: Callable[[int], int] = lambda n: 1
        ) -> SharedList[T]:
            return SharedList(redis, f"{prefix}:{name}", fetch, build, lock_s=lock_s, cost=cost, clock=clock)

        self.droplets: SharedList[DropletView] = shared(
            "droplets",
            droplets,
            lambda d: DropletView(str(d["status"]), d.get("public_ipv4")),
            # Every droplet carrying the tag, live apps' included, in pages of 200.
            cost=lambda n: math.ceil(n / DROPLETS_PER_PAGE),
        )
        self.servers: SharedList[ServerView] = shared(
            "servers",
            servers,
            lambda s: ServerView(bool(s["is_reachable"]), bool(s["is_usable"]), bool(s["force_disabled"])),
        )
        self.builds: SharedList[BuildView] = shared("builds", builds, lambda b: BuildView(str(b["status"])))

    async def droplet(self, droplet_id: int, max_age: float) -> DropletView | None:
        """The droplet as the shared tag list shows it, or None (read it by id then)."""
        return await self.droplets.item(str(droplet_id), max_age)

    async def server(self, uuid: str, max_age: float) -> ServerView | None:
        """The server's flags as the shared ``GET /servers`` shows them, or None."""
        return await self.servers.item(uuid, max_age)

    async def build(self, deployment_uuid: str, max_age: float) -> BuildView | None:
        """The build while the shared ``GET /deployments`` lists it as running; None once it is not listed."""
        return await self.builds.item(deployment_uuid, max_age)
