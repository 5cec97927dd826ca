"""The `deployer` command: settings refused at start, the schema printer, and `deployer dev` end to end."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from redis import Redis

from deployer.embedded_redis import free_port
from jobs.budget import budget_key
from tests.processes import FAST_PIPELINE, FAST_SANDBOX, SSH_PUBLIC_KEY, Process, base_env, wait_http

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m deployer.cli ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "deployer.cli", *args],
        env=base_env(env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )


def test_schema_prints_the_committed_sdl() -> None:
    """`deployer schema` prints exactly schema.graphql."""
    result = run_cli("schema")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (REPO_ROOT / "schema.graphql").read_text()


@pytest.mark.parametrize(("name", "value"), [("MAX_ACTIVE_DROPLETS", "-1"), ("DROPLET_TIMEOUT_S", "soon")])
def test_an_invalid_setting_stops_the_program_naming_it(name: str, value: str) -> None:
    """`deployer serve` with an invalid setting exits 2 with a message naming the variable."""
    result = run_cli("serve", env={"REDIS_URL": "redis://127.0.0.1:1/0", name: value})
    assert result.returncode == 2
    assert name in result.stderr


def test_worker_refuses_to_start_without_cloud_credentials() -> None:
    """`deployer worker` needs DO_API_KEY and says so."""
    result = run_cli("worker", env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2
    assert "DO_API_KEY" in result.stderr


#: The realistic sandbox (its default timings: boot 4 s, IP 1 s later, sshd 3 s after that, Docker install 2 s,
#: build 5 s), polled every second rather than every five to keep the test short.
REALISTIC = {f"{stage}_POLL_INTERVAL_S": "1" for stage in ("DROPLET", "SERVER", "BUILD")}


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("timings", [FAST_SANDBOX | FAST_PIPELINE, REALISTIC], ids=["fast", "realistic"])
def test_dev_runs_a_sandbox_deployment_to_completed(tmp_path: Path, timings: dict[str, str]) -> None:
    """`deployer dev` with nothing configured serves GraphiQL and takes a deployment to COMPLETED, announcing
    SANDBOX MODE; with the sandbox's realistic timings it waits out the late sshd on the way."""
    port = free_port()
    env = base_env(timings)
    for name in ("REDIS_URL", "DATABASE_URL", "DO_API_KEY"):
        env.pop(name, None)
    proc = Process("dev", ["dev", "--port", str(port)], env, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", proc, timeout=30)
        assert "text/html" in httpx.get(f"{base}/graphql", headers={"accept": "text/html"}).headers["content-type"]
        query = {"query": 'mutation { deploy(input: {name: "hello"}) { id status } }'}
        deployment = httpx.post(f"{base}/graphql", json=query).json()["data"]["deploy"]
        status = deployment["status"]
        deadline = time.monotonic() + 90
        while status not in ("COMPLETED", "FAILED") and time.monotonic() < deadline:
            time.sleep(0.2)
            body = httpx.post(
                f"{base}/graphql",
                json={
                    "query": "query($id: ID!) { deployment(id: $id) { status error } }",
                    "variables": {"id": deployment["id"]},
                },
            ).json()
            status = body["data"]["deployment"]["status"]
        assert status == "COMPLETED", proc.output()
        events = httpx.post(
            f"{base}/graphql",
            json={
                "query": "query($id: ID!) { deployment(id: $id) { events { message } } }",
                "variables": {"id": deployment["id"]},
            },
        ).json()["data"]["deployment"]["events"]
        if timings is REALISTIC:
            assert any("Coolify could not reach the server yet" in e["message"] for e in events), events
        output = proc.output()
        assert "SANDBOX MODE" in output
        assert "OPEN: no API tokens" in output
        assert f"{base}/graphql" in output
        assert "Traceback" not in output
    finally:
        proc.stop()


def test_migrate_brings_an_empty_database_up_to_date(tmp_path: Path) -> None:
    """`deployer migrate` creates the schema in a fresh database and is harmless when run again."""
    env = {"DATABASE_URL": f"sqlite://{tmp_path / 'fresh.sqlite3'}"}
    for _ in range(2):
        result = run_cli("migrate", env=env)
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stderr
    assert (tmp_path / "fresh.sqlite3").exists()


def test_doctor_draws_from_the_shared_budgets(tmp_path: Path, redis_url: str) -> None:
    """With REDIS_URL set, `deployer doctor`'s requests go through the budgets the workers share."""
    port = free_port()
    sandbox = Process("sandbox", ["sandbox", "--port", str(port)], base_env(FAST_SANDBOX), tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/sandbox/_control/state", sandbox)
        do_token, coolify_token = f"do-{uuid.uuid4().hex}", f"1|{uuid.uuid4().hex}"
        result = run_cli(
            "doctor",
            env={
                "REDIS_URL": redis_url,
                "DO_API_URL": f"http://127.0.0.1:{port}/sandbox/digitalocean",
                "DO_API_KEY": do_token,
                "COOLIFY_API_URL": f"http://127.0.0.1:{port}/sandbox/coolify",
                "COOLIFY_API_KEY": coolify_token,
                "COOLIFY_PROJECT_UUID": "sandbox-project",
                "COOLIFY_SSH_PUBLIC_KEY": SSH_PUBLIC_KEY,
                "DO_REQUESTS_PER_MINUTE": "6000",
                "COOLIFY_REQUESTS_PER_MINUTE": "6000",
            },
        )
    finally:
        sandbox.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    redis = Redis.from_url(redis_url)
    try:
        for api, token in (("digitalocean", do_token), ("coolify", coolify_token)):
            assert int(redis.hget(budget_key(api, token) + ":stats", "requests") or 0) > 0, api
    finally:
        redis.close()
