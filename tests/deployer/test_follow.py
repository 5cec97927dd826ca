"""`deployer deploy --wait` and `deployer follow` against a running stack (real processes, websockets)."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployer.follow import EXIT_ERROR, FollowError, Renderer, parse_env
from tests.processes import Stack, base_env, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def stack(tmp_path: Path, redis_url: str, database_url: str, queue_name: str) -> Iterator[Stack]:
    """A running sandbox + API + worker."""
    with running_stack(tmp_path, redis_url=redis_url, database_url=database_url, queue=queue_name) as running:
        yield running


def cli(stack: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a client subcommand against the stack's API."""
    return subprocess.run(
        [sys.executable, "-m", "deployer.cli", *args, "--url", stack.api_url],
        env=base_env(env or {}),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_deploy_wait_follows_to_completed_and_exits_zero(stack: Stack) -> None:
    """`deploy --wait` prints the id, one line per event (not a terminal), and exits 0 on COMPLETED."""
    result = cli(stack, "deploy", "--name", "web", "--image", "nginx:alpine", "--port", "80", "--wait",
                 "--env", "API_TOKEN", env={"API_TOKEN": "from-the-environment"})  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("deployment ") and "queued" in lines[0]
    assert any("CREATE_DROPLET" in line for line in lines)
    assert "COMPLETED" in lines[-1]
    assert "from-the-environment" not in result.stdout


def test_follow_exits_one_when_the_deployment_fails(stack: Stack) -> None:
    """`follow` of a deployment whose build fails exits 1 and prints the error."""
    httpx.post(f"{stack.sandbox_url}/sandbox/_control/faults", json={"spec": "build_fails"})
    created = cli(stack, "deploy")
    deployment_id = created.stdout.split()[1]
    result = cli(stack, "follow", deployment_id)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout.splitlines()[-1]
    assert "error:" in result.stdout.splitlines()[-1]


def test_follow_of_an_unknown_deployment_exits_two(stack: Stack) -> None:
    """An unknown id is reported with the API's NOT_FOUND and exit status 2."""
    result = cli(stack, "follow", "00000000-0000-0000-0000-000000000000")
    assert result.returncode == EXIT_ERROR
    assert "NOT_FOUND" in result.stdout


def test_the_live_renderer_redraws_one_line_with_a_bar() -> None:
    """On a terminal each event redraws the same line with a bar over the stages."""
    out = io.StringIO()
    renderer = Renderer(out, live=True)
    renderer.event({"sequence": 5, "status": "PROCESSING", "stage": "WAIT_DROPLET", "message": "status new"})
    renderer.event({"sequence": 9, "status": "COMPLETED", "stage": "DONE", "message": "Deployment completed"})
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 2
    assert "3/9" in text
    assert "[" + "#" * 24 + "] 9/9" in text


def test_env_without_a_value_is_read_from_the_environment() -> None:
    """`--env KEY` takes the value from the environment and refuses a key that is not set."""
    assert parse_env(["A=1", "B"], {"B": "two"}) == [{"key": "A", "value": "1"}, {"key": "B", "value": "two"}]
    with pytest.raises(FollowError, match="MISSING"):
        parse_env(["MISSING"], {})
