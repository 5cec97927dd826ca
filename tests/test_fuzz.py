"""The fuzz suite: thousands of generated requests against a real `deployer serve`, none may hurt it.

Hypothesis draws, from a fixed seed in CI:

- GraphQL operations on every root field with every argument (`tests.fuzz_support`), over HTTP;
- HTTP envelopes: bodies of random bytes or JSON, odd content types, methods, paths and headers;
- websocket sessions on both subprotocols: good and bad `connection_init`, generated operations and
  malformed messages.

Every answer must be below 500, carry no INTERNAL_SERVER_ERROR, no traceback, no token and no planted env
value, and come within 1 s (a slow answer is measured again, twice, before it counts: the machine is shared).
At the end the server's whole log (LOG_LEVEL=DEBUG) must hold no traceback and no secret. The counts are
printed. `make fuzz` runs ten times as many examples from a random seed (FUZZ_EXAMPLES, FUZZ_SEED).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from deployer.embedded_redis import free_port
from graphql_api.schema import schema
from tests.conftest import _reset_postgres, postgres_url
from tests.fuzz_support import (
    SECRET_MARKER,
    Operation,
    ValueFactory,
    any_json,
    nasty_text,
    operations,
    problems_in,
)
from tests.processes import SECRET_KEY, Process, base_env, wait_http

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOKENS = {
    "admin": "fuzz-admin-0123456789abcdef",
    "reader": "fuzz-reader-0123456789abcdef",
    "deployer": "fuzz-deployer-0123456789abcdef",
    "env": "fuzz-env-0123456789abcdef",
}
SCOPES = {"admin": "read+deploy+env+admin", "reader": "read", "deployer": "deploy", "env": "env"}
SECRETS = (*TOKENS.values(), SECRET_MARKER, SECRET_KEY)
#: Slower than this is a failure (after two more tries).
LIMIT_S = 1.0
#: Examples per test in CI; FUZZ_EXAMPLES multiplies nothing, it replaces these.
CI_EXAMPLES = {"operations": 1100, "envelope": 500, "websocket": 250}
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or 0)
FUZZ_SEED = os.environ.get("FUZZ_SEED", "")
#: Close codes a server may use on a fuzzed websocket (never 1011, "internal error").
CLOSE_CODES = {1000, 1001, 1005, 1008, 1009, 4400, 4401, 4403, 4406, 4408, 4409, 4429}


def fuzz_settings(kind: str) -> Callable[[Any], Any]:
    """Hypothesis settings for one kind of example: a fixed seed unless FUZZ_SEED says otherwise."""
    examples = FUZZ_EXAMPLES or CI_EXAMPLES[kind]

    def apply(test: Any) -> Any:
        test = settings(
            max_examples=examples,
            deadline=None,
            derandomize=not FUZZ_SEED,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )(test)
        if FUZZ_SEED and FUZZ_SEED != "random":
            test = seed(int(FUZZ_SEED))(test)
        return test

    return apply


@dataclass
class Server:
    """The `deployer serve` under test and what the run counted."""

    url: str
    process: Process
    ids: list[str]
    counts: Counter[str]
    slowest: dict[str, float]
    #: Answers by HTTP status and first error code (or close code), to see what the fuzzer reached.
    outcomes: Counter[str] = field(default_factory=Counter)

    def record(self, kind: str, elapsed: float) -> None:
        """Count one request and keep the slowest of its kind."""
        self.counts[kind] += 1
        self.slowest[kind] = max(self.slowest.get(kind, 0.0), elapsed)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """One `deployer serve` (tokens, DEBUG logs, a high mutation budget) for the whole module."""
    tmp = tmp_path_factory.mktemp("fuzz")
    database = postgres_url()
    if database:
        asyncio.run(_reset_postgres(database))
    else:
        database = f"sqlite://{tmp / 'fuzz.sqlite3'}"
    port = free_port()
    env = base_env(
        {
            "REDIS_URL": redis_url,
            "DATABASE_URL": database,
            "DEPLOYER_QUEUE": f"fuzz-{port}",
            "DEPLOYER_SECRET_KEY": SECRET_KEY,
            "DEPLOYER_API_TOKENS": ",".join(f"{name}:{token}:{SCOPES[name]}" for name, token in TOKENS.items()),
            "DEPLOYER_MUTATIONS_PER_MINUTE": "1000000",
            "DEPLOYER_DEFAULT_ENV": f"DEFAULT_SECRET={SECRET_MARKER}-default",
            "LOG_LEVEL": "DEBUG",
        }
    )
    process = Process("fuzz-serve", ["serve", "--port", str(port)], env, tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", process)
        headers = {"Authorization": f"Bearer {TOKENS['admin']}"}
        deployed = httpx.post(f"{url}/graphql", json={"query": "mutation { deploy { id } }"}, headers=headers)
        first_id = deployed.json()["data"]["deploy"]["id"]
        running = Server(url=url, process=process, ids=[first_id], counts=Counter(), slowest={})
        yield running
    finally:
        process.stop()
    log = process.log_path.read_text(errors="replace")
    http_requests = sum(count for kind, count in running.counts.items() if kind.startswith("http:"))
    ws_messages = sum(count for kind, count in running.counts.items() if kind.endswith(":messages"))
    counts = ", ".join(f"{kind} {count}" for kind, count in sorted(running.counts.items()))
    slowest = ", ".join(f"{kind} {seconds:.3f} s" for kind, seconds in sorted(running.slowest.items()))
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\nfuzz: {http_requests} HTTP requests and {ws_messages} websocket messages ({counts})")
        print(f"fuzz: slowest answers: {slowest}")
        print("fuzz: outcomes: " + ", ".join(f"{name} {count}" for name, count in running.outcomes.most_common()))
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 : log.index("Traceback") + 3000]
    for secret in SECRETS:
        assert secret not in log, f"a secret reached the server log: {secret[:6]}…"


def _headers(who: str) -> dict[str, str]:
    if who in TOKENS:
        return {"Authorization": f"Bearer {TOKENS[who]}"}
    return {
        "none": {},
        "garbage": {"Authorization": "Bearer not-a-token-at-all-0123"},
        "basic": {"Authorization": "Basic eDp5"},
    }[who]


callers = st.sampled_from(["admin"] * 6 + ["reader", "deployer", "env", "none", "garbage", "basic"])


def _timed(action: Callable[[], Any]) -> tuple[Any, float]:
    """Run `action`; when it takes over LIMIT_S, run it again (twice at most) and keep the fastest."""
    best: tuple[Any, float] | None = None
    for _ in range(3):
        started = time.perf_counter()
        result = action()
        elapsed = time.perf_counter() - started
        if best is None or elapsed < best[1]:
            best = (result, elapsed)
        if elapsed <= LIMIT_S:
            break
    assert best is not None
    return best


def _outcome(response: httpx.Response) -> str:
    code = ""
    with contextlib.suppress(Exception):
        code = response.json()["errors"][0]["extensions"]["code"]
    return f"{response.status_code}{':' + code if code else ''}"


def _check_http(response: httpx.Response, elapsed: float, what: str) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:500])
    assert elapsed <= LIMIT_S, (what, f"{elapsed:.2f} s")
    problems = problems_in(response.text, SECRETS)
    assert not problems, (what, problems, response.text[:500])
    if response.headers.get("content-type", "").startswith("application/json") and response.content:
        body = response.json()
        for error in body.get("errors") or [] if isinstance(body, dict) else []:
            status = error.get("extensions", {}).get("status", 400)
            assert status < 500 or error["extensions"].get("code") == "UPSTREAM_ERROR", (what, error)


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    """A kept-alive HTTP client for the module."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def _values(server: Server) -> ValueFactory:
    return ValueFactory(lambda: server.ids)


def test_generated_operations_over_http(server: Server, http: httpx.Client) -> None:
    """Every query, mutation and subscription field with generated arguments, over HTTP."""
    strategy = operations(schema._schema, _values(server), roots=("query", "mutation", "subscription"))

    @fuzz_settings("operations")
    @given(operation=strategy, who=callers)
    def run(operation: Operation, who: str) -> None:
        body = {"query": operation.query, "variables": operation.variables}
        encoded = json.dumps(body).encode()  # surrogates become \\ud800 escapes, as a hostile client sends them
        response, elapsed = _timed(
            lambda: http.post(
                "/graphql", content=encoded, headers={**_headers(who), "content-type": "application/json"}
            )
        )
        server.record(f"http:{operation.root}", elapsed)
        server.outcomes[f"{operation.root} {_outcome(response)}"] += 1
        _check_http(response, elapsed, f"{operation.field} as {who}")
        if response.status_code == 200 and operation.root == "mutation" and operation.field == "deploy":
            with contextlib.suppress(Exception):
                server.ids.append(response.json()["data"]["deploy"]["id"])

    run()


envelope_bodies = st.one_of(
    st.binary(max_size=200),
    any_json.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "query": st.one_of(nasty_text(), st.just("{ dropletCount { limit } }"), any_json),
            "variables": any_json,
            "operationName": st.one_of(nasty_text(), any_json),
            "extensions": any_json,
        },
    ).map(lambda value: json.dumps(value).encode()),
    st.integers(1, 100_000).map(lambda n: b'{"query": "' + b"{" * n + b'"}'),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.just(b'{"query": "{ dropletCount { limit } }"}\xff'),
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=latin-1", "text/plain", "multipart/form-data; boundary=x",
     "application/x-www-form-urlencoded", "application/graphql", ""]
)  # fmt: skip
paths = st.sampled_from(["/graphql"] * 6 + ["/graphql/", "/", "/metrics", "/readyz", "/healthz", "/sandbox/x", "/%00"])


def test_http_envelopes(server: Server, http: httpx.Client) -> None:
    """Odd bodies, content types, methods, paths, query strings and headers."""

    @fuzz_settings("envelope")
    @given(
        method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"]),
        path=paths,
        body=envelope_bodies,
        content_type=content_types,
        who=callers,
        params=st.dictionaries(
            st.sampled_from(["query", "variables", "operationName", "extensions", "x"]), nasty_text()
        ),
        accept=st.sampled_from(["application/json", "text/html", "*/*", "multipart/mixed", "text/event-stream", ""]),
        request_id=st.one_of(st.none(), nasty_text(max_size=80)),
    )
    def run(
        method: str,
        path: str,
        body: bytes,
        content_type: str,
        who: str,
        params: dict[str, str],
        accept: str,
        request_id: str | None,
    ) -> None:
        headers = {**_headers(who), "content-type": content_type, "accept": accept}
        if request_id and request_id.isascii() and request_id.isprintable() and request_id.strip() == request_id:
            headers["x-request-id"] = request_id
        clean = {k: v.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for k, v in params.items()}
        content = body if method not in ("GET", "HEAD") else None
        response, elapsed = _timed(lambda: http.request(method, path, content=content, headers=headers, params=clean))
        server.record("http:envelope", elapsed)
        server.outcomes[f"envelope {_outcome(response)}"] += 1
        _check_http(response, elapsed, f"{method} {path} {content_type}")

    run()


def _ws_frames(values: ValueFactory) -> st.SearchStrategy[list[Any]]:
    """Messages after `connection_init`: generated operations, protocol messages with odd fields, junk."""
    ops = operations(schema._schema, values, roots=("query", "mutation", "subscription"))
    operation_message = st.builds(
        lambda op, op_id, kind: {"id": op_id, "type": kind, "payload": {"query": op.query, "variables": op.variables}},
        ops,
        st.one_of(st.just("1"), nasty_text(max_size=8)),
        st.sampled_from(["subscribe", "start"]),
    )
    protocol_message = st.fixed_dictionaries(
        {"type": st.sampled_from(["ping", "pong", "complete", "stop", "connection_terminate", "connection_init", "x"])},
        optional={"id": st.one_of(nasty_text(max_size=8), any_json), "payload": any_json},
    )
    junk = st.one_of(any_json, nasty_text(), st.binary(max_size=50))
    return st.lists(st.one_of(operation_message, operation_message, protocol_message, junk), min_size=1, max_size=4)


def _receive_all(ws: ClientConnection, quiet_s: float) -> tuple[list[Any], int | None, float]:
    """Messages until the server closes or stays quiet for `quiet_s`: (messages, close code, time to the first
    answer or the close)."""
    messages: list[Any] = []
    first = 0.0
    started = time.perf_counter()
    while True:
        try:
            raw = ws.recv(timeout=quiet_s)
        except TimeoutError:
            return messages, None, first
        except ConnectionClosed as closed:
            first = first if messages else time.perf_counter() - started
            return messages, closed.rcvd.code if closed.rcvd else None, first
        if not messages:
            first = time.perf_counter() - started
        messages.append(raw)


def test_websocket_sessions(server: Server) -> None:
    """Both subprotocols: good and bad `connection_init`, then generated operations and malformed messages."""
    ws_url = server.url.replace("http://", "ws://") + "/graphql"

    @fuzz_settings("websocket")
    @given(
        protocol=st.sampled_from(["graphql-transport-ws", "graphql-ws"]),
        who=callers,
        init=st.sampled_from(["payload", "header", "none", "junk"]),
        junk_init=any_json,
        frames=_ws_frames(_values(server)),
    )
    def run(protocol: str, who: str, init: str, junk_init: Any, frames: list[Any]) -> None:
        token = TOKENS.get(who, "not-a-token-at-all-0123")
        headers = _headers(who) if init == "header" else {}

        def session() -> tuple[list[Any], int | None, float]:
            with connect(ws_url, subprotocols=[protocol], additional_headers=headers, open_timeout=10) as ws:  # type: ignore[list-item]
                if init == "payload":
                    ws.send(json.dumps({"type": "connection_init", "payload": {"authToken": token}}))
                elif init == "header":
                    ws.send(json.dumps({"type": "connection_init", "payload": {}}))
                elif init == "junk":
                    ws.send(json.dumps(junk_init))
                answers, code, init_latency = _receive_all(ws, 0.2)
                if code is not None:
                    return answers, code, init_latency
                for frame in frames:
                    with contextlib.suppress(ConnectionClosed):
                        ws.send(frame if isinstance(frame, bytes) else json.dumps(frame))
                more, code, latency = _receive_all(ws, 0.2)
                return answers + more, code, max(init_latency, latency)

        try:
            (answers, code, latency), _ = _timed(session)
        except InvalidHandshake as exc:  # the per-address cap or a refused Host: an HTTP answer below 500
            refused = exc
        else:
            refused = None
        if refused is not None:
            status = getattr(getattr(refused, "response", None), "status_code", 0)
            assert 400 <= status < 500, refused
            return
        server.record(f"ws:{protocol}", latency)
        server.outcomes[f"{protocol} close {code or 'none'}"] += 1
        server.counts[f"ws:{protocol}:messages"] += 1 + len(frames)
        assert latency <= LIMIT_S, f"{latency:.2f} s"
        assert code is None or code in CLOSE_CODES, (code, answers[-3:])
        text = "\n".join(answer if isinstance(answer, str) else answer.decode(errors="replace") for answer in answers)
        problems = problems_in(text, SECRETS)
        assert not problems, (problems, text[:500])

    run()


def test_the_counts_reach_the_floor(server: Server) -> None:
    """CI sends at least 2,000 generated requests (HTTP requests plus websocket messages)."""
    kinds = {kind.split(":")[0] + ":" + kind.split(":")[1] for kind in server.counts}
    if not {"http:query", "http:envelope", "ws:graphql-ws"} <= kinds or FUZZ_EXAMPLES:
        pytest.skip("counts are checked when the whole module runs with the CI example counts")
    http_requests = sum(count for kind, count in server.counts.items() if kind.startswith("http:"))
    ws_messages = sum(count for kind, count in server.counts.items() if kind.endswith(":messages"))
    assert http_requests + ws_messages >= 2000, server.counts
