"""The records both simulated clouds keep: droplets, keys, servers, applications, deployments, env rows.

Plain dataclasses with no behaviour of their own; ``World`` (sandbox.state) holds them and works out what
changes with time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from sandbox.validation import ValidationJob

__all__ = [
    "ACTIVE_DEPLOYMENT",
    "TERMINAL_DEPLOYMENT",
    "Action",
    "Application",
    "Deployment",
    "DeploymentStatus",
    "Droplet",
    "EnvVar",
    "Environment",
    "ManualClock",
    "PrivateKey",
    "Project",
    "RequestRecord",
    "SSHKey",
    "Server",
    "isoformat",
]


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
    listed_at: float = 0.0  # shows in GET /v2/droplets lists from then on
    sshd_at: float | None = None  # sshd accepts connections from then on (None: never answers)
    ssh_denied: bool = False  # sshd answers but refuses Coolify's key ("Permission denied (publickey)")


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
    jobs: list[ValidationJob] = field(default_factory=list)  # every validation asked for, oldest first
    overlapping_validations: int = 0  # validations asked for while another one was queued or running


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
    base_directory: str = "/"


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
    failure: str = "build"  # why an outcome "failed" fails: "build" (its build) or "server" (not functional)


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
