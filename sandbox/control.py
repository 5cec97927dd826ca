"""The sandbox control API (``/sandbox/_control/...``): inspect the world, switch faults, move time, reset.

Not part of either cloud: no token, no rate limit, not recorded in ``World.requests``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.faults import Fault, FaultKind, FaultSpecError
from sandbox.state import World

__all__ = ["ControlAPI"]


class ControlAPI:
    """Handlers of the control API, bound to one world."""

    def __init__(self, world: World) -> None:
        self.world = world

    def routes(self) -> list[Route]:
        """The routes served, relative to the ``/sandbox/_control`` mount."""
        return [
            Route("/state", self.state, methods=["GET"]),
            Route("/requests", self.requests, methods=["GET"]),
            Route("/faults", self.list_faults, methods=["GET"]),
            Route("/faults", self.add_faults, methods=["POST"]),
            Route("/faults", self.clear_faults, methods=["DELETE"]),
            Route("/advance", self.advance, methods=["POST"]),
            Route("/reset", self.reset, methods=["POST"]),
        ]

    async def state(self, request: Request) -> Response:
        """GET /state: droplets, SSH keys, servers, applications, envs (no values), deployments, faults."""
        return JSONResponse(self.world.snapshot())

    async def requests(self, request: Request) -> Response:
        """GET /requests: the request log (method, path, status), optionally ``?method=&path=<regex>``."""
        records = self.world.calls(request.query_params.get("method"), request.query_params.get("path"))
        return JSONResponse([{"api": r.api, "method": r.method, "path": r.path, "status": r.status} for r in records])

    async def list_faults(self, request: Request) -> Response:
        """GET /faults: the active fault switches."""
        return JSONResponse({"faults": self.world.faults.to_list()})

    async def add_faults(self, request: Request) -> Response:
        """POST /faults: ``{"spec": "build_fails,rate_limit:2@GET:/v2/droplets"}`` or fault objects."""
        try:
            body: Any = json.loads(await request.body() or b"null")
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, 400)
        try:
            if isinstance(body, dict) and set(body) == {"spec"} and isinstance(body["spec"], str):
                added = self.world.faults.add_spec(body["spec"])
            elif isinstance(body, dict) and isinstance(body.get("faults"), list):
                added = [self._fault(item) for item in body["faults"]]
                self.world.faults.add(*added)
            elif isinstance(body, dict):
                added = [self._fault(body)]
                self.world.faults.add(*added)
            else:
                raise FaultSpecError('expected {"spec": "..."}, {"faults": [...]} or one fault object')
        except FaultSpecError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"added": [f.to_dict() for f in added], "faults": self.world.faults.to_list()}, 201)

    @staticmethod
    def _fault(item: object) -> Fault:
        if not isinstance(item, dict):
            raise FaultSpecError("each fault must be an object")
        return Fault.from_dict(item)

    async def clear_faults(self, request: Request) -> Response:
        """DELETE /faults[?kind=build_fails]: switch faults off."""
        kind = request.query_params.get("kind")
        try:
            cleared = self.world.faults.clear(FaultKind(kind) if kind else None)
        except ValueError:
            return JSONResponse({"error": f"unknown fault kind {kind!r}"}, 400)
        return JSONResponse({"cleared": cleared, "faults": self.world.faults.to_list()})

    async def advance(self, request: Request) -> Response:
        """POST /advance ``{"seconds": 5}``: move sandbox time forward (skip boot, validation, builds)."""
        try:
            body = json.loads(await request.body() or b"{}")
            seconds = float(body["seconds"])
            if not 0 <= seconds < 10**9:
                raise ValueError(seconds)
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected {"seconds": <number >= 0>}'}, 400)
        self.world.advance(seconds)
        return JSONResponse({"offset_s": self.world.offset})

    async def reset(self, request: Request) -> Response:
        """POST /reset: back to the seeded world, faults from SANDBOX_FAULTS, empty request log."""
        self.world.reset()
        return JSONResponse({"message": "Sandbox reset."})
