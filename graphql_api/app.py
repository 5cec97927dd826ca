"""The HTTP edge: `create_app(settings)` builds the Starlette app serving GraphQL, `/healthz` and `/readyz`.

The lifespan opens what every request shares: the database (unless this process already opened it, as the
dev stack and the tests do), the droplet slot rows, Redis, the SAQ queue and the progress hub. With a
`DEPLOYER_API_TOKENS_FILE`, it also re-reads that file on SIGHUP and closes the websockets of removed tokens.
Everything passes `graphql_api.edge.EdgeGuard` first (request ids, Host checks while open, size limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
from saq.queue.redis import RedisQueue
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from tortoise import Tortoise

from clients.coolify import CoolifyClient
from clients.digitalocean import DigitalOceanClient
from graphql_api.auth import ADMIN, Authenticator, bearer_token
from graphql_api.context import DeployerGraphQL, Services, ServicesProvider
from graphql_api.edge import EdgeGuard
from graphql_api.fanout import Fanout, Renderer
from graphql_api.graphiql import ASSETS_PATH
from graphql_api.hotpath import HotQueries
from graphql_api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from graphql_api.metrics import render_metrics
from graphql_api.queries import HOT_ROOTS
from graphql_api.schema import QUERY_LIMIT_RULES, schema
from graphql_api.status_page import status_page_routes
from graphql_api.types import DeploymentEvent
from graphql_api.wsguard import ConnectionRegistry
from jobs.budget import client_hooks, cloud_budgets
from jobs.catalog import Catalog
from jobs.enqueue import redis_from_url
from jobs.progress import ProgressHub
from models.db import close_db, init_db, ping_db
from models.slot import ensure_slots
from settings import Settings, SettingsError

logger = logging.getLogger("deployer.api")
#: How long `/readyz` waits for the database and for Redis.
READY_TIMEOUT_S = 2.0


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, *, cloud_transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[Services]:
    """Open the database, Redis, the queue, the progress hub, DigitalOcean's catalog and a Coolify client (each
    cloud when configured); close them in reverse order.

    Args:
        cloud_transport: an httpx transport for both cloud clients (tests pass the sandbox's).
    """
    async with contextlib.AsyncExitStack() as stack:
        if not Tortoise.is_inited():  # one Tortoise per process: reuse it when the host process opened it
            await init_db(settings.database_url)
            stack.push_async_callback(close_db)
        await ensure_slots(settings.max_active_droplets)
        redis = redis_from_url(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        queue = RedisQueue(redis_from_url(settings.redis_url), name=settings.queue_name)
        await queue.connect()
        stack.push_async_callback(queue.disconnect)
        hub = ProgressHub(redis)
        stack.push_async_callback(hub.stop)
        await hub.start()
        catalog: Catalog | None = None
        # The catalog and Coolify reads draw from the same budgets as the workers' requests.
        budgets = cloud_budgets(redis, settings)
        if settings.digitalocean.api_key:
            digitalocean = DigitalOceanClient(
                api_url=settings.digitalocean.api_url,
                token=settings.digitalocean.api_key,
                transport=cloud_transport,
                **client_hooks(budgets.digitalocean),
            )
            stack.push_async_callback(digitalocean.aclose)
            catalog = Catalog(digitalocean)
        else:
            logger.warning(
                "DO_API_KEY is not set for the API: deploy cannot check region, size and image against"
                " DigitalOcean's catalog, so a bad choice fails in the worker instead of at deploy"
            )
        coolify = None
        if settings.coolify.api_url and settings.coolify.api_key:
            coolify = CoolifyClient(
                api_url=settings.coolify.api_url,
                token=settings.coolify.api_key,
                transport=cloud_transport,
                **client_hooks(budgets.coolify),
            )
            stack.push_async_callback(coolify.aclose)
        yield Services(settings=settings, redis=redis, queue=queue, hub=hub, catalog=catalog, coolify=coolify)


async def _readiness(services: Services) -> str | None:
    """None when the database and Redis answer, else the reason (never a URL or a credential)."""
    try:
        await asyncio.wait_for(ping_db(), READY_TIMEOUT_S)
    except Exception as exc:
        return f"database not answering ({type(exc).__name__})"
    try:
        await asyncio.wait_for(services.redis.ping(), READY_TIMEOUT_S)
    except Exception as exc:
        return f"redis not answering ({type(exc).__name__})"
    return None


async def reload_tokens(authenticator: Authenticator, connections: ConnectionRegistry) -> bool:
    """Re-read the tokens file and close the websockets of tokens no longer in it; False when the file is bad.

    A file that cannot be read or parsed leaves the tokens in use as they were (and says so in the log).
    """
    try:
        tokens = authenticator.reload()
    except SettingsError as exc:
        logger.error("kept the previous API tokens: %s", exc)
        return False
    logger.warning("reloaded DEPLOYER_API_TOKENS_FILE: %s token(s) in use", len(tokens))
    await connections.close_revoked(authenticator.is_current)
    return True


@contextlib.contextmanager
def reload_on_sighup(authenticator: Authenticator, connections: ConnectionRegistry) -> Iterator[None]:
    """While inside, SIGHUP re-reads the tokens file (when there is one and this is the main thread)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[bool]] = set()

    def on_sighup() -> None:
        task = loop.create_task(reload_tokens(authenticator, connections))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    installed = False
    if authenticator.tokens_file:
        try:
            loop.add_signal_handler(signal.SIGHUP, on_sighup)
            installed = True
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread, or no signals here
            logger.warning("SIGHUP cannot be handled here; restart to pick up token changes")
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGHUP)


def create_app(
    settings: Settings,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    cloud_transport: httpx.AsyncBaseTransport | None = None,
    authenticator: Authenticator | None = None,
    hot_queries: bool = True,
) -> Starlette:
    """Build the API app.

    Args:
        settings: the process's settings (database, Redis, queue name, limits, API tokens, defaults).
        extra_routes: mounted after the API's own routes; the composition root mounts the sandbox here.
        cloud_transport: an httpx transport for the API's cloud clients (tests pass the sandbox's).
        authenticator: the tokens, when the composition root shares them with an extra route; by default
            built from the settings.
        hot_queries: answer plain `dropletCount` / `deployment(id)` documents by the short path
            (`graphql_api.hotpath`); tests turn it off to compare both paths.
    """
    provider = ServicesProvider()
    authenticator = authenticator or Authenticator(
        settings.api_tokens, file_tokens=settings.file_tokens, tokens_file=settings.api_tokens_file
    )
    connections = ConnectionRegistry(per_token=settings.limits.ws_per_token)
    assets_dir = Path(settings.assets_dir)
    view = DeployerGraphQL(
        schema,
        services=provider,
        authenticator=authenticator,
        connections=connections,
        assets_dir=assets_dir,
        fanout=Fanout(Renderer(schema, DeploymentEvent.from_progress)),
        hot_queries=HotQueries(schema, HOT_ROOTS, rules=QUERY_LIMIT_RULES) if hot_queries else None,
    )

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        try:
            services = provider()
        except RuntimeError:
            return JSONResponse({"status": "unavailable", "reason": "starting or stopping"}, status_code=503)
        reason = await _readiness(services)
        if reason is not None:
            return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Response:
        try:
            services = provider()
        except RuntimeError:
            return PlainTextResponse("starting or stopping\n", status_code=503)
        caller = authenticator.authenticate(bearer_token(request.headers.get("authorization")))
        if caller is None:
            return PlainTextResponse("unauthenticated\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})
        if ADMIN not in caller.scopes:
            return PlainTextResponse("forbidden: the admin scope is needed\n", status_code=403)
        subscribers = view.fanout.subscribers if view.fanout is not None else None
        body = await render_metrics(services, progress_subscribers=subscribers)
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(settings, cloud_transport=cloud_transport) as services:
            provider.set(services)
            app.state.services = services
            try:
                with reload_on_sighup(authenticator, connections):
                    yield
            finally:
                provider.set(None)

    routes: list[BaseRoute] = [
        Route("/graphql", view, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", view),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Mount(ASSETS_PATH, app=StaticFiles(directory=assets_dir / "graphiql", check_dir=False)),
        *status_page_routes(provider, auth_required=authenticator.enabled),
        *extra_routes,
    ]
    guard = Middleware(
        EdgeGuard,
        loopback_only=not authenticator.enabled,
        max_body_bytes=settings.limits.max_body_bytes,
        ws_per_ip=settings.limits.ws_per_ip,
    )
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[guard])
    app.state.authenticator = authenticator
    app.state.connections = connections
    app.state.graphql = view
    return app


def app_from_env() -> Starlette:
    """App factory for `uvicorn --factory graphql_api.app:app_from_env` (clouds are not needed by the API).

    It refuses what `deployer serve` refuses: no tokens without DEPLOYER_ALLOW_ANONYMOUS, no secret key.
    """
    settings = Settings.from_env(os.environ, require_clouds=False)
    settings.check_serve()
    return create_app(settings)
