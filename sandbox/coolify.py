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
from sandbox.gate import ApiGate
from sandbox.laravel import http_error, message
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
        """401 ``{"message": "Unauthenticated."}``."""
        return message(401, "Unauthenticated.")

    def _too_many(self, retry_after: int) -> Response:
        window, now = self.world.coolify_minute, self.world.now()
        headers = {
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": str(window.limit or 200),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(math.ceil(now + retry_after)),
        }
        return JSONResponse({"message": "Too Many Attempts."}, 429, headers=headers)

    def fault_response(self, fault: Fault, rid: str) -> Response:
        """429 ``Too Many Attempts.`` with Retry-After, or a 5xx like Laravel's."""
        if fault.kind is FaultKind.RATE_LIMIT:
            return self._too_many(math.ceil(fault.param if fault.param is not None else 1))
        status = int(fault.param or 500)
        return message(status, "Service Unavailable" if status == 503 else "Server Error")

    def admit(self, method: str, path: str, rid: str) -> Response | None:
        """Apply the per-minute throttle."""
        window, now = self.world.coolify_minute, self.world.now()
        if self.is_public(path) or window.hit(now):
            return None
        return self._too_many(window.retry_after(now))

    def headers(self, rid: str) -> dict[str, str]:
        """``X-RateLimit-Limit`` and ``X-RateLimit-Remaining`` on every throttled response."""
        window = self.world.coolify_minute
        if not window.limit:
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
