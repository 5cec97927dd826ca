"""Input types of the mutations, their validation, and the deploy request they resolve to.

`validate_deploy_input()` is pure: it returns every problem as (field path, reason), such as
`("input.ports[1]", "must be between 1 and 65535")`, and never echoes a value (an env value may be a secret).
The env mutations share the variable checks (`check_env_key`, `check_env_value`, `check_env_vars`).
`resolve_deploy_input()` then fills the defaults and splits the request into the spec stored on the row
(keys only) and the environment that travels to the job.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeGuard, TypeVar
from urllib.parse import urlsplit

import strawberry

from graphql_api.errors import Problem
from graphql_api.types import BuildPack

#: Coolify's rule for environment variable keys.
ENV_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
MAX_ENV_KEY_LENGTH = 255
#: Longest environment value accepted (32 KiB), well under what Coolify stores.
MAX_ENV_VALUE_LENGTH = 32768
MAX_ENV_VARS = 200
MAX_PORTS = 20
MAX_DOMAINS = 20
MAX_NAME_LENGTH = 100
MAX_URL_LENGTH = 2048
MAX_IDEMPOTENCY_KEY_LENGTH = 255
#: How long an idempotency key returns the deployment it created.
IDEMPOTENCY_WINDOW_HOURS = 24
#: DigitalOcean slugs (regions, sizes, images).
SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*$")
MAX_SLUG_LENGTH = 64
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
BRANCH_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$")
BASE_DIRECTORY_PATTERN = re.compile(r"^/[A-Za-z0-9._/-]*$")
IMAGE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*(?::[0-9]{1,5})?(?:/[a-z0-9][a-z0-9._-]*)*$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
#: Coolify's resource uuids: `new_public_id()` is 24 lowercase letters and digits (bootstrap/helpers/shared.php);
#: older instances made cuid2s. Dashes are allowed so a UUID is "unknown" (NOT_FOUND) rather than malformed.
APPLICATION_UUID_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
_T = TypeVar("_T")


@strawberry.input(description="A public git repository that Coolify builds.")
class GitSourceInput:
    """Where the code is and how Coolify builds it."""

    repository: str = strawberry.field(description="An https:// URL of a public repository.")
    branch: str = "main"
    build_pack: BuildPack = BuildPack.NIXPACKS
    base_directory: str | None = strawberry.field(default=strawberry.UNSET, description="Such as `/app`.")


@strawberry.input(description="A ready Docker image pulled from a registry.")
class DockerSourceInput:
    """An image without its tag, and the tag."""

    image: str
    tag: str = "latest"


@strawberry.input(description="Exactly one of `git` or `docker`; omit the whole source for the default image.")
class SourceInput:
    """What to deploy."""

    git: GitSourceInput | None = strawberry.UNSET
    docker: DockerSourceInput | None = strawberry.UNSET


@strawberry.input(
    description=(
        "One environment variable; the value is never stored or shown. The flags default to Coolify's own"
        " defaults; `deploy` accepts only those defaults (change flags later with `bulkSetEnv`)."
    )
)
class EnvVarInput:
    """A key (Coolify's rule), its value and Coolify's flags."""

    key: str = strawberry.field(
        description=f"Letters, digits, '_', '.'; starting with a letter or '_'; at most {MAX_ENV_KEY_LENGTH}."
    )
    value: str = strawberry.field(description=f"At most {MAX_ENV_VALUE_LENGTH} characters; may be empty.")
    is_build_time: bool | None = strawberry.field(
        default=True, description="Available while Coolify builds the application (Coolify's `is_buildtime`)."
    )
    is_runtime: bool | None = strawberry.field(default=True, description="Available to the running container.")
    is_literal: bool | None = strawberry.field(
        default=False, description="Taken literally: `$OTHER` references in the value are not expanded."
    )
    is_multiline: bool | None = strawberry.field(default=False, description="The value spans several lines.")
    is_preview: bool | None = strawberry.field(
        default=False,
        description="Set the row of preview (pull request) deployments instead of the production row.",
    )

    def flags(self) -> dict[str, bool]:
        """The flags under Coolify's names, a null flag taking Coolify's default."""
        return {
            "is_buildtime": _flag(self.is_build_time, True),
            "is_runtime": _flag(self.is_runtime, True),
            "is_literal": _flag(self.is_literal, False),
            "is_multiline": _flag(self.is_multiline, False),
            "is_preview": _flag(self.is_preview, False),
        }

    def has_default_flags(self) -> bool:
        """Whether every flag has Coolify's default."""
        return self.flags() == COOLIFY_ENV_FLAG_DEFAULTS

    def to_job_item(self) -> dict[str, object]:
        """The variable as the env job takes it (key, value and Coolify's flag names)."""
        return {"key": self.key, "value": self.value, **self.flags()}


#: Coolify's defaults of the variable flags the API exposes (is_shown_once is always false).
COOLIFY_ENV_FLAG_DEFAULTS = {
    "is_buildtime": True,
    "is_runtime": True,
    "is_literal": False,
    "is_multiline": False,
    "is_preview": False,
}


def _flag(value: bool | None, default: bool) -> bool:
    """A nullable boolean argument: null (or omitted) takes the default."""
    return default if value is None or value is strawberry.UNSET else bool(value)


@strawberry.input(description="What to deploy and where; every field is optional.")
class DeployInput:
    """The `deploy` mutation's input."""

    name: str | None = strawberry.field(
        default=strawberry.UNSET, description="The application's name; default `<prefix>-<deployment id>`."
    )
    source: SourceInput | None = strawberry.field(
        default=strawberry.UNSET, description="Default: the configured default Docker image."
    )
    ports: list[int] | None = strawberry.field(
        default=strawberry.UNSET, description="Ports the application exposes (1-65535, unique, at most 20)."
    )
    domains: list[str] | None = strawberry.field(
        default=strawberry.UNSET, description="http:// or https:// URLs the application answers on."
    )
    region: str | None = strawberry.field(default=strawberry.UNSET, description="DigitalOcean region slug.")
    size: str | None = strawberry.field(default=strawberry.UNSET, description="DigitalOcean size slug.")
    image: str | None = strawberry.field(default=strawberry.UNSET, description="DigitalOcean image slug.")
    env: list[EnvVarInput] | None = strawberry.field(
        default=strawberry.UNSET, description="Initial environment; later entries may not repeat a key."
    )
    idempotency_key: str | None = strawberry.field(
        default=strawberry.UNSET,
        description=(
            f"1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable characters chosen by the caller. Within"
            f" {IDEMPOTENCY_WINDOW_HOURS} h, `deploy` with the same key and the same input returns the deployment"
            " the first call created (even when retries race, only one is created); the same key with a"
            " different input is refused. Environment values are not compared."
        ),
    )


def _given(value: _T | None) -> TypeGuard[_T]:
    """Whether an optional input field was given a value (neither omitted nor null)."""
    return value is not None and value is not strawberry.UNSET


def validate_deploy_input(data: DeployInput | None, *, path: str = "input") -> list[Problem]:
    """Every problem of a `DeployInput` as (field path, reason); an empty list means valid."""
    if data is None:
        return []
    problems: list[Problem] = []
    if _given(data.name):
        problems += _check_name(f"{path}.name", data.name)
    if _given(data.source):
        problems += _check_source(f"{path}.source", data.source)
    if _given(data.ports):
        problems += _check_ports(f"{path}.ports", data.ports)
    if _given(data.domains):
        problems += _check_domains(f"{path}.domains", data.domains)
        if _given(data.source) and _given(data.source.git) and data.source.git.build_pack is BuildPack.DOCKERCOMPOSE:
            # Coolify refuses `domains` for compose apps (ApplicationsController: it wants
            # docker_compose_domains per service, which only exist once the compose file is parsed).
            problems.append(
                (
                    f"{path}.domains",
                    "cannot be used with the DOCKERCOMPOSE build pack: Coolify sets domains per compose service;"
                    " set them in Coolify after the deployment",
                )
            )
    for name in ("region", "size", "image"):
        value = getattr(data, name)
        if _given(value):
            problems += _check_slug(f"{path}.{name}", value)
    if _given(data.env):
        problems += check_env_vars(f"{path}.env", data.env, flags_allowed=False)
    if data.idempotency_key is not None and data.idempotency_key is not strawberry.UNSET:
        problems += _check_idempotency_key(f"{path}.idempotencyKey", data.idempotency_key)
    return problems


def _check_idempotency_key(path: str, key: str) -> list[Problem]:
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        return [(path, f"must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")]
    if not key.isprintable():
        return [(path, "must hold only printable characters (no control characters or line breaks)")]
    return []


def idempotency_key(data: DeployInput | None) -> str | None:
    """The input's idempotency key, or None when none was given."""
    if data is None or not _given(data.idempotency_key):
        return None
    return data.idempotency_key


def deploy_input_hash(data: DeployInput | None) -> str:
    """SHA-256 of the input in a canonical form, telling a retry (same input) from a reused key.

    Every field counts as given (an omitted field differs from one given its default value), except the key
    itself and the environment's values: only their keys are compared, since deployer keeps nothing derived
    from a value.
    """
    data = data or DeployInput()
    source: dict[str, object] | None = None
    if _given(data.source):
        if _given(data.source.git):
            git = data.source.git
            base = git.base_directory if _given(git.base_directory) else None
            source = {"git": [git.repository, git.branch, git.build_pack.value, base]}
        elif _given(data.source.docker):
            source = {"docker": [data.source.docker.image, data.source.docker.tag]}
    canonical = {
        "name": data.name if _given(data.name) else None,
        "source": source,
        "ports": list(data.ports) if _given(data.ports) else None,
        "domains": list(data.domains) if _given(data.domains) else None,
        "region": data.region if _given(data.region) else None,
        "size": data.size if _given(data.size) else None,
        "image": data.image if _given(data.image) else None,
        "env_keys": [item.key for item in data.env] if _given(data.env) else None,
    }
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def _check_name(path: str, name: str) -> list[Problem]:
    if not name:
        return [(path, "must not be empty")]
    if len(name) > MAX_NAME_LENGTH:
        return [(path, f"must be at most {MAX_NAME_LENGTH} characters")]
    if not NAME_PATTERN.fullmatch(name):
        return [(path, "must start with a letter or digit and hold only letters, digits, '.', '_' and '-'")]
    return []


def _check_source(path: str, source: SourceInput) -> list[Problem]:
    git, docker = source.git, source.docker
    if _given(git) and _given(docker):
        return [(path, "give exactly one of git or docker, not both")]
    if _given(git):
        return _check_git(f"{path}.git", git)
    if _given(docker):
        return _check_docker(f"{path}.docker", docker)
    return [(path, "give exactly one of git or docker (or omit source for the default image)")]


def _check_git(path: str, git: GitSourceInput) -> list[Problem]:
    problems: list[Problem] = []
    repo = git.repository
    if len(repo) > MAX_URL_LENGTH:
        problems.append((f"{path}.repository", f"must be at most {MAX_URL_LENGTH} characters"))
    else:
        reason = _url_problem(repo, schemes=("https",), allow_path=True)
        if reason:
            problems.append((f"{path}.repository", reason))
    branch = git.branch
    if (
        not branch
        or len(branch) > 255
        or not BRANCH_PATTERN.fullmatch(branch)
        or ".." in branch
        or branch.endswith("/")
    ):
        problems.append((f"{path}.branch", "must be a git branch name (letters, digits, '.', '_', '/', '-')"))
    base = git.base_directory
    if _given(base) and (len(base) > 255 or not BASE_DIRECTORY_PATTERN.fullmatch(base) or ".." in base.split("/")):
        problems.append((f"{path}.baseDirectory", "must be an absolute path such as /app, without '..'"))
    return problems


def _check_docker(path: str, docker: DockerSourceInput) -> list[Problem]:
    problems: list[Problem] = []
    if not docker.image or len(docker.image) > 255 or not IMAGE_PATTERN.fullmatch(docker.image):
        problems.append((f"{path}.image", "must be an image name such as nginx or ghcr.io/owner/app, without a tag"))
    if not TAG_PATTERN.fullmatch(docker.tag):
        problems.append((f"{path}.tag", "must be a tag of letters, digits, '_', '.' and '-' (at most 128)"))
    return problems


def _check_ports(path: str, ports: Sequence[int]) -> list[Problem]:
    if not ports:
        return [(path, "must list at least one port (or be omitted for the default)")]
    if len(ports) > MAX_PORTS:
        return [(path, f"must list at most {MAX_PORTS} ports")]
    problems: list[Problem] = []
    seen: dict[int, int] = {}
    for index, port in enumerate(ports):
        if not 1 <= port <= 65535:
            problems.append((f"{path}[{index}]", "must be between 1 and 65535"))
        elif port in seen:
            problems.append((f"{path}[{index}]", f"repeats {path}[{seen[port]}]"))
        else:
            seen[port] = index
    return problems


def _check_domains(path: str, domains: Sequence[str]) -> list[Problem]:
    if len(domains) > MAX_DOMAINS:
        return [(path, f"must list at most {MAX_DOMAINS} domains")]
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, domain in enumerate(domains):
        reason = _url_problem(domain, schemes=("http", "https"), allow_path=False)
        key = domain.lower().rstrip("/")
        if reason:
            problems.append((f"{path}[{index}]", reason))
        elif key in seen:
            problems.append((f"{path}[{index}]", f"repeats {path}[{seen[key]}]"))
        else:
            seen[key] = index
    return problems


def _check_slug(path: str, value: str) -> list[Problem]:
    if len(value) > MAX_SLUG_LENGTH or not SLUG_PATTERN.fullmatch(value):
        return [(path, "must be a DigitalOcean slug: lowercase letters, digits and '-'")]
    return []


def check_application_uuid(path: str, value: str) -> list[Problem]:
    """Problems of an application uuid argument: Coolify's shape, at most 64 characters (never echoed)."""
    if not APPLICATION_UUID_PATTERN.fullmatch(value):
        return [(path, "must be a Coolify application uuid: lowercase letters, digits and '-', at most 64")]
    return []


def check_env_key(path: str, key: str) -> list[Problem]:
    """Problems of an environment key under Coolify's rule (the reason never repeats the key)."""
    if not key:
        return [(path, "must not be empty")]
    if len(key) > MAX_ENV_KEY_LENGTH:
        return [(path, f"must be at most {MAX_ENV_KEY_LENGTH} characters")]
    if not ENV_KEY_PATTERN.fullmatch(key):
        return [(path, "must start with a letter or '_' and hold only letters, digits, '_' and '.'")]
    return []


def check_env_value(path: str, value: str) -> list[Problem]:
    """Problems of an environment value: only its size (the reason never repeats the value)."""
    if len(value) > MAX_ENV_VALUE_LENGTH:
        return [(path, f"must be at most {MAX_ENV_VALUE_LENGTH} characters")]
    return []


def check_env_vars(path: str, env: Sequence[EnvVarInput], *, flags_allowed: bool = True) -> list[Problem]:
    """Problems of a list of variables: at most `MAX_ENV_VARS`, valid keys and values, no key twice.

    Args:
        flags_allowed: False where only Coolify's default flags are supported (`deploy`).
    """
    if len(env) > MAX_ENV_VARS:
        return [(path, f"must list at most {MAX_ENV_VARS} variables")]
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(env):
        key_path = f"{path}[{index}].key"
        key_problems = check_env_key(key_path, item.key)
        if key_problems:
            problems += key_problems
        elif item.key in seen:
            problems.append((key_path, f"repeats {path}[{seen[item.key]}].key"))
        else:
            seen[item.key] = index
        problems += check_env_value(f"{path}[{index}].value", item.value)
        if not flags_allowed and not item.has_default_flags():
            problems.append(
                (
                    f"{path}[{index}]",
                    "flags other than Coolify's defaults are not supported here; use bulkSetEnv",
                )
            )
    return problems


def _url_problem(value: str, *, schemes: tuple[str, ...], allow_path: bool) -> str | None:
    """Why a URL is unacceptable, or None; the reason never repeats the URL."""
    wanted = " or ".join(f"{scheme}://" for scheme in schemes)
    if not value or any(ch.isspace() for ch in value) or len(value) > MAX_URL_LENGTH:
        return f"must be a URL starting with {wanted}"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return f"must be a URL starting with {wanted}"
    if parts.scheme not in schemes:
        return f"must be a URL starting with {wanted}"
    if parts.username is not None or parts.password is not None:
        return "must not contain credentials"
    host = parts.hostname or ""
    if not host or len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        return "must name a valid host"
    if port == 0:
        return "must not use port 0"
    if not allow_path and (parts.path not in ("", "/") or parts.query or parts.fragment):
        return "must be a scheme and host (and optional port) without a path"
    if allow_path and (parts.path in ("", "/") or parts.query or parts.fragment):
        return "must name a repository such as https://github.com/owner/repo"
    return None


@dataclass(frozen=True)
class DeployDefaults:
    """What an omitted `DeployInput` field becomes (from settings, passed down by the resolver)."""

    name_prefix: str
    region: str
    size: str
    image: str
    app_image: str
    app_port: int
    default_env: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class DeployRequest:
    """A validated deploy request: the spec stored on the row, and the environment for the job."""

    droplet_name: str
    spec: dict[str, object]
    env: tuple[tuple[str, str], ...] = field(repr=False)
    #: Which of region, size and image the caller gave (the others came from the settings).
    given: frozenset[str] = frozenset()


def split_image(reference: str) -> tuple[str, str]:
    """Split `image[:tag]` into (image, tag); a registry port (`host:5000/app`) is not a tag."""
    image, sep, tag = reference.rpartition(":")
    if not sep or "/" in tag:
        return reference, "latest"
    return image, tag


def resolve_deploy_input(data: DeployInput | None, *, defaults: DeployDefaults, deployment_id: str) -> DeployRequest:
    """Fill the defaults of a validated input; the spec holds env keys only, the values go to the job."""
    data = data or DeployInput()
    default_name = f"{defaults.name_prefix}-{deployment_id}"
    source = data.source if _given(data.source) else None
    source_spec: dict[str, object]
    if source is not None and _given(source.git):
        git = source.git
        assert git is not None
        source_spec = {
            "kind": "git",
            "repository": git.repository,
            "branch": git.branch,
            "build_pack": git.build_pack.value,
            "base_directory": git.base_directory if _given(git.base_directory) else None,
        }
    elif source is not None and _given(source.docker):
        docker = source.docker
        assert docker is not None
        source_spec = {"kind": "docker", "image": docker.image, "tag": docker.tag}
    else:
        image, tag = split_image(defaults.app_image)
        source_spec = {"kind": "docker", "image": image, "tag": tag}
    ports = list(data.ports) if _given(data.ports) else [defaults.app_port]
    env = dict(defaults.default_env)
    if _given(data.env):
        env.update((item.key, item.value) for item in data.env)
    spec: dict[str, object] = {
        "name": data.name if _given(data.name) else default_name,
        "source": source_spec,
        "ports": ",".join(str(port) for port in ports),
        "domains": list(data.domains) if _given(data.domains) else [],
        "region": data.region if _given(data.region) else defaults.region,
        "size": data.size if _given(data.size) else defaults.size,
        "image": data.image if _given(data.image) else defaults.image,
        "env_keys": list(env),
    }
    given = frozenset(name for name in ("region", "size", "image") if _given(getattr(data, name)))
    return DeployRequest(droplet_name=default_name, spec=spec, env=tuple(env.items()), given=given)
