"""`DeployerQueue`: SAQ's Redis queue with a sweep that never touches a job whose worker is alive.

SAQ's own sweep aborts every job in the active list that is not marked ACTIVE. A worker's dequeue moves a
job into that list (BLMOVE) a few round trips before it marks the job ACTIVE, so a sweep running in between
(every worker sweeps the moment it starts) aborts a healthy job; SAQ then retries it while the first run
goes on. Its sweep also waits up to five seconds per stuck job for a dead worker to acknowledge the abort.

This sweep decides in one Lua script, on Redis's clock, and spares a job when:

- it was just dequeued and is not marked ACTIVE yet (it gets a grace period, counted from the first sweep
  that saw it so, of its heartbeat or `DEQUEUE_GRACE_S`);
- its worker is alive: the worker's keeper (`jobs.keeper`) holds `saq:<queue>:alive:<worker id>`;
- the lease of its deployment is held (`deployer:lease:deploy:<deployment_id>`): someone is driving it.

Anything else that SAQ would sweep (an expired heartbeat or timeout, a status other than ACTIVE) is put back
on the queue at once (or finished ABORTED when it has no attempts left): its worker is gone, so there is
nobody to wait for. The lease still guarantees that at most one worker drives a deployment.

The queue also survives a Redis restart: a dequeue, sweep or schedule that cannot reach Redis backs off
and returns nothing instead of spinning or failing the worker.

One blocking dequeue per process: SAQ runs one `process()` task per concurrency slot, each waiting in
`dequeue()`, and each blocking `BLMOVE` holds a Redis connection for as long as the queue is empty. Here the
waiting tasks queue up on an asyncio lock instead, in order, and only the one holding it sends `BLMOVE`; so
a worker with a thousand free slots holds one connection to wait for work, not a thousand.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from saq.job import Job, Status
from saq.queue.redis import RedisQueue
from saq.utils import now

from jobs.lease import LEASE_PREFIX

logger = logging.getLogger("deployer.queue")

#: A job dequeued but not yet marked ACTIVE, and without a heartbeat, is swept after this long.
DEQUEUE_GRACE_S = 10.0
#: The lease name prefix of deploy and destroy jobs, followed by their `deployment_id` argument.
DEPLOY_LEASE_PREFIX = f"{LEASE_PREFIX}deploy:"
#: Longest pause between two dequeue attempts while Redis does not answer.
MAX_BACKOFF_S = 2.0

# KEYS: sweep lock, active list, first-sightings hash. ARGV: lock seconds, alive key prefix, lease key
# prefix, name of the job argument naming the lease, default grace (ms).
# Returns {job id, job bytes or false, reason} for each job to sweep.
_SWEEP = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
redis.call('SETEX', KEYS[1], ARGV[1], 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function num(v) if type(v) == 'number' then return v end return 0 end
local out, waiting = {}, {}
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local blob = redis.call('GET', id)
  if not blob then
    out[#out + 1] = {id, false, 'missing'}
  else
    local ok, job = pcall(cjson.decode, blob)
    if not ok or type(job) ~= 'table' then
      out[#out + 1] = {id, blob, 'unreadable'}
    else
      local status = job['status']
      local worker = job['worker_id']
      local alive = type(worker) == 'string' and redis.call('EXISTS', ARGV[2] .. worker) == 1
      local kwargs = job['kwargs']
      local leased = type(kwargs) == 'table' and type(kwargs[ARGV[4]]) == 'string'
        and redis.call('EXISTS', ARGV[3] .. kwargs[ARGV[4]]) == 1
      local heartbeat = num(job['heartbeat']) * 1000
      if status == 'queued' then
        waiting[id] = true
        local first = redis.call('HGET', KEYS[3], id)
        local grace = heartbeat > 0 and heartbeat or tonumber(ARGV[5])
        if not first then
          redis.call('HSET', KEYS[3], id, now)
        elseif now - tonumber(first) > grace and not alive and not leased then
          out[#out + 1] = {id, blob, 'never started'}
        end
      elseif status == 'active' or status == 'aborting' then
        local timeout = num(job['timeout']) * 1000
        local expired = (timeout > 0 and now - num(job['started']) > timeout)
          or (heartbeat > 0 and now - num(job['touched']) > heartbeat)
        if expired and not alive and not leased then
          out[#out + 1] = {id, blob, 'heartbeat or timeout expired'}
        end
      else
        out[#out + 1] = {id, blob, 'status ' .. tostring(status)}
      end
    end
  end
end
for _, id in ipairs(redis.call('HKEYS', KEYS[3])) do
  if not waiting[id] then redis.call('HDEL', KEYS[3], id) end
end
return out
"""


class DeployerQueue(RedisQueue):
    """SAQ's Redis queue with a sweep that spares live work and a dequeue that waits out Redis restarts.

    Args:
        lease_prefix: a job whose `lease_argument` names a held lease under this prefix is never swept.
        dequeue_grace_s: how long a dequeued job without a heartbeat may stay unmarked before it is swept.
    """

    def __init__(
        self,
        redis: Redis,
        name: str = "default",
        *,
        lease_prefix: str = DEPLOY_LEASE_PREFIX,
        lease_argument: str = "deployment_id",
        dequeue_grace_s: float = DEQUEUE_GRACE_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(redis, name=name, **kwargs)
        self.lease_prefix = lease_prefix
        self.lease_argument = lease_argument
        self.dequeue_grace_ms = int(dequeue_grace_s * 1000)
        self._sweeper: AsyncScript | None = None
        self._first_seen = self.namespace("dequeued")
        self._backoff_s = 0.0
        #: Held by the one task of this process that sends the blocking dequeue (see the module docstring).
        self._dequeue_turn = asyncio.Lock()

    def alive_key(self, worker_id: str) -> str:
        """The key a worker's keeper holds while the worker lives (`saq:<queue>:alive:<worker id>`)."""
        return self.namespace(f"alive:{worker_id}")

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        """Put back (or finish) the jobs whose worker is gone; at most one sweep per `lock` seconds per queue."""
        if self._sweeper is None:
            self._sweeper = self.redis.register_script(_SWEEP)
        try:
            rows = await self._sweeper(
                keys=[self._sweep, self._active, self._first_seen],
                args=[lock, self.alive_key(""), self.lease_prefix, self.lease_argument, self.dequeue_grace_ms],
                client=self.redis,
            )
        except (RedisError, OSError) as exc:
            logger.warning("sweep skipped: Redis did not answer (%s)", type(exc).__name__)
            return []
        swept: list[str] = []
        for raw_id, blob, raw_reason in rows or []:
            job_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            reason = raw_reason.decode() if isinstance(raw_reason, bytes) else str(raw_reason)
            swept.append(job_id)
            job = self.deserialize(blob) if blob else None
            if job is None:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                logger.info("Swept missing job %s", job_id)
                continue
            logger.warning("Sweeping job %s: %s; its worker is gone", job.key, reason)
            if job.retryable:
                await self.requeue_now(job, error=self.swept_error_message)
            else:
                await self.finish(job, Status.ABORTED, error=self.swept_error_message)
        return swept

    async def requeue_now(self, job: Job, *, error: str) -> None:
        """Put a job whose worker died back at the tail of the queue, with no retry delay: nobody runs it."""
        job.status = Status.QUEUED
        job.error = error
        job.completed = 0
        job.started = 0
        job.progress = 0
        job.touched = now()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(self._active, 0, job.id)
            pipe.lrem(self._queued, 0, job.id)
            pipe.zadd(self._incomplete, {job.id: job.scheduled})
            pipe.rpush(self._queued, job.id)
            pipe.set(job.id, self.serialize(job))
            await pipe.execute()
        await self.notify(job)
        self.retried += 1

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:
        """SAQ's dequeue, one caller at a time per process; while Redis does not answer, wait (up to
        `MAX_BACKOFF_S`) and return nothing."""
        try:
            async with self._dequeue_turn:
                job = await super().dequeue(timeout, poll_interval)
        except (RedisError, OSError) as exc:
            self._backoff_s = min(MAX_BACKOFF_S, max(0.1, self._backoff_s * 2))
            logger.warning("dequeue: Redis did not answer (%s); again in %.1f s", type(exc).__name__, self._backoff_s)
            await asyncio.sleep(self._backoff_s)
            return None
        self._backoff_s = 0.0
        return job

    async def schedule(self, lock: int = 1) -> list[str]:
        """SAQ's scheduler tick; skipped quietly while Redis does not answer."""
        try:
            return await super().schedule(lock)
        except (RedisError, OSError) as exc:
            logger.warning("schedule skipped: Redis did not answer (%s)", type(exc).__name__)
            return []

    async def write_worker_info(self, worker_id: str, info: Any, ttl: int) -> None:
        """SAQ's worker stats; skipped quietly while Redis does not answer."""
        try:
            await super().write_worker_info(worker_id, info, ttl)
        except (RedisError, OSError) as exc:
            logger.warning("worker info skipped: Redis did not answer (%s)", type(exc).__name__)
