"""No secret in any log line at any level, no forged lines, and structured JSON logs with their context.

The unit tests pin the redaction rules; the process tests run `deployer serve` (and a whole stack) at
LOG_LEVEL=DEBUG with real HTTP and websocket clients, then read everything the processes printed."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from deployer.embedded_redis import free_port
from deployer.logs import JsonFormatter, TextFormatter
from deployer.redaction import REDACTED, RedactingFilter, escape_controls, redact
from tests.processes import SECRET_KEY, Process, base_env, running_stack, wait_http

TOKEN = "log-test-token-0123456789abcdef"
VALUE = "env-value-that-must-never-be-logged"


@pytest.mark.parametrize(
    "text",
    [
        f"> Authorization: Bearer {TOKEN}",
        f"headers: [(b'authorization', b'Bearer {TOKEN}')]",
        f'{{"type":"connection_init","payload":{{"authToken":"{TOKEN}"}}}}',
        f'< TEXT \'{{"type":"connection_init","payload":{{"X-Custom":"{TOKEN}"',  # a frame cut short
        f'{{"query":"mutation($v: String!) {{ setEnv(value: $v) }}","variables":{{"v":"{TOKEN}"}}}}',
        f'{{"variables": {{"vars": [{{"key": "A", "value": "{TOKEN}"}}]}}}}',
        f'mutation {{ setEnv(applicationUuid: "a", key: "K", value: "{TOKEN}") {{ changeId }} }}',
        f'mutation {{ setEnv(applicationUuid: "a", key: "K", value: """{TOKEN}""") {{ changeId }} }}',
        f"token={TOKEN}&x=1",
        f"api_key: {TOKEN}",
    ],
)
def test_redact_removes_credentials_and_values(text: str) -> None:
    """Tokens and env values are removed from headers, frames, variables and literals, complete or cut short."""
    redacted = redact(text)
    assert TOKEN not in redacted
    assert REDACTED in redacted


def test_redact_removes_configured_secrets_anywhere() -> None:
    """A configured secret is removed wherever it appears, even in free text."""
    assert redact(f"weird {TOKEN}thing", [TOKEN]) == f"weird {REDACTED}thing"


def test_redact_keeps_ordinary_lines() -> None:
    """Lines without secrets pass unchanged."""
    line = "deployment queued: 3 environment variable(s): A, B, C"
    assert redact(line) == line


def test_control_characters_are_escaped() -> None:
    """Newlines, carriage returns, escapes, separators and lone surrogates cannot start a new line."""
    assert escape_controls("a\nb\r\x1b[31m\u2028\ud800") == "a\\nb\\r\\x1b[31m\\u2028\\ud800"


def _record(message: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"bad input\n2026-01-01 00:00:00 INFO    forged: {TOKEN}")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("deployer.test", logging.INFO, __file__, 1, message, args, exc_info)
    for name, value in extra.items():
        setattr(record, name, value)
    RedactingFilter([TOKEN]).filter(record)
    return record


def test_text_lines_cannot_be_forged() -> None:
    """A message with a newline stays on its line; traceback lines are indented; secrets are gone."""
    record = _record("app %s", "x\n2026-01-01 00:00:00 ERROR   deployer: forged", exc=True, request_id="r1")
    lines = TextFormatter([TOKEN]).format(record).splitlines()
    assert "forged" in lines[0] and "request_id=r1" in lines[0]
    assert all(line.startswith("    | ") for line in lines[1:])
    assert TOKEN not in "\n".join(lines)


def test_json_lines_carry_the_context() -> None:
    """LOG_FORMAT=json: one object per line with the request id, caller and deployment id."""
    record = _record("queued %s", "x\ny", request_id="r1", caller="ci", deployment_id="d1", exc=True)
    line = JsonFormatter([TOKEN]).format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "queued x\ny"
    assert (entry["request_id"], entry["caller"], entry["deployment_id"]) == ("r1", "ci", "d1")
    assert "ValueError" in entry["exception"] and TOKEN not in line


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_serve_at_debug_logs_no_secret(
    tmp_path: Path, redis_url: str, database_url: str, queue_name: str
) -> None:
    """At LOG_LEVEL=DEBUG, `deployer serve` logs requests, websocket handshakes and frames, yet no token, no
    connection_init payload, no env value; a newline smuggled into a path does not forge a line."""
    port = free_port()
    env = base_env(
        {
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "DEPLOYER_QUEUE": queue_name,
            "DEPLOYER_SECRET_KEY": SECRET_KEY,
            "DEPLOYER_API_TOKENS": f"ci:{TOKEN}",
            "LOG_LEVEL": "DEBUG",
        }
    )
    process = Process("serve", ["serve", "--port", str(port)], env, tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", process)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        bulk = 'mutation($vars: [EnvVarInput!]!) { bulkSetEnv(applicationUuid: "abc", variables: $vars) { changeId } }'
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await http.post(
                "/graphql", json={"query": bulk, "variables": {"vars": [{"key": "A", "value": VALUE}]}}, headers=headers
            )
            set_env = f'mutation {{ setEnv(applicationUuid: "abc", key: "A", value: "{VALUE}") {{ changeId }} }}'
            await http.post("/graphql", json={"query": set_env}, headers=headers)
            await http.get(
                "/graphql",
                params={"query": "{ dropletCount { limit } }", "variables": json.dumps({"v": VALUE})},
                headers=headers,
            )
            await http.get("/graphql%0A2026-01-01 00:00:00 ERROR   deployer.api: forged line")
            uuid = "a\\n2026-01-01 00:00:00 ERROR   x: forged"
            forged = f'mutation {{ deleteEnv(applicationUuid: "{uuid}", key: "K") {{ deleted }} }}'
            await http.post("/graphql", json={"query": forged}, headers=headers)
        ws_url = url.replace("http://", "ws://") + "/graphql"
        async with connect(ws_url, subprotocols=["graphql-transport-ws"], additional_headers=headers) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init", "payload": {"authToken": TOKEN}}))
            await ws.recv()
            payload = {
                "query": 'mutation($v: String!) { setEnv(applicationUuid: "abc", key: "A", value: $v) { changeId } }',
                "variables": {"v": VALUE},
            }
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            await asyncio.wait_for(ws.recv(), 30)
        await asyncio.sleep(0.5)
    finally:
        process.stop()
    output = process.log_path.read_text(errors="replace")
    assert " DEBUG " in output, "the server did not log at DEBUG"
    assert "/graphql" in output  # requests were logged
    for secret in (TOKEN, VALUE):
        assert secret not in output
    assert not any(line.startswith("2026-01-01") for line in output.splitlines()), output


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_json_logs_carry_request_caller_and_deployment(
    tmp_path: Path, redis_url: str, database_url: str, queue_name: str
) -> None:
    """LOG_FORMAT=json: every line of the API and the worker is a JSON object; the API's lines of a deploy
    name the request and the caller, the worker's name the deployment."""
    env = {"DEPLOYER_API_TOKENS": f"ci:{TOKEN}", "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    with running_stack(tmp_path, redis_url=redis_url, database_url=database_url, queue=queue_name, env=env) as stack:
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
            response = await http.post(
                "/graphql",
                json={
                    "query": "mutation($env: [EnvVarInput!]) { deploy(input: {env: $env}) { id } }",
                    "variables": {"env": [{"key": "A", "value": VALUE}]},
                },
                headers={"Authorization": f"Bearer {TOKEN}", "X-Request-ID": "req-42"},
            )
            deployment_id = response.json()["data"]["deploy"]["id"]
            query = {"query": "query($id: ID!) { deployment(id: $id) { status } }", "variables": {"id": deployment_id}}
            for _ in range(300):
                body = (await http.post("/graphql", json=query, headers={"Authorization": f"Bearer {TOKEN}"})).json()
                if body["data"]["deployment"]["status"] in ("COMPLETED", "FAILED"):
                    break
                await asyncio.sleep(0.1)
        entries = {}
        for process in stack.processes:
            if process.name in ("api", "worker"):
                lines = [line for line in process.output().splitlines() if line.strip()]
                entries[process.name] = [json.loads(line) for line in lines]
        output = stack.logs()
    assert VALUE not in output and TOKEN not in output
    api_lines = [e for e in entries["api"] if e.get("request_id") == "req-42"]
    assert any(e.get("caller") == "ci" and e.get("deployment_id") == deployment_id for e in api_lines), entries["api"]
    assert any(e.get("deployment_id") == deployment_id for e in entries["worker"])
