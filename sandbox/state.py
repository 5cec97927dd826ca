"""The sandbox world: what both simulated clouds hold in memory, and how it changes with time.

Nothing runs in the background. Every time-based change (a droplet going ``new`` -> ``active``, its public
IPv4 appearing, a server validation finishing, a deployment going ``queued`` -> ``in_progress`` ->
``finished``, a queued application delete) is computed from timestamps when it is read, against
``World.now()``: the injectable ``clock`` plus an offset that ``World.advance()`` moves forward. Tests pass a
``ManualClock`` (or call ``advance``) and never sleep.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum

from sandbox.faults import Fault, FaultKind, Faults, FaultSpecError
from sandbox.ratelimit import RateWindow

__all__ = [
    "DEFAULT_COOLIFY_PUBLIC_KEY",
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

# The public half of the Coolify private key seeded as "sandbox-private-key". Give it to DigitalOcean
# (POST /v2/account/keys, then ssh_keys on droplet create) so Coolify can "SSH" into the droplet.
DEFAULT_COOLIFY_PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIzAiOxZr50ntAD7GmkwjK+YTwRyT6HwhBqhfltUgJR7 coolify-sandbox"
)

_SSH_KEY_TYPES = frozenset(
    {
        "ssh-rsa",
        "ssh-dss",
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
_UUID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def ssh_key_blob(public_key: str) -> bytes | None:
    """Decode the key blob of an OpenSSH public key line (``type base64 [comment]``); None if malformed."""
    parts = public_key.strip().split()
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(blob) < 4:
        return None
    name_len = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + name_len] != parts[0].encode():
        return None
    return blob


def md5_fingerprint(blob: bytes) -> str:
    """DigitalOcean's SSH key fingerprint: MD5 of the key blob, colon-separated hex."""
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def isoformat(ts: float, *, micro: bool = False) -> str:
    """UTC timestamp text: ``2024-05-01T12:00:00Z`` (DigitalOcean) or with microseconds (Laravel/Coolify)."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


class ManualClock:
    """A clock for tests: stands still until ``advance()`` is called."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward and return the new time."""
        self.now += seconds
        return self.now


@dataclass(frozen=True)
class SandboxConfig:
    """Timings, limits and seeded ids of the sandbox; every field can be set by ``SANDBOX_<FIELD>``."""

    droplet_boot_s: float = 4.0  # POST droplet -> status "active"
    droplet_ip_delay_s: float = 1.0  # "active" -> public IPv4 listed in networks.v4
    server_validation_s: float = 2.0  # POST /servers/{uuid}/validate -> outcome visible
    build_queue_s: float = 1.0  # deployment "queued" -> "in_progress"
    build_s: float = 4.0  # "in_progress" -> "finished" / "failed"
    app_delete_s: float = 1.0  # DELETE application -> GET gives 404
    droplet_limit: int = 25
    project_uuid: str = "sandbox-project"
    project_name: str = "sandbox"
    environment_name: str = "production"
    environment_uuid: str = "sandbox-production"
    private_key_uuid: str = "sandbox-private-key"
    coolify_public_key: str = DEFAULT_COOLIFY_PUBLIC_KEY
    coolify_version: str = "4.3.11"
    do_rate_limit_per_hour: int = 5000  # 0 turns a limit off
    do_rate_limit_per_minute: int = 250
    do_keys_list_per_minute: int = 10
    coolify_rate_limit_per_minute: int = 200
    faults: str = ""  # SANDBOX_FAULTS, see sandbox.faults
    seed: int | None = None  # seeds generated uuids (None: random)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith(("_s", "_limit", "_per_hour", "_per_minute")) and value < 0:
                raise ValueError(f"SANDBOX_{f.name.upper()} must be >= 0, got {value}")
        if ssh_key_blob(self.coolify_public_key) is None:
            raise ValueError("SANDBOX_COOLIFY_PUBLIC_KEY is not an OpenSSH public key")
        try:
            Faults.parse(self.faults)
        except FaultSpecError as exc:
            raise ValueError(f"SANDBOX_FAULTS: {exc}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxConfig:
        """Read ``SANDBOX_*`` variables (e.g. ``SANDBOX_BUILD_S=0.5``); ValueError names a bad one."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            name = f"SANDBOX_{f.name.upper()}"
            raw = env.get(name)
            if raw is None or (raw.strip() == "" and f.name != "faults"):
                continue
            kind = str(f.type)
            try:
                if kind == "float":
                    number = float(raw)
                    if not math.isfinite(number):
                        raise ValueError(raw)
                    values[f.name] = number
                elif kind.startswith("int"):
                    values[f.name] = int(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                raise ValueError(f"{name} must be a number, got {raw!r}") from None
        return cls(**values)  # type: ignore[arg-type]


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class RequestRecord:
    """One request the simulated clouds answered (never its body)."""

    api: str  # "digitalocean" | "coolify"
    method: str
    path: str
    status: int
    at: float


@dataclass
class SSHKey:
    """A DigitalOcean account SSH key."""

    id: int
    name: str
    public_key: str
    fingerprint: str
    blob: bytes


@dataclass
class Droplet:
    """A DigitalOcean droplet; status and addresses follow from the timestamps."""

    id: int
    name: str
    region: str
    size: str
    image: str | int
    tags: list[str]
    ssh_key_blobs: frozenset[bytes]
    user_data: str | None
    created_at: float
    active_at: float
    ip_at: float | None  # None: never gets a public IPv4
    public_ipv4: str
    private_ipv4: str
    action_id: int


@dataclass
class Action:
    """A DigitalOcean action (only ``create`` is simulated)."""

    id: int
    type: str
    resource_id: int
    region: str
    started_at: float
    completed_at: float


@dataclass
class PrivateKey:
    """A Coolify private key (only its public half is modelled)."""

    id: int
    uuid: str
    name: str
    description: str
    public_key: str
    created_at: float


@dataclass
class Environment:
    """A Coolify project environment."""

    id: int
    uuid: str
    name: str
    project_uuid: str
    created_at: float


@dataclass
class Project:
    """A Coolify project."""

    id: int
    uuid: str
    name: str
    description: str
    environments: list[Environment]
    created_at: float


@dataclass
class Validation:
    """One run of Coolify's server validation; its outcome shows once ``done_at`` has passed."""

    started_at: float
    done_at: float
    install: bool
    reachable: bool
    usable: bool
    logs: str | None
    before_reachable: bool
    before_usable: bool


@dataclass
class Server:
    """A Coolify server."""

    id: int
    uuid: str
    name: str
    description: str | None
    ip: str
    port: int
    user: str
    private_key_uuid: str
    proxy_type: str
    is_build_server: bool
    created_at: float
    destination_id: int
    validation: Validation | None = None
    docker_installed: bool = False


@dataclass(frozen=True)
class ServerState:
    """What ``GET /servers/{uuid}`` shows at a moment."""

    is_reachable: bool
    is_usable: bool
    is_validating: bool
    validation_logs: str | None
    proxy_running: bool


@dataclass
class Application:
    """A Coolify application."""

    id: int
    uuid: str
    name: str
    description: str | None
    build_pack: str
    git_repository: str
    git_branch: str
    docker_image: str | None
    docker_tag: str | None
    ports_exposes: str
    fqdn: str | None
    server_uuid: str
    project_uuid: str
    environment: Environment
    tags: list[str]
    created_at: float
    delete_at: float | None = None  # a queued delete: gone once this time has passed
    stopped_at: float | None = None


class DeploymentStatus(StrEnum):
    """Coolify's ``ApplicationDeploymentStatus``."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled-by-user"


ACTIVE_DEPLOYMENT = frozenset({DeploymentStatus.QUEUED, DeploymentStatus.IN_PROGRESS})
TERMINAL_DEPLOYMENT = frozenset({DeploymentStatus.FINISHED, DeploymentStatus.FAILED, DeploymentStatus.CANCELLED})


@dataclass
class Deployment:
    """A Coolify deployment; its status follows from the app's deployment timeline."""

    id: int
    uuid: str
    app_uuid: str
    created_at: float
    outcome: str  # "finished" | "failed" | "hang", fixed when it is queued
    restart_only: bool
    force_rebuild: bool
    cancelled_at: float | None = None


@dataclass
class EnvVar:
    """A Coolify application environment variable (production and preview rows are separate)."""

    id: int
    uuid: str
    app_uuid: str
    key: str
    value: str | None
    is_preview: bool = False
    is_literal: bool = False
    is_multiline: bool = False
    is_shown_once: bool = False
    is_runtime: bool = True
    is_buildtime: bool = True
    comment: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


# ---------------------------------------------------------------- the world

_DOCKER_MISSING_LOG = (
    "Docker Engine is not installed. Please install Docker manually before continuing: "
    "<a target='_blank' class='underline' href='https://docs.docker.com/engine/install/#server'>documentation</a>."
)


def _unreachable_log(ip: str, port: int, reason: str) -> str:
    return (
        "Server is not reachable. Please validate your configuration and connection.<br>"
        "Check this <a target='_blank' class='underline' "
        "href='https://coolify.io/docs/knowledge-base/server/openssh'>documentation</a> for further help. "
        f"<br><br>Error: ssh: connect to host {ip} port {port}: {reason}"
    )


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
        self.do_hourly = RateWindow(cfg.do_rate_limit_per_hour, 3600.0)
        self.do_burst = RateWindow(cfg.do_rate_limit_per_minute, 60.0)
        self.do_keys_list = RateWindow(cfg.do_keys_list_per_minute, 60.0)
        self.coolify_minute = RateWindow(cfg.coolify_rate_limit_per_minute, 60.0)
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
    ) -> Droplet:
        """Register a droplet in status ``new``, with its ``create`` action."""
        cfg = self.config
        now = self.now()
        droplet_id = self.next_id("droplet", 500_000_001)
        seq = self.next_id("droplet_address")
        active_at = now + cfg.droplet_boot_s
        ip_at = None if (no_ip or not public_networking) else active_at + cfg.droplet_ip_delay_s
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
            public_ipv4=f"198.18.{seq // 250 % 256}.{seq % 250 + 2}",
            private_ipv4=f"10.108.{seq // 250 % 256}.{seq % 250 + 2}",
            action_id=action.id,
        )
        self.droplets[droplet_id] = droplet
        return droplet

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
        """Flags and logs as Coolify shows them now (a running validation has cleared the logs)."""
        run = server.validation
        if run is None:
            return ServerState(False, False, False, None, False)
        if self.now() < run.done_at:
            return ServerState(run.before_reachable, run.before_usable, run.install, None, False)
        return ServerState(run.reachable, run.usable, False, run.logs, run.install and run.usable)

    def start_validation(self, server: Server, *, install: bool, unreachable: bool = False) -> None:
        """Queue a validation whose outcome is decided now and shown after ``server_validation_s``.

        When the server's IP is a sandbox droplet, the droplet must carry the public half of the server's
        private key (else "Permission denied"). Plain validation never installs Docker: it passes only on a
        droplet made from a ``docker`` image or a server an earlier ``install`` validation set up.
        """
        now = self.now()
        before = self.server_state(server)
        droplet = self.droplet_at_ip(server.ip)
        key = self.private_keys.get(server.private_key_uuid)
        key_blob = ssh_key_blob(key.public_key) if key else None
        logs: str | None = None
        if unreachable:
            reachable = usable = False
            logs = _unreachable_log(server.ip, server.port, "Connection timed out")
        elif droplet is not None and key_blob not in droplet.ssh_key_blobs:
            reachable = usable = False
            logs = _unreachable_log(server.ip, server.port, "Permission denied (publickey).")
        elif install:
            reachable = usable = True
            server.docker_installed = True
        elif server.docker_installed or (droplet is not None and "docker" in str(droplet.image).lower()):
            reachable = usable = True
        else:
            reachable, usable, logs = True, False, _DOCKER_MISSING_LOG
        server.validation = Validation(
            now, now + self.config.server_validation_s, install, reachable, usable, logs,
            before.is_reachable, before.is_usable,
        )  # fmt: skip

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

    def queue_deployment(self, app: Application, *, outcome: str, restart_only: bool, force: bool) -> Deployment:
        """Queue a deployment; it runs after the app's earlier ones (one at a time per application)."""
        deployment = Deployment(
            self.next_id("deployment"), self.new_uuid(), app.uuid, self.now(), outcome, restart_only, force
        )
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
        }
