"""Progress events: stored with a per-deployment sequence number, then announced over Redis pub/sub.

Writers call `record()`: it updates the deployment row and inserts the `DeploymentEvent` in one transaction,
then publishes the event on the deployment's channel. The database is the source of truth; pub/sub is only the
doorbell, so a lost announcement is repaired by re-reading the database.

Readers use `ProgressHub.listen()`. One hub per process holds a single pattern subscription for every
deployment channel and fans messages out to local queues, so a thousand subscribers cost one Redis connection.
`listen()` registers with the hub before it replays stored events (subscribe, then replay), drops anything
with a sequence it has already yielded, fills gaps from the database, and stops after the final event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.deployment import (
    TERMINAL_STATUSES,
    Deployment,
    DeploymentEvent,
    DeploymentStage,
    DeploymentStatus,
)

logger = logging.getLogger("deployer.progress")

CHANNEL_PREFIX = "deployer:progress:"
#: How long a listener waits without any announcement before it re-reads the database anyway.
RESYNC_AFTER_S = 10.0
#: `listen_all` catches up on events stored this long before the newest it has seen (writers' clocks differ).
ALL_CATCH_UP_MARGIN = timedelta(seconds=5)


def channel(deployment_id: uuid.UUID | str) -> str:
    """The pub/sub channel of one deployment."""
    return f"{CHANNEL_PREFIX}{deployment_id}"


@dataclass(frozen=True)
class ProgressEvent:
    """One progress event as stored and as announced."""

    deployment_id: str
    sequence: int
    status: DeploymentStatus
    stage: DeploymentStage
    message: str
    attempt: int | None
    at: datetime

    @property
    def final(self) -> bool:
        """Whether this event puts the deployment in a terminal status."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_model(cls, event: DeploymentEvent) -> ProgressEvent:
        """Build from a stored row."""
        return cls(
            deployment_id=str(event.deployment_id),
            sequence=event.sequence,
            status=DeploymentStatus(event.status),
            stage=DeploymentStage(event.stage),
            message=event.message,
            attempt=event.attempt,
            at=event.at,
        )

    def to_json(self) -> str:
        """Serialise for pub/sub."""
        return json.dumps(
            {
                "deployment_id": self.deployment_id,
                "sequence": self.sequence,
                "status": self.status.value,
                "stage": self.stage.value,
                "message": self.message,
                "attempt": self.attempt,
                "at": self.at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> ProgressEvent:
        """Parse a pub/sub payload written by `to_json`."""
        data: dict[str, Any] = json.loads(raw)
        return cls(
            deployment_id=str(data["deployment_id"]),
            sequence=int(data["sequence"]),
            status=DeploymentStatus(data["status"]),
            stage=DeploymentStage(data["stage"]),
            message=str(data["message"]),
            attempt=data.get("attempt"),
            at=datetime.fromisoformat(data["at"]),
        )


async def record(
    redis: Redis | None,
    deployment: Deployment,
    message: str,
    *,
    status: DeploymentStatus | None = None,
    stage: DeploymentStage | None = None,
    attempt: int | None = None,
    **changes: Any,
) -> ProgressEvent:
    """Apply `status`, `stage` and other column changes to the deployment, store an event, announce it.

    The row update and the event insert commit together, so a stored event always matches the row. The
    sequence is the next free number for the deployment; a concurrent writer that took it makes us retry.
    """
    if status is not None:
        deployment.status = status
    if stage is not None:
        deployment.stage = stage
    for name, value in changes.items():
        setattr(deployment, name, value)
    update_fields = ["status", "stage", "updated_at", *changes]
    for _ in range(10):
        try:
            async with in_transaction():
                await deployment.save(update_fields=update_fields)
                latest = await DeploymentEvent.filter(deployment_id=deployment.id).order_by("-sequence").first()
                row = await DeploymentEvent.create(
                    deployment_id=deployment.id,
                    sequence=(latest.sequence if latest else 0) + 1,
                    status=deployment.status,
                    stage=deployment.stage,
                    message=message,
                    attempt=attempt,
                )
            break
        except IntegrityError:
            continue
    else:  # pragma: no cover - ten concurrent writers on one deployment is a bug
        raise RuntimeError(f"could not allocate an event sequence for deployment {deployment.id}")
    event = ProgressEvent.from_model(row)
    if redis is not None:
        await announce(redis, event)
    return event


async def announce(redis: Redis, event: ProgressEvent) -> None:
    """Publish a stored event; a Redis failure is logged, since listeners re-read the database anyway."""
    try:
        await redis.publish(channel(event.deployment_id), event.to_json())
    except (RedisError, OSError) as exc:
        logger.warning(
            "progress announce failed; listeners will catch up from the database",
            extra={
                "deployment_id": event.deployment_id,
                "sequence": event.sequence,
                "error": type(exc).__name__,
            },
        )


async def stored_events(deployment_id: uuid.UUID | str, *, after: int = 0) -> list[ProgressEvent]:
    """Stored events of a deployment with a sequence above `after`, in order."""
    rows = await DeploymentEvent.filter(deployment_id=deployment_id, sequence__gt=after).order_by("sequence")
    return [ProgressEvent.from_model(row) for row in rows]


_RESYNC = object()


async def _is_terminal(deployment_id: uuid.UUID | str) -> bool:
    return await Deployment.filter(id=deployment_id, status__in=list(TERMINAL_STATUSES)).exists()


class ProgressHub:
    """One pattern subscription per process, fanned out to every local listener.

    Start it once (the API's lifespan) with `start()`, stop it with `stop()`. After a Redis reconnect it tells
    every listener to re-read the database, so nothing published while it was away is lost.
    """

    def __init__(self, redis: Redis, *, resync_after_s: float = RESYNC_AFTER_S) -> None:
        self._redis = redis
        self._resync_after_s = resync_after_s
        self._queues: dict[str, set[asyncio.Queue[object]]] = {}
        #: Listeners of every deployment's events (`listen_all`).
        self._all: set[asyncio.Queue[object]] = set()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def listener_count(self) -> int:
        """How many listeners are registered (for metrics and tests)."""
        return sum(len(queues) for queues in self._queues.values()) + len(self._all)

    async def start(self, timeout: float = 10.0) -> None:
        """Subscribe and wait until Redis has confirmed the subscription."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="progress-hub")
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        """Cancel the reader and wake every listener so it can finish from the database."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._broadcast(_RESYNC)

    def _broadcast(self, item: object) -> None:
        for queues in (*self._queues.values(), self._all):
            for queue in queues:
                queue.put_nowait(item)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(f"{CHANNEL_PREFIX}*")
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    kind = message.get("type")
                    if kind == "psubscribe":
                        if self._ready.is_set():
                            self._broadcast(_RESYNC)  # a reconnect: whatever came meanwhile is in the DB
                        self._ready.set()
                        delay = 0.1
                    elif kind == "pmessage":
                        self._dispatch(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                logger.warning("progress hub lost Redis, reconnecting", extra={"error": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, raw_channel: bytes | str, data: bytes | str) -> None:
        name = raw_channel.decode() if isinstance(raw_channel, bytes) else raw_channel
        queues = self._queues.get(name)
        if not queues and not self._all:
            return
        try:
            event = ProgressEvent.from_json(data)
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed progress message", extra={"channel": name})
            return
        for queue in (*(queues or ()), *self._all):
            queue.put_nowait(event)

    async def listen(self, deployment_id: uuid.UUID | str, *, after_sequence: int = 0) -> AsyncIterator[ProgressEvent]:
        """Replay stored events after `after_sequence`, then stream live ones, each once and in order.

        Completes after the event that puts the deployment in a terminal status. A client disconnect arrives as
        cancellation; the listener is unregistered in `finally`.
        """
        if self._task is None or not self._ready.is_set():
            raise RuntimeError("ProgressHub.start() must be awaited before listen()")
        name = channel(deployment_id)
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._queues.setdefault(name, set()).add(queue)  # subscribe before replaying
        last = after_sequence
        try:
            catch_up = True  # replay first; later, after a gap, a reconnect or a quiet spell
            while True:
                if catch_up:
                    events = await stored_events(deployment_id, after=last)
                    for index, event in enumerate(events):
                        yield event
                        last = event.sequence
                        # A final event ends the stream unless more followed it (a destroy after COMPLETED).
                        if event.final and index == len(events) - 1:
                            return
                    if not events and await _is_terminal(deployment_id):
                        return  # the caller asked only for events after the final one
                    catch_up = False
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=self._resync_after_s)
                except TimeoutError:
                    catch_up = True
                    continue
                if isinstance(item, ProgressEvent) and item.sequence == last + 1:
                    yield item
                    last = item.sequence
                    if item.final:
                        return
                elif not (isinstance(item, ProgressEvent) and item.sequence <= last):
                    catch_up = True  # a gap or a reconnect: the database knows what we missed
        finally:
            queues = self._queues.get(name)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._queues[name]

    async def listen_all(self) -> AsyncIterator[ProgressEvent]:
        """Stream every deployment's new events, live, each once and in order per deployment; never ends.

        Announcements missed while Redis was away (or during a quiet spell) are caught up from the database:
        events stored since the last one seen, minus a margin for the writers' clocks.
        """
        if self._task is None or not self._ready.is_set():
            raise RuntimeError("ProgressHub.start() must be awaited before listen_all()")
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._all.add(queue)
        seen: dict[str, int] = {}
        since = datetime.now(UTC)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=self._resync_after_s)
                except TimeoutError:
                    item = _RESYNC
                if isinstance(item, ProgressEvent):
                    batch = [item]
                else:
                    rows = await DeploymentEvent.filter(at__gt=since).order_by("at", "id")
                    batch = [ProgressEvent.from_model(row) for row in rows]
                for event in batch:
                    if event.sequence <= seen.get(event.deployment_id, 0):
                        continue
                    seen[event.deployment_id] = event.sequence
                    since = max(since, event.at - ALL_CATCH_UP_MARGIN)
                    yield event
        finally:
            self._all.discard(queue)
