"""Progress events: stored with a per-deployment sequence number, then announced over Redis pub/sub.

Writers call `record()`: it updates the deployment row and inserts the `DeploymentEvent` in one transaction,
then publishes the event on the deployment's channel. The database is the source of truth; pub/sub is only the
doorbell, so a lost announcement is repaired by re-reading the database.

Readers use `ProgressHub.listen()`. One hub per process holds one pub/sub connection, subscribed to the
channels of the deployments its listeners follow (and to every channel only while someone follows them all),
and fans each message out to local queues, parsed once: a thousand subscribers cost one Redis connection and
one subscription. `listen()` has Redis confirm the deployment's channel before it replays stored events
(subscribe, then replay), drops anything with a sequence it has already yielded, fills gaps from the database,
and stops after the final event.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from tortoise import Tortoise
from tortoise.backends.base.client import TransactionalDBClient
from tortoise.exceptions import IntegrityError
from tortoise.functions import Max
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
#: How long a new listener waits for Redis to confirm its channel before it replays anyway.
CONFIRM_TIMEOUT_S = 5.0
#: The pattern of every deployment's channel, subscribed only while someone follows them all (`listen_all`).
_PATTERN = f"{CHANNEL_PREFIX}*"


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


#: The most events one grouped transaction stores.
MAX_GROUP = 500
#: Tries of a grouped transaction that lost a sequence number to another process, before writing one by one.
GROUP_TRIES = 3


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

    The row update and the event insert commit together, so a stored event always matches the row; the event
    is announced only once stored, and returned once announced. Concurrent calls in one process are grouped
    (`EventWriter`): one transaction stores every event waiting, and they are announced in order. The sequence is
    the next free number for the deployment; a concurrent writer in another process that took it makes the
    transaction retry. Inside a caller's transaction the event is written in that transaction, on its own.
    """
    pending = _Pending.apply(redis, deployment, message, status=status, stage=stage, attempt=attempt, changes=changes)
    if isinstance(Tortoise.get_connection("default"), TransactionalDBClient):
        event = await _store_one(pending)
        if redis is not None:
            await announce(redis, event)
        return event
    return await EventWriter.for_running_loop().submit(pending)


async def record_ungrouped(
    redis: Redis | None,
    deployment: Deployment,
    message: str,
    *,
    status: DeploymentStatus | None = None,
    stage: DeploymentStage | None = None,
    attempt: int | None = None,
    **changes: Any,
) -> ProgressEvent:
    """`record()` with a transaction of its own for this one event (what `record()` did before it grouped
    writes; `bench/events.py` measures both)."""
    pending = _Pending.apply(redis, deployment, message, status=status, stage=stage, attempt=attempt, changes=changes)
    event = await _store_one(pending)
    if redis is not None:
        await announce(redis, event)
    return event


@dataclass
class _Pending:
    """One `record()` call waiting to be stored: the row to save, and the event as it was when recorded."""

    deployment: Deployment
    fields: tuple[str, ...]
    status: DeploymentStatus
    stage: DeploymentStage
    message: str
    attempt: int | None
    redis: Redis | None
    future: asyncio.Future[ProgressEvent] | None = None

    @classmethod
    def apply(
        cls,
        redis: Redis | None,
        deployment: Deployment,
        message: str,
        *,
        status: DeploymentStatus | None,
        stage: DeploymentStage | None,
        attempt: int | None,
        changes: dict[str, Any],
    ) -> _Pending:
        """Apply the status, stage and column changes to the (unsaved) row; the call waiting to store them."""
        if status is not None:
            deployment.status = status
        if stage is not None:
            deployment.stage = stage
        for name, value in changes.items():
            setattr(deployment, name, value)
        fields = ("status", "stage", "updated_at", *changes)
        return cls(deployment, fields, deployment.status, deployment.stage, message, attempt, redis)


async def _store_one(pending: _Pending) -> ProgressEvent:
    """Save the row and insert one event in a transaction of its own (retried when the sequence was taken)."""
    deployment = pending.deployment
    for _ in range(10):
        try:
            async with in_transaction():
                await deployment.save(update_fields=list(pending.fields))
                latest = await DeploymentEvent.filter(deployment_id=deployment.id).order_by("-sequence").first()
                row = await DeploymentEvent.create(
                    deployment_id=deployment.id,
                    sequence=(latest.sequence if latest else 0) + 1,
                    status=pending.status,
                    stage=pending.stage,
                    message=pending.message,
                    attempt=pending.attempt,
                )
            return ProgressEvent.from_model(row)
        except IntegrityError:
            continue
    raise RuntimeError(f"could not allocate an event sequence for deployment {deployment.id}")


async def _store_group(batch: list[_Pending]) -> list[ProgressEvent]:
    """Save every row and insert every event of `batch` in one transaction; events in `batch` order.

    Each deployment object is saved once with the union of the fields its calls changed (it holds the newest
    values, and the whole group commits at once). Sequences continue from each deployment's highest stored
    one, in call order.
    """
    saves: dict[int, tuple[Deployment, set[str]]] = {}
    for pending in batch:
        saves.setdefault(id(pending.deployment), (pending.deployment, set()))[1].update(pending.fields)
    ids = list({pending.deployment.id for pending in batch})
    now = datetime.now(UTC)
    async with in_transaction():
        for deployment, fields in saves.values():
            await deployment.save(update_fields=sorted(fields))
        top = await (
            DeploymentEvent.filter(deployment_id__in=ids)
            .annotate(top=Max("sequence"))
            .group_by("deployment_id")
            .values_list("deployment_id", "top")
        )
        next_sequence = {str(deployment_id): int(highest) for deployment_id, highest in top}
        rows = []
        for pending in batch:
            key = str(pending.deployment.id)
            next_sequence[key] = next_sequence.get(key, 0) + 1
            rows.append(
                DeploymentEvent(
                    deployment_id=pending.deployment.id,
                    sequence=next_sequence[key],
                    status=pending.status,
                    stage=pending.stage,
                    message=pending.message,
                    attempt=pending.attempt,
                    at=now,
                )
            )
        await DeploymentEvent.bulk_create(rows)
    return [ProgressEvent.from_model(row) for row in rows]


class EventWriter:
    """Groups the `record()` calls of one event loop: whatever waits while a transaction runs goes in the next.

    A lone call costs what it did before (one transaction); under load, a worker with hundreds of deployments
    polling stores their events in a few transactions instead of one each. After a group commits, its events
    are announced in order (so each deployment's announcements keep their sequence order), then the callers
    resume. A call whose caller was cancelled before its group started is dropped, as an ungrouped write would
    have been. When a group fails, its calls are written one by one, so an error reaches only its own caller.
    """

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventWriter] = weakref.WeakKeyDictionary()

    def __init__(self, *, max_group: int = MAX_GROUP) -> None:
        self._pending: list[_Pending] = []
        #: The group being written now.
        self._batch: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self._max_group = max_group

    @classmethod
    def for_running_loop(cls) -> EventWriter:
        """The writer of the running event loop (one per loop, made on first use)."""
        loop = asyncio.get_running_loop()
        writer = cls._by_loop.get(loop)
        if writer is None:
            writer = cls._by_loop[loop] = cls()
        return writer

    async def submit(self, pending: _Pending) -> ProgressEvent:
        """Store and announce one event with whatever else is waiting; returns once announced."""
        pending.future = asyncio.get_running_loop().create_future()
        self._pending.append(pending)
        if self._task is None:
            # A context of its own: the writer serves every caller, and must not carry one caller's log context.
            self._task = asyncio.create_task(self._drain(), name="progress-writer", context=contextvars.Context())
            self._task.add_done_callback(self._stopped)
        return await pending.future

    async def _drain(self) -> None:
        while self._pending:
            self._batch = [pending for pending in self._pending[: self._max_group] if not _cancelled(pending)]
            del self._pending[: self._max_group]
            if self._batch:
                await self._write(self._batch)
            self._batch = []
        self._task = None  # in the same step as the last check: a call after this starts a new task

    def _stopped(self, task: asyncio.Task[None]) -> None:
        """Done callback: when the task ended otherwise (cancelled with the loop closing), nobody waits forever."""
        if self._task is not task:
            return  # it ended normally (and a new task may serve newer calls already)
        self._task = None
        for pending in (*self._batch, *self._pending):
            _settle(pending, exception=RuntimeError("the progress writer stopped"))
        self._batch = []
        self._pending.clear()

    async def _write(self, batch: list[_Pending]) -> None:
        events: list[ProgressEvent] | None = None
        for _ in range(GROUP_TRIES if len(batch) > 1 else 0):
            try:
                events = await _store_group(batch)
                break
            except IntegrityError:
                continue  # another process took a sequence number meanwhile: read them again
            except Exception:
                break
        if events is None:
            results: list[ProgressEvent | BaseException] = []
            for pending in batch:
                try:
                    results.append(await _store_one(pending))
                except Exception as exc:
                    results.append(exc)
        else:
            results = list(events)
        await _announce_group(
            [
                (pending.redis, result)
                for pending, result in zip(batch, results, strict=True)
                if pending.redis is not None
            ]
        )
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, ProgressEvent):
                _settle(pending, result=result)
            else:
                _settle(pending, exception=result)


async def _announce_group(announcements: list[tuple[Redis, ProgressEvent | BaseException]]) -> None:
    """`announce()` for every stored event of a group, in order, in one round trip per Redis client.

    Publishing one by one would cost a round trip per event while the group's callers wait (and the next group
    with them). A failure is logged, as `announce()` does: listeners re-read the database anyway.
    """
    by_client: dict[int, tuple[Redis, list[ProgressEvent]]] = {}
    for redis, result in announcements:
        if isinstance(result, ProgressEvent):
            by_client.setdefault(id(redis), (redis, []))[1].append(result)
    for redis, events in by_client.values():
        if len(events) == 1:
            await announce(redis, events[0])
            continue
        try:
            pipe = redis.pipeline(transaction=False)
            for event in events:
                pipe.publish(channel(event.deployment_id), event.to_json())
            await pipe.execute()
        except (RedisError, OSError) as exc:
            logger.warning(
                "progress announce failed; listeners will catch up from the database",
                extra={"events": len(events), "error": type(exc).__name__},
            )


def _cancelled(pending: _Pending) -> bool:
    return pending.future is not None and pending.future.cancelled()


def _settle(pending: _Pending, *, result: ProgressEvent | None = None, exception: BaseException | None = None) -> None:
    future = pending.future
    if future is None or future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)  # type: ignore[arg-type]


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


async def is_terminal(deployment_id: uuid.UUID | str) -> bool:
    """Whether the deployment is in a terminal status now."""
    return await Deployment.filter(id=deployment_id, status__in=list(TERMINAL_STATUSES)).exists()


class ProgressHub:
    """One Redis pub/sub connection per process, subscribed only to the deployments its listeners follow.

    Start it once (the API's lifespan) with `start()`, stop it with `stop()`. The first listener of a deployment
    subscribes its channel (and waits until Redis confirms, so nothing announced after its replay is missed);
    the last one to leave unsubscribes it. The pattern for every deployment is subscribed only while a
    `listen_all` listener exists. After a Redis reconnect every channel is subscribed again and, once Redis
    confirms it, its listeners re-read the database, so nothing published while the hub was away is lost.
    """

    def __init__(
        self, redis: Redis, *, resync_after_s: float = RESYNC_AFTER_S, confirm_timeout_s: float = CONFIRM_TIMEOUT_S
    ) -> None:
        self._redis = redis
        self._resync_after_s = resync_after_s
        self._confirm_timeout_s = confirm_timeout_s
        self._queues: dict[str, set[asyncio.Queue[object]]] = {}
        #: Listeners of every deployment's events (`listen_all`).
        self._all: set[asyncio.Queue[object]] = set()
        #: Listeners waiting for Redis to confirm their channel (or the pattern, under `_PATTERN`).
        self._waiting: dict[str, dict[asyncio.Queue[object], asyncio.Future[None]]] = {}
        #: Channels (and `_PATTERN`) Redis has confirmed on the current connection.
        self._confirmed: set[str] = set()
        #: A channel of this hub alone, so that the connection is always subscribed to something.
        self._control = f"deployer:progress-hub:{uuid.uuid4().hex}"
        self._pubsub: PubSub | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def listener_count(self) -> int:
        """How many listeners are registered (for metrics and tests)."""
        return sum(len(queues) for queues in self._queues.values()) + len(self._all)

    @property
    def channels(self) -> frozenset[str]:
        """The deployment channels this process follows now (for metrics and tests)."""
        return frozenset(self._queues)

    async def start(self, timeout: float = 10.0) -> None:
        """Connect and wait until Redis has confirmed the hub's own channel."""
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
        for chore in list(self._chores):
            chore.cancel()
        self._broadcast(_RESYNC)

    def _broadcast(self, item: object) -> None:
        for queues in (*self._queues.values(), self._all):
            for queue in queues:
                queue.put_nowait(item)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            pubsub = self._redis.pubsub()
            self._pubsub = pubsub
            self._confirmed.clear()
            try:
                await pubsub.subscribe(self._control, *self._queues)
                if self._all:
                    await pubsub.psubscribe(_PATTERN)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        delay = 0.1
                        self._handle(message)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                logger.warning("progress hub lost Redis, reconnecting", extra={"error": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "message":
            self._dispatch(_text(message["channel"]), message["data"], pattern=False)
        elif kind == "pmessage":
            self._dispatch(_text(message["channel"]), message["data"], pattern=True)
        elif kind == "subscribe":
            name = _text(message["channel"])
            if name == self._control:
                self._ready.set()
            elif name in self._queues:
                self._confirm(name, self._queues[name])
        elif kind == "psubscribe" and self._all:
            self._confirm(_PATTERN, self._all)
        elif kind == "unsubscribe":
            self._confirmed.discard(_text(message["channel"]))
        elif kind == "punsubscribe":
            self._confirmed.discard(_PATTERN)

    def _confirm(self, name: str, queues: set[asyncio.Queue[object]]) -> None:
        """Redis confirmed a (re)subscription: release those waiting for it, resync those already listening."""
        self._confirmed.add(name)
        waiting = self._waiting.pop(name, {})
        for future in waiting.values():
            if not future.done():
                future.set_result(None)
        for queue in queues:
            if queue not in waiting:
                queue.put_nowait(_RESYNC)  # a reconnect: whatever came meanwhile is in the database

    def _dispatch(self, name: str, data: bytes | str, *, pattern: bool) -> None:
        queues = self._all if pattern else self._queues.get(name)
        if not queues:
            return
        try:
            event = ProgressEvent.from_json(data)
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed progress message", extra={"channel": name})
            return
        for queue in queues:
            queue.put_nowait(event)

    async def _join(self, name: str, queue: asyncio.Queue[object]) -> None:
        """Register a listener of `name` (a channel, or `_PATTERN`), subscribing first if it is the first one.

        Waits until Redis confirms the subscription, at most `confirm_timeout_s`: without Redis the listener
        still replays and resyncs from the database, and the confirmation after a reconnect wakes it.
        """
        listeners = self._all if name == _PATTERN else self._queues.setdefault(name, set())
        first = not listeners
        listeners.add(queue)
        if name in self._confirmed:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(name, {})[queue] = future
        try:
            pubsub = self._pubsub
            if first and pubsub is not None:
                with contextlib.suppress(RedisError, OSError):  # the reader reconnects and subscribes again
                    if name == _PATTERN:
                        await pubsub.psubscribe(_PATTERN)
                    else:
                        await pubsub.subscribe(name)
            with contextlib.suppress(TimeoutError):
                # Not `wait_for`: on Python 3.11 it swallows a cancellation that races the confirmation.
                async with asyncio.timeout(self._confirm_timeout_s):
                    await future
        finally:
            waiting = self._waiting.get(name)
            if waiting is not None:
                waiting.pop(queue, None)
                if not waiting:
                    del self._waiting[name]

    def _leave(self, name: str, queue: asyncio.Queue[object]) -> None:
        """Unregister a listener; the last one of a channel (or of the pattern) unsubscribes it."""
        listeners = self._all if name == _PATTERN else self._queues.get(name)
        if listeners is None:
            return
        listeners.discard(queue)
        waiting = self._waiting.get(name)
        if waiting is not None:
            waiting.pop(queue, None)
        if listeners:
            return
        if name != _PATTERN:
            del self._queues[name]
        self._confirmed.discard(name)
        chore = asyncio.get_running_loop().create_task(self._unsubscribe(name))
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)

    async def _unsubscribe(self, name: str) -> None:
        pubsub = self._pubsub
        if pubsub is None or (self._all if name == _PATTERN else name in self._queues):
            return  # someone follows it again, or the reader will not subscribe it after reconnecting
        with contextlib.suppress(RedisError, OSError):
            if name == _PATTERN:
                await pubsub.punsubscribe(_PATTERN)
            else:
                await pubsub.unsubscribe(name)

    async def _next(self, queue: asyncio.Queue[object], timeout: float | None = None) -> object:
        """The next item, or TimeoutError after a quiet spell (no extra task per wait, unlike `wait_for`)."""
        async with asyncio.timeout(self._resync_after_s if timeout is None else timeout):
            return await queue.get()

    @staticmethod
    async def _ours(deployment_id: str, foreign: OrderedDict[str, None]) -> bool:
        """Whether a deployment is in our database: pub/sub ignores Redis database numbers, so installations
        sharing a Redis server hear each other's announcements. Foreign ids are remembered (the latest 1,000)."""
        if deployment_id in foreign:
            return False
        try:
            ours = await Deployment.filter(id=uuid.UUID(deployment_id)).exists()
        except ValueError:
            ours = False
        if not ours:
            foreign[deployment_id] = None
            if len(foreign) > 1000:
                foreign.popitem(last=False)
        return ours

    def _check_started(self) -> None:
        if self._task is None or not self._ready.is_set():
            raise RuntimeError("ProgressHub.start() must be awaited before listening")

    async def listen(self, deployment_id: uuid.UUID | str, *, after_sequence: int = 0) -> AsyncIterator[ProgressEvent]:
        """Replay stored events after `after_sequence`, then stream live ones, each once and in order.

        Completes after the event that puts the deployment in a terminal status. A client disconnect arrives as
        cancellation; the listener is unregistered in `finally`.
        """
        self._check_started()
        name = channel(deployment_id)
        queue: asyncio.Queue[object] = asyncio.Queue()
        last = after_sequence
        try:
            await self._join(name, queue)  # subscribe before replaying
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
                    if not events and await is_terminal(deployment_id):
                        return  # the caller asked only for events after the final one
                    catch_up = False
                try:
                    item = queue.get_nowait() if queue.qsize() else await self._next(queue)
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
            self._leave(name, queue)

    async def listen_all(self) -> AsyncIterator[ProgressEvent]:
        """Stream every deployment's new events, live, each once and in order per deployment; never ends.

        While such a listener exists the hub subscribes to every deployment's channel (one pattern).
        Announcements missed while Redis was away are caught up from the database after a reconnect, and every
        `resync_after_s` anyway (busy or quiet: other deployments' traffic says nothing of a missed one): events
        stored since the last one seen, minus a margin for the writers' clocks.
        """
        self._check_started()
        queue: asyncio.Queue[object] = asyncio.Queue()
        seen: dict[str, int] = {}
        foreign: OrderedDict[str, None] = OrderedDict()
        since = datetime.now(UTC)
        loop = asyncio.get_running_loop()
        resync_at = loop.time() + self._resync_after_s
        try:
            await self._join(_PATTERN, queue)
            queue.put_nowait(_RESYNC)  # what was announced before Redis confirmed the pattern is in the database
            while True:
                left = resync_at - loop.time()
                try:
                    if left <= 0:
                        item = _RESYNC
                    else:
                        item = queue.get_nowait() if queue.qsize() else await self._next(queue, left)
                except TimeoutError:
                    item = _RESYNC
                if isinstance(item, ProgressEvent):
                    batch = [item]
                else:
                    resync_at = loop.time() + self._resync_after_s
                    rows = await DeploymentEvent.filter(at__gt=since).order_by("at", "id")
                    batch = [ProgressEvent.from_model(row) for row in rows]
                for event in batch:
                    if event.sequence <= seen.get(event.deployment_id, 0):
                        continue
                    if event.deployment_id not in seen and not await self._ours(event.deployment_id, foreign):
                        continue
                    seen[event.deployment_id] = event.sequence
                    since = max(since, event.at - ALL_CATCH_UP_MARGIN)
                    yield event
        finally:
            self._leave(_PATTERN, queue)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
