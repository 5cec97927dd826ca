"""`deployer serve` is closed unless told otherwise, takes hashed tokens, and rotates them on SIGHUP; `deployer
token create` makes a token that the server then accepts. Real processes, real HTTP and websockets."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from deployer.embedded_redis import free_port
from tests.deployer.test_cli import run_cli
from tests.graphql_api.test_wsguard import close_code
from tests.processes import SECRET_KEY, Process, base_env, wait_http

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
QUERY = {"query": "{ dropletCount { limit } }"}
Start = Callable[[dict[str, str]], tuple[Process, str]]


def serve_env(redis_url: str, database_url: str, queue: str, **extra: str) -> dict[str, str]:
    """What `deployer serve` needs, plus `extra`."""
    return base_env(
        {
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "DEPLOYER_QUEUE": queue,
            "DEPLOYER_SECRET_KEY": SECRET_KEY,
            **extra,
        }
    )


@pytest.fixture
def env(redis_url: str, database_url: str, queue_name: str) -> dict[str, str]:
    """The environment of a `deployer serve` with no token settings."""
    return serve_env(redis_url, database_url, queue_name)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start `deployer serve` processes on free ports; all stopped at the end."""
    processes: list[Process] = []

    def run(env: dict[str, str]) -> tuple[Process, str]:
        port = free_port()
        process = Process(f"serve-{len(processes)}", ["serve", "--port", str(port)], env, tmp_path)
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", process)
        return process, url

    yield run
    for process in processes:
        process.stop()


def test_serve_without_tokens_refuses_to_start(env: dict[str, str]) -> None:
    """No tokens and no DEPLOYER_ALLOW_ANONYMOUS: exit 2 with a message that says what to set."""
    result = run_cli("serve", "--port", str(free_port()), env=env)
    assert result.returncode == 2
    assert "DEPLOYER_API_TOKENS" in result.stderr
    assert "DEPLOYER_ALLOW_ANONYMOUS" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_and_worker_need_the_secret_key(env: dict[str, str]) -> None:
    """Without DEPLOYER_SECRET_KEY, neither the API nor a worker starts (they must share one)."""
    env = {k: v for k, v in env.items() if k != "DEPLOYER_SECRET_KEY"}
    serve = run_cli("serve", env={**env, "DEPLOYER_ALLOW_ANONYMOUS": "true"})
    clouds = {
        "DO_API_KEY": "x" * 20,
        "COOLIFY_API_KEY": "1|" + "x" * 20,
        "COOLIFY_API_URL": "http://127.0.0.1:1",
        "COOLIFY_PROJECT_UUID": "p",
        "COOLIFY_SSH_PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOycV6yacZ1iezqAOdgb8SoSEr/veIPsDDsJhlP2sP2A c",
    }
    worker = run_cli("worker", env={**env, **clouds})
    for result in (serve, worker):
        assert result.returncode == 2
        assert "DEPLOYER_SECRET_KEY" in result.stderr


def test_serve_with_allow_anonymous_warns_and_answers_loopback_only(env: dict[str, str], start: Start) -> None:
    """DEPLOYER_ALLOW_ANONYMOUS=true starts open, says so loudly, and answers only loopback Host names."""
    process, url = start({**env, "DEPLOYER_ALLOW_ANONYMOUS": "true"})
    assert httpx.post(f"{url}/graphql", json=QUERY).json()["data"]["dropletCount"]["limit"] == 3
    rebound = httpx.post(f"{url}/graphql", json=QUERY, headers={"Host": "rebound.evil.example"})
    assert rebound.status_code == 421
    assert "anyone who can send requests" in process.output()


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ("a:tok-0123456789abcdef,a:tok-fedcba9876543210", "used twice"),
        ("a:tok-0123456789abcdef,b:tok-0123456789abcdef", "same token"),
        ("a:sha256:" + "0" * 63, "64 hex"),
    ],
)
def test_duplicate_or_malformed_tokens_are_refused_at_start(env: dict[str, str], tokens: str, message: str) -> None:
    """Two tokens with one name, one token twice, or a bad hash: exit 2, naming the problem, never the token."""
    result = run_cli("serve", env={**env, "DEPLOYER_API_TOKENS": tokens})
    assert result.returncode == 2
    assert message in result.stderr
    assert "tok-0123456789abcdef" not in result.stderr


def test_token_create_makes_a_token_the_server_accepts(env: dict[str, str], start: Start) -> None:
    """`deployer token create ci --scopes read,deploy` prints the token once and a hashed line; a server
    configured with that line accepts the token with exactly those scopes."""
    created = run_cli("token", "create", "ci", "--scopes", "read,deploy", env=env)
    assert created.returncode == 0, created.stderr
    token, line = created.stdout.split()
    assert token.startswith("dpl_") and len(token) > 40
    assert line.startswith("ci:sha256:") and line.endswith(":read+deploy")
    assert token not in line
    _, url = start({**env, "DEPLOYER_API_TOKENS": line})
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{url}/graphql", json=QUERY, headers=headers).json()["data"]["dropletCount"]["limit"] == 3
    env_change = {"query": 'mutation { deleteEnv(applicationUuid: "abc", key: "K") { deleted } }'}
    forbidden = httpx.post(f"{url}/graphql", json=env_change, headers=headers).json()
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert httpx.post(f"{url}/graphql", json=QUERY).status_code == 401


def test_token_create_refuses_an_unknown_scope(env: dict[str, str]) -> None:
    """A scope the server would not accept is refused before any token is printed."""
    created = run_cli("token", "create", "ci", "--scopes", "read,root", env=env)
    assert created.returncode == 2
    assert created.stdout == ""
    assert "root" in created.stderr


async def _open_ws(url: str, token: str) -> ClientConnection:
    ws = await connect(url.replace("http://", "ws://") + "/graphql", subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authToken": token}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    return ws


async def test_sighup_rereads_the_tokens_file_and_closes_removed_tokens_websockets(
    env: dict[str, str], start: Start, tmp_path: Path
) -> None:
    """Rotation without restart: after the file changes and the process gets SIGHUP, the removed token is
    refused over HTTP, its open websocket is closed with 4401 within seconds, and the kept and new tokens work."""
    old, kept, new = "old-token-0123456789abcdef", "kept-token-0123456789abcdef", "new-token-0123456789abcdef"
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# rotated by hand\nold:{old}:read\nkept:{kept}:read\n")
    process, url = start({**env, "DEPLOYER_API_TOKENS_FILE": str(tokens_file)})
    old_ws = await _open_ws(url, old)
    kept_ws = await _open_ws(url, kept)
    tokens_file.write_text(f"kept:{kept}:read\nnew:{new}:read\n")
    process.popen.send_signal(signal.SIGHUP)
    assert await close_code(old_ws) == 4401  # waits at most a few seconds, never forever
    async with httpx.AsyncClient(base_url=url) as http:
        for token, status in ((old, 401), (kept, 200), (new, 200)):
            response = await http.post("/graphql", json=QUERY, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == status, token
    await kept_ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(kept_ws.recv(), 10))["type"] == "pong"
    await kept_ws.close()
    tokens_file.write_text("broken line without a token\n")
    process.popen.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "kept the previous API tokens" not in process.output() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert "kept the previous API tokens" in process.output()
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.post("/graphql", json=QUERY, headers={"Authorization": f"Bearer {new}"})
    assert response.status_code == 200
    for secret in (old, kept, new):
        assert secret not in process.output()
