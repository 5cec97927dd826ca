"""Simulated Coolify API v1: the gate policy and the app that gathers the Coolify routes.

Served under ``/sandbox/coolify/api/v1/...`` (plus the token-free ``/sandbox/coolify/api/health``).
The route handlers live in ``coolify_servers`` (health, version, keys, projects, servers),
``coolify_apps`` (applications, lifecycle, deploy, deployments) and ``coolify_envs`` (env vars).
The sandbox plays a ``root`` token: env values and deployment logs are shown.
"""

from __future__ import annotations

import math

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from sandbox.coolify_apps import CoolifyApplicationsAPI
from sandbox.coolify_envs import CoolifyEnvsAPI
from sandbox.coolify_servers import CoolifyServersAPI
from sandbox.faults import Fault, FaultKind
from sandbox.gate import ApiGate, Caller
from sandbox.laravel import http_error, message
from sandbox.ratelimit import FixedWindow, header_seconds
from sandbox.state import World

__all__ = ["CoolifyPolicy", "create_coolify_app"]


class CoolifyPolicy:
    """Gate policy: Laravel's 401, throttle (``API_RATE_LIMIT`` per minute) and ``X-RateLimit-*`` headers."""

    api = "coolify"

    def __init__(self, world: World) -> None:
        self.world = world

    def is_public(self, path: str) -> bool:
        """Only the health probes answer without a token."""
        return path.endswith(("/api/health", "/api/v1/health"))

    def unauthenticated(self, rid: str) -> Response:
        """401 ``{"message": "Unauthenticated."}`` (from ``auth:sanctum``, before the throttle: no X-RateLimit)."""
        return message(401, "Unauthenticated.")

    def _window(self, caller: Caller) -> FixedWindow:
        """The caller's throttle window (RouteServiceProvider: ``api/health`` has its own 1000/minute).

        Laravel keys the limit by the token's user (``$request->user()?->id``), or by IP when there is no
        user: on the health routes, which have no ``auth:sanctum``, even a request with a token counts by IP.
        The sandbox treats every token as its own user.
        """
        if caller.path.endswith("/api/health"):
            return self.world.coolify_health[f"ip:{caller.ip}"]
        if self.is_public(caller.path):
            return self.world.coolify_minute[f"ip:{caller.ip}"]
        return self.world.coolify_minute[caller.key]

    def _too_many(self, retry_after: float, limit: int) -> Response:
        scale, now = self.world.config.time_scale, self.world.now()
        headers = {
            "Retry-After": header_seconds(retry_after, scale),
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": header_seconds(now + retry_after, scale),
        }
        return JSONResponse({"message": "Too Many Attempts."}, 429, headers=headers)

    def fault_response(self, fault: Fault, rid: str) -> Response:
        """429 ``Too Many Attempts.`` with Retry-After, or a 5xx like Laravel's."""
        if fault.kind is FaultKind.RATE_LIMIT:
            limit = self.world.config.coolify_rate_limit_per_minute or 200
            return self._too_many(math.ceil(fault.param if fault.param is not None else 1), limit)
        status = int(fault.param or 500)
        return message(status, "Service Unavailable" if status == 503 else "Server Error")

    def admit(self, method: str, caller: Caller, rid: str) -> Response | None:
        """Apply the caller's throttle: a fixed window opened by its first request (Laravel's RateLimiter)."""
        window, now = self._window(caller), self.world.now()
        if window.hit(now):
            return None
        return self._too_many(window.retry_after(now), window.limit)

    def headers(self, rid: str, caller: Caller) -> dict[str, str]:
        """``X-RateLimit-Limit`` and ``X-RateLimit-Remaining`` on every throttled response."""
        window = self._window(caller)
        if not caller.authenticated or not window.limit:
            return {}
        return {
            "X-RateLimit-Limit": str(window.limit),
            "X-RateLimit-Remaining": str(window.remaining(self.world.now())),
        }


def create_coolify_app(world: World) -> ApiGate:
    """The Coolify sandbox as an ASGI app, to mount at ``/sandbox/coolify``."""
    routes = [
        *CoolifyServersAPI(world).routes(),
        *CoolifyApplicationsAPI(world).routes(),
        *CoolifyEnvsAPI(world).routes(),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return ApiGate(app, world=world, policy=CoolifyPolicy(world))
