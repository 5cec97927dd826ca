"""Simulated Coolify: health, version, private keys, projects and servers (with queued validation).

A server starts neither reachable nor usable. ``POST /servers/{uuid}/validate`` only queues a validation job
(see sandbox.validation for what it does and when): its effects show in ``GET /servers/{uuid}``
(``settings.is_reachable``, ``settings.is_usable``, ``is_validating``, ``validation_logs``) as time passes.
Like ServersController::validate_server, it never checks whether a validation is already running.
``GET /servers`` also copies the two flags to the top level; ``GET /servers/{uuid}`` does not.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.faults import FaultKind
from sandbox.laravel import Rule, check, message, optional_json, post_only, query_bool, read_json, truthy
from sandbox.laravel import validation_failed as failed
from sandbox.state import PrivateKey, Project, Server, World, isoformat, ssh_key_blob

__all__ = ["CoolifyServersAPI"]

API = "/api/v1"
_SERVER_FIELDS = (
    "name",
    "description",
    "ip",
    "port",
    "user",
    "private_key_uuid",
    "is_build_server",
    "instant_validate",
    "proxy_type",
)
_SERVER_RULES = {
    "name": Rule("string", max=255),
    "description": Rule("string", nullable=True),
    "ip": Rule("string", required=True),
    "port": Rule("integer"),
    "user": Rule("string"),
    "private_key_uuid": Rule("string", required=True),
    "is_build_server": Rule("boolean"),
    "instant_validate": Rule("boolean"),
    "proxy_type": Rule("string"),
}
_PLACEHOLDER_PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nsandbox\n-----END OPENSSH PRIVATE KEY-----\n"


def _sha256_fingerprint(public_key: str) -> str:
    blob = ssh_key_blob(public_key) or public_key.encode()
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _ts(value: float) -> str:
    return isoformat(value, micro=True)


class CoolifyServersAPI:
    """Route handlers for health, version, keys, projects and servers, bound to one world."""

    def __init__(self, world: World) -> None:
        self.world = world

    def routes(self) -> list[Route]:
        """The routes served, with paths relative to the ``/sandbox/coolify`` mount."""
        return [
            Route("/api/health", self.health, methods=["GET"]),
            Route(f"{API}/health", self.health, methods=["GET"]),
            Route(f"{API}/version", self.version, methods=["GET"]),
            Route(f"{API}/security/keys", self.list_keys, methods=["GET"]),
            Route(f"{API}/security/keys/{{uuid}}", self.get_key, methods=["GET"]),
            Route(f"{API}/projects", self.list_projects, methods=["GET"]),
            Route(f"{API}/projects/{{uuid}}", self.get_project, methods=["GET"]),
            Route(f"{API}/servers", self.list_servers, methods=["GET"]),
            Route(f"{API}/servers", self.create_server, methods=["POST"]),
            Route(f"{API}/servers/{{uuid}}", self.get_server, methods=["GET"]),
            Route(f"{API}/servers/{{uuid}}", self.delete_server, methods=["DELETE"]),
            Route(f"{API}/servers/{{uuid}}/validate", self.validate_server, methods=["POST"]),
            Route(f"{API}/servers/{{uuid}}/validate", post_only, methods=["GET"]),
        ]

    # ---- probes

    async def health(self, request: Request) -> Response:
        """GET /api/health and /api/v1/health: plain ``OK``, no token needed."""
        return Response("OK", media_type="text/html")

    async def version(self, request: Request) -> Response:
        """GET /api/v1/version: the plain-text version, e.g. ``4.3.11``."""
        return Response(self.world.config.coolify_version, media_type="text/html")

    # ---- keys and projects

    def _key_json(self, key: PrivateKey) -> dict[str, Any]:
        return {
            "id": key.id,
            "uuid": key.uuid,
            "name": key.name,
            "description": key.description,
            "private_key": _PLACEHOLDER_PRIVATE_KEY,  # the sandbox plays a read:sensitive token
            "public_key": key.public_key,
            "fingerprint": _sha256_fingerprint(key.public_key),
            "is_git_related": False,
            "team_id": 0,
            "created_at": _ts(key.created_at),
            "updated_at": _ts(key.created_at),
        }

    async def list_keys(self, request: Request) -> Response:
        """GET /security/keys."""
        return JSONResponse([self._key_json(k) for k in self.world.private_keys.values()])

    async def get_key(self, request: Request) -> Response:
        """GET /security/keys/{uuid}."""
        key = self.world.private_keys.get(request.path_params["uuid"])
        return message(404, "Private Key not found.") if key is None else JSONResponse(self._key_json(key))

    def _project_json(self, project: Project) -> dict[str, Any]:
        return {
            "id": project.id,
            "uuid": project.uuid,
            "name": project.name,
            "description": project.description,
        }

    async def list_projects(self, request: Request) -> Response:
        """GET /projects."""
        return JSONResponse([self._project_json(p) for p in self.world.projects.values()])

    async def get_project(self, request: Request) -> Response:
        """GET /projects/{uuid}, with its environments."""
        project = self.world.projects.get(request.path_params["uuid"])
        if project is None:
            return message(404, "Project not found.")
        body = self._project_json(project)
        body["environments"] = [
            {
                "id": e.id,
                "uuid": e.uuid,
                "name": e.name,
                "project_id": project.id,
                "description": None,
                "created_at": _ts(e.created_at),
                "updated_at": _ts(e.created_at),
            }
            for e in project.environments
        ]
        return JSONResponse(body)

    # ---- servers

    def _settings_json(self, server: Server) -> dict[str, Any]:
        state = self.world.server_state(server)
        return {
            "id": server.id,
            "server_id": server.id,
            "is_reachable": state.is_reachable,
            "is_usable": state.is_usable,
            "force_disabled": False,
            "is_build_server": server.is_build_server,
            "is_cloudflare_tunnel": False,
            "is_jump_server": False,
            "is_swarm_manager": False,
            "is_swarm_worker": False,
            "is_metrics_enabled": False,
            "is_sentinel_enabled": False,
            "is_terminal_enabled": True,
            "concurrent_builds": 2,
            "deployment_queue_limit": 25,
            "dynamic_timeout": 3600,
            "connection_timeout": 10,
            "docker_cleanup_frequency": "0 0 * * *",
            "docker_cleanup_threshold": 80,
            "delete_unused_volumes": False,
            "delete_unused_networks": False,
            "force_server_cleanup": False,
            "created_at": _ts(server.created_at),
            "updated_at": _ts(server.created_at),
        }

    def _server_json(self, server: Server, *, resources: bool = False) -> dict[str, Any]:
        state = self.world.server_state(server)
        body: dict[str, Any] = {
            "id": server.id,
            "uuid": server.uuid,
            "name": server.name,
            "description": server.description,
            "ip": server.ip,
            "user": server.user,
            "port": server.port,
            "proxy": {
                "type": server.proxy_type.upper(),
                "status": "running" if state.proxy_running else "exited",
            },
            "validation_logs": state.validation_logs,
            "is_validating": state.is_validating,
            "unreachable_count": 0,
            "unreachable_notification_sent": False,
            "high_disk_usage_notification_sent": False,
            "log_drain_notification_sent": False,
            "team_id": 0,
            "created_at": _ts(server.created_at),
            "updated_at": _ts(server.created_at),
            "settings": self._settings_json(server),
        }
        if resources:
            body["resources"] = [
                {
                    "uuid": a.uuid,
                    "name": a.name,
                    "type": "application",
                    "status": self.world.application_status(a),
                }
                for a in self.world.server_applications(server)
            ]
        return body

    async def list_servers(self, request: Request) -> Response:
        """GET /servers: ``is_reachable``/``is_usable`` copied to the top level."""
        items = []
        for server in self.world.servers.values():
            state = self.world.server_state(server)
            items.append(
                {
                    "uuid": server.uuid,
                    "name": server.name,
                    "description": server.description,
                    "ip": server.ip,
                    "user": server.user,
                    "port": server.port,
                    "is_reachable": state.is_reachable,
                    "is_usable": state.is_usable,
                    "settings": self._settings_json(server),
                }
            )
        return JSONResponse(items)

    async def get_server(self, request: Request) -> Response:
        """GET /servers/{uuid} (``?resources=true`` lists what runs on it)."""
        server = self.world.servers.get(request.path_params["uuid"])
        if server is None:
            return message(404, "Server not found.")
        return JSONResponse(self._server_json(server, resources=query_bool(request, "resources")))

    async def create_server(self, request: Request) -> Response:
        """POST /servers: strict allow-list; 404 unknown key; 400 IP already in use; 201 ``{uuid}``."""
        world = self.world
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        errors = check(body, _SERVER_RULES, allowed=_SERVER_FIELDS)
        if errors:
            return failed(errors)
        proxy_type = str(body.get("proxy_type") or "traefik").lower()
        if proxy_type not in ("traefik", "caddy", "none"):
            return message(422, "Invalid proxy type.")
        if body["private_key_uuid"] not in world.private_keys:
            return message(404, "Private key not found.")
        ip = body["ip"].strip()
        if world.find_server_by_ip(ip) is not None:
            return message(400, "A server with this IP/Domain is already in use.")
        server = world.create_server(
            name=body.get("name") or f"sandbox-server-{world.new_uuid()[:8]}",
            description=body.get("description"),
            ip=ip,
            port=int(body.get("port") or 22),
            user=body.get("user") or "root",
            private_key_uuid=body["private_key_uuid"],
            proxy_type=proxy_type,
            is_build_server=bool(truthy(body.get("is_build_server"))),
        )
        if truthy(body.get("instant_validate")):
            fault = world.faults.take(FaultKind.SERVER_UNREACHABLE, request.method, request.url.path)
            world.start_validation(server, install=False, unreachable=fault is not None)
        return JSONResponse({"uuid": server.uuid}, 201)

    async def validate_server(self, request: Request) -> Response:
        """POST /servers/{uuid}/validate: 201 at once (even while another validation runs); effects come later."""
        server = self.world.servers.get(request.path_params["uuid"])
        if server is None:
            return message(404, "Server not found.")
        body = await optional_json(request)
        if "install" in body and truthy(body["install"]) is None:
            return failed({"install": ["The install field must be true or false."]})
        install = bool(truthy(body.get("install", False)))
        fault = self.world.faults.take(FaultKind.SERVER_UNREACHABLE, request.method, request.url.path)
        self.world.start_validation(server, install=install, unreachable=fault is not None)
        text = "Validation and installation started." if install else "Validation started."
        return message(201, text)

    async def delete_server(self, request: Request) -> Response:
        """DELETE /servers/{uuid}[?force=true]: 400 while it has resources unless forced."""
        server = self.world.servers.get(request.path_params["uuid"])
        if server is None:
            return message(404, "Server not found.")
        if self.world.server_applications(server) and not query_bool(request, "force"):
            return message(400, "Server has resources, so you need to delete them before.")
        self.world.delete_server(server)
        return message(200, "Server deleted.")
