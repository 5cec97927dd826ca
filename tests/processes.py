"""Real processes for end-to-end tests: `deployer sandbox`, `deployer serve` and `deployer worker`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from deployer.embedded_redis import free_port
from sandbox.state import DEFAULT_COOLIFY_PUBLIC_KEY

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The real clouds' order of events, fast: sshd answers after the IP appears, lists lag creates.
FAST_SANDBOX = {
    "SANDBOX_DROPLET_BOOT_S": "0.2",
    "SANDBOX_DROPLET_IP_DELAY_S": "0.1",
    "SANDBOX_SSHD_DELAY_S": "0.3",
    "SANDBOX_DROPLET_LIST_LAG_S": "0.1",
    "SANDBOX_VALIDATION_PICKUP_S": "0.05",
    "SANDBOX_SSH_TRIES_SPAN_S": "0.1",
    "SANDBOX_DOCKER_INSTALL_S": "0.1",
    "SANDBOX_BUILD_QUEUE_S": "0.1",
    "SANDBOX_BUILD_S": "0.2",
    "SANDBOX_APP_DELETE_S": "0.05",
}
FAST_PIPELINE = {
    "DROPLET_POLL_INTERVAL_S": "0.05",
    "DROPLET_TIMEOUT_S": "10",
    "SERVER_POLL_INTERVAL_S": "0.05",
    "SERVER_TIMEOUT_S": "10",
    "BUILD_POLL_INTERVAL_S": "0.05",
    "BUILD_TIMEOUT_S": "10",
    # The shared request budgets stay on, 1 ms apart: real ones would space the 0.05 s polls out.
    "DO_REQUESTS_PER_MINUTE": "60000",
    "COOLIFY_REQUESTS_PER_MINUTE": "60000",
}
SSH_PUBLIC_KEY = DEFAULT_COOLIFY_PUBLIC_KEY
#: DEPLOYER_SECRET_KEY shared by the API and worker processes of a test stack.
SECRET_KEY = "e2e-secret-key-0123456789abcdef0123456789"


def base_env(extra: Mapping[str, str] = ()) -> dict[str, str]:  # type: ignore[assignment]
    """The test process's environment without settings that would leak into a child."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DO_", "COOLIFY_", "SANDBOX_", "DEPLOYER_"))}
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(extra)
    return env


class Process:
    """A child process whose output goes to a log file the test can show on failure."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        #: The base URL of a server process (API, sandbox), None for a worker.
        self.url: str | None = None
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "deployer.cli", *args],
            env=dict(env),
            cwd=log_dir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        """Everything the process printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        self.popen.kill()
        self.popen.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after fifteen seconds."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def wait_http(url: str, process: Process, timeout: float = 20.0) -> None:
    """Wait until GET url answers 200, failing with the process's output if it dies or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise AssertionError(f"{process.name} exited early:\n{process.output()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{process.name} did not answer {url}:\n{process.output()}")


class Stack:
    """Sandbox, API and worker processes sharing one Redis and one database."""

    def __init__(self, tmp: Path, *, redis_url: str, database_url: str, queue: str, env: Mapping[str, str]) -> None:
        self.tmp = tmp
        self.sandbox_port = free_port()
        self.api_port = free_port()
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.env = base_env(
            {
                **FAST_PIPELINE,
                "REDIS_URL": redis_url,
                "DATABASE_URL": database_url,
                "DEPLOYER_QUEUE": queue,
                "DO_API_URL": f"{self.sandbox_url}/sandbox/digitalocean",
                "DO_API_KEY": "do-e2e-token",
                "COOLIFY_API_URL": f"{self.sandbox_url}/sandbox/coolify",
                "COOLIFY_API_KEY": "1|coolify-e2e-token",
                "COOLIFY_PROJECT_UUID": "sandbox-project",
                "COOLIFY_PRIVATE_KEY_UUID": "sandbox-private-key",
                "COOLIFY_SSH_PUBLIC_KEY": SSH_PUBLIC_KEY,
                # The API and the workers share it to encrypt stashed env values; tests that want tokens set
                # DEPLOYER_API_TOKENS in `env` (open is allowed here: the server listens on 127.0.0.1).
                "DEPLOYER_SECRET_KEY": SECRET_KEY,
                "DEPLOYER_ALLOW_ANONYMOUS": "true",
                **env,
            }
        )
        self.processes: list[Process] = []

    def start_sandbox(self, **sandbox_env: str) -> Process:
        """Start `deployer sandbox` with fast timings."""
        proc = Process(
            "sandbox",
            ["sandbox", "--port", str(self.sandbox_port)],
            {**base_env(FAST_SANDBOX), **sandbox_env},
            self.tmp,
        )
        self.processes.append(proc)
        wait_http(f"{self.sandbox_url}/sandbox/_control/state", proc)
        return proc

    def start_api(self, name: str = "api", *, port: int | None = None) -> Process:
        """Start `deployer serve`; the first API (`api`) answers on `api_url`, others on a port of their own (the
        port of an API started before, to restart it in its place)."""
        port = port or (self.api_port if name == "api" else free_port())
        proc = Process(name, ["serve", "--port", str(port)], self.env, self.tmp)
        proc.url = f"http://127.0.0.1:{port}"
        self.processes.append(proc)
        wait_http(f"{proc.url}/readyz", proc)
        return proc

    def start_worker(self, name: str = "worker") -> Process:
        """Start `deployer worker`."""
        proc = Process(name, ["worker"], self.env, self.tmp)
        self.processes.append(proc)
        return proc

    def logs(self) -> str:
        """All processes' output, for assertion messages and secret checks."""
        return "\n".join(f"--- {p.name} ---\n{p.output()}" for p in self.processes)

    def stop(self) -> None:
        """Stop every process."""
        for proc in reversed(self.processes):
            proc.stop()


@contextmanager
def running_stack(
    tmp: Path, *, redis_url: str, database_url: str, queue: str, env: Mapping[str, str] | None = None
) -> Iterator[Stack]:
    """A started sandbox + API + worker; stopped afterwards."""
    stack = Stack(tmp, redis_url=redis_url, database_url=database_url, queue=queue, env=env or {})
    try:
        stack.start_sandbox()
        stack.start_api()
        stack.start_worker()
        yield stack
    finally:
        stack.stop()
