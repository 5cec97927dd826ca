"""Progress fan-out: each event is rendered once per subscription shape, and every subscriber gets those bytes.

Strawberry executes a subscription's document once per event *per subscriber*: a thousand subscribers of one
deployment cost a thousand executions and a thousand JSON encodings of the same result. Here the websocket
handlers (`graphql_api.wsguard`) still hand each `subscribe` to Strawberry, so parsing, validation, the
document limits, the `read` scope, argument checks, NOT_FOUND and error masking stay exactly as they were; but
`deploymentProgress`, once its checks pass, leaves a `Handover` instead of yielding events. The handler then
follows the deployment through the process's `ProgressHub` (replay, gap fill, resync, order and no duplicates
are `ProgressHub.listen`'s, per subscriber as before) and sends each event as a frame built around a payload
that `Renderer` made once for the subscription's shape: its document, operation name and variables.

A payload is the document executed against the event, as Strawberry would per subscriber, without any
request context: `DeploymentEvent`'s fields read only the event, so one subscriber's rendering is every
subscriber's (a field that read the context would fail loudly here rather than show one caller's view to
another). Errors are shaped and logged as Strawberry's path does.
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any

from graphql import DocumentNode, ExecutionResult, GraphQLError, GraphQLFormattedError, execute, parse
from strawberry import Schema
from strawberry.utils.aio import aclosing

from graphql_api.errors import ErrorPolicy
from jobs.progress import ProgressEvent, ProgressHub

#: Parsed documents kept (clients send the same few subscription documents over and over).
MAX_SHAPES = 256
#: Rendered payloads kept: one per shape and event; a thousand subscribers of one deployment share one.
MAX_PAYLOADS = 2048


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


async def frames(handover: Handover, renderer: Renderer, hub: ProgressHub, *, prefix: str) -> AsyncIterator[str]:
    """The frames of a handed-over `deploymentProgress`: `prefix` + payload + `}` for each event, in order.

    A failure while following (the database went away) ends the stream with one masked error payload, as
    Strawberry's path sends it.
    """
    assert handover.deployment_id is not None
    shape = renderer.shape(handover)
    events = hub.listen(handover.deployment_id, after_sequence=handover.after)
    try:
        async with aclosing(events):
            async for event in events:
                yield prefix + await renderer.payload(shape, event) + "}"
    except Exception as exc:  # reported to this subscriber alone, masked, and logged
        error = GraphQLError(str(exc), original_error=exc)
        yield prefix + _encode({"data": None, "errors": renderer.errors([error])}) + "}"


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
