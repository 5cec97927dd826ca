"""Settings: one object built from the environment at each entry point and passed down.

Nothing in this module runs at import time, and it imports nothing from the project, so every floor may read the
`Settings` type while only the entry points (`deployer.cli`, `graphql_api.app`, `jobs.worker`) build one.

`Settings.from_env(environ)` validates every variable and raises `SettingsError` naming the first bad one; the
CLI prints that message and exits, so an invalid setting stops the program at start.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

DEFAULT_DATABASE_URL = "sqlite://deployer.sqlite3"
DEFAULT_DO_API_URL = "https://api.digitalocean.com"
#: Third-party files fetched at set-up (`deployer assets`): `vendor/` beside this file.
DEFAULT_ASSETS_DIR = Path(__file__).resolve().parent / "vendor"
# Secrets that are obviously copied from an example rather than set: refused at start.
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "changethis", "secret", "xxx", "todo", "your-token-here"})
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_NAME_PREFIX = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.-]{0,60}$")
_TOKEN_SCOPES = ("read", "deploy", "env", "admin")


class SettingsError(ValueError):
    """An environment variable is missing or invalid; the message names it and says why."""


@dataclass(frozen=True)
class DigitalOceanSettings:
    """How to reach DigitalOcean and what droplets look like by default."""

    api_url: str = DEFAULT_DO_API_URL
    api_key: str = field(default="", repr=False)
    region: str = "nyc3"
    size: str = "s-1vcpu-1gb"
    image: str = "ubuntu-24-04-x64"
    name_prefix: str = "eliza"


@dataclass(frozen=True)
class CoolifySettings:
    """How to reach Coolify and where new servers and applications go."""

    api_url: str = ""
    api_key: str = field(default="", repr=False)
    project_uuid: str = ""
    environment_name: str = "production"
    private_key_uuid: str = ""
    ssh_public_key: str = ""


@dataclass(frozen=True)
class Timings:
    """Poll intervals and deadlines of the pipeline, in seconds (fractions allowed)."""

    droplet_poll_interval_s: float = 5.0
    #: DigitalOcean says `active` once the VM is powered on; the public IPv4 can appear later still.
    droplet_timeout_s: float = 300.0
    server_poll_interval_s: float = 5.0
    #: sshd answers 20-60 s after `active`, and Coolify then installs Docker, which takes minutes.
    server_timeout_s: float = 600.0
    build_poll_interval_s: float = 5.0
    build_timeout_s: float = 1800.0
    #: A worker renews its leases and job heartbeats every third of this; a worker silent this long is dead
    #: and its deployments are taken over (within this plus `worker_sweep_s` and a second).
    job_heartbeat_s: float = 10.0
    #: How often workers look for jobs whose heartbeat expired, and retry them elsewhere.
    worker_sweep_s: float = 2.0
    #: How often one worker (cluster-wide) runs the reaper.
    reaper_interval_s: float = 5.0

    @property
    def stall_after_s(self) -> float:
        """A running deployment with no progress for this long, and no lease, has lost its worker."""
        polls = max(self.droplet_poll_interval_s, self.server_poll_interval_s, self.build_poll_interval_s)
        return max(3 * self.job_heartbeat_s, 3 * polls)

    @property
    def pipeline_budget_s(self) -> float:
        """Upper bound of one pipeline run, used for the SAQ job timeout (plus cleanup slack)."""
        return self.droplet_timeout_s + self.server_timeout_s + self.build_timeout_s + 300.0


@dataclass(frozen=True)
class ApiToken:
    """One API token and the scopes it grants (`read`, `deploy`, `env`, `admin`)."""

    token: str = field(repr=False)
    scopes: frozenset[str]
    name: str


@dataclass(frozen=True)
class Settings:
    """Everything the processes need, grouped by subsystem."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = ""
    digitalocean: DigitalOceanSettings = field(default_factory=DigitalOceanSettings)
    coolify: CoolifySettings = field(default_factory=CoolifySettings)
    timings: Timings = field(default_factory=Timings)
    max_active_droplets: int = 3
    default_env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    api_tokens: tuple[ApiToken, ...] = field(default=(), repr=False)
    app_image: str = "nginx:alpine"
    app_port: int = 80
    queue_name: str = "deployer"
    worker_concurrency: int = 100
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    sandbox: bool = False
    #: Where `deployer assets` put GraphiQL's files (served at /assets/graphiql); git ignores it.
    assets_dir: str = field(default_factory=lambda: str(DEFAULT_ASSETS_DIR))

    @property
    def auth_enabled(self) -> bool:
        """Whether requests must carry one of `DEPLOYER_API_TOKENS`."""
        return bool(self.api_tokens)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, require_clouds: bool = True) -> Settings:
        """Build and validate settings from an environment mapping.

        Args:
            environ: usually `os.environ`.
            require_clouds: when true (serve, worker), the DigitalOcean and Coolify credentials must be set;
                `deployer dev` passes false and fills them with the sandbox's.
        """
        env = _Env(environ)
        timings = Timings(
            droplet_poll_interval_s=env.seconds("DROPLET_POLL_INTERVAL_S", 5.0),
            droplet_timeout_s=env.seconds("DROPLET_TIMEOUT_S", 300.0),
            server_poll_interval_s=env.seconds("SERVER_POLL_INTERVAL_S", 5.0),
            server_timeout_s=env.seconds("SERVER_TIMEOUT_S", 600.0),
            build_poll_interval_s=env.seconds("BUILD_POLL_INTERVAL_S", 5.0),
            build_timeout_s=env.seconds("BUILD_TIMEOUT_S", 1800.0),
            job_heartbeat_s=env.seconds("JOB_HEARTBEAT_S", 10.0),
            worker_sweep_s=env.seconds("WORKER_SWEEP_S", 2.0),
            reaper_interval_s=env.seconds("REAPER_INTERVAL_S", 5.0),
        )
        digitalocean = DigitalOceanSettings(
            api_url=env.url("DO_API_URL", DEFAULT_DO_API_URL),
            api_key=env.secret("DO_API_KEY", required=require_clouds),
            region=env.slug("DROPLET_REGION", "nyc3"),
            size=env.slug("DROPLET_SIZE", "s-1vcpu-1gb"),
            image=env.slug("DROPLET_IMAGE", "ubuntu-24-04-x64"),
            name_prefix=env.pattern("DROPLET_NAME_PREFIX", "eliza", _NAME_PREFIX, "letters, digits, '.' and '-'"),
        )
        coolify = CoolifySettings(
            api_url=env.url("COOLIFY_API_URL", "", required=require_clouds),
            api_key=env.secret("COOLIFY_API_KEY", required=require_clouds),
            project_uuid=env.text("COOLIFY_PROJECT_UUID", "", required=require_clouds),
            environment_name=env.text("COOLIFY_ENVIRONMENT_NAME", "production"),
            private_key_uuid=env.text("COOLIFY_PRIVATE_KEY_UUID", ""),
            ssh_public_key=env.ssh_public_key("COOLIFY_SSH_PUBLIC_KEY", required=require_clouds),
        )
        return cls(
            database_url=env.database_url("DATABASE_URL", DEFAULT_DATABASE_URL),
            redis_url=env.url("REDIS_URL", "", schemes=("redis", "rediss", "unix")),
            digitalocean=digitalocean,
            coolify=coolify,
            timings=timings,
            max_active_droplets=env.integer("MAX_ACTIVE_DROPLETS", 3, minimum=1, maximum=1000),
            default_env=env.env_pairs("DEPLOYER_DEFAULT_ENV"),
            api_tokens=env.api_tokens("DEPLOYER_API_TOKENS"),
            app_image=env.pattern(
                "APP_DEFAULT_IMAGE",
                "nginx:alpine",
                re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_.-]+)?$"),
                "image[:tag]",
            ),
            app_port=env.integer("APP_DEFAULT_PORT", 80, minimum=1, maximum=65535),
            queue_name=env.pattern("DEPLOYER_QUEUE", "deployer", re.compile(r"^[A-Za-z0-9_.:-]{1,64}$"), "a name"),
            worker_concurrency=env.integer("WORKER_CONCURRENCY", 100, minimum=1, maximum=10000),
            log_level=env.log_level("LOG_LEVEL", "INFO"),
            assets_dir=env.text("DEPLOYER_ASSETS_DIR", str(DEFAULT_ASSETS_DIR)),
        )

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with some top-level fields replaced (tests and the dev stack use it)."""
        return replace(self, **changes)  # type: ignore[arg-type]


class _Env:
    """Typed, validating reads of environment variables; each error names the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str, *, required: bool = False) -> str:
        value = self._raw(name)
        if value is None:
            if required:
                raise SettingsError(f"{name} is required but not set")
            return default
        return value

    def secret(self, name: str, *, required: bool) -> str:
        value = self.text(name, "", required=required)
        if value and value.lower() in PLACEHOLDER_SECRETS:
            raise SettingsError(f"{name} is a placeholder value; set the real secret")
        return value

    def pattern(self, name: str, default: str, regex: re.Pattern[str], what: str) -> str:
        value = self.text(name, default)
        if not regex.match(value):
            raise SettingsError(f"{name} must be {what}; got {value!r}")
        return value

    def slug(self, name: str, default: str) -> str:
        return self.pattern(name, default, _SLUG, "a slug (lowercase letters, digits and '-')")

    def url(
        self, name: str, default: str, *, required: bool = False, schemes: tuple[str, ...] = ("http", "https")
    ) -> str:
        value = self.text(name, default, required=required)
        if not value:
            return value
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in schemes or not rest:
            raise SettingsError(f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return value.rstrip("/")

    def database_url(self, name: str, default: str) -> str:
        value = self.text(name, default)
        scheme = value.partition("://")[0]
        if scheme not in ("sqlite", "postgres", "postgresql", "asyncpg", "psycopg"):
            raise SettingsError(f"{name} must start with sqlite:// or postgres://; got scheme {scheme!r}")
        if scheme == "postgresql":
            value = "postgres" + value[len("postgresql") :]
        return value

    def seconds(self, name: str, default: float) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f"{name} must be a number of seconds; got {value!r}") from None
        if not math.isfinite(number) or number <= 0:
            raise SettingsError(f"{name} must be a positive number of seconds; got {value!r}")
        return number

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f"{name} must be a whole number; got {value!r}") from None
        if not minimum <= number <= maximum:
            raise SettingsError(f"{name} must be between {minimum} and {maximum}; got {number}")
        return number

    def ssh_public_key(self, name: str, *, required: bool) -> str:
        value = self.text(name, "", required=required)
        if value:
            parts = value.split()
            if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
                raise SettingsError(f"{name} must be an OpenSSH public key such as 'ssh-ed25519 AAAA... comment'")
        return value

    def env_pairs(self, name: str) -> tuple[tuple[str, str], ...]:
        """Parse `KEY=value;KEY2=value2` (newlines also separate); values are never echoed in errors."""
        value = self._raw(name)
        if value is None:
            return ()
        pairs: list[tuple[str, str]] = []
        for number, item in enumerate(re.split(r"[;\n]", value), start=1):
            if not item.strip():
                continue
            key, sep, val = item.partition("=")
            key = key.strip()
            if not sep or not _ENV_KEY.match(key) or len(key) > 255:
                raise SettingsError(
                    f"{name} item {number} must look like KEY=value with KEY matching {_ENV_KEY.pattern}"
                )
            pairs.append((key, val))
        return tuple(pairs)

    def api_tokens(self, name: str) -> tuple[ApiToken, ...]:
        """Parse `name:token[:scope+scope]` items separated by commas; no scopes means all of them."""
        value = self._raw(name)
        if value is None:
            return ()
        tokens: list[ApiToken] = []
        for number, item in enumerate(value.split(","), start=1):
            parts = item.strip().split(":")
            if len(parts) not in (2, 3) or not parts[0] or len(parts[1]) < 16:
                raise SettingsError(
                    f"{name} item {number} must be name:token[:scope+scope] with a token of 16+ characters"
                )
            scopes = frozenset(parts[2].split("+")) if len(parts) == 3 else frozenset(_TOKEN_SCOPES)
            unknown = scopes - set(_TOKEN_SCOPES)
            if unknown:
                raise SettingsError(f"{name} item {number} has unknown scopes {sorted(unknown)}")
            tokens.append(ApiToken(token=parts[1], scopes=scopes, name=parts[0]))
        return tuple(tokens)

    def log_level(self, name: str, default: str) -> Literal["DEBUG", "INFO", "WARNING", "ERROR"]:
        value = self.text(name, default).upper()
        if value == "DEBUG":
            return "DEBUG"
        if value == "INFO":
            return "INFO"
        if value == "WARNING":
            return "WARNING"
        if value == "ERROR":
            return "ERROR"
        raise SettingsError(f"{name} must be one of DEBUG, INFO, WARNING, ERROR; got {value!r}")
