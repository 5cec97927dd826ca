"""``create_app()``: both simulated clouds and the control API in one Starlette app.

Every route carries the ``/sandbox`` prefix, so the deployer can mount this app at ``/`` next to its own:

- ``/sandbox/digitalocean/v2/...``    (``DO_API_URL=http://HOST:PORT/sandbox/digitalocean``)
- ``/sandbox/coolify/api/v1/...``     (``COOLIFY_API_URL=http://HOST:PORT/sandbox/coolify``)
- ``/sandbox/_control/...``           (state, faults, time, reset)
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount

from sandbox.control import ControlAPI
from sandbox.coolify import create_coolify_app
from sandbox.digitalocean import create_digitalocean_app
from sandbox.state import SandboxConfig, World

__all__ = ["create_app"]


def create_app(world: World | None = None) -> Starlette:
    """Build the sandbox app around ``world`` (default: a new world configured from ``SANDBOX_*``).

    The world is also reachable as ``app.state.world``.
    """
    world = world if world is not None else World(SandboxConfig.from_env())
    app = Starlette(
        routes=[
            Mount("/sandbox/digitalocean", app=create_digitalocean_app(world)),
            Mount("/sandbox/coolify", app=create_coolify_app(world)),
            Mount("/sandbox/_control", routes=ControlAPI(world).routes()),
        ]
    )
    app.state.world = world
    return app
