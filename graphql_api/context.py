"""The typed per-request context, and the GraphQL view that builds it and guards the way in.

HTTP: with tokens configured, an operation without a valid `Authorization: Bearer` header is answered with
HTTP 401 before it runs (rendering GraphiQL in a browser needs no token). The body must be a JSON object of
the GraphQL-over-HTTP shape and pass `graphql_api.payload`'s checks, or it gets 400 with a JSON error; a
subscription over HTTP gets 400 too (subscriptions need a websocket).

WebSocket: the token comes from the `connection_init` payload, or else the upgrade request's header; without
a valid one the connection is closed with 4401 (graphql-transport-ws) or answered with `connection_error`
(graphql-ws). Each token may hold `DEPLOYER_MAX_WS_PER_TOKEN` websockets; messages are checked by
`graphql_api.wsguard` before Strawberry handles them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, cast

from cross_web import AsyncHTTPRequestAdapter, HTTPException, StarletteRequestAdapter
from redis.asyncio import Redis
from saq import Queue
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLRequestData
from strawberry.schema import BaseSchema
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from clients.coolify import CoolifyClient
from graphql_api.auth import ANONYMOUS, Authenticator, Caller, bearer_token, connection_params_token
from graphql_api.edge import connection_of
from graphql_api.errors import DeployerError, RateLimitedError, UnauthenticatedError
from graphql_api.fanout import Fanout
from graphql_api.graphiql import graphiql_page
from graphql_api.hotpath import HotQueries
from graphql_api.logcontext import caller_var
from graphql_api.payload import PayloadError, check_http_envelope, decode_json
from graphql_api.wsguard import (
    TOO_MANY,
    UNAUTHORIZED,
    ConnectionRegistry,
    LegacyWSHandler,
    StrictWebSocketAdapter,
    TransportWSHandler,
)
from jobs.catalog import Catalog
from jobs.progress import ProgressHub
from settings import Settings

logger = logging.getLogger("deployer.graphql")


@dataclass
class Services:
    """The long-lived resources the lifespan opens, shared by every request."""

    settings: Settings
    redis: Redis
    queue: Queue
    hub: ProgressHub
    #: DigitalOcean's catalog, when the API has DigitalOcean credentials (`deploy` checks region/size/image).
    catalog: Catalog | None = None
    #: Coolify, read live by `Deployment.application` and `Deployment.buildLog`; None when not configured.
    coolify: CoolifyClient | None = None


@dataclass
class Context:
    """What every resolver gets as `info.context`."""

    settings: Settings
    redis: Redis
    queue: Queue
    hub: ProgressHub
    caller: Caller | None
    request: Request | WebSocket
    response: Response | WebSocket
    #: The WebSocket `connection_init` payload (Strawberry fills it in); None over HTTP.
    connection_params: dict[str, Any] | None = None
    #: DigitalOcean's catalog (None when the API has no DigitalOcean credentials).
    catalog: Catalog | None = None
    #: Coolify, read live by `Deployment.application` and `Deployment.buildLog` (None when not configured).
    coolify: CoolifyClient | None = None


#: Seconds a websocket may stay open without an acknowledged `connection_init` (both protocols).
CONNECTION_INIT_TIMEOUT_S = 10.0
#: Error codes of HTTP answers given before GraphQL runs, by status.
_HTTP_CODES = {400: "BAD_USER_INPUT", 401: "UNAUTHENTICATED", 403: "FORBIDDEN", 404: "NOT_FOUND"}


def error_response(
    status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """A GraphQL-shaped JSON error answered before (or instead of) execution."""
    code = code or _HTTP_CODES.get(status, "BAD_REQUEST")
    body = {"data": None, "errors": [{"message": message, "extensions": {"code": code, "status": status}}]}
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _unauthenticated_response() -> Response:
    error = UnauthenticatedError()
    return error_response(error.status, error.message, code=error.code, headers={"WWW-Authenticate": "Bearer"})


class DeployerGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with our typed context, API-token checks and strict request parsing.

    Args:
        connections: the open websockets, counted per token (and closed when their token is removed).
        assets_dir: where `deployer assets` put GraphiQL's files (None: Strawberry's own CDN page).
        fanout: streams `deploymentProgress` events rendered once for every subscriber of a shape (None:
            Strawberry executes the document once per subscriber and event).
        hot_queries: the short path for plain hot queries (None: every request takes Strawberry's path).
    """

    websocket_adapter_class = StrictWebSocketAdapter
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(
        self,
        schema: BaseSchema,
        *,
        services: ServicesProvider,
        authenticator: Authenticator,
        connections: ConnectionRegistry | None = None,
        assets_dir: Path | None = None,
        fanout: Fanout | None = None,
        hot_queries: HotQueries | None = None,
    ) -> None:
        super().__init__(
            schema,
            keep_alive=True,
            keep_alive_interval=15,
            connection_init_wait_timeout=timedelta(seconds=CONNECTION_INIT_TIMEOUT_S),
        )
        self._services = services
        self._authenticator = authenticator
        self.connections = connections or ConnectionRegistry(per_token=100)
        self._assets_dir = assets_dir
        self.fanout = fanout
        self._hot = hot_queries

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL from the local assets folder (or deployer's own query page when it is missing)."""
        if self._assets_dir is None:
            return await super().render_graphql_ide(request)
        return HTMLResponse(graphiql_page(self._assets_dir))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """HTTP: 401 without a valid token, JSON errors for bad requests. WebSocket: forget it once closed."""
        if scope["type"] == "websocket":
            try:
                await super().__call__(scope, receive, send)
            finally:
                connection = connection_of(scope)
                if connection is not None:
                    self.connections.release(connection)
            return
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive=receive)
        caller: Caller | None = None
        if not self._authenticator.enabled:
            caller = ANONYMOUS
            caller_var.set(ANONYMOUS.name)
        elif not self.should_render_graphql_ide(StarletteRequestAdapter(request)):
            caller = self._authenticator.authenticate(bearer_token(request.headers.get("authorization")))
            if caller is None:
                await _unauthenticated_response()(scope, receive, send)
                return
            caller_var.set(caller.name)
        if caller is not None and self._hot is not None:
            hot = await self._hot_response(request, caller)
            if hot is not None:
                await hot(scope, receive, send)
                return
        try:
            response = await self.run(request)
        except HTTPException as exc:
            response = error_response(exc.status_code, exc.reason)
        await response(scope, receive, send)

    async def _hot_response(self, request: Request, caller: Caller) -> Response | None:
        """The short path's answer to a plain hot query (`graphql_api.hotpath`), or None to take the full path.

        Only a POST of `application/json` qualifies; the body read here stays cached on the request, so the
        full path reads the same bytes. Whatever the short path refuses, the full path answers as before.
        """
        if request.method != "POST" or self._hot is None:
            return None
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        accept = request.headers.get("accept", "")
        if content_type != "application/json" or "multipart/mixed" in accept or "text/event-stream" in accept:
            return None
        try:
            data = decode_json(await request.body())
            check_http_envelope(data)
        except PayloadError:
            return None
        try:
            services = self._services()
        except RuntimeError:
            return None
        body = await self._hot.answer(
            data["query"], data.get("operationName"), data.get("variables"), caller, services.settings
        )
        if body is None:
            return None
        return Response(self.encode_json(body), status_code=200, media_type="application/json")

    def parse_json(self, data: str | bytes) -> Any:
        """Parse a body (or the `variables` query parameter) strictly: a JSON object, or 400."""
        try:
            value = decode_json(data)
        except PayloadError as exc:
            raise HTTPException(400, exc.reason) from None
        if not isinstance(value, dict):
            raise HTTPException(400, 'The body must be a JSON object such as {"query": "{ dropletCount { limit } }"}')
        return value

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> GraphQLRequestData | list[GraphQLRequestData]:
        """Strawberry's parsing, then the GraphQL-over-HTTP envelope checks (`graphql_api.payload`)."""
        data = await super().parse_http_body(request)
        if isinstance(data, list):  # batching is off; Strawberry refuses it first, this is belt and braces
            raise HTTPException(400, "Batched operations are not supported")
        try:
            check_http_envelope(
                {
                    "query": data.query,
                    "variables": data.variables,
                    "operationName": data.operation_name,
                    "extensions": data.extensions,
                }
            )
        except PayloadError as exc:
            raise HTTPException(400, exc.reason) from None
        return data

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Run one operation; a subscription (over HTTP) or an unknown operation name is a 400."""
        allowed = OperationType.from_http(request_adapter.method) - {OperationType.SUBSCRIPTION}
        if not self.allow_queries_via_get and request_adapter.method == "GET":
            allowed = allowed - {OperationType.QUERY}
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError:
            raise HTTPException(400, "The document has no operation of that name (or several and none named)") from None
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise HTTPException(400, "Subscriptions need a websocket (graphql-transport-ws)") from None
            raise HTTPException(400, exc.as_http_error_reason(request_adapter.method)) from None
        except MissingQueryError:
            raise HTTPException(400, "No GraphQL query found in the request") from None

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        """Build the typed context; the caller comes from the Authorization header (HTTP or upgrade)."""
        services = self._services()
        caller = self._authenticator.authenticate(bearer_token(request.headers.get("authorization")))
        return Context(
            settings=services.settings,
            redis=services.redis,
            queue=services.queue,
            hub=services.hub,
            catalog=services.catalog,
            caller=caller,
            request=request,
            response=response,
            coolify=services.coolify,
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate a WebSocket by its `connection_init` payload (or upgrade header), else reject it.

        A token over its websocket cap is refused too: close 4429 (graphql-transport-ws) or `connection_error`
        with RATE_LIMITED (graphql-ws).
        """
        token = connection_params_token(context.connection_params)
        if token is not None:
            context.caller = self._authenticator.authenticate(token)
        websocket = context.request
        if context.caller is None:
            await self._reject(websocket, UnauthenticatedError(), UNAUTHORIZED, "Unauthorized")
        caller = context.caller
        caller_var.set(caller.name)
        connection = connection_of(websocket.scope)
        if connection is not None and not self.connections.admit(connection, caller.name, caller.digest):
            logger.warning("refused a websocket: %s holds %s already", caller.name, self.connections.per_token)
            error = RateLimitedError(5, what="websockets")
            await self._reject(websocket, error, TOO_MANY, "Too many websockets for this API token")
        return cast("UnsetType", UNSET)

    async def _reject(self, websocket: Request | WebSocket, error: DeployerError, code: int, reason: str) -> NoReturn:
        """Refuse a `connection_init` and close with `code` (graphql-ws gets a `connection_error` first).

        Strawberry would close a refused graphql-ws connection with 1011 ("internal error"); closing here first
        makes its own answer a no-op.
        """
        payload: dict[str, object] = {"message": error.message, "extensions": error.extensions}
        if isinstance(websocket, WebSocket):
            if await self.pick_websocket_subprotocol(websocket) != GRAPHQL_TRANSPORT_WS_PROTOCOL:
                await websocket.send_json({"type": "connection_error", "payload": payload})
            await websocket.close(code=code, reason=reason)
        raise ConnectionRejectionError(payload)


class ServicesProvider:
    """Hands the view the services the lifespan opened (they do not exist before startup)."""

    def __init__(self) -> None:
        self._services: Services | None = None

    def set(self, services: Services | None) -> None:
        """Install (or, at shutdown, remove) the running services."""
        self._services = services

    def __call__(self) -> Services:
        """The running services; RuntimeError when the app's lifespan has not started."""
        if self._services is None:
            raise RuntimeError("the application's lifespan has not started (no database, Redis or queue yet)")
        return self._services
