"""`deployer dev` (and `make dev`) as a person runs it: a busy port is one line and exit 2 with nothing deleted,
a restart keeps deployments and the sandbox world, FRESH starts empty, the banner lists sandbox faults, and one
dev directory serves one stack at a time."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployer.embedded_redis import free_port
from tests.processes import FAST_PIPELINE, FAST_SANDBOX, Process, base_env, wait_http

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def dev_env(**extra: str) -> dict[str, str]:
    """What `make dev` has on a machine with nothing configured, with fast sandbox timings."""
    env = base_env({**FAST_SANDBOX, **FAST_PIPELINE, **extra})
    for name in ("REDIS_URL", "DATABASE_URL", "DO_API_KEY"):
        env.pop(name, None)
    return env


def start_dev(cwd: Path, port: int, name: str, *args: str, **env: str) -> Process:
    """Start `deployer dev` in `cwd` and wait until it is ready."""
    proc = Process(name, ["dev", "--port", str(port), *args], dev_env(**env), cwd)
    wait_http(f"http://127.0.0.1:{port}/readyz", proc, timeout=60)
    return proc


def gql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """One GraphQL call; the data (asserting there is no error)."""
    body = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables}, timeout=30)
    result: dict[str, Any] = body.json()
    assert "errors" not in result, result
    data: dict[str, Any] = result["data"]
    return data


def wait_status(port: int, deployment_id: str, wanted: str) -> None:
    """Poll until the deployment has the wanted status."""
    deadline = time.monotonic() + 90
    status = None
    while time.monotonic() < deadline:
        status = gql(port, "query($id: ID!) { deployment(id: $id) { status } }", {"id": deployment_id})
        if status["deployment"]["status"] == wanted:
            return
        time.sleep(0.2)
    raise AssertionError(f"{deployment_id} stayed {status}")


def sandbox_droplets(port: int) -> list[dict[str, Any]]:
    """The droplets in the dev stack's sandbox."""
    droplets: list[dict[str, Any]] = httpx.get(f"http://127.0.0.1:{port}/sandbox/_control/state").json()["droplets"]
    return droplets


def test_a_busy_port_is_one_line_and_deletes_nothing(tmp_path: Path) -> None:
    """With the port taken: exit 2, one line naming the port and the fix, and the dev database untouched."""
    (tmp_path / ".deployer").mkdir()
    database = tmp_path / ".deployer" / "dev.sqlite3"
    database.write_bytes(b"the running instance's data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "deployer.cli", "dev", "--port", str(port), "--fresh"],
            env=dev_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(port) in lines[0] and f"make dev PORT={port + 1}" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert database.read_bytes() == b"the running instance's data"


def test_a_restart_keeps_deployments_and_the_sandbox_world_and_fresh_starts_empty(tmp_path: Path) -> None:
    """Deploy, restart: the deployment and its droplet are still there and destroy finds them; FRESH empties
    both; a second stack in the same directory is refused while the first runs; faults are in the banner."""
    port = free_port()
    first = start_dev(tmp_path, port, "dev-1", SANDBOX_FAULTS="rate_limit:1@GET:/v2/account$")
    try:
        assert "Sandbox faults ACTIVE" in first.output() and "rate_limit" in first.output()
        deployment_id = gql(port, "mutation { deploy { id } }")["deploy"]["id"]
        wait_status(port, deployment_id, "COMPLETED")
        assert len(sandbox_droplets(port)) == 1
        second = subprocess.run(
            [sys.executable, "-m", "deployer.cli", "dev", "--port", str(free_port())],
            env=dev_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert second.returncode == 2 and "another `deployer dev`" in second.stderr
    finally:
        first.stop()

    again = start_dev(tmp_path, port, "dev-2")
    try:
        assert "restored from" in again.output() and "Sandbox faults: none" in again.output()
        listed = gql(port, "{ deployments { totalCount edges { node { id status } } } }")["deployments"]
        assert listed["edges"][0]["node"] == {"id": deployment_id, "status": "COMPLETED"}
        assert len(sandbox_droplets(port)) == 1
        gql(port, "mutation($id: ID!) { destroyDeployment(id: $id) { status } }", {"id": deployment_id})
        wait_status(port, deployment_id, "DESTROYED")
        assert sandbox_droplets(port) == []
        gql(port, "mutation { deploy { id } }")
    finally:
        again.stop()

    fresh = start_dev(tmp_path, port, "dev-3", "--fresh")
    try:
        assert gql(port, "{ deployments { totalCount } }")["deployments"]["totalCount"] == 0
        assert sandbox_droplets(port) == []
        assert "Traceback" not in fresh.output()
    finally:
        fresh.stop()


def test_make_dev_passes_port_host_and_fresh_on() -> None:
    """`make dev PORT= HOST= FRESH=1` runs `deployer dev` with those options (checked with make -n)."""
    result = subprocess.run(
        ["make", "-n", "dev", "PORT=8123", "HOST=0.0.0.0", "FRESH=1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    line = next(line for line in result.stdout.splitlines() if "deployer dev" in line)
    assert "--host 0.0.0.0 --port 8123 --fresh" in line
    plain = subprocess.run(["make", "-n", "dev"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                           check=False)  # fmt: skip
    line = next(line for line in plain.stdout.splitlines() if "deployer dev" in line)
    assert "--host 127.0.0.1 --port 8000" in line and "--fresh" not in line
