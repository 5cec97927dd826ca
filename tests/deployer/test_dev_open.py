"""`deployer dev` is open only on loopback, and with tokens its sandbox sits behind them too (the dev stack's
security; tests/deployer/test_devstack.py has the rest)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from deployer.embedded_redis import free_port
from tests.deployer.test_cli import run_cli
from tests.processes import FAST_PIPELINE, FAST_SANDBOX, Process, base_env, wait_http

ADMIN = "dev-admin-token-0123456789abcdef"
READER = "dev-reader-token-0123456789abcdef"


def test_dev_refuses_to_run_open_on_a_public_address() -> None:
    """Without tokens, `deployer dev --host 0.0.0.0` exits 2 and says why, before starting anything."""
    env = {"DATABASE_URL": "sqlite:///nonexistent/never-created.sqlite3"}
    result = run_cli("dev", "--host", "0.0.0.0", "--port", str(free_port()), env=env)
    assert result.returncode == 2
    assert "DEPLOYER_API_TOKENS" in result.stderr and "loopback" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_dev_with_tokens_guards_the_sandbox_and_still_deploys(tmp_path: Path) -> None:
    """With tokens, the sandbox answers only an admin token (or the worker's keys made up for the run), and a
    deployment still reaches COMPLETED."""
    port = free_port()
    env = base_env({**FAST_SANDBOX, **FAST_PIPELINE, "DEPLOYER_API_TOKENS": f"admin:{ADMIN},reader:{READER}:read"})
    for name in ("REDIS_URL", "DATABASE_URL", "DO_API_KEY"):
        env.pop(name, None)
    proc = Process("dev", ["dev", "--port", str(port)], env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", proc, timeout=30)
        state = f"{base}/sandbox/_control/state"
        assert httpx.get(state).status_code == 401
        assert httpx.get(state, headers={"Authorization": f"Bearer {READER}"}).status_code == 401
        assert httpx.get(state, headers={"Authorization": "Bearer sandbox-do"}).status_code == 401
        assert httpx.get(state, headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
        headers = {"Authorization": f"Bearer {ADMIN}"}
        deployment = httpx.post(f"{base}/graphql", json={"query": "mutation { deploy { id } }"}, headers=headers)
        deployment_id = deployment.json()["data"]["deploy"]["id"]
        query = {
            "query": "query($id: ID!) { deployment(id: $id) { status error } }",
            "variables": {"id": deployment_id},
        }
        status = "QUEUED"
        deadline = time.monotonic() + 60
        while status not in ("COMPLETED", "FAILED") and time.monotonic() < deadline:
            time.sleep(0.2)
            status = httpx.post(f"{base}/graphql", json=query, headers=headers).json()["data"]["deployment"]["status"]
        assert status == "COMPLETED", proc.output()
        output = proc.output()
        assert "admin scope" in output
        assert "OPEN" not in output
        assert ADMIN not in output and READER not in output
    finally:
        proc.stop()
