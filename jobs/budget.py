"""Shared request budgets: one smooth token bucket per cloud token, in Redis, drawn from by every process.

DigitalOcean allows 250 requests a minute per token (research digitalocean-api.md, "Rate limits": a rolling
window) and Coolify ``API_RATE_LIMIT`` (200) a minute per user (Laravel's fixed window). Every worker and API
process using one token draws from one :class:`RequestBudget` before each request it sends, through the
clients' ``throttle`` hook, so together they stay under the cloud's limit instead of learning it from 429s.

The bucket is a generic cell rate algorithm without burst, in one Lua script (atomic in Redis): Redis keeps
the time the next request may go out (the "theoretical arrival time"). :meth:`RequestBudget.acquire` reserves
the earliest free slot, ``max(now, next)``, moves ``next`` one interval on, and sleeps until its slot. Slots are
spaced one interval apart however many processes draw, and idle time is not saved up: no bursts, so neither
a rolling nor a fixed window ever sees more than the budget. The interval is ``60 / per_minute`` stretched by
:data:`HEADROOM`, because a request reaches the cloud a little after its slot, by a delay that varies (event
loop lag, the network): without headroom two requests a minute apart could arrive 59.9 s apart and the
later one be refused.

- A slot that comes after the caller's :func:`~clients.http.request_deadline` (or more than ``max_wait_s``
  away outside one) is not reserved: :class:`~clients.errors.RequestBudgetError`, as a 429 whose wait does not
  fit would be.
- A 429 (the clients' ``on_rate_limited`` hook) pushes ``next`` to at least now + the wait the cloud asked
  for (at most :data:`MAX_PUSH_BACK_S`), so every process pauses, not only the one refused.
- DigitalOcean's other limit, 5,000 requests a rolling hour, is read off every response
  (``ratelimit-remaining``, ``ratelimit-reset``: the clients' ``on_quota`` hook). Once no more than
  :data:`QUOTA_RESERVE` requests are left, :meth:`RequestBudget.on_quota` holds every process until the oldest
  counted request expires, so the quota is spent as fast as it frees up and never to the last request, instead of
  being learnt from 429s that say nothing of when to come back.
- While Redis cannot be reached, requests go without a slot (logged once): the clouds' 429s remain.
- The script reads Redis's clock (``TIME``), so processes on several machines agree on time; tests inject one.
- Waits are logged at DEBUG, and counted in Redis beside the bucket (requests, seconds waited, 429 push-backs,
  refusals), which the API's ``/metrics`` reports as ``deployer_budget_*`` for the whole cluster.

The key is derived from the cloud and a digest of its token (the limits are per token), never the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from clients.errors import RequestBudgetError
from clients.http import QuotaHook, RateLimitHook, Throttle, current_deadline
from settings import Settings

__all__ = [
    "HEADROOM",
    "MAX_PUSH_BACK_S",
    "QUOTA_RESERVE",
    "BudgetStats",
    "ClientHooks",
    "CloudBudgets",
    "RequestBudget",
    "budget_for",
    "budget_key",
    "client_hooks",
    "cloud_budgets",
    "read_budget_stats",
]

logger = logging.getLogger("deployer.budget")

#: Fraction by which slots are spaced wider than ``60 / per_minute``: room for the varying delay between a
#: slot and the request's arrival at the cloud (5% of a minute is 3 s). A stall (a busy event loop, a slow
#: network, a paused process) that delays one request by more than that, and not a request a window later, can
#: still earn a 429; 2% (1.2 s, 120 ms with the sandbox's windows ten times shorter) proved too little on a
#: loaded machine (bench/RESULTS.md).
HEADROOM = 0.05
#: Longest wait for a slot outside a `request_deadline` block (the API's reads, the reaper, doctor).
DEFAULT_MAX_WAIT_S = 30.0
#: Longest pause one 429 imposes on everyone: a minute is the longest window of either cloud's per-minute
#: limit, and a stray far-off ``Retry-After`` must not stop every process for an hour (the next 429 says more).
MAX_PUSH_BACK_S = 60.0
#: Requests of a longer quota (DigitalOcean's 5,000 an hour) left unspent: room for the requests already on their
#: way from every process when one learns that the quota is low, and for an operator's own calls with the token.
QUOTA_RESERVE = 50
#: Longest hold a low quota imposes: DigitalOcean's window is an hour, so its oldest request expires within one.
MAX_QUOTA_HOLD_S = 3600.0


def _now_from(argument: int) -> str:
    """Lua that sets `now`: ARGV[argument] when given, else Redis's own clock (``TIME``)."""
    return f"""
local now
if ARGV[{argument}] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[{argument}])
end
"""


# KEYS[1] the bucket (next free slot, seconds), KEYS[2] its counters.
# ARGV[1] interval, ARGV[2] longest acceptable wait (< 0: any), ARGV[3] now ('' = Redis TIME).
# Returns {granted 0/1, wait seconds as a string}.
_ACQUIRE = (
    _now_from(3)
    + """
local interval = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
local wait = slot - now
if max_wait >= 0 and wait > max_wait then
  redis.call('HINCRBY', KEYS[2], 'refused', 1)
  return {0, tostring(wait)}
end
local following = slot + interval
redis.call('SET', KEYS[1], tostring(following), 'PX', math.ceil((following - now) * 1000) + 60000)
redis.call('HINCRBY', KEYS[2], 'requests', 1)
if wait > 0 then redis.call('HINCRBYFLOAT', KEYS[2], 'wait_s', tostring(wait)) end
return {1, tostring(wait)}
"""
)

# KEYS as above. ARGV[1] seconds to pause, ARGV[2] now ('' = Redis TIME), ARGV[3] the counter to add one to.
# Returns the next slot's wait.
_PUSH_BACK = (
    _now_from(2)
    + """
local resume = now + tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
if slot < resume then
  slot = resume
  redis.call('SET', KEYS[1], tostring(slot), 'PX', math.ceil((slot - now) * 1000) + 60000)
end
return tostring(slot - now)
"""
)


def budget_key(api: str, token: str) -> str:
    """The Redis key of one cloud token's bucket (its counters live at ``<key>:stats``)."""
    digest = hashlib.sha256(f"deployer-budget:{token}".encode()).hexdigest()[:16]
    return f"deployer:budget:{api}:{digest}"


@dataclass(frozen=True)
class BudgetStats:
    """Cluster-wide counters of one bucket since its key was created."""

    requests: int = 0
    wait_s: float = 0.0
    rate_limited: int = 0
    refused: int = 0
    quota_holds: int = 0


async def read_budget_stats(redis: Redis, api: str, token: str) -> BudgetStats:
    """The counters of the bucket of ``token`` at ``api``."""
    return await _stats_at(redis, budget_key(api, token) + ":stats")


async def _stats_at(redis: Redis, key: str) -> BudgetStats:
    raw = await redis.hgetall(key)
    values = {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in raw.items()}
    return BudgetStats(
        requests=int(values.get("requests", 0)),
        wait_s=values.get("wait_s", 0.0),
        rate_limited=int(values.get("rate_limited", 0)),
        refused=int(values.get("refused", 0)),
        quota_holds=int(values.get("quota_holds", 0)),
    )


def budget_for(redis: Redis, *, api: str, token: str, per_minute: int, **options: Any) -> RequestBudget | None:
    """The shared budget of one cloud token, or None when ``per_minute`` is 0 (budget off)."""
    if per_minute <= 0:
        return None
    return RequestBudget(redis, api=api, token=token, per_minute=per_minute, **options)


@dataclass(frozen=True)
class CloudBudgets:
    """The budget of each cloud's token (None where its setting is 0: off)."""

    digitalocean: RequestBudget | None = None
    coolify: RequestBudget | None = None


def cloud_budgets(redis: Redis, settings: Settings) -> CloudBudgets:
    """``DO_REQUESTS_PER_MINUTE`` and ``COOLIFY_REQUESTS_PER_MINUTE`` as shared budgets (for entry points)."""
    do, coolify = settings.digitalocean, settings.coolify
    return CloudBudgets(
        digitalocean=budget_for(redis, api="digitalocean", token=do.api_key, per_minute=do.requests_per_minute),
        coolify=budget_for(redis, api="coolify", token=coolify.api_key, per_minute=coolify.requests_per_minute),
    )


def client_hooks(budget: RequestBudget | None) -> ClientHooks:
    """The keyword arguments that make a cloud client draw from ``budget`` (none when it is None)."""
    if budget is None:
        return {}
    return {"throttle": budget.acquire, "on_rate_limited": budget.push_back, "on_quota": budget.on_quota}


class ClientHooks(TypedDict, total=False):
    """``throttle``, ``on_rate_limited`` and ``on_quota`` for `clients.digitalocean` / `clients.coolify`
    constructors."""

    throttle: Throttle
    on_rate_limited: RateLimitHook
    on_quota: QuotaHook


class RequestBudget:
    """``per_minute`` requests a minute, evenly spaced, for every process using one cloud token.

    Pass :meth:`acquire` as a client's ``throttle``, :meth:`push_back` as its ``on_rate_limited`` and
    :meth:`on_quota` as its ``on_quota`` (:func:`client_hooks` does).

    Args:
        api: ``"digitalocean"`` or ``"coolify"`` (names the key, the logs and the error).
        token: the cloud token the budget belongs to; only a digest of it reaches Redis.
        per_minute: the cloud's limit for that token (at least 1; 0 means "no budget": build none).
        clock: seconds on a clock every process shares; None (production) reads Redis's ``TIME``.
        monotonic: the clock :func:`~clients.http.request_deadline` deadlines are read with.
        sleep: awaited for the wait until the slot.
        max_wait_s: longest wait for a slot outside a ``request_deadline`` block.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        api: str,
        token: str,
        per_minute: int,
        clock: Callable[[], float] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1 (no budget at all: do not build one)")
        self.api = api
        self.per_minute = per_minute
        #: Seconds between two slots.
        self.interval_s = 60.0 / per_minute * (1.0 + HEADROOM)
        self.key = budget_key(api, token)
        self._keys = [self.key, self.key + ":stats"]
        self._redis = redis
        self._acquire = redis.register_script(_ACQUIRE)
        self._push_back = redis.register_script(_PUSH_BACK)
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        #: True while Redis is unreachable (requests then go without a slot).
        self._degraded = False
        #: True while the last response this process saw left no more than QUOTA_RESERVE of the longer quota.
        self._quota_low = False

    def __repr__(self) -> str:
        return f"RequestBudget(api={self.api!r}, per_minute={self.per_minute})"

    def _now_arg(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    def _max_wait(self) -> float:
        deadline = current_deadline()
        if deadline is None:
            return self._max_wait_s
        return max(0.0, deadline - self._monotonic())

    async def reserve(self) -> float:
        """Reserve the next slot without waiting for it; returns the seconds until it.

        Raises:
            RequestBudgetError: the slot would come after the deadline; nothing was reserved.
        """
        max_wait = self._max_wait()
        granted, wait_text = await self._acquire(keys=self._keys, args=[self.interval_s, max_wait, self._now_arg()])
        wait = float(wait_text)
        if not int(granted):
            logger.info("%s budget: next request slot in %.2f s, later than this request may wait", self.api, wait)
            raise RequestBudgetError(
                self.api,
                f"shared request budget ({self.per_minute}/min) has no slot for {wait:.1f} s,"
                f" longer than this request may wait ({max_wait:.1f} s, its step's deadline or the API's limit)",
                wait_s=wait,
            )
        return wait

    async def acquire(self) -> None:
        """Wait for this process's turn to send one request (the clients' ``throttle``).

        While Redis cannot be reached the request goes without a slot (the cloud's own 429s still stop it),
        so a Redis outage does not stop the reads and cleanups that do not need Redis.
        """
        try:
            wait = await self.reserve()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self._redis_unreachable(exc)
            return
        self._redis_back()
        if wait > 0:
            logger.debug("%s budget: waiting %.3f s for a request slot", self.api, wait)
            await self._sleep(wait)

    async def push_back(self, seconds: float) -> None:
        """After a 429: nobody sends with this token for ``seconds`` (the clients' ``on_rate_limited``)."""
        wait = await self._hold(min(max(0.0, seconds), MAX_PUSH_BACK_S), "rate_limited")
        if wait is not None:
            logger.info("%s answered 429: every process pauses its requests for %.2f s", self.api, wait)

    async def on_quota(self, remaining: int, reset_in_s: float) -> None:
        """What a response said of the token's longer quota (the clients' ``on_quota``): with no more than
        :data:`QUOTA_RESERVE` requests left, nobody sends until the oldest counted request expires."""
        if remaining > QUOTA_RESERVE:
            if self._quota_low:
                self._quota_low = False
                logger.warning(
                    "%s hourly quota: %d requests left again; requests go at the budget's pace", self.api, remaining
                )
            return
        if reset_in_s <= 0:
            return
        wait = await self._hold(min(reset_in_s, MAX_QUOTA_HOLD_S), "quota_holds")
        if wait is None:
            return
        level = logging.DEBUG if self._quota_low else logging.WARNING
        self._quota_low = True
        logger.log(
            level,
            "%s hourly quota: %d requests left (%d kept in reserve); every process holds its requests for %.2f s,"
            " until the oldest counted request expires",
            self.api,
            remaining,
            QUOTA_RESERVE,
            wait,
        )

    async def _hold(self, seconds: float, counter: str) -> float | None:
        """Push the next slot to at least now + ``seconds`` and count it; the wait now, None without Redis."""
        try:
            return float(await self._push_back(keys=self._keys, args=[seconds, self._now_arg(), counter]))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self._redis_unreachable(exc)
            return None

    def _redis_unreachable(self, exc: Exception) -> None:
        if not self._degraded:
            self._degraded = True
            logger.warning(
                "%s budget: Redis unreachable (%s); sending without the shared budget until it is back",
                self.api,
                type(exc).__name__,
            )

    def _redis_back(self) -> None:
        if self._degraded:
            self._degraded = False
            logger.warning("%s budget: Redis reachable again; requests draw from the shared budget", self.api)

    async def stats(self) -> BudgetStats:
        """This bucket's cluster-wide counters."""
        return await _stats_at(self._redis, self._keys[1])
