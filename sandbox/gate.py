"""The gate in front of each simulated cloud: auth, rate limits, request faults, headers and the request log.

Each cloud supplies an ``ApiPolicy`` for its own error shapes and headers; the gate applies the same order
to both: missing token -> 401, then an injected request fault (429/5xx), then the cloud's own rate limits
(per caller: the bearer token, or the client IP for token-free routes), then the route. A ``response_lost``
fault lets the route run and then replaces its answer with a 5xx. Every answered request lands in
``World.requests`` (method, path, status; never a body, never a token).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.faults import REQUEST_FAULTS, Fault, FaultKind
from sandbox.state import World

__all__ = ["ApiGate", "ApiPolicy", "Caller", "allowed_methods", "bearer_token", "request_id"]

_REQUEST_ID_KEY = "sandbox.request_id"


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The non-empty token of an ``Authorization: Bearer`` header, else None (any such token is accepted)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def request_id(request: Request) -> str:
    """The id the gate gave this request (DigitalOcean echoes it as ``x-request-id`` and ``request_id``)."""
    return str(request.scope.get(_REQUEST_ID_KEY, ""))


def allowed_methods(request: Request) -> str:
    """Every method the app's routes accept for this path (for a 405's ``Allow`` header)."""
    methods: set[str] = set()
    for route in getattr(request.app, "routes", []):
        if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


@dataclass(frozen=True)
class Caller:
    """Who is calling, as far as rate limits care.

    Args:
        token: the bearer token (None on token-free routes).
        ip: the client address.
        path: the request path (some limits apply to one route).
        authenticated: the request got past the token check (or needs none).
    """

    token: str | None
    ip: str
    path: str
    authenticated: bool

    @property
    def key(self) -> str:
        """The rate-limit key: the token, else the client IP. Kept in memory only, never shown."""
        return f"token:{self.token}" if self.token else f"ip:{self.ip}"


class ApiPolicy(Protocol):
    """What differs between the two clouds at the gate."""

    api: str

    def is_public(self, path: str) -> bool:
        """Whether the path answers without a token."""
        ...

    def unauthenticated(self, rid: str) -> Response:
        """The 401 for a missing or empty bearer token."""
        ...

    def fault_response(self, fault: Fault, rid: str) -> Response:
        """The response that replaces the route's for an injected request fault."""
        ...

    def admit(self, method: str, caller: Caller, rid: str) -> Response | None:
        """Count the request against the cloud's own rate limits; a 429 when over one."""
        ...

    def headers(self, rid: str, caller: Caller) -> dict[str, str]:
        """Headers put on every response (unless the response already has them)."""
        ...


class ApiGate:
    """ASGI middleware applying an ``ApiPolicy`` in front of one simulated cloud."""

    def __init__(self, app: ASGIApp, *, world: World, policy: ApiPolicy) -> None:
        self.app = app
        self.world = world
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        world, policy = self.world, self.policy
        world.sweep()
        method: str = scope["method"]
        path: str = scope["path"]
        rid = str(uuid.uuid4())
        scope[_REQUEST_ID_KEY] = rid
        status = 500
        headers = Headers(scope=scope)
        token = bearer_token(headers)
        client = scope.get("client") or ("127.0.0.1", 0)
        authenticated = policy.is_public(path) or token is not None
        caller = Caller(token, str(client[0]), path, authenticated)
        lost: Fault | None = None
        response: Response | None
        if not authenticated:
            response = policy.unauthenticated(rid)
        else:
            fault = world.faults.take(REQUEST_FAULTS, method, path)
            response = policy.fault_response(fault, rid) if fault else policy.admit(method, caller, rid)
            if response is None:
                lost = world.faults.take(FaultKind.RESPONSE_LOST, method, path)

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = MutableHeaders(scope=message)
                for name, value in policy.headers(rid, caller).items():
                    if name not in extra:
                        extra[name] = value
            await send(message)

        async def discard(message: Message) -> None:
            return None

        try:
            if response is None and lost is not None:  # carried out, but the answer never arrives
                await self.app(scope, receive, discard)
                response = policy.fault_response(lost, rid)
            if response is not None:
                await response(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            world.log_request(policy.api, method, path, status)
