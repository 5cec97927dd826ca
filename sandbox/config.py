"""``SandboxConfig``: the timings, limits and seeded ids of the sandbox, read from ``SANDBOX_*`` variables.

The defaults are the real clouds' behaviour at sandbox scale: seconds where the real thing takes tens of
seconds or minutes (a droplet boots in ~30-60 s, its sshd answers 20-60 s after that, Docker installs in
minutes), and the real request limits. ``time_scale`` shrinks the rate-limit windows on top of that, so a
fleet test can exhaust and refill a "minute" in a few seconds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from sandbox.faults import Faults, FaultSpecError
from sandbox.keys import DEFAULT_COOLIFY_PUBLIC_KEY, ssh_key_blob

__all__ = ["SandboxConfig"]

# Fields whose variable is not simply SANDBOX_<FIELD>.
_ENV_NAMES = {"list_lag_s": "SANDBOX_DROPLET_LIST_LAG_S"}


def env_name(field: str) -> str:
    """The environment variable that sets a ``SandboxConfig`` field."""
    return _ENV_NAMES.get(field, f"SANDBOX_{field.upper()}")


@dataclass(frozen=True)
class SandboxConfig:
    """Timings, limits and seeded ids of the sandbox; every field can be set by its ``SANDBOX_*`` variable."""

    droplet_boot_s: float = 4.0  # POST droplet -> status "active"
    droplet_ip_delay_s: float = 1.0  # "active" -> public IPv4 listed in networks.v4
    sshd_delay_s: float = 3.0  # public IPv4 listed -> sshd accepts connections (refused before)
    list_lag_s: float = 0.5  # POST droplet -> the droplet shows in GET /v2/droplets lists
    validation_pickup_s: float = 0.2  # POST validate -> Coolify's queue worker starts the job
    ssh_tries_span_s: float = 0.6  # Coolify's 3 SSH tries (2 s, then 4 s apart in real life)
    docker_install_s: float = 2.0  # install validation: Docker missing -> installed, proxy started
    server_validation_s: float | None = None  # old name of docker_install_s: when set, it is the install time
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
    do_read_only_tokens: str = ""  # comma-separated DigitalOcean tokens that may only read (others get 403)
    time_scale: float = 1.0  # rate-limit windows (and their Retry-After / reset values) are divided by it
    faults: str = ""  # SANDBOX_FAULTS, see sandbox.faults
    seed: int | None = None  # seeds generated uuids (None: random)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or not f.name.endswith(("_s", "_limit", "_per_hour", "_per_minute")):
                continue
            if value < 0:
                raise ValueError(f"{env_name(f.name)} must be >= 0, got {value}")
        if not self.time_scale > 0:
            raise ValueError(f"SANDBOX_TIME_SCALE must be > 0, got {self.time_scale}")
        if self.server_validation_s is not None:
            object.__setattr__(self, "docker_install_s", self.server_validation_s)
        if ssh_key_blob(self.coolify_public_key) is None:
            raise ValueError("SANDBOX_COOLIFY_PUBLIC_KEY is not an OpenSSH public key")
        try:
            Faults.parse(self.faults)
        except FaultSpecError as exc:
            raise ValueError(f"SANDBOX_FAULTS: {exc}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxConfig:
        """Read ``SANDBOX_*`` variables (e.g. ``SANDBOX_BUILD_S=0.5``); ValueError names a bad one.

        ``SANDBOX_SERVER_VALIDATION_S`` (the old name of the Docker install time) is read only when
        ``SANDBOX_DOCKER_INSTALL_S`` is not set.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            name = env_name(f.name)
            raw = env.get(name)
            if raw is None or (raw.strip() == "" and f.name != "faults"):
                continue
            if f.name == "server_validation_s" and env.get(env_name("docker_install_s"), "").strip():
                continue
            kind = str(f.type)
            try:
                if kind.startswith("float"):
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
