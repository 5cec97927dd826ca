"""Websockets that cannot crash or linger: strict messages, an init deadline for both protocols, caps per token.

Strawberry's protocol handlers trust the shape of what they receive; a `payload` that is a string, an `id`
that is an object, or a list instead of a message raised inside the handler. Here every message is parsed by
`graphql_api.payload` and checked against its protocol before the handler sees it: anything malformed closes
the connection with 4400 and a short reason. Binary frames too.

The legacy `graphql-ws` protocol has no deadline for `connection_init` in Strawberry; `LegacyWSHandler` closes
a connection that has not been acknowledged within the view's `connection_init_wait_timeout` with 4408, as
`graphql-transport-ws` does.

Both handlers hand `deploymentProgress` over to `graphql_api.fanout` once Strawberry has checked it: its events
are then rendered once per subscription shape and the same payload goes to every subscriber.

`ConnectionRegistry` counts open websockets per token (`DEPLOYER_MAX_WS_PER_TOKEN`) and, when the tokens file
is re-read, closes with 4401 those opened with a token that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from starlette.websockets import WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema.schema import StreamResult
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler, Operation
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import CompleteMessage, ErrorMessage, OperationMessage
from strawberry.types.execution import PreExecutionError

from graphql_api.edge import Connection
from graphql_api.fanout import HANDOVER, Fanout, Handover, frame_prefix
from graphql_api.payload import PayloadError, decode_json, graphql_ws_problem, transport_ws_problem

logger = logging.getLogger("deployer.graphql")

#: Close codes (graphql-transport-ws's, used for both protocols).
BAD_MESSAGE = 4400
UNAUTHORIZED = 4401
INIT_TIMEOUT = 4408
TOO_MANY = 4429


class StrictWebSocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's adapter with strict JSON: a message that is not acceptable closes the socket with 4400."""

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object, None]:
        """Yield each text message parsed by `graphql_api.payload.decode_json`; stop when the socket closes."""
        while self.ws.application_state != WebSocketState.DISCONNECTED:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self.close(BAD_MESSAGE, "WebSocket messages must be text")
                return
            try:
                value = decode_json(text)
            except PayloadError as exc:
                await self.close(BAD_MESSAGE, exc.reason)
                return
            yield value

    async def send_json(self, message: Mapping[str, object]) -> None:
        """Send unless the socket is already closed (a refused `connection_init` is answered before closing)."""
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        await super().send_json(message)

    async def send_text(self, text: str) -> None:
        """Send a frame that is JSON already (a fanned-out event), unless the socket is closed."""
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        await self.ws.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        """Close unless the socket is already closed (by us, by the edge, or by the client)."""
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(RuntimeError):  # the client closed first
            await super().close(code, reason)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Any, None]):
    """`graphql-transport-ws` with every client message checked before Strawberry handles it."""

    def forget_id(self, id: str) -> None:
        """Forget a finished operation; one the client completed (or a closing socket dropped) is gone already.

        Strawberry deletes the id and raised KeyError when a client's `complete` or the connection's shutdown
        raced the operation's own end (found by the fuzz suite).
        """
        self.operations.pop(id, None)

    async def handle_task_exception(self, error: Exception) -> None:
        """A client that left while its result was being sent is not an error worth a traceback."""
        if isinstance(error, WebSocketDisconnected):
            logger.debug("websocket closed while an operation was answering")
            return
        await super().handle_task_exception(error)

    async def _send_result_stream(self, operation: Operation[Any, None], result_source: StreamResult) -> None:
        """Strawberry's stream; then, when `deploymentProgress` handed over, its events as shared payloads."""
        fanout = _fanout(self.view)
        if fanout is None:
            await super()._send_result_stream(operation, result_source)
            return
        handover = Handover(operation.query, operation.operation_name, operation.variables)
        token = HANDOVER.set(handover)
        try:
            await super()._send_result_stream(operation, result_source)
        finally:
            HANDOVER.reset(token)
        if not handover.taken:
            return
        prefix = frame_prefix(self.view.encode_json_string, {"id": operation.id, "type": "next"})
        await fanout.follow(self.context.hub, handover, prefix=prefix, send=_adapter(self.websocket).send_text)

    async def handle_message(self, message: Message) -> None:
        """Close with 4400 on a malformed message, else handle it as Strawberry does."""
        problem = transport_ws_problem(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        await super().handle_message(message)


class LegacyWSHandler(BaseGraphQLWSHandler[Any, None]):
    """Legacy `graphql-ws` with checked messages and a deadline for `connection_init`."""

    async def handle(self) -> None:
        """Serve the connection; close it with 4408 if it is not acknowledged in time."""
        deadline = asyncio.create_task(self._init_deadline())
        try:
            await super().handle()
        finally:
            deadline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deadline

    async def _init_deadline(self) -> None:
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        if not self.connection_acknowledged:
            await self.websocket.close(INIT_TIMEOUT, "Connection initialisation timeout")

    async def handle_async_results(
        self, operation_id: str, query: str, operation_name: str | None, variables: dict[str, object] | None
    ) -> None:
        """Strawberry's loop, with `deploymentProgress` handed over to shared payloads as in graphql-transport-ws."""
        fanout = _fanout(self.view)
        if fanout is None:
            await super().handle_async_results(operation_id, query, operation_name, variables)
            return
        handover = Handover(query, operation_name, variables)
        try:
            token = HANDOVER.set(handover)
            try:
                result_source = await self.schema.subscribe(
                    query=query,
                    variable_values=variables,
                    operation_name=operation_name,
                    context_value=self.context,
                    root_value=self.root_value,
                )
                self.subscriptions[operation_id] = result_source
                is_first_result = True
                async for result in result_source:
                    if is_first_result and isinstance(result, PreExecutionError):
                        assert result.errors
                        error = ErrorMessage(type="error", id=operation_id, payload=result.errors[0].formatted)
                        await self.send_message(error)
                        return
                    await self.send_data_message(result, operation_id)
                    is_first_result = False
            finally:
                HANDOVER.reset(token)
            if handover.taken:
                prefix = frame_prefix(self.view.encode_json_string, {"type": "data", "id": operation_id})
                await fanout.follow(self.context.hub, handover, prefix=prefix, send=_adapter(self.websocket).send_text)
            await self.send_message(CompleteMessage(type="complete", id=operation_id))
        except asyncio.CancelledError:
            await self.send_message(CompleteMessage(type="complete", id=operation_id))
        finally:
            self.subscriptions.pop(operation_id, None)
            self.tasks.pop(operation_id, None)

    async def handle_message(self, message: OperationMessage) -> None:
        """Close with 4400 on a malformed message, else handle it as Strawberry does."""
        problem = graphql_ws_problem(message)
        if problem is not None:
            await self.websocket.close(BAD_MESSAGE, problem)
            return
        await super().handle_message(message)


def _fanout(view: object) -> Fanout | None:
    """The view's fan-out (None: every subscriber is executed by Strawberry, as before)."""
    fanout = getattr(view, "fanout", None)
    return fanout if isinstance(fanout, Fanout) else None


def _adapter(websocket: object) -> StrictWebSocketAdapter:
    assert isinstance(websocket, StrictWebSocketAdapter)
    return websocket


class ConnectionRegistry:
    """Open, authenticated websockets: a cap per token, and closing those whose token was removed.

    Args:
        per_token: open websockets allowed per caller (token name; every anonymous caller shares one).
    """

    def __init__(self, per_token: int) -> None:
        self.per_token = per_token
        self._by_name: Counter[str] = Counter()
        self._open: dict[Connection, tuple[str, str]] = {}

    def admit(self, connection: Connection, name: str, digest: str) -> bool:
        """Count a newly authenticated websocket; False when its token already holds `per_token`."""
        if connection in self._open:
            return True
        if self._by_name[name] >= self.per_token:
            return False
        self._by_name[name] += 1
        self._open[connection] = (name, digest)
        return True

    def release(self, connection: Connection) -> None:
        """Forget a websocket that closed."""
        entry = self._open.pop(connection, None)
        if entry is not None:
            self._by_name[entry[0]] -= 1
            if self._by_name[entry[0]] <= 0:
                del self._by_name[entry[0]]

    def count(self, name: str) -> int:
        """Open websockets of one caller."""
        return self._by_name[name]

    async def close_revoked(self, is_current: Callable[[str], bool]) -> int:
        """Close (4401) every websocket opened with a token that `is_current` no longer knows; returns how many."""
        revoked = [conn for conn, (_, digest) in list(self._open.items()) if digest and not is_current(digest)]
        for connection in revoked:
            await connection.close(UNAUTHORIZED, "Unauthorized: the API token was removed")
        if revoked:
            logger.warning("closed %s websocket(s) whose API token was removed", len(revoked))
        return len(revoked)
