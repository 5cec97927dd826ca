"""Progress fan-out: each event is rendered once per subscription shape, and every subscriber gets those bytes.

Strawberry executes a subscription's document once per event *per subscriber*: a thousand subscribers of one
deployment cost a thousand executions and a thousand JSON encodings of the same result. Here the websocket
handlers (`graphql_api.wsguard`) still hand each `subscribe` to Strawberry, so parsing, validation, the
document limits, the `read` scope, argument checks, NOT_FOUND and error masking stay exactly as they were; but
`deploymentProgress`, once its checks pass, leaves a `Handover` instead of yielding events, and the handler
streams it with `Fanout.follow`: the subscriber replays (and later catches up) from the database on its own,
then parks on its deployment's feed, one `ProgressHub.listen` per deployment that sends each live event to all
parked subscribers in one pass. Frames are the view's own JSON around a payload that `Renderer` made once for
the subscription's shape (its document, operation name and variables), byte for byte what Strawberry sends.

A payload is the document executed against the event, as Strawberry would per subscriber, without any
request context: `DeploymentEvent`'s fields read only the event, so one subscriber's rendering is every
subscriber's (a field that read the context would fail loudly here rather than show one caller's view to
another). Errors are shaped and logged as Strawberry's path does.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any

from graphql import DocumentNode, ExecutionResult, GraphQLError, GraphQLFormattedError, execute, parse
from strawberry import Schema
from strawberry.utils.aio import aclosing

from graphql_api.errors import ErrorPolicy
from jobs.progress import ProgressEvent, ProgressHub, is_terminal, stored_events

#: Parsed documents kept (clients send the same few subscription documents over and over).
MAX_SHAPES = 256
#: Rendered payloads kept: one per shape and event; a thousand subscribers of one deployment share one.
MAX_PAYLOADS = 2048
#: Frames queued for a subscriber that reads slowly; past that it catches up from the database on its own.
MAX_BACKLOG = 256


@dataclass
class Handover:
    """One websocket operation's request, and where `deploymentProgress` leaves the deployment to follow.

    A websocket handler sets it (in `HANDOVER`) around Strawberry's run of the operation; the resolver fills
    `deployment_id` and `after` once its checks have passed, instead of yielding events itself.
    """

    query: str
    operation_name: str | None
    variables: dict[str, Any] | None
    deployment_id: uuid.UUID | None = None
    after: int = 0

    @property
    def taken(self) -> bool:
        """Whether the resolver handed the stream over to the websocket handler."""
        return self.deployment_id is not None


#: The operation being run by this task's websocket handler (None anywhere else: HTTP, tests calling the
#: schema directly); the progress resolver hands over only when it is set and not taken yet.
HANDOVER: ContextVar[Handover | None] = ContextVar("deployer_progress_handover", default=None)


@dataclass(frozen=True)
class Shape:
    """What a rendering depends on besides the event: the document, the operation and the variables."""

    key: str
    document: DocumentNode = field(compare=False)
    operation_name: str | None = field(compare=False)
    variables: dict[str, Any] | None = field(compare=False)


class Renderer:
    """Renders progress events into `next` payloads, once per (shape, deployment, sequence), kept LRU-bounded.

    Args:
        root: builds the subscription field's value from an event (`types.DeploymentEvent.from_progress`).
    """

    def __init__(
        self,
        schema: Schema,
        root: Callable[[ProgressEvent], object],
        *,
        max_shapes: int = MAX_SHAPES,
        max_payloads: int = MAX_PAYLOADS,
    ) -> None:
        self._schema = schema
        self._root = root
        self._policy = ErrorPolicy()
        self._max_shapes = max_shapes
        self._max_payloads = max_payloads
        self._shapes: OrderedDict[str, Shape] = OrderedDict()
        self._payloads: OrderedDict[tuple[str, str, int], str] = OrderedDict()
        #: How many payloads were rendered (rather than reused), for tests and the benchmark.
        self.renders = 0

    def shape(self, handover: Handover) -> Shape:
        """The shape of a handed-over operation (its document was parsed and validated by Strawberry already)."""
        variables = json.dumps(handover.variables, sort_keys=True, separators=(",", ":"))
        key = json.dumps([handover.query, handover.operation_name, variables], separators=(",", ":"))
        shape = self._shapes.get(key)
        if shape is None:
            shape = Shape(key, parse(handover.query), handover.operation_name, handover.variables)
            self._shapes[key] = shape
            if len(self._shapes) > self._max_shapes:
                self._shapes.popitem(last=False)
        else:
            self._shapes.move_to_end(key)
        return shape

    async def payload(self, shape: Shape, event: ProgressEvent) -> str:
        """The JSON `payload` of the `next` message carrying `event` for subscriptions of this shape."""
        key = (shape.key, event.deployment_id, event.sequence)
        cached = self._payloads.get(key)
        if cached is not None:
            self._payloads.move_to_end(key)
            return cached
        outcome = execute(
            self._schema._schema,
            shape.document,
            root_value=self._root(event),
            variable_values=shape.variables,
            operation_name=shape.operation_name,
        )
        result: ExecutionResult = await outcome if isawaitable(outcome) else outcome
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = self.errors(list(result.errors))
        text = _encode(body)
        self.renders += 1
        self._payloads[key] = text
        if len(self._payloads) > self._max_payloads:
            self._payloads.popitem(last=False)
        return text

    def errors(self, errors: list[GraphQLError]) -> list[GraphQLFormattedError]:
        """Log errors as the schema does and shape them as `ErrorPolicy` does (a bug is masked)."""
        self._schema.process_errors(errors)
        return [error.formatted for error in self._policy._process_errors(errors)]


#: Why a parked subscriber is woken: its final event was sent; it must read the database (a gap, a send
#: that blocked, the feed ending); or the feed failed (its error ends the subscription).
_DONE = "done"
_CATCH_UP = "catch up"
_FAILED = "failed"

Send = Callable[[str], Coroutine[Any, Any, None]]


class _Subscriber:
    """One handed-over subscription: its shape, frame prefix and send, and the last sequence it was sent."""

    __slots__ = ("backlog", "last", "pending", "prefix", "send", "shape", "wake")

    def __init__(self, shape: Shape, prefix: str, send: Send, last: int) -> None:
        self.shape = shape
        self.prefix = prefix
        self.send = send
        self.last = last
        self.wake: asyncio.Future[str] | None = None
        #: A send the feed started that could not finish at once (the client reads slowly), then the backlog.
        self.pending: asyncio.Task[None] | None = None
        #: Frames the feed queued behind `pending`, in order.
        self.backlog: deque[str] = deque()

    async def drain(self) -> None:
        """Send the backlog, in order (runs in `pending`, after the send that had to wait)."""
        while self.backlog:
            await self.send(self.backlog.popleft())


class _Feed:
    """One deployment followed by this process: one hub listener, and the subscribers parked on it."""

    __slots__ = ("deployment_id", "error", "last", "live", "task")

    def __init__(self, deployment_id: uuid.UUID, last: int) -> None:
        self.deployment_id = deployment_id
        self.last = last
        self.live: set[_Subscriber] = set()
        self.task: asyncio.Task[None] | None = None
        self.error: Exception | None = None


class Fanout:
    """Streams handed-over `deploymentProgress` subscriptions, live events sent by one loop per deployment.

    A subscriber first sends itself what the database holds after its `afterSequence` (replay, and later any
    catch-up), then parks on the deployment's feed once it is level with it. The feed is one
    `ProgressHub.listen` (ordered, no duplicates, gaps filled and resyncs done once per deployment, not once per
    subscriber); for each event it renders one payload per shape and sends it to every parked subscriber that
    is exactly one event behind, in one pass, like a bare broadcast. A send that would wait (a slow reader)
    goes on in a task of its own with the frames that follow queued behind it, up to `max_backlog`; a
    subscriber further behind than that, or not exactly one event behind (a gap), is woken to catch up from
    the database itself. One slow client never holds up the others, and nobody gets an event twice or out of
    order.
    """

    def __init__(self, renderer: Renderer, *, max_backlog: int = MAX_BACKLOG) -> None:
        self.renderer = renderer
        self._max_backlog = max_backlog
        self._feeds: dict[uuid.UUID, _Feed] = {}
        #: Handed-over subscriptions streaming now (for `/metrics`).
        self.subscribers = 0

    @property
    def feeds(self) -> int:
        """Deployments followed by a feed now (for tests)."""
        return len(self._feeds)

    async def follow(self, hub: ProgressHub, handover: Handover, *, prefix: str, send: Send) -> None:
        """Send the handed-over subscription's frames (`prefix` + payload + `}`) until its final event.

        A failure to read or render (the database went away) ends the stream with one masked error payload, as
        Strawberry's path sends it; a failure to send (the client left) propagates.
        """
        deployment_id = handover.deployment_id
        assert deployment_id is not None
        subscriber = _Subscriber(self.renderer.shape(handover), prefix, send, handover.after)
        self.subscribers += 1
        try:
            while not await self._catch_up(subscriber, deployment_id):
                feed = self._feeds.get(deployment_id)
                if feed is None:
                    feed = self._start(hub, deployment_id, subscriber.last)
                elif subscriber.last < feed.last:
                    continue  # the feed moved on while we read the database: read again
                reason = await self._park(feed, subscriber)
                if reason == _FAILED and feed.error is not None:
                    raise feed.error
                if reason == _DONE:
                    break
            if subscriber.pending is not None:  # the final frame goes out before `complete`
                await _sending(subscriber.pending)
        except _SendError as exc:
            cause = exc.__cause__
            assert cause is not None
            raise cause from None
        except Exception as exc:  # reported to this subscriber alone, masked, and logged
            error = GraphQLError(str(exc), original_error=exc)
            await send(prefix + _encode({"data": None, "errors": self.renderer.errors([error])}) + "}")
        finally:
            self.subscribers -= 1
            if subscriber.pending is not None and not subscriber.pending.done():
                subscriber.pending.cancel()  # cancelled or failed: the client may never read it

    async def _catch_up(self, subscriber: _Subscriber, deployment_id: uuid.UUID) -> bool:
        """Send what the database holds after the subscriber's last event; True when the stream is over."""
        if subscriber.pending is not None:
            pending, subscriber.pending = subscriber.pending, None
            await _sending(pending)
        events = await stored_events(deployment_id, after=subscriber.last)
        for index, event in enumerate(events):
            frame = subscriber.prefix + await self.renderer.payload(subscriber.shape, event) + "}"
            await _sending(subscriber.send(frame))
            subscriber.last = event.sequence
            # A final event ends the stream unless more followed it (a destroy after COMPLETED).
            if event.final and index == len(events) - 1:
                return True
        return not events and await is_terminal(deployment_id)

    async def _park(self, feed: _Feed, subscriber: _Subscriber) -> str:
        """Wait on the feed until it sent the final event or the subscriber must catch up."""
        subscriber.wake = asyncio.get_running_loop().create_future()
        feed.live.add(subscriber)
        try:
            return await subscriber.wake
        finally:
            subscriber.wake = None
            feed.live.discard(subscriber)
            if not feed.live and self._feeds.get(feed.deployment_id) is feed:
                del self._feeds[feed.deployment_id]
                if feed.task is not None:
                    feed.task.cancel()

    def _start(self, hub: ProgressHub, deployment_id: uuid.UUID, last: int) -> _Feed:
        feed = _Feed(deployment_id, last)
        self._feeds[deployment_id] = feed
        feed.task = asyncio.get_running_loop().create_task(self._run(hub, feed), name=f"feed-{deployment_id}")
        feed.task.add_done_callback(_retrieve)
        return feed

    async def _run(self, hub: ProgressHub, feed: _Feed) -> None:
        """Send each event of the deployment to its parked subscribers, one payload per shape."""
        try:
            events = hub.listen(feed.deployment_id, after_sequence=feed.last)
            async with aclosing(events):
                async for event in events:
                    if self._feeds.get(feed.deployment_id) is not feed:
                        return  # stopped while it was busy: nobody is parked on it any more
                    feed.last = event.sequence
                    payloads: dict[str, str] = {}
                    for subscriber in list(feed.live):
                        if subscriber.last >= event.sequence:
                            continue  # it read this one from the database already
                        pending = subscriber.pending
                        if pending is not None and _finished_well(pending):
                            pending = subscriber.pending = None  # a slow send that has finished since
                        if subscriber.last != event.sequence - 1 or (
                            pending is not None and (pending.done() or len(subscriber.backlog) >= self._max_backlog)
                        ):
                            _wake(feed, subscriber, _CATCH_UP)  # a gap, a failed send, or too far behind
                            continue
                        payload = payloads.get(subscriber.shape.key)
                        if payload is None:
                            payload = payloads[subscriber.shape.key] = await self.renderer.payload(
                                subscriber.shape, event
                            )
                        frame = subscriber.prefix + payload + "}"
                        subscriber.last = event.sequence
                        if pending is not None:
                            subscriber.backlog.append(frame)  # behind the send still waiting
                        else:
                            try:
                                subscriber.pending = send_now(subscriber.send(frame), then=subscriber.drain)
                            except Exception:  # the client is gone; its own task finds out when it sends
                                _wake(feed, subscriber, _CATCH_UP)
                                continue
                        if event.final:
                            _wake(feed, subscriber, _DONE)
        except Exception as exc:
            feed.error = exc  # the database went away: every parked subscriber reports it and ends
            raise
        finally:
            if self._feeds.get(feed.deployment_id) is feed:
                del self._feeds[feed.deployment_id]
            for subscriber in list(feed.live):
                _wake(feed, subscriber, _CATCH_UP if feed.error is None else _FAILED)


def _wake(feed: _Feed, subscriber: _Subscriber, reason: str) -> None:
    feed.live.discard(subscriber)
    if subscriber.wake is not None and not subscriber.wake.done():
        subscriber.wake.set_result(reason)


def _finished_well(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a feed's failure as seen: its subscribers report it (`Fanout.follow`)."""
    if not task.cancelled():
        task.exception()


class _SendError(Exception):
    """A send to the client failed (it left); carries the original as its cause."""


async def _sending(awaitable: Awaitable[None]) -> None:
    try:
        await awaitable
    except Exception as exc:
        raise _SendError from exc


def send_now(
    send: Coroutine[Any, Any, None], *, then: Callable[[], Awaitable[None]] | None = None
) -> asyncio.Task[None] | None:
    """Run a send as far as it goes without waiting; if it must wait (the client's buffer is full), the rest
    runs in a task, followed by `then()`, and the task is returned. None when the frame was handed to the
    transport at once.

    A broadcast to a thousand websockets then costs no task switch per subscriber, while a slow reader
    still cannot hold up the loop. Errors raised before the send waits propagate.
    """
    try:
        waiting_on = send.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_finish(send, waiting_on, then))


async def _finish(
    send: Coroutine[Any, Any, None], waiting_on: object, then: Callable[[], Awaitable[None]] | None
) -> None:
    """Drive a send that stopped on `waiting_on` (a future, or None for a bare yield) to its end, then `then()`."""
    try:
        while True:
            if isinstance(waiting_on, asyncio.Future):
                waiting_on._asyncio_future_blocking = False
                await asyncio.wait([waiting_on])
            else:
                await asyncio.sleep(0)
            try:
                waiting_on = send.send(None)
            except StopIteration:
                break
    except BaseException:
        send.close()
        raise
    if then is not None:
        await then()


def frame_prefix(encode: Callable[[object], str], message: dict[str, object]) -> str:
    """The text of `message` with a `payload` key last, up to where the payload goes: `{"id":"1",...,"payload":`.

    `encode` is the view's own JSON encoder, so that a fanned-out frame is byte for byte what Strawberry sends.
    """
    text = encode({**message, "payload": None})
    if not text.endswith("null}"):
        raise ValueError(f"cannot split a frame encoded as {text!r}")
    return text[: -len("null}")]


def _encode(payload: dict[str, Any]) -> str:
    """Strawberry's JSON encoding (`strawberry.http.base.BaseView.encode_json`)."""
    return json.dumps(payload, separators=(",", ":"))
