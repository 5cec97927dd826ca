"""`deployer list`, `status`, `cancel`, `destroy`, `env`, `logs` (and `--json`) against a running stack of real
processes: sandbox, API and worker."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployer.follow import Renderer, summary
from tests.processes import Stack, base_env, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
SECRET = "value-that-stays-secret"


@pytest.fixture
def stack(tmp_path: Path, redis_url: str, database_url: str, queue_name: str) -> Iterator[Stack]:
    """A running sandbox + API + worker."""
    with running_stack(tmp_path, redis_url=redis_url, database_url=database_url, queue=queue_name) as running:
        yield running


def cli(stack: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a client subcommand against the stack's API (the URL from DEPLOYER_URL, as a user would)."""
    return subprocess.run(
        [sys.executable, "-m", "deployer.cli", *args],
        env=base_env({"DEPLOYER_URL": stack.api_url, **(env or {})}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a command that must have exited 0."""
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_one_deployment_through_every_command(stack: Stack) -> None:
    """deploy --wait, list, status, logs, env set/list/unset and destroy --wait, in text and JSON."""
    deployed = ok(cli(stack, "deploy", "--name", "web", "--wait"))
    deployment_id = deployed.splitlines()[0].split()[1]
    assert "url " in deployed.splitlines()[-1]

    listing = ok(cli(stack, "list"))
    assert deployment_id in listing and "COMPLETED" in listing and "1 of 1 deployment(s)" in listing
    as_json = json.loads(ok(cli(stack, "list", "--status", "completed", "--json")))
    assert [d["id"] for d in as_json["deployments"]] == [deployment_id]
    assert as_json["totalCount"] == 1
    assert json.loads(ok(cli(stack, "list", "--status", "FAILED", "--json")))["deployments"] == []

    status = ok(cli(stack, "status", deployment_id))
    assert "COMPLETED" in status and "url" in status
    app_uuid = json.loads(ok(cli(stack, "status", deployment_id, "--json")))["applicationUuid"]

    logs = ok(cli(stack, "logs", deployment_id))
    assert "Rolling update completed." in logs
    log_json = json.loads(ok(cli(stack, "logs", deployment_id, "--lines", "1", "--json")))
    assert len(log_json["buildLog"]["lines"]) == 1

    changed = ok(cli(stack, "env", "set", app_uuid, "PLAIN=1", "TOKEN", "--no-restart", env={"TOKEN": SECRET}))
    assert "PLAIN, TOKEN" in changed and "restart: NONE" in changed
    keys = json.loads(ok(cli(stack, "env", "list", app_uuid, "--json")))["envKeys"]
    assert {k["key"] for k in keys} >= {"PLAIN", "TOKEN"}
    text = ok(cli(stack, "env", "list", app_uuid))
    assert "TOKEN" in text and SECRET not in text and SECRET not in json.dumps(keys)
    unset = json.loads(ok(cli(stack, "env", "unset", app_uuid, "PLAIN", "--json")))
    assert unset["deleted"] is True and unset["restart"]["mode"] == "RESTART"

    destroyed = cli(stack, "destroy", deployment_id, "--wait")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert "DESTROYED" in destroyed.stdout.splitlines()[-1]
    after = ok(cli(stack, "status", deployment_id))
    labels = {line.split()[0] for line in after.splitlines() if line.strip()}
    # No url or ip line any more (a generated uuid may hold "ip " itself: "…zip (deleted)").
    assert "DESTROYED" in after and "(deleted)" in after and not labels & {"url", "ip"}
    assert SECRET not in stack.logs()


def test_a_failure_is_reported_as_a_failure(stack: Stack) -> None:
    """A failed build: deploy --wait exits 1 naming the stage, no URL; logs falls back to the error; cancelling a
    finished deployment, and an unknown id, exit 2 with the API's code (as JSON on stderr with --json)."""
    httpx.post(f"{stack.sandbox_url}/sandbox/_control/faults", json={"spec": "build_fails"})
    result = cli(stack, "deploy", "--wait")
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stdout.splitlines()[-1]
    assert "FAILED at WAIT_BUILD" in last and re.search(r"\b(url|ip)\b", last) is None
    deployment_id = result.stdout.splitlines()[0].split()[1]
    logs = ok(cli(stack, "logs", deployment_id))
    assert "no build log" in logs and "error:" in logs
    cancelled = cli(stack, "cancel", deployment_id)
    assert cancelled.returncode == 2 and "BAD_USER_INPUT" in cancelled.stderr
    missing = cli(stack, "status", "00000000-0000-0000-0000-000000000000", "--json")
    assert missing.returncode == 2
    assert json.loads(missing.stderr)["error"]["code"] == "NOT_FOUND"
    followed = cli(stack, "follow", deployment_id, "--json")
    assert followed.returncode == 1
    events = [json.loads(line) for line in followed.stdout.splitlines()]
    assert events[-1]["deployment"]["status"] == "FAILED" and events[0]["sequence"] == 1


def test_an_unreachable_api_exits_two() -> None:
    """No API at the URL: exit 2 and a message naming it."""
    result = subprocess.run(
        [sys.executable, "-m", "deployer.cli", "list", "--url", "http://127.0.0.1:9"],
        env=base_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "cannot reach http://127.0.0.1:9" in result.stderr


def test_the_live_bar_draws_a_failure_as_a_failure() -> None:
    """On a terminal a failed deployment's bar stops at the failed stage, marked x, and never says DONE."""
    out = io.StringIO()
    renderer = Renderer(out, live=True)
    for seq, status, stage in [(1, "QUEUED", "QUEUED"), (2, "PROCESSING", "WAIT_BUILD"),
                               (3, "PROCESSING", "CLEANUP"), (4, "FAILED", "DONE")]:  # fmt: skip
        renderer.event({"sequence": seq, "status": status, "stage": stage, "message": "m"})
    final = out.getvalue().split("\r\x1b[2K")[-1]
    assert "FAILED at WAIT_BUILD" in final
    assert "x" in final.split("]")[0] and "DONE" not in final and "9/9" not in final


def test_the_summary_shows_an_address_only_while_the_app_exists() -> None:
    """COMPLETED shows ip and url; FAILED and DESTROYED show neither."""
    base = {"ipAddress": "198.18.0.2", "applicationUrl": "http://app.example", "error": None, "failedStage": None}
    assert "url http://app.example" in summary("d", {**base, "status": "COMPLETED"})
    for status in ("FAILED", "DESTROYED", "CANCELLED"):
        line = summary("d", {**base, "status": status})
        assert "url" not in line and "198.18.0.2" not in line
