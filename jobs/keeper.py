"""The keeper: one Redis round trip per beat renews everything a worker holds, however many jobs it runs.

A worker runs up to `WORKER_CONCURRENCY` deployments. Each holds a lease (`jobs.lease`) and an SAQ job whose
heartbeat (`touched`) must stay fresh, or SAQ's sweep takes the job for dead. Renewing those one by one costs
a few round trips per job per beat; with a thousand jobs in flight that is thousands of commands every few
seconds. The keeper instead sends one script per beat (three beats per lease TTL) that:

- marks the worker alive (`saq:<queue>:alive:<worker id>`, read by `jobs.queue.DeployerQueue.sweep`);
- renews every lease this worker holds, and reports the ones it lost (expired, or taken by another owner);
- refreshes `touched` of every ACTIVE job this worker runs, on Redis's clock, keeping the job's TTL.

Redis restarts without persistence lose every key. The keeper notices through an epoch key that it creates
when it is missing: when the epoch changed since the last beat, a lease that is simply missing was lost with
the data, not taken, and the keeper takes it again (with SET NX, so never from a new owner). When the epoch
did not change, a missing lease expired (this worker stalled longer than the TTL) and counts as lost. When no
beat has succeeded for a whole TTL, every lease counts as lost: another worker may have taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from jobs.lease import Lease

logger = logging.getLogger("deployer.keeper")

#: Changes whenever Redis lost its data (restart without persistence, flush).
EPOCH_KEY = "deployer:epoch"
#: Beats per TTL: a lease survives two missed beats.
BEATS_PER_TTL = 3

# KEYS: alive key ('' for none), epoch key, the n lease keys, then the job ids.
# ARGV: ttl ms, n, epoch seen at the last beat ('' at first), a fresh epoch value, then the n lease owners.
# Returns {current epoch, {indexes (1-based) of the leases lost}}.
_BEAT = """
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  redis.call('SET', KEYS[2], ARGV[4])
  epoch = ARGV[4]
end
local data_lost = ARGV[3] ~= '' and epoch ~= ARGV[3]
if KEYS[1] ~= '' then redis.call('SET', KEYS[1], '1', 'PX', ttl) end
local lost = {}
for i = 1, n do
  local key, owner = KEYS[2 + i], ARGV[4 + i]
  local holder = redis.call('GET', key)
  if holder == owner then
    redis.call('PEXPIRE', key, ttl)
  elseif not holder and data_lost then
    redis.call('SET', key, owner, 'NX', 'PX', ttl)
  else
    lost[#lost + 1] = i
  end
end
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
for j = 3 + n, #KEYS do
  local blob = redis.call('GET', KEYS[j])
  if blob and string.find(blob, '"status": "active"', 1, true) then
    local touched, found = string.gsub(blob, '"touched": %d+', '"touched": ' .. now, 1)
    if found == 1 then redis.call('SET', KEYS[j], touched, 'KEEPTTL') end
  end
end
return {epoch, lost}
"""


@dataclass
class _Held:
    lease: Lease
    on_lost: Callable[[], object]


class Keeper:
    """Renews a worker's liveness, leases and job heartbeats together, `BEATS_PER_TTL` times per TTL.

    Args:
        ttl_s: the TTL of the alive key and of every lease it renews (the leases must be taken with it).
        alive_key: the worker's liveness key (`DeployerQueue.alive_key`); None for a keeper without one.
    """

    def __init__(self, redis: Redis, *, ttl_s: float, alive_key: str | None = None) -> None:
        self._redis = redis
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.every_s = max(0.05, ttl_s / BEATS_PER_TTL)
        self.alive_key = alive_key
        self._leases: dict[str, _Held] = {}
        self._jobs: set[str] = set()
        self._epoch = ""
        self._script: AsyncScript | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_ok = time.monotonic()

    @property
    def lease_count(self) -> int:
        """How many leases this keeper renews."""
        return len(self._leases)

    def hold(self, lease: Lease, on_lost: Callable[[], object]) -> None:
        """Renew `lease` from now on; `on_lost()` is called (once) if it is lost, and it is then dropped."""
        self._leases[lease.key] = _Held(lease, on_lost)

    def drop(self, lease: Lease) -> None:
        """Stop renewing `lease` (before releasing it)."""
        held = self._leases.get(lease.key)
        if held is not None and held.lease is lease:
            del self._leases[lease.key]

    def track(self, job_id: str) -> None:
        """Keep the SAQ heartbeat of this job (its full Redis id) fresh while it runs."""
        self._jobs.add(job_id)

    def untrack(self, job_id: str) -> None:
        """Stop refreshing the job's heartbeat."""
        self._jobs.discard(job_id)

    async def beat(self) -> None:
        """One renewal: a single script call, however many leases and jobs there are."""
        if self._script is None:
            self._script = self._redis.register_script(_BEAT)
        held = list(self._leases.values())
        keys = [self.alive_key or "", EPOCH_KEY, *(h.lease.key for h in held), *self._jobs]
        owners = [h.lease.owner for h in held]
        args: list[str | int] = [self.ttl_ms, len(held), self._epoch, secrets.token_hex(8), *owners]
        epoch, lost = await self._script(keys=keys, args=args, client=self._redis)
        self._last_ok = time.monotonic()
        new_epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        if self._epoch and new_epoch != self._epoch:
            logger.warning("Redis lost its data (restart or flush); this worker's leases were taken again")
        self._epoch = new_epoch
        for index in lost:
            self._lose(held[int(index) - 1])

    def _lose(self, held: _Held) -> None:
        if self._leases.get(held.lease.key) is held:
            del self._leases[held.lease.key]
            logger.error("lease %s lost: another worker may own it now; stopping its work", held.lease.key)
            held.on_lost()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.beat()
            except Exception as exc:  # never stop beating: a silent keeper would leave its jobs unleased
                silent_s = time.monotonic() - self._last_ok
                logger.warning("keeper beat failed (%s), %.1f s since the last one", type(exc).__name__, silent_s)
                if silent_s * 1000 >= self.ttl_ms:
                    for held in list(self._leases.values()):  # they expired, or may have: stop the work
                        self._lose(held)

    async def start(self) -> None:
        """Beat once (so the worker is alive before it takes a job), then keep beating in the background."""
        await self.beat()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="keeper")

    async def stop(self) -> None:
        """Stop beating and say this worker is gone (its jobs have been put back or finished by then)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.alive_key:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.delete(self.alive_key)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, redis: Redis, *, ttl_s: float, alive_key: str | None = None) -> AsyncIterator[Keeper]:
        """A started keeper, stopped on exit (for code running outside a worker, such as tests)."""
        keeper = cls(redis, ttl_s=ttl_s, alive_key=alive_key)
        await keeper.start()
        try:
            yield keeper
        finally:
            await keeper.stop()
