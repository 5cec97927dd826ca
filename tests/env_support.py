"""Helpers for the env-change tests: an application in a sandbox world, and a Coolify that rejects one bulk item."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.state import Application, World

#: Coolify rejects a comment longer than this (a rule deployer never trips, so tests use it to inject a 422).
COOLIFY_MAX_COMMENT = 256


def sandbox_application(world: World, *, name: str = "web", git: bool = False) -> str:
    """Add a server and an application to the world directly (no pipeline); returns the application uuid."""
    server = world.create_server(
        name=f"{name}-server",
        description=None,
        ip="203.0.113.9",
        port=22,
        user="root",
        private_key_uuid=world.config.private_key_uuid,
        proxy_type="traefik",
        is_build_server=False,
    )
    project = world.projects[world.config.project_uuid]
    app = Application(
        id=world.next_id("application"),
        uuid=world.new_uuid(),
        name=name,
        description=None,
        build_pack="nixpacks" if git else "dockerimage",
        git_repository="https://github.com/acme/site" if git else "coollabsio/coolify",
        git_branch="main",
        docker_image=None if git else "nginx",
        docker_tag=None if git else "alpine",
        ports_exposes="80",
        fqdn=None,
        server_uuid=server.uuid,
        project_uuid=project.uuid,
        environment=project.environments[0],
        tags=[],
        created_at=world.now(),
    )
    world.add_application(app)
    return app.uuid


def rows(world: World, app_uuid: str) -> dict[tuple[str, bool], dict[str, Any]]:
    """The application's env rows in the sandbox by (key, is_preview), with value and flags."""
    return {
        (env.key, env.is_preview): {
            "value": env.value,
            "is_buildtime": env.is_buildtime,
            "is_runtime": env.is_runtime,
            "is_literal": env.is_literal,
            "is_multiline": env.is_multiline,
        }
        for env in world.app_envs(app_uuid)
    }


class RejectBulkItem:
    """ASGI middleware in front of the sandbox: makes Coolify's bulk env update fail at one item (0-based).

    It gives that item an over-long comment, which Coolify answers with 422 after saving the items before it
    (the bulk update has no transaction) - a failure the API cannot foresee from valid input.
    """

    def __init__(self, app: ASGIApp, index: int) -> None:
        self.app = app
        self.index = index
        self.armed = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass every request through, rewriting the body of a bulk env PATCH while armed."""
        if not (
            self.armed
            and scope["type"] == "http"
            and scope["method"] == "PATCH"
            and scope["path"].endswith("/envs/bulk")
        ):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        data = json.loads(body)
        items = data.get("data")
        if isinstance(items, list) and len(items) > self.index:
            items[self.index]["comment"] = "x" * (COOLIFY_MAX_COMMENT + 1)
        new_body = json.dumps(data).encode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(new_body)).encode()))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": new_body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)
