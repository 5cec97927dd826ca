"""Simulated Coolify: applications, their lifecycle, ``/deploy`` and deployments.

Deployments of one application run one after the other: ``queued`` for ``build_queue_s``, then
``in_progress`` for ``build_s``, then ``finished`` (or ``failed``: an injected ``build_fails`` or a server
that is not usable when the deployment is queued). Start, restart and ``/deploy`` skip a new deployment
while one is queued or running, like Coolify's same-commit deduplication: start/restart then return no
``deployment_uuid``, and ``/deploy`` returns a uuid that was never stored (polling it gives 404).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.buildlog import BuildInfo, deployment_logs
from sandbox.faults import FaultKind
from sandbox.laravel import Rule, check, message, optional_json, post_only, query_bool, read_json, truthy
from sandbox.laravel import validation_failed as failed
from sandbox.state import (
    ACTIVE_DEPLOYMENT,
    TERMINAL_DEPLOYMENT,
    Application,
    Deployment,
    DeploymentStatus,
    World,
    isoformat,
)

__all__ = ["CoolifyApplicationsAPI"]

API = "/api/v1"
BUILD_PACKS = ("nixpacks", "railpack", "static", "dockerfile", "dockercompose")
DEDUP_MESSAGE = "Deployment already queued for this commit."
_COMPOSE_DOMAINS = (
    "The domains field cannot be used for dockercompose applications. "
    "Use docker_compose_domains instead to set domains for individual services."
)

# The strict allow-list of every POST /applications/{public,private-*,dockerfile,dockerimage}: one list for all
# of them (ApplicationsController::create_application $allowedFields + APPLICATION_SETTING_FIELDS, v4.3.x).
_CREATE_FIELDS = frozenset(
    [
        "autogenerate_domain",
        "base_directory",
        "build_command",
        "build_pack",
        "connect_to_docker_network",
        "custom_docker_run_options",
        "custom_internal_name",
        "custom_labels",
        "custom_network_aliases",
        "custom_nginx_configuration",
        "description",
        "destination_uuid",
        "disable_build_cache",
        "docker_compose_custom_build_command",
        "docker_compose_custom_start_command",
        "docker_compose_domains",
        "docker_compose_location",
        "docker_compose_raw",
        "docker_images_to_keep",
        "docker_registry_image_name",
        "docker_registry_image_tag",
        "dockerfile",
        "dockerfile_location",
        "domains",
        "environment_name",
        "environment_uuid",
        "force_domain_override",
        "git_branch",
        "git_commit_sha",
        "git_repository",
        "github_app_uuid",
        "gpu_count",
        "gpu_device_ids",
        "gpu_driver",
        "gpu_options",
        "health_check_command",
        "health_check_enabled",
        "health_check_host",
        "health_check_interval",
        "health_check_method",
        "health_check_path",
        "health_check_port",
        "health_check_response_text",
        "health_check_retries",
        "health_check_return_code",
        "health_check_scheme",
        "health_check_start_period",
        "health_check_timeout",
        "health_check_type",
        "http_basic_auth_password",
        "http_basic_auth_username",
        "include_source_commit_in_build",
        "inject_build_args_to_dockerfile",
        "install_command",
        "instant_deploy",
        "is_auto_deploy_enabled",
        "is_consistent_container_name_enabled",
        "is_container_label_escape_enabled",
        "is_env_sorting_enabled",
        "is_force_https_enabled",
        "is_git_lfs_enabled",
        "is_git_shallow_clone_enabled",
        "is_git_submodules_enabled",
        "is_gpu_enabled",
        "is_gzip_enabled",
        "is_http_basic_auth_enabled",
        "is_log_drain_enabled",
        "is_pr_deployments_public_enabled",
        "is_preserve_repository_enabled",
        "is_preview_deployments_enabled",
        "is_raw_compose_deployment_enabled",
        "is_spa",
        "is_static",
        "is_stripprefix_enabled",
        "limits_cpu_shares",
        "limits_cpus",
        "limits_cpuset",
        "limits_memory",
        "limits_memory_reservation",
        "limits_memory_swap",
        "limits_memory_swappiness",
        "manual_webhook_secret_bitbucket",
        "manual_webhook_secret_gitea",
        "manual_webhook_secret_github",
        "manual_webhook_secret_gitlab",
        "max_restart_count",
        "name",
        "noindex_domains",
        "ports_exposes",
        "ports_mappings",
        "post_deployment_command",
        "post_deployment_command_container",
        "pre_deployment_command",
        "pre_deployment_command_container",
        "preview_url_template",
        "private_key_uuid",
        "project_uuid",
        "publish_directory",
        "redirect",
        "server_uuid",
        "start_command",
        "static_image",
        "stop_grace_period",
        "tags",
        "type",
        "use_build_secrets",
        "use_build_server",
        "watch_paths",
    ]
)
_COMMON_RULES = {
    "name": Rule("string", max=255),
    "description": Rule("string", nullable=True),
    "project_uuid": Rule("string", required=True),
    "environment_name": Rule("string", nullable=True),
    "environment_uuid": Rule("string", nullable=True),
    "server_uuid": Rule("string", required=True),
    "destination_uuid": Rule("string", nullable=True),
    "domains": Rule("string", nullable=True),
    "ports_exposes": Rule("string", regex=r"^(\d+)(,\d+)*$"),
    "instant_deploy": Rule("boolean"),
    "autogenerate_domain": Rule("boolean"),
    "force_domain_override": Rule("boolean"),
    "tags": Rule("array", nullable=True),
    # ValidationPatterns::directoryPathRules(): nullable, string, max 255, DIRECTORY_PATH_PATTERN
    "base_directory": Rule("string", nullable=True, max=255, regex=r"^\/([a-zA-Z0-9._\-\/~@+]*)?$"),
}
_PUBLIC_RULES = {
    "git_repository": Rule("string", required=True, regex=r"^https?://[^\s/]+/\S+$"),
    "git_branch": Rule("string", required=True),
    "build_pack": Rule("string", required=True, choices=BUILD_PACKS),
    "git_commit_sha": Rule("string"),
    "is_auto_deploy_enabled": Rule("boolean"),
}
_DOCKERIMAGE_RULES = {
    "docker_registry_image_name": Rule("string", required=True),
    "docker_registry_image_tag": Rule("string", nullable=True),
}


def _ts(value: float | None) -> str | None:
    return None if value is None else isoformat(value, micro=True)


def _domains(raw: str) -> list[str] | None:
    """Normalised URLs of a comma-separated ``domains`` value; None if one is not an http(s) URL."""
    out = []
    for part in raw.split(","):
        part = part.strip().lower()
        if not part:
            continue
        parts = urlsplit(part)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        out.append(part.rstrip("/"))
    return out


def _stored_repository(url: str) -> str:
    """How Coolify stores a public repository: a github.com URL becomes ``owner/repo``, others stay as sent."""
    parts = urlsplit(url)
    segments = [p for p in parts.path.split("/") if p]
    if (parts.hostname or "").lower() == "github.com" and len(segments) >= 2:
        return f"{segments[0]}/{segments[1]}".strip()
    return url


class CoolifyApplicationsAPI:
    """Route handlers for applications, lifecycle calls, /deploy and deployments, bound to one world."""

    def __init__(self, world: World) -> None:
        self.world = world

    def routes(self) -> list[Route]:
        """The routes served, with paths relative to the ``/sandbox/coolify`` mount."""
        return [
            Route(f"{API}/applications", self.list_applications, methods=["GET"]),
            Route(f"{API}/applications/public", self.create_public, methods=["POST"]),
            Route(f"{API}/applications/dockerimage", self.create_dockerimage, methods=["POST"]),
            Route(f"{API}/applications/{{uuid}}", self.get_application, methods=["GET"]),
            Route(f"{API}/applications/{{uuid}}", self.delete_application, methods=["DELETE"]),
            Route(f"{API}/applications/{{uuid}}/start", self.start, methods=["POST"]),
            Route(f"{API}/applications/{{uuid}}/start", post_only, methods=["GET"]),
            Route(f"{API}/applications/{{uuid}}/restart", self.restart, methods=["POST"]),
            Route(f"{API}/applications/{{uuid}}/restart", post_only, methods=["GET"]),
            Route(f"{API}/applications/{{uuid}}/stop", self.stop, methods=["POST"]),
            Route(f"{API}/applications/{{uuid}}/stop", post_only, methods=["GET"]),
            Route(f"{API}/deploy", self.deploy, methods=["POST"]),
            Route(f"{API}/deploy", post_only, methods=["GET"]),
            Route(f"{API}/deployments", self.list_active_deployments, methods=["GET"]),
            Route(f"{API}/deployments/applications/{{uuid}}", self.list_app_deployments, methods=["GET"]),
            Route(f"{API}/deployments/{{uuid}}", self.get_deployment, methods=["GET"]),
            Route(f"{API}/deployments/{{uuid}}/cancel", self.cancel_deployment, methods=["POST"]),
        ]

    # ---- rendering

    def _app_json(self, app: Application) -> dict[str, Any]:
        server = self.world.servers.get(app.server_uuid)
        return {
            "id": app.id,
            "uuid": app.uuid,
            "name": app.name,
            "description": app.description,
            "fqdn": app.fqdn,
            "status": self.world.application_status(app),
            "build_pack": app.build_pack,
            "git_repository": app.git_repository,
            "git_branch": app.git_branch,
            "git_commit_sha": "HEAD",
            "docker_registry_image_name": app.docker_image,
            "docker_registry_image_tag": app.docker_tag,
            "ports_exposes": app.ports_exposes,
            "ports_mappings": None,
            "base_directory": app.base_directory,
            "environment_id": app.environment.id,
            "destination_type": "App\\Models\\StandaloneDocker",
            "destination_id": server.destination_id if server else 0,
            "health_check_enabled": False,
            "created_at": _ts(app.created_at),
            "updated_at": _ts(app.created_at),
            "deleted_at": None,
        }

    def _deployment_json(self, dep: Deployment) -> dict[str, Any]:
        world = self.world
        app = world.applications[dep.app_uuid]
        server = world.servers.get(app.server_uuid)
        status = world.deployment_status(dep)
        start, end = world.deployment_times(dep)
        finished = end if status in TERMINAL_DEPLOYMENT else None
        info = BuildInfo(
            deployment_uuid=dep.uuid,
            app_uuid=app.uuid,
            app_name=app.name,
            build_pack=app.build_pack,
            repository=app.git_repository,
            branch=app.git_branch,
            image=f"{app.docker_image}:{app.docker_tag}",
            base_directory=app.base_directory,
            server_name=server.name if server else "a deleted server",
            restart_only=dep.restart_only,
            outcome=dep.outcome,
            failure=dep.failure,
        )
        if dep.outcome == "hang":
            duration: float | None = None
        else:
            duration = 0.0 if info.outcome == "failed" and info.failure == "server" else world.config.build_s
        logs = deployment_logs(
            info, start=start, duration=duration, cancelled_at=dep.cancelled_at, now=world.now(), timestamp=_ts
        )
        project, env = app.project_uuid, app.environment.uuid
        return {
            "id": dep.id,
            "application_id": str(app.id),
            "deployment_uuid": dep.uuid,
            "pull_request_id": 0,
            "force_rebuild": dep.force_rebuild,
            "commit": "HEAD",
            "commit_message": None,
            "status": status.value,
            "is_webhook": False,
            "is_api": True,
            "restart_only": dep.restart_only,
            "rollback": False,
            "only_this_server": False,
            "server_id": server.id if server else 0,
            "server_name": server.name if server else "",
            "application_name": app.name,
            "destination_id": str(server.destination_id if server else 0),
            "deployment_url": f"/project/{project}/environment/{env}/application/{app.uuid}/deployment/{dep.uuid}",
            "logs": json.dumps(logs),
            "created_at": _ts(dep.created_at),
            "updated_at": _ts(max(x for x in (dep.created_at, start, finished) if x is not None)),
            "finished_at": _ts(finished),
        }

    # ---- applications

    async def list_applications(self, request: Request) -> Response:
        """GET /applications (optionally ``?tag=``)."""
        tag = request.query_params.get("tag")
        apps = [a for a in self.world.applications.values() if tag is None or tag in a.tags]
        return JSONResponse([self._app_json(a) for a in apps])

    async def get_application(self, request: Request) -> Response:
        """GET /applications/{uuid}."""
        app = self.world.applications.get(request.path_params["uuid"])
        return message(404, "Application not found.") if app is None else JSONResponse(self._app_json(app))

    async def create_public(self, request: Request) -> Response:
        """POST /applications/public: 201 ``{uuid, domains}``."""
        return await self._create(request, dockerimage=False)

    async def create_dockerimage(self, request: Request) -> Response:
        """POST /applications/dockerimage: 201 ``{uuid, domains}``."""
        return await self._create(request, dockerimage=True)

    async def _create(self, request: Request, *, dockerimage: bool) -> Response:
        world = self.world
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        errors = check(body, _COMMON_RULES, allowed=_CREATE_FIELDS)
        if errors:
            return failed(errors)
        if "environment_name" not in body and "environment_uuid" not in body:
            return message(422, "You need to provide at least one of environment_name or environment_uuid.")
        project = world.projects.get(body["project_uuid"])
        if project is None:
            return message(404, "Project not found.")
        environment = world.find_environment(project, body.get("environment_name"), body.get("environment_uuid"))
        if environment is None:
            return message(404, "Environment not found.")
        server = world.servers.get(body["server_uuid"])
        if server is None:
            return message(404, "Server not found.")
        if server.is_build_server:
            return failed(
                {"server_uuid": ["The specified server is configured as a build server and cannot host resources."]}
            )
        errors = check(body, _DOCKERIMAGE_RULES if dockerimage else _PUBLIC_RULES, allowed=None)
        if errors:
            return failed(errors)
        if not dockerimage and body.get("build_pack") == "dockercompose" and "domains" in body:
            # ApplicationsController::create_application: $request->has('domains') (even null), one string
            return failed({"domains": _COMPOSE_DOMAINS})
        uuid = world.new_uuid()
        domains = _domains(body.get("domains") or "")
        if domains is None:
            return failed({"domains": ["The domains field must contain valid http(s) URLs."]})
        if domains:
            conflicts = [
                {
                    "domain": d,
                    "resource_name": other.name,
                    "resource_uuid": other.uuid,
                    "resource_type": "application",
                }
                for other in world.applications.values()
                for d in domains
                if other.fqdn and d in other.fqdn.split(",")
            ]
            if conflicts and not truthy(body.get("force_domain_override")):
                return message(
                    409,
                    "Domain conflicts detected. Use force_domain_override=true to proceed.",
                    conflicts=conflicts,
                    warning="Using the same domain for multiple resources can cause routing conflicts "
                    "and unpredictable behavior.",
                )
            fqdn: str | None = ",".join(domains)
        elif truthy(body.get("autogenerate_domain", True)) is not False:
            fqdn = f"http://{uuid}.{server.ip}.sslip.io"
        else:
            fqdn = None
        app = Application(
            id=world.next_id("application"),
            uuid=uuid,
            name=body.get("name") or (f"docker-image-{uuid}" if dockerimage else f"app-{uuid}"),
            description=body.get("description"),
            build_pack="dockerimage" if dockerimage else body["build_pack"],
            git_repository="coollabsio/coolify" if dockerimage else _stored_repository(body["git_repository"]),
            git_branch="main" if dockerimage else body["git_branch"],
            docker_image=body.get("docker_registry_image_name") if dockerimage else None,
            docker_tag=(body.get("docker_registry_image_tag") or "latest") if dockerimage else None,
            ports_exposes=body.get("ports_exposes") or ("80" if dockerimage else "3000"),
            fqdn=fqdn,
            server_uuid=server.uuid,
            project_uuid=project.uuid,
            environment=environment,
            tags=[str(t) for t in body.get("tags") or []],
            created_at=world.now(),
            base_directory=body.get("base_directory") or "/",
        )
        world.add_application(app)
        if truthy(body.get("instant_deploy")):  # queued, but the 201 body does not say which deployment
            self._queue(request, app, restart_only=False, force=False)
        return JSONResponse({"uuid": app.uuid, "domains": fqdn}, 201)

    async def delete_application(self, request: Request) -> Response:
        """DELETE /applications/{uuid}: queued; GET answers 404 once ``app_delete_s`` has passed."""
        app = self.world.applications.get(request.path_params["uuid"])
        if app is None:
            return message(404, "Application not found.")
        self.world.delete_application(app)
        return message(200, "Application deletion request queued.")

    # ---- lifecycle and deploy

    def _queue(self, request: Request, app: Application, *, restart_only: bool, force: bool) -> Deployment:
        world = self.world
        fault = world.faults.take({FaultKind.BUILD_FAILS, FaultKind.BUILD_HANGS}, request.method, request.url.path)
        server = world.servers.get(app.server_uuid)
        state = world.server_state(server) if server else None
        failure = "build"
        if fault is not None and fault.kind is FaultKind.BUILD_HANGS:
            outcome = "hang"
        elif fault is not None:
            outcome = "failed"
        elif state is None or not state.is_usable:  # ApplicationDeploymentJob: "Server is not functional."
            outcome, failure = "failed", "server"
        else:
            outcome = "finished"
        return world.queue_deployment(app, outcome=outcome, restart_only=restart_only, force=force, failure=failure)

    async def start(self, request: Request) -> Response:
        """POST /applications/{uuid}/start[?force&instant_deploy]: a deployment, or dedup without a uuid."""
        app = self.world.applications.get(request.path_params["uuid"])
        if app is None:
            return message(404, "Application not found.")
        force = query_bool(request, "force")
        if not (force or query_bool(request, "instant_deploy")) and self.world.active_deployment(app):
            return message(200, DEDUP_MESSAGE)
        deployment = self._queue(request, app, restart_only=False, force=force)
        return message(200, "Deployment request queued.", deployment_uuid=deployment.uuid)

    async def restart(self, request: Request) -> Response:
        """POST /applications/{uuid}/restart: a restart-only deployment, or dedup without a uuid."""
        app = self.world.applications.get(request.path_params["uuid"])
        if app is None:
            return message(404, "Application not found.")
        if self.world.active_deployment(app):
            return message(200, DEDUP_MESSAGE)
        deployment = self._queue(request, app, restart_only=True, force=False)
        return message(200, "Restart request queued.", deployment_uuid=deployment.uuid)

    async def stop(self, request: Request) -> Response:
        """POST /applications/{uuid}/stop."""
        app = self.world.applications.get(request.path_params["uuid"])
        if app is None:
            return message(404, "Application not found.")
        app.stopped_at = self.world.now()
        return message(200, "Application stopping request queued.")

    async def deploy(self, request: Request) -> Response:
        """POST /deploy with ``uuid`` (comma list) or ``tag`` in the query or a JSON body, and ``force``."""
        params: dict[str, Any] = {**(await optional_json(request)), **request.query_params}
        uuids, tag = params.get("uuid"), params.get("tag")
        force = bool(truthy(params.get("force", False)))
        if uuids and tag:
            return message(400, "You can only use uuid or tag, not both.")
        if not uuids and not tag:
            return message(400, "You must provide uuid or tag.")
        if tag:
            tagged = [a for a in self.world.applications.values() if str(tag) in a.tags]
            if not tagged:
                return message(404, "No resources found with this tag.")
            entries = [self._deploy_one(request, a, force) for a in tagged]
            return JSONResponse(
                {
                    "message": [e["message"] for e in entries],
                    "details": [{k: e[k] for k in ("resource_uuid", "deployment_uuid")} for e in entries],
                }
            )
        apps = [self.world.applications.get(u.strip()) for u in str(uuids).split(",")]
        entries = [self._deploy_one(request, a, force) for a in apps if a is not None]
        if not entries:
            return message(404, "No resources found.")
        return JSONResponse({"deployments": entries})

    def _deploy_one(self, request: Request, app: Application, force: bool) -> dict[str, str]:
        if not force and self.world.active_deployment(app):
            # Coolify answers with a freshly generated uuid it never stores (research coolify-api.md §6).
            return {
                "message": DEDUP_MESSAGE,
                "resource_uuid": app.uuid,
                "deployment_uuid": self.world.new_uuid(),
            }
        deployment = self._queue(request, app, restart_only=False, force=force)
        return {
            "message": f"Application {app.name} deployment queued.",
            "resource_uuid": app.uuid,
            "deployment_uuid": deployment.uuid,
        }

    # ---- deployments

    def _deployment(self, uuid: str) -> Deployment | None:
        deployment = self.world.deployments.get(uuid)
        if deployment is None or deployment.app_uuid not in self.world.applications:
            return None
        return deployment

    async def get_deployment(self, request: Request) -> Response:
        """GET /deployments/{uuid}: 404 for unknown ids and for deleted applications."""
        deployment = self._deployment(request.path_params["uuid"])
        if deployment is None:
            return message(404, "Deployment not found.")
        return JSONResponse(self._deployment_json(deployment))

    async def list_app_deployments(self, request: Request) -> Response:
        """GET /deployments/applications/{uuid}?skip&take: ``{count, deployments}``, newest first."""
        app = self.world.applications.get(request.path_params["uuid"])
        if app is None:
            return message(404, "Application not found.")

        def number(name: str, default: int, low: int) -> int:
            try:
                return max(low, int(request.query_params.get(name, default)))
            except ValueError:
                return default

        skip, take = number("skip", 0, 0), number("take", 10, 1)
        deployments = list(reversed(self.world.app_deployments(app.uuid)))
        page = deployments[skip : skip + take]
        return JSONResponse({"count": len(deployments), "deployments": [self._deployment_json(d) for d in page]})

    async def list_active_deployments(self, request: Request) -> Response:
        """GET /deployments: only ``queued`` and ``in_progress`` deployments."""
        live = [
            d
            for d in sorted(self.world.deployments.values(), key=lambda d: d.id)
            if d.app_uuid in self.world.applications and self.world.deployment_status(d) in ACTIVE_DEPLOYMENT
        ]
        return JSONResponse([self._deployment_json(d) for d in live])

    async def cancel_deployment(self, request: Request) -> Response:
        """POST /deployments/{uuid}/cancel: only a queued or running deployment can be cancelled."""
        deployment = self._deployment(request.path_params["uuid"])
        if deployment is None:
            return message(404, "Deployment not found.")
        status = self.world.deployment_status(deployment)
        if status not in ACTIVE_DEPLOYMENT:
            return message(400, f"Deployment cannot be cancelled. Current status: {status.value}")
        deployment.cancelled_at = self.world.now()
        return message(
            200,
            "Deployment cancelled successfully.",
            deployment_uuid=deployment.uuid,
            status=DeploymentStatus.CANCELLED.value,
        )
