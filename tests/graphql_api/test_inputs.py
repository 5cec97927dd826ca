"""`validate_deploy_input` (pure: field path and reason per problem) and `resolve_deploy_input` (defaults)."""

from __future__ import annotations

import pytest

from graphql_api.inputs import (
    MAX_ENV_VALUE_LENGTH,
    DeployDefaults,
    DeployInput,
    DockerSourceInput,
    EnvVarInput,
    GitSourceInput,
    SourceInput,
    check_env_key,
    check_env_vars,
    resolve_deploy_input,
    split_image,
    validate_deploy_input,
)
from graphql_api.types import BuildPack

NO_PORTS = "must list at least one port (or be omitted for the default)"
BAD_NAME = "must start with a letter or digit and hold only letters, digits, '.', '_' and '-'"
BAD_SLUG = "must be a DigitalOcean slug: lowercase letters, digits and '-'"
BAD_IMAGE = "must be an image name such as nginx or ghcr.io/owner/app, without a tag"
DEFAULTS = DeployDefaults(
    name_prefix="eliza",
    region="nyc3",
    size="s-1vcpu-1gb",
    image="ubuntu-24-04-x64",
    app_image="nginx:alpine",
    app_port=80,
    default_env=(("LOG", "info"),),
)


def test_no_input_and_empty_input_are_valid() -> None:
    """Every field is optional."""
    assert validate_deploy_input(None) == []
    assert validate_deploy_input(DeployInput()) == []


@pytest.mark.parametrize(
    ("data", "problems"),
    [
        (DeployInput(ports=[]), [("input.ports", NO_PORTS)]),
        (DeployInput(ports=[0, 65535, 65536]), [
            ("input.ports[0]", "must be between 1 and 65535"),
            ("input.ports[2]", "must be between 1 and 65535"),
        ]),
        (DeployInput(ports=list(range(1, 22))), [("input.ports", "must list at most 20 ports")]),
        (DeployInput(name="-bad"), [
            ("input.name", BAD_NAME),
        ]),
        (DeployInput(size="S-1VCPU"), [("input.size", BAD_SLUG)]),
        (DeployInput(image="-x"), [("input.image", BAD_SLUG)]),
        (DeployInput(source=SourceInput()), [
            ("input.source", "give exactly one of git or docker (or omit source for the default image)"),
        ]),
        (DeployInput(source=SourceInput(git=GitSourceInput(repository="http://github.com/a/b"))), [
            ("input.source.git.repository", "must be a URL starting with https://"),
        ]),
        (DeployInput(source=SourceInput(git=GitSourceInput(repository="https://user:pw@github.com/a/b"))), [
            ("input.source.git.repository", "must not contain credentials"),
        ]),
        (DeployInput(source=SourceInput(git=GitSourceInput(repository="https://github.com"))), [
            ("input.source.git.repository", "must name a repository such as https://github.com/owner/repo"),
        ]),
        (DeployInput(source=SourceInput(git=GitSourceInput(repository="https://github.com/a/b", branch="a..b",
                                                           base_directory="app"))), [
            ("input.source.git.branch", "must be a git branch name (letters, digits, '.', '_', '/', '-')"),
            ("input.source.git.baseDirectory", "must be an absolute path such as /app, without '..'"),
        ]),
        (DeployInput(source=SourceInput(docker=DockerSourceInput(image="nginx:latest", tag="bad tag"))), [
            ("input.source.docker.image", BAD_IMAGE),
            ("input.source.docker.tag", "must be a tag of letters, digits, '_', '.' and '-' (at most 128)"),
        ]),
        (DeployInput(domains=["https://a.example.com/path", "https://-bad-.com", "https://A.example.com"]), [
            ("input.domains[0]", "must be a scheme and host (and optional port) without a path"),
            ("input.domains[1]", "must name a valid host"),
        ]),
        (DeployInput(domains=["https://a.example.com", "https://a.example.com/"]), [
            ("input.domains[1]", "repeats input.domains[0]"),
        ]),
        (DeployInput(env=[EnvVarInput(key="", value=""), EnvVarInput(key="K" * 256, value="")]), [
            ("input.env[0].key", "must not be empty"),
            ("input.env[1].key", "must be at most 255 characters"),
        ]),
        (DeployInput(env=[EnvVarInput(key="BIG", value="x" * (MAX_ENV_VALUE_LENGTH + 1))]), [
            ("input.env[0].value", f"must be at most {MAX_ENV_VALUE_LENGTH} characters"),
        ]),
    ],
)  # fmt: skip
def test_problems_name_field_paths_and_reasons(data: DeployInput, problems: list[tuple[str, str]]) -> None:
    """Each invalid field is reported with its path and the reason."""
    assert validate_deploy_input(data) == problems


def test_valid_values_pass() -> None:
    """Typical valid values produce no problem."""
    data = DeployInput(
        name="my.app_1",
        source=SourceInput(
            git=GitSourceInput(
                repository="https://gitlab.com/g/sub/repo.git", branch="feature/x-1", base_directory="/web"
            )
        ),
        ports=[80, 443, 3000],
        domains=["https://app.example.com", "http://localhost:8080"],
        region="ams3",
        size="s-2vcpu-4gb",
        image="ubuntu-24-04-x64",
        env=[EnvVarInput(key="_A.b1", value="x" * MAX_ENV_VALUE_LENGTH)],
    )
    assert validate_deploy_input(data) == []
    docker = DeployInput(source=SourceInput(docker=DockerSourceInput(image="registry.local:5000/team/app", tag="v1.2")))
    assert validate_deploy_input(docker) == []


def test_problems_never_repeat_env_values() -> None:
    """Reasons describe the rule, never the offending value."""
    problems = validate_deploy_input(DeployInput(env=[EnvVarInput(key="9 sekret", value="sekret" * 10000)]))
    assert problems
    assert all("sekret" not in reason for _, reason in problems)


def test_deploy_accepts_only_default_env_flags() -> None:
    """The initial environment takes Coolify's default flags; other flags are refused, not silently dropped."""
    defaults = DeployInput(env=[EnvVarInput(key="A", value="1", is_build_time=True, is_preview=None)])
    assert validate_deploy_input(defaults) == []
    literal = DeployInput(env=[EnvVarInput(key="A", value="1", is_literal=True)])
    assert [path for path, _ in validate_deploy_input(literal)] == ["input.env[0]"]


@pytest.mark.parametrize(
    ("key", "ok"),
    [("A", True), ("_a.b_9", True), ("K" * 255, True), ("", False), ("9A", False), (".A", False),
     ("A-B", False), (" A", False), ("K" * 256, False)],
)  # fmt: skip
def test_env_keys_follow_coolifys_rule(key: str, ok: bool) -> None:
    """Keys match `^[A-Za-z_][A-Za-z0-9_.]*$` and are at most 255 characters."""
    assert (check_env_key("key", key) == []) is ok


def test_env_lists_name_every_bad_item() -> None:
    """A list reports each invalid key or value and each repeat, by index; flags are allowed by default."""
    items = [
        EnvVarInput(key="A", value="1", is_literal=True),
        EnvVarInput(key="A", value="2"),
        EnvVarInput(key="B", value="x" * (MAX_ENV_VALUE_LENGTH + 1)),
        EnvVarInput(key="1", value=""),
    ]
    assert check_env_vars("variables", items) == [
        ("variables[1].key", "repeats variables[0].key"),
        ("variables[2].value", f"must be at most {MAX_ENV_VALUE_LENGTH} characters"),
        ("variables[3].key", "must start with a letter or '_' and hold only letters, digits, '_' and '.'"),
    ]


def test_env_flags_map_to_coolifys_names() -> None:
    """The job gets Coolify's flag names, a null flag taking Coolify's default."""
    item = EnvVarInput(key="A", value="v", is_build_time=False, is_literal=None, is_preview=True)
    assert item.to_job_item() == {
        "key": "A",
        "value": "v",
        "is_buildtime": False,
        "is_runtime": True,
        "is_literal": False,
        "is_multiline": False,
        "is_preview": True,
    }


def test_resolve_fills_defaults() -> None:
    """Omitted fields take the defaults: name and droplet name from the prefix, default image and port."""
    request = resolve_deploy_input(None, defaults=DEFAULTS, deployment_id="abc")
    assert request.droplet_name == "eliza-abc"
    assert request.spec == {
        "name": "eliza-abc",
        "source": {"kind": "docker", "image": "nginx", "tag": "alpine"},
        "ports": "80",
        "domains": [],
        "region": "nyc3",
        "size": "s-1vcpu-1gb",
        "image": "ubuntu-24-04-x64",
        "env_keys": ["LOG"],
    }
    assert request.env == (("LOG", "info"),)


def test_resolve_keeps_env_values_out_of_the_spec() -> None:
    """The spec lists env keys; the values go only to the request's env (input wins over defaults)."""
    data = DeployInput(
        source=SourceInput(git=GitSourceInput(repository="https://github.com/a/b", build_pack=BuildPack.DOCKERFILE)),
        env=[EnvVarInput(key="LOG", value="debug"), EnvVarInput(key="TOKEN", value="t0ps3cret")],
    )
    request = resolve_deploy_input(data, defaults=DEFAULTS, deployment_id="id1")
    assert request.spec["env_keys"] == ["LOG", "TOKEN"]
    assert request.spec["source"] == {
        "kind": "git",
        "repository": "https://github.com/a/b",
        "branch": "main",
        "build_pack": "dockerfile",
        "base_directory": None,
    }
    assert "t0ps3cret" not in str(request.spec)
    assert "t0ps3cret" not in repr(request)
    assert request.env == (("LOG", "debug"), ("TOKEN", "t0ps3cret"))


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("nginx:alpine", ("nginx", "alpine")),
        ("nginx", ("nginx", "latest")),
        ("registry.local:5000/app", ("registry.local:5000/app", "latest")),
        ("registry.local:5000/app:v1", ("registry.local:5000/app", "v1")),
    ],
)
def test_split_image(reference: str, expected: tuple[str, str]) -> None:
    """`image[:tag]` splits at the tag colon, not at a registry port."""
    assert split_image(reference) == expected
