"""Settings: one object built from the environment at each entry point and passed down.

Nothing in this module runs at import time, and it imports nothing from the project, so every floor may read the
`Settings` type while only the entry points (`deployer.cli`, `graphql_api.app`, `jobs.worker`) build one.

`Settings.from_env(environ)` validates every variable and raises `SettingsError` naming the first bad one; the
CLI prints that message and exits, so an invalid setting stops the program at start.
"""

from __future__ import annotations

import hashlib
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
_TOKEN_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_TOKEN_TEXT = re.compile(r"[\x21-\x7e]{16,512}")  # printable ASCII, no space
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
#: Shortest DEPLOYER_SECRET_KEY accepted (each of its comma-separated keys).
MIN_SECRET_KEY_LENGTH = 32
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


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
    #: `DO_REQUESTS_PER_MINUTE`: the budget every worker and API process shares for this token (0: none).
    requests_per_minute: int = 250


@dataclass(frozen=True)
class CoolifySettings:
    """How to reach Coolify and where new servers and applications go."""

    api_url: str = ""
    api_key: str = field(default="", repr=False)
    project_uuid: str = ""
    environment_name: str = "production"
    private_key_uuid: str = ""
    ssh_public_key: str = ""
    #: `COOLIFY_REQUESTS_PER_MINUTE`: the budget every worker and API process shares (Coolify's API_RATE_LIMIT).
    requests_per_minute: int = 200


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
    """One API token and the scopes it grants (`read`, `deploy`, `env`, `admin`).

    Configured either as the token itself (`token`) or as the hex SHA-256 of it (`sha256`), so that the
    settings need not hold the token.
    """

    token: str = field(repr=False)
    scopes: frozenset[str]
    name: str
    sha256: str = field(default="", repr=False)

    @property
    def digest(self) -> str:
        """The hex SHA-256 of the token, whichever way it was configured."""
        return self.sha256 or hashlib.sha256(self.token.encode()).hexdigest()


@dataclass(frozen=True)
class Limits:
    """What one caller may send: request sizes, websocket connections, mutation rate."""

    #: Largest HTTP request body, and largest websocket message.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Open websocket connections per API token (per API process).
    ws_per_token: int = 100
    #: Open websocket connections per client IP address (per API process).
    ws_per_ip: int = 200
    #: Mutations per token per minute, shared by every API process through Redis (bursts up to this many).
    mutations_per_minute: int = 120


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
    worker_concurrency: int = 1000
    #: `WORKER_REDIS_CONNECTIONS`: the most Redis connections one worker process opens, however many jobs it runs.
    worker_redis_connections: int = 32
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    sandbox: bool = False
    #: Where `deployer assets` put GraphiQL's files (served at /assets/graphiql); git ignores it.
    assets_dir: str = field(default_factory=lambda: str(DEFAULT_ASSETS_DIR))
    #: `DEPLOYER_API_TOKENS_FILE`: more tokens, one per line, re-read on SIGHUP; `file_tokens` as read at start.
    api_tokens_file: str = ""
    file_tokens: tuple[ApiToken, ...] = field(default=(), repr=False)
    #: `DEPLOYER_ALLOW_ANONYMOUS`: whether `serve` may run with no tokens at all.
    allow_anonymous: bool = False
    #: `DEPLOYER_SECRET_KEY`: encrypts env values while they wait in Redis (comma-separated: new,old).
    secret_key: str = field(default="", repr=False)
    limits: Limits = field(default_factory=Limits)

    @property
    def auth_enabled(self) -> bool:
        """Whether requests must carry a token: some are configured, or a token file is (even an empty one)."""
        return bool(self.api_tokens) or bool(self.api_tokens_file)

    def check_serve(self) -> None:
        """Refuse what `deployer serve` must not run with: no tokens (unless allowed), no secret key."""
        if not self.api_tokens and not self.file_tokens and not self.allow_anonymous:
            raise SettingsError(
                "no API tokens are configured, so anyone who reaches the port could deploy, change env and"
                " destroy. Set DEPLOYER_API_TOKENS or DEPLOYER_API_TOKENS_FILE (`deployer token create NAME`"
                " makes one), or set DEPLOYER_ALLOW_ANONYMOUS=true to run open on purpose"
            )
        self.check_secret_key()

    def check_secret_key(self) -> None:
        """`serve` and `worker` must share one DEPLOYER_SECRET_KEY: the API encrypts env values, workers decrypt."""
        if not self.secret_key:
            raise SettingsError(
                "DEPLOYER_SECRET_KEY is required: the API and the workers share it to encrypt env values while"
                " they wait in Redis. Make one with `openssl rand -hex 32` and give the same value to every"
                " `deployer serve` and `deployer worker`"
            )

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
            requests_per_minute=env.integer("DO_REQUESTS_PER_MINUTE", 250, minimum=0, maximum=1_000_000),
        )
        coolify = CoolifySettings(
            api_url=env.url("COOLIFY_API_URL", "", required=require_clouds),
            api_key=env.secret("COOLIFY_API_KEY", required=require_clouds),
            project_uuid=env.text("COOLIFY_PROJECT_UUID", "", required=require_clouds),
            environment_name=env.text("COOLIFY_ENVIRONMENT_NAME", "production"),
            private_key_uuid=env.text("COOLIFY_PRIVATE_KEY_UUID", ""),
            ssh_public_key=env.ssh_public_key("COOLIFY_SSH_PUBLIC_KEY", required=require_clouds),
            requests_per_minute=env.integer("COOLIFY_REQUESTS_PER_MINUTE", 200, minimum=0, maximum=1_000_000),
        )
        tokens_file = env.text("DEPLOYER_API_TOKENS_FILE", "")
        tokens = env.api_tokens("DEPLOYER_API_TOKENS")
        file_tokens = read_tokens_file(tokens_file) if tokens_file else ()
        merge_tokens(tokens, file_tokens, "DEPLOYER_API_TOKENS_FILE")  # refuses a name or token in both
        limits = Limits(
            max_body_bytes=env.integer(
                "DEPLOYER_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=1024, maximum=64 * 1024 * 1024
            ),
            ws_per_token=env.integer("DEPLOYER_MAX_WS_PER_TOKEN", 100, minimum=1, maximum=100_000),
            ws_per_ip=env.integer("DEPLOYER_MAX_WS_PER_IP", 200, minimum=1, maximum=100_000),
            mutations_per_minute=env.integer("DEPLOYER_MUTATIONS_PER_MINUTE", 120, minimum=1, maximum=1_000_000),
        )
        return cls(
            database_url=env.database_url("DATABASE_URL", DEFAULT_DATABASE_URL),
            redis_url=env.url("REDIS_URL", "", schemes=("redis", "rediss", "unix")),
            digitalocean=digitalocean,
            coolify=coolify,
            timings=timings,
            max_active_droplets=env.integer("MAX_ACTIVE_DROPLETS", 3, minimum=1, maximum=1000),
            default_env=env.env_pairs("DEPLOYER_DEFAULT_ENV"),
            api_tokens=tokens,
            api_tokens_file=tokens_file,
            file_tokens=file_tokens,
            allow_anonymous=env.boolean("DEPLOYER_ALLOW_ANONYMOUS", False),
            secret_key=env.secret_key("DEPLOYER_SECRET_KEY"),
            limits=limits,
            app_image=env.pattern(
                "APP_DEFAULT_IMAGE",
                "nginx:alpine",
                re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_.-]+)?$"),
                "image[:tag]",
            ),
            app_port=env.integer("APP_DEFAULT_PORT", 80, minimum=1, maximum=65535),
            queue_name=env.pattern("DEPLOYER_QUEUE", "deployer", re.compile(r"^[A-Za-z0-9_.:-]{1,64}$"), "a name"),
            worker_concurrency=env.integer("WORKER_CONCURRENCY", 1000, minimum=1, maximum=10000),
            worker_redis_connections=env.integer("WORKER_REDIS_CONNECTIONS", 32, minimum=4, maximum=10000),
            log_level=env.log_level("LOG_LEVEL", "INFO"),
            assets_dir=env.text("DEPLOYER_ASSETS_DIR", str(DEFAULT_ASSETS_DIR)),
            log_format=env.log_format("LOG_FORMAT", "text"),
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
        if not regex.fullmatch(value):
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
            if not sep or not _ENV_KEY.fullmatch(key) or len(key) > 255:
                raise SettingsError(
                    f"{name} item {number} must look like KEY=value with KEY matching {_ENV_KEY.pattern}"
                )
            pairs.append((key, val))
        return tuple(pairs)

    def api_tokens(self, name: str) -> tuple[ApiToken, ...]:
        """Parse `name:token[:scope+scope]` or `name:sha256:<hex>[:scope+scope]` items separated by commas."""
        value = self._raw(name)
        if value is None:
            return ()
        items = [(f"{name} item {number}", item) for number, item in enumerate(value.split(","), start=1)]
        return check_unique_tokens([parse_token(where, item) for where, item in items], name)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.text(name, "true" if default else "false").lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name} must be true or false; got {value!r}")

    def secret_key(self, name: str) -> str:
        value = self.secret(name, required=False)
        for number, key in enumerate(value.split(",") if value else [], start=1):
            if len(key.strip()) < MIN_SECRET_KEY_LENGTH:
                raise SettingsError(
                    f"{name} key {number} must be at least {MIN_SECRET_KEY_LENGTH} characters"
                    " (make one with `openssl rand -hex 32`)"
                )
        return ",".join(key.strip() for key in value.split(",")) if value else ""

    def log_format(self, name: str, default: str) -> Literal["text", "json"]:
        value = self.text(name, default).lower()
        if value == "text":
            return "text"
        if value == "json":
            return "json"
        raise SettingsError(f"{name} must be text or json; got {value!r}")

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


# --- API tokens ---------------------------------------------------------------------------------------------


def parse_token(where: str, item: str) -> ApiToken:
    """Parse one `name:token[:scope+scope]` or `name:sha256:<64 hex>[:scope+scope]`; errors never echo a token.

    Args:
        where: names the item in an error, such as `DEPLOYER_API_TOKENS item 2` or `tokens.txt line 4`.
    """
    parts = item.strip().split(":")
    hashed = len(parts) in (3, 4) and parts[1] == "sha256"
    if hashed:
        name, digest, scopes_text = parts[0], parts[2].lower(), parts[3] if len(parts) == 4 else None
        if not _SHA256_HEX.fullmatch(digest):
            raise SettingsError(f"{where} must be name:sha256:<64 hex digits>[:scope+scope]")
        token = ""
    elif len(parts) in (2, 3):
        name, token, scopes_text, digest = parts[0], parts[1], parts[2] if len(parts) == 3 else None, ""
        if not _TOKEN_TEXT.fullmatch(token):
            raise SettingsError(
                f"{where} must be name:token[:scope+scope] with a token of 16+ printable characters"
                " (or name:sha256:<hex>[:scope+scope])"
            )
    else:
        raise SettingsError(f"{where} must be name:token[:scope+scope] or name:sha256:<hex>[:scope+scope]")
    if not _TOKEN_NAME.fullmatch(name):
        raise SettingsError(f"{where} has a bad name: use 1-64 letters, digits, '_', '.', '@' and '-'")
    scopes = frozenset(scopes_text.split("+")) if scopes_text is not None else frozenset(_TOKEN_SCOPES)
    unknown = scopes - set(_TOKEN_SCOPES)
    if unknown:
        raise SettingsError(f"{where} has unknown scopes {sorted(unknown)}; known: {', '.join(_TOKEN_SCOPES)}")
    return ApiToken(token=token, scopes=scopes, name=name, sha256=digest)


def parse_tokens_text(text: str, source: str) -> tuple[ApiToken, ...]:
    """Parse a tokens file: one token per line in the `DEPLOYER_API_TOKENS` format; `#` starts a comment."""
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if content:
            tokens.append(parse_token(f"{source} line {number}", content))
    return check_unique_tokens(tokens, source)


def read_tokens_file(path: str) -> tuple[ApiToken, ...]:
    """Read and parse `DEPLOYER_API_TOKENS_FILE`; SettingsError when it cannot be read or is invalid."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"DEPLOYER_API_TOKENS_FILE cannot be read ({type(exc).__name__})") from None
    return parse_tokens_text(text, "DEPLOYER_API_TOKENS_FILE")


def check_unique_tokens(tokens: list[ApiToken] | tuple[ApiToken, ...], source: str) -> tuple[ApiToken, ...]:
    """Refuse two tokens with one name, or one token configured twice (under any names)."""
    names: set[str] = set()
    digests: dict[str, str] = {}
    for token in tokens:
        if token.name in names:
            raise SettingsError(f"{source}: the token name {token.name!r} is used twice")
        if token.digest in digests:
            raise SettingsError(f"{source}: tokens {digests[token.digest]!r} and {token.name!r} are the same token")
        names.add(token.name)
        digests[token.digest] = token.name
    return tuple(tokens)


def merge_tokens(first: tuple[ApiToken, ...], second: tuple[ApiToken, ...], source: str) -> tuple[ApiToken, ...]:
    """Both token lists, refusing a name or a token that appears in both."""
    return check_unique_tokens([*first, *second], f"DEPLOYER_API_TOKENS and {source}")
