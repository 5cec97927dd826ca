"""The sandbox world: what both simulated clouds hold in memory, and how it changes with time.

Nothing runs in the background. Every time-based change (a droplet going ``new`` -> ``active``, its public
IPv4 appearing, its sshd starting to answer, a server validation's steps, a deployment going ``queued`` ->
``in_progress`` -> ``finished``, a queued application delete) is computed from timestamps when it is read,
against ``World.now()``: the injectable ``clock`` plus an offset that ``World.advance()`` moves forward. Tests
pass a ``ManualClock`` (or call ``advance``) and never sleep.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable

from sandbox.config import SandboxConfig
from sandbox.faults import Fault, FaultKind, Faults
from sandbox.keys import DEFAULT_COOLIFY_PUBLIC_KEY, md5_fingerprint, ssh_key_blob
from sandbox.ratelimit import FixedWindow, PerCaller, RollingWindow
from sandbox.records import (
    ACTIVE_DEPLOYMENT,
    TERMINAL_DEPLOYMENT,
    Action,
    Application,
    Deployment,
    DeploymentStatus,
    Droplet,
    Environment,
    EnvVar,
    ManualClock,
    PrivateKey,
    Project,
    RequestRecord,
    Server,
    SSHKey,
    isoformat,
)
from sandbox.validation import ServerState, Timings, ValidationJob, fold, plan_validation

__all__ = [
    "ACTIVE_DEPLOYMENT",
    "DEFAULT_COOLIFY_PUBLIC_KEY",
    "TERMINAL_DEPLOYMENT",
    "Action",
    "Application",
    "Deployment",
    "DeploymentStatus",
    "Droplet",
    "EnvVar",
    "Environment",
    "Fault",
    "FaultKind",
    "Faults",
    "ManualClock",
    "PrivateKey",
    "Project",
    "RequestRecord",
    "SSHKey",
    "SandboxConfig",
    "Server",
    "ServerState",
    "World",
    "isoformat",
    "md5_fingerprint",
    "ssh_key_blob",
]

_UUID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_PUBLIC_PREFIX = "198.18."  # every droplet's public IPv4 is allocated here


class World:
    """Everything both sandbox clouds hold, plus the fault switches and the request log.

    Args:
        config: timings, limits and seeds (default: ``SandboxConfig()``).
        clock: returns epoch seconds (default ``time.time``); pass a ``ManualClock`` in tests.
    """

    def __init__(self, config: SandboxConfig | None = None, *, clock: Callable[[], float] | None = None) -> None:
        self.config = config or SandboxConfig()
        self.clock: Callable[[], float] = clock or time.time
        self.offset = 0.0
        self.reset()

    # ---- time, log, reset

    def now(self) -> float:
        """Current sandbox time: the clock plus every ``advance()``."""
        return self.clock() + self.offset

    def advance(self, seconds: float) -> float:
        """Move sandbox time forward (works with any clock); returns the new time."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.offset += seconds
        return self.now()

    def reset(self) -> None:
        """Back to the seeded state: no droplets, keys, servers or apps; faults from the config."""
        cfg = self.config
        self.faults = Faults.parse(cfg.faults)
        self.requests: list[RequestRecord] = []
        #: Validation requests over the world's life (servers come and go): all of them, those made while
        #: another validation of the server was queued or running, and those made for a server already usable.
        self.validation_totals: dict[str, int] = {"requested": 0, "overlapping": 0, "after_usable": 0}
        self.rng = random.Random(cfg.seed)
        self._counters: dict[str, int] = {}
        self.droplets: dict[int, Droplet] = {}
        self.ssh_keys: dict[int, SSHKey] = {}
        self.actions: dict[int, Action] = {}
        self.tags: dict[str, str] = {}
        self.private_keys: dict[str, PrivateKey] = {}
        self.projects: dict[str, Project] = {}
        self.servers: dict[str, Server] = {}
        self.applications: dict[str, Application] = {}
        self.deployments: dict[str, Deployment] = {}
        self.envs: list[EnvVar] = []
        self.docker_ready: dict[str, float] = {}  # host -> when Docker became usable on it
        # Per-caller rate windows (a token, or an IP for the token-free health probes); see sandbox.ratelimit.
        minute, hour = 60.0 / cfg.time_scale, 3600.0 / cfg.time_scale
        self.do_hourly = PerCaller(lambda: RollingWindow(cfg.do_rate_limit_per_hour, hour))
        self.do_burst = PerCaller(lambda: RollingWindow(cfg.do_rate_limit_per_minute, minute))
        self.do_keys_list = PerCaller(lambda: RollingWindow(cfg.do_keys_list_per_minute, minute))
        self.coolify_minute = PerCaller(lambda: FixedWindow(cfg.coolify_rate_limit_per_minute, minute))
        # RouteServiceProvider: GET /api/health gets its own 1000/minute, keyed by IP.
        self.coolify_health = PerCaller(lambda: FixedWindow(1000, minute))
        now = self.now()
        public_key = " ".join(cfg.coolify_public_key.split()[:2])  # Coolify shows it without a comment
        self.private_keys[cfg.private_key_uuid] = PrivateKey(
            self.next_id("private_key"),
            cfg.private_key_uuid,
            "sandbox-key",
            "Seeded by the sandbox",
            public_key,
            now,
        )
        environment = Environment(
            self.next_id("environment"), cfg.environment_uuid, cfg.environment_name, cfg.project_uuid, now
        )
        self.projects[cfg.project_uuid] = Project(
            self.next_id("project"),
            cfg.project_uuid,
            cfg.project_name,
            "Seeded by the sandbox",
            [environment],
            now,
        )

    def log_request(self, api: str, method: str, path: str, status: int) -> None:
        """Append one answered request to ``requests``."""
        self.requests.append(RequestRecord(api, method, path, status, self.now()))

    def calls(self, method: str | None = None, path: str | None = None) -> list[RequestRecord]:
        """Logged requests, optionally only one method and paths matching a regex (``re.search``)."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper()) and (path is None or re.search(path, r.path))
        ]

    def next_id(self, kind: str, start: int = 1) -> int:
        """Next integer id of a kind of record."""
        value = self._counters.get(kind, start - 1) + 1
        self._counters[kind] = value
        return value

    def new_uuid(self) -> str:
        """A Coolify-style resource uuid (24 lowercase letters and digits)."""
        return "".join(self.rng.choice(_UUID_ALPHABET) for _ in range(24))

    # ---- DigitalOcean

    def create_droplet(
        self,
        *,
        name: str,
        region: str,
        size: str,
        image: str | int,
        tags: list[str],
        ssh_keys: list[SSHKey],
        user_data: str | None,
        public_networking: bool = True,
        no_ip: bool = False,
        sshd_never: bool = False,
        wrong_key: bool = False,
    ) -> Droplet:
        """Register a droplet in status ``new``, with its ``create`` action.

        Args:
            no_ip: it becomes active but never gets a public IPv4.
            sshd_never: its sshd never answers (connections time out).
            wrong_key: its sshd refuses every key, as if the Coolify key were not on it.
        """
        cfg = self.config
        now = self.now()
        droplet_id = self.next_id("droplet", 500_000_001)
        seq = self.next_id("droplet_address")
        active_at = now + cfg.droplet_boot_s
        ip_at = None if (no_ip or not public_networking) else active_at + cfg.droplet_ip_delay_s
        sshd_at = None if (ip_at is None or sshd_never) else ip_at + cfg.sshd_delay_s
        action = Action(self.next_id("action", 2_000_000_001), "create", droplet_id, region, now, active_at)
        self.actions[action.id] = action
        droplet = Droplet(
            id=droplet_id,
            name=name,
            region=region,
            size=size,
            image=image,
            tags=[self.canonical_tag(t) for t in tags],
            ssh_key_blobs=frozenset(k.blob for k in ssh_keys),
            user_data=user_data,
            created_at=now,
            active_at=active_at,
            ip_at=ip_at,
            public_ipv4=f"{_PUBLIC_PREFIX}{seq // 250 % 256}.{seq % 250 + 2}",
            private_ipv4=f"10.108.{seq // 250 % 256}.{seq % 250 + 2}",
            action_id=action.id,
            listed_at=now + cfg.list_lag_s,
            sshd_at=sshd_at,
            ssh_denied=wrong_key,
        )
        self.droplets[droplet_id] = droplet
        if _has_docker(image):
            self.docker_ready[_droplet_host(droplet)] = now
        return droplet

    def droplet_listed(self, droplet: Droplet) -> bool:
        """Whether lists (``GET /v2/droplets``) show the droplet yet; a GET by id works at once."""
        return self.now() >= droplet.listed_at

    def droplet_status(self, droplet: Droplet) -> str:
        """``new`` until booted, then ``active``."""
        return "active" if self.now() >= droplet.active_at else "new"

    def droplet_public_ip(self, droplet: Droplet) -> str | None:
        """The public IPv4 once assigned (a while after ``active``), else None."""
        if droplet.ip_at is None or self.now() < droplet.ip_at:
            return None
        return droplet.public_ipv4

    def droplet_private_ip(self, droplet: Droplet) -> str | None:
        """The VPC IPv4 once the droplet is active, else None."""
        return droplet.private_ipv4 if self.now() >= droplet.active_at else None

    def droplet_at_ip(self, ip: str) -> Droplet | None:
        """The existing droplet whose public IPv4 is ``ip`` right now."""
        return next((d for d in self.droplets.values() if self.droplet_public_ip(d) == ip), None)

    def action_status(self, action: Action) -> str:
        """``in-progress`` until the droplet is active, then ``completed``."""
        return "completed" if self.now() >= action.completed_at else "in-progress"

    def canonical_tag(self, tag: str) -> str:
        """Tag names are case-stable: the first spelling seen is the one kept."""
        return self.tags.setdefault(tag.lower(), tag)

    def add_ssh_key(self, name: str, public_key: str) -> SSHKey:
        """Register an account SSH key (the caller checks the key is valid and not a duplicate)."""
        blob = ssh_key_blob(public_key)
        if blob is None:
            raise ValueError("not an OpenSSH public key")
        key = SSHKey(self.next_id("ssh_key", 41_000_001), name, public_key.strip(), md5_fingerprint(blob), blob)
        self.ssh_keys[key.id] = key
        return key

    def find_ssh_key(self, identifier: str | int) -> SSHKey | None:
        """An account SSH key by id (int or digits) or by MD5 fingerprint."""
        if isinstance(identifier, int) or identifier.isdigit():
            return self.ssh_keys.get(int(identifier))
        return next((k for k in self.ssh_keys.values() if k.fingerprint == identifier), None)

    # ---- Coolify servers

    def find_server_by_ip(self, ip: str) -> Server | None:
        """The Coolify server registered with this IP or hostname."""
        return next((s for s in self.servers.values() if s.ip == ip), None)

    def create_server(
        self,
        *,
        name: str,
        description: str | None,
        ip: str,
        port: int,
        user: str,
        private_key_uuid: str,
        proxy_type: str,
        is_build_server: bool,
    ) -> Server:
        """Register a server: not reachable, not usable, never validated."""
        server = Server(
            id=self.next_id("server"),
            uuid=self.new_uuid(),
            name=name,
            description=description,
            ip=ip,
            port=port,
            user=user,
            private_key_uuid=private_key_uuid,
            proxy_type=proxy_type,
            is_build_server=is_build_server,
            created_at=self.now(),
            destination_id=self.next_id("destination"),
        )
        self.servers[server.uuid] = server
        return server

    def server_state(self, server: Server) -> ServerState:
        """Flags and logs as Coolify shows them now (every validation change made by now)."""
        return fold(server.jobs, self.now())

    def ssh_error(self, server: Server, at: float, *, timed_out: bool = False) -> str | None:
        """What ssh prints when Coolify connects to the server at ``at``; None when it gets in.

        A sandbox droplet's sshd refuses connections until ``sshd_delay_s`` after its IPv4 appears, listens
        on port 22 only, lets in only ``root`` with a key the droplet was created with. An address in the
        droplet range that no droplet holds (any more) times out; any other address answers at once.
        """
        ip, port = server.ip, server.port
        droplet = next((d for d in self.droplets.values() if d.ip_at is not None and d.public_ipv4 == ip), None)
        if timed_out or (droplet is None and ip.startswith(_PUBLIC_PREFIX)):
            return f"ssh: connect to host {ip} port {port}: Connection timed out"
        if droplet is None:
            return None
        if droplet.ip_at is None or at < droplet.ip_at or droplet.sshd_at is None:
            return f"ssh: connect to host {ip} port {port}: Connection timed out"
        if at < droplet.sshd_at or port != 22:
            return f"ssh: connect to host {ip} port {port}: Connection refused"
        key = self.private_keys.get(server.private_key_uuid)
        blob = ssh_key_blob(key.public_key) if key else None
        if droplet.ssh_denied or server.user != "root" or blob not in droplet.ssh_key_blobs:
            return f"{server.user}@{ip}: Permission denied (publickey)."
        return None

    def _host(self, ip: str) -> str:
        droplet = next((d for d in self.droplets.values() if d.ip_at is not None and d.public_ipv4 == ip), None)
        return _droplet_host(droplet) if droplet else f"ip:{ip}"

    def start_validation(self, server: Server, *, install: bool, unreachable: bool = False) -> ValidationJob:
        """Queue a validation job (``install``: ValidateAndInstallServerJob, else ValidateServer).

        Its steps are worked out now and show as time passes (see sandbox.validation). A request made while
        another validation of the server is queued or running is accepted too, and counted in
        ``overlapping_validations``.

        Args:
            unreachable: the host does not answer at all during this validation (``server_unreachable``).
        """
        cfg, now = self.config, self.now()
        totals = self.validation_totals
        totals["requested"] += 1
        if any(job.running(now) for job in server.jobs):
            server.overlapping_validations += 1
            totals["overlapping"] += 1
        else:
            before = self.server_state(server)
            if before.is_reachable and before.is_usable:
                totals["after_usable"] += 1
        host = self._host(server.ip)
        job, ready = plan_validation(
            now,
            install=install,
            timings=Timings(cfg.validation_pickup_s, cfg.ssh_tries_span_s, cfg.docker_install_s),
            ssh_error=lambda at: self.ssh_error(server, at, timed_out=unreachable),
            docker_ready_at=self.docker_ready.get(host),
        )
        if ready is not None:
            self.docker_ready[host] = ready
        server.jobs.append(job)
        return job

    def server_applications(self, server: Server) -> list[Application]:
        """Applications placed on a server."""
        return [a for a in self.applications.values() if a.server_uuid == server.uuid]

    def delete_server(self, server: Server) -> None:
        """Remove a server at once; its applications get queued deletes."""
        for app in self.server_applications(server):
            self.delete_application(app)
        del self.servers[server.uuid]

    # ---- Coolify applications and deployments

    def find_environment(self, project: Project, name: str | None, uuid: str | None) -> Environment | None:
        """Look an environment up by name first, then by uuid (as Coolify does)."""
        for env in project.environments:
            if name is not None and env.name == name:
                return env
        return next((e for e in project.environments if uuid is not None and e.uuid == uuid), None)

    def add_application(self, app: Application) -> None:
        """Store a new application."""
        self.applications[app.uuid] = app

    def delete_application(self, app: Application) -> None:
        """Queue an application delete: it disappears ``app_delete_s`` from now."""
        if app.delete_at is None:
            app.delete_at = self.now() + self.config.app_delete_s

    def sweep(self) -> None:
        """Carry out queued application deletes whose time has come (with their envs and deployments)."""
        now = self.now()
        gone = {uuid for uuid, app in self.applications.items() if app.delete_at is not None and now >= app.delete_at}
        if not gone:
            return
        for uuid in gone:
            del self.applications[uuid]
        self.envs = [e for e in self.envs if e.app_uuid not in gone]
        self.deployments = {k: d for k, d in self.deployments.items() if d.app_uuid not in gone}

    def app_deployments(self, app_uuid: str) -> list[Deployment]:
        """An application's deployments, oldest first."""
        return sorted((d for d in self.deployments.values() if d.app_uuid == app_uuid), key=lambda d: d.id)

    def queue_deployment(
        self, app: Application, *, outcome: str, restart_only: bool, force: bool, failure: str = "build"
    ) -> Deployment:
        """Queue a deployment; it runs after the app's earlier ones (one at a time per application).

        Args:
            outcome: "finished", "failed" or "hang" (stays in progress until cancelled).
            failure: for a failed one, "build" (its build fails) or "server" (the server is not functional).
        """
        deployment = Deployment(
            self.next_id("deployment"), self.new_uuid(), app.uuid, self.now(), outcome, restart_only, force,
            failure=failure,
        )  # fmt: skip
        self.deployments[deployment.uuid] = deployment
        return deployment

    def _timeline(self, app_uuid: str) -> dict[str, tuple[float | None, float | None]]:
        cfg = self.config
        out: dict[str, tuple[float | None, float | None]] = {}
        prev_end: float | None = -math.inf
        for dep in self.app_deployments(app_uuid):
            start = None if prev_end is None else max(dep.created_at + cfg.build_queue_s, prev_end)
            if dep.cancelled_at is not None:
                if start is not None and start > dep.cancelled_at:
                    start = None
                end: float | None = dep.cancelled_at
            elif start is None or dep.outcome == "hang":
                end = None
            elif dep.outcome == "failed" and dep.failure == "server":
                end = start  # "Server is not functional.": fails as soon as it starts
            else:
                end = start + cfg.build_s
            out[dep.uuid] = (start, end)
            prev_end = end
        return out

    def deployment_times(self, deployment: Deployment) -> tuple[float | None, float | None]:
        """When the deployment starts and ends (None: not yet scheduled / never)."""
        return self._timeline(deployment.app_uuid)[deployment.uuid]

    def deployment_status(self, deployment: Deployment) -> DeploymentStatus:
        """``queued`` -> ``in_progress`` -> ``finished``/``failed`` (or ``cancelled-by-user``)."""
        if deployment.cancelled_at is not None:
            return DeploymentStatus.CANCELLED
        start, end = self.deployment_times(deployment)
        now = self.now()
        if start is None or now < start:
            return DeploymentStatus.QUEUED
        if end is None or now < end:
            return DeploymentStatus.IN_PROGRESS
        return DeploymentStatus.FAILED if deployment.outcome == "failed" else DeploymentStatus.FINISHED

    def active_deployment(self, app: Application) -> Deployment | None:
        """The app's newest queued or in-progress deployment."""
        live = [d for d in self.app_deployments(app.uuid) if self.deployment_status(d) in ACTIVE_DEPLOYMENT]
        return live[-1] if live else None

    def application_status(self, app: Application) -> str:
        """``running:healthy`` after a finished deployment not followed by a stop, else ``exited``."""
        ends = [
            end
            for d in self.app_deployments(app.uuid)
            if self.deployment_status(d) is DeploymentStatus.FINISHED
            and (end := self.deployment_times(d)[1]) is not None
        ]
        if not ends or (app.stopped_at is not None and app.stopped_at >= max(ends)):
            return "exited"
        return "running:healthy"

    # ---- Coolify environment variables

    def app_envs(self, app_uuid: str) -> list[EnvVar]:
        """An application's env rows: production first, then preview, each by creation."""
        rows = [e for e in self.envs if e.app_uuid == app_uuid]
        return sorted(rows, key=lambda e: (e.is_preview, e.id))

    def find_env(self, app_uuid: str, key: str, is_preview: bool) -> EnvVar | None:
        """The env row with this key in this scope (production or preview)."""
        return next(
            (e for e in self.envs if e.app_uuid == app_uuid and e.key == key and e.is_preview == is_preview),
            None,
        )

    def add_env(self, app_uuid: str, key: str, value: str | None, **flags: object) -> EnvVar:
        """Create an env row (the caller validated key and flags)."""
        now = self.now()
        env = EnvVar(self.next_id("env"), self.new_uuid(), app_uuid, key, value, created_at=now, updated_at=now)
        for name, flag in flags.items():
            setattr(env, name, flag)
        self.envs.append(env)
        return env

    # ---- snapshot

    def snapshot(self) -> dict[str, object]:
        """Everything the sandbox holds, minus secrets (no env values), for tests and ``/_control/state``."""
        self.sweep()
        return {
            "now": isoformat(self.now()),
            "validations": dict(self.validation_totals),
            "droplets": [
                {
                    "id": d.id,
                    "name": d.name,
                    "status": self.droplet_status(d),
                    "public_ipv4": self.droplet_public_ip(d),
                    "private_ipv4": self.droplet_private_ip(d),
                    "region": d.region,
                    "size": d.size,
                    "image": d.image,
                    "tags": list(d.tags),
                    "listed": self.droplet_listed(d),
                }
                for d in self.droplets.values()
            ],
            "ssh_keys": [{"id": k.id, "name": k.name, "fingerprint": k.fingerprint} for k in self.ssh_keys.values()],
            "servers": [self._server_snapshot(s) for s in self.servers.values()],
            "applications": [
                {
                    "uuid": a.uuid,
                    "name": a.name,
                    "server_uuid": a.server_uuid,
                    "status": self.application_status(a),
                    "fqdn": a.fqdn,
                    "deleting": a.delete_at is not None,
                }
                for a in self.applications.values()
            ],
            "envs": [
                {
                    "uuid": e.uuid,
                    "application_uuid": e.app_uuid,
                    "key": e.key,
                    "is_preview": e.is_preview,
                    "is_literal": e.is_literal,
                    "is_multiline": e.is_multiline,
                    "is_shown_once": e.is_shown_once,
                    "is_runtime": e.is_runtime,
                    "is_buildtime": e.is_buildtime,
                }
                for e in self.envs
            ],
            "deployments": [
                {
                    "uuid": d.uuid,
                    "application_uuid": d.app_uuid,
                    "status": self.deployment_status(d).value,
                    "restart_only": d.restart_only,
                    "force_rebuild": d.force_rebuild,
                }
                for d in self.deployments.values()
            ],
            "faults": self.faults.to_list(),
            "request_count": len(self.requests),
        }

    def _server_snapshot(self, server: Server) -> dict[str, object]:
        state = self.server_state(server)
        return {
            "uuid": server.uuid,
            "name": server.name,
            "ip": server.ip,
            "is_reachable": state.is_reachable,
            "is_usable": state.is_usable,
            "is_validating": state.is_validating,
            "validation_logs": state.validation_logs,
            "validations_requested": len(server.jobs),
            "overlapping_validations": server.overlapping_validations,
        }


def _droplet_host(droplet: Droplet) -> str:
    return f"droplet:{droplet.id}"


def _has_docker(image: str | int) -> bool:
    """Whether a droplet image comes with Docker Engine (the marketplace ``docker-*`` images)."""
    return isinstance(image, str) and "docker" in image.lower()
