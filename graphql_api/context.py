"""The typed per-request context, and the GraphQL view that builds it and enforces API tokens.

HTTP: with tokens configured, an operation without a valid `Authorization: Bearer` header is answered with
HTTP 401 before it runs (rendering GraphiQL in a browser needs no token). WebSocket: the token comes from the
`connection_init` payload, or else the upgrade request's header; without a valid one the connection is closed
with 4401 (graphql-transport-ws) or answered with `connection_error` (graphql-ws).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cross_web import StarletteRequestAdapter
from redis.asyncio import Redis
from saq import Queue
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.schema import BaseSchema
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from clients.coolify import CoolifyClient
from graphql_api.auth import Authenticator, Caller, bearer_token, connection_params_token
from graphql_api.errors import UnauthenticatedError
from graphql_api.graphiql import graphiql_page
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


class _WebSocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's adapter, except that closing an already closed socket is a no-op."""

    async def close(self, code: int, reason: str) -> None:
        """Close unless the socket is already closed (we close with 4401 ourselves on a bad token)."""
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        await super().close(code, reason)


def _unauthenticated_response() -> Response:
    error = UnauthenticatedError()
    body = {"data": None, "errors": [{"message": error.message, "extensions": error.extensions}]}
    return Response(
        json.dumps(body),
        status_code=error.status,
        media_type="application/json",
        headers={"WWW-Authenticate": "Bearer"},
    )


class DeployerGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with our typed context and API-token checks."""

    websocket_adapter_class = _WebSocketAdapter

    def __init__(
        self,
        schema: BaseSchema,
        *,
        services: ServicesProvider,
        authenticator: Authenticator,
        assets_dir: Path | None = None,
    ) -> None:
        super().__init__(schema, keep_alive=True, keep_alive_interval=15)
        self._services = services
        self._authenticator = authenticator
        self._assets_dir = assets_dir

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL from the local assets folder (or deployer's own query page when it is missing)."""
        if self._assets_dir is None:
            return await super().render_graphql_ide(request)
        return HTMLResponse(graphiql_page(self._assets_dir))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer HTTP operations without a valid token with 401 before anything runs."""
        if scope["type"] == "http" and self._authenticator.enabled:
            request = Request(scope, receive=receive)
            if not self.should_render_graphql_ide(StarletteRequestAdapter(request)):
                token = bearer_token(request.headers.get("authorization"))
                if self._authenticator.authenticate(token) is None:
                    await _unauthenticated_response()(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

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
        """Authenticate a WebSocket by its `connection_init` payload (or upgrade header), else reject it."""
        token = connection_params_token(context.connection_params)
        if token is not None:
            context.caller = self._authenticator.authenticate(token)
        if context.caller is not None:
            return cast("UnsetType", UNSET)
        error = UnauthenticatedError()
        websocket = context.request
        if isinstance(websocket, WebSocket) and await self.pick_websocket_subprotocol(websocket) == (
            GRAPHQL_TRANSPORT_WS_PROTOCOL
        ):
            await websocket.close(code=4401, reason="Unauthorized")
        raise ConnectionRejectionError({"message": error.message, "extensions": error.extensions})


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
