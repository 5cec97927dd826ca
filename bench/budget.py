"""Shared request budgets under load: many callers in several processes against the sandbox's real limits.

A `deployer sandbox` process enforces DigitalOcean's 250 requests a minute (and its 5,000 an hour) and
Coolify's 200 a minute, with every window divided by ``SANDBOX_TIME_SCALE`` (10: a "minute" lasts 6 s). Two
caller processes, each with ``CALLERS`` tasks per cloud, send requests as fast as they are let (DigitalOcean
``GET /v2/droplets?tag_name=deployer``, Coolify ``GET /servers``) for ``duration`` seconds, once drawing from
`jobs.budget` buckets in one Redis (sized at the limit times the time scale) and once without (the baseline,
the same run, other tokens). Figures per cloud:

- ``refused``: 429 answers the sandbox gave (goal 0), baseline the same callers without budgets;
- ``rate``: requests answered 2xx per scaled minute, against the budget (goal ratio >= 0.9).

    .venv/bin/python -m bench --only budget [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.figure import Baseline, Figure, Goal

#: Sandbox windows run this much faster than real time; budgets are sized up by as much.
TIME_SCALE = 10
#: The clouds' limits (requests a minute per token): what the sandbox enforces and the budgets are set to.
LIMITS = {"digitalocean": 250, "coolify": 200}
PROCESSES = 2
CALLERS = 25
REPO_ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- caller process


async def _callers(args: argparse.Namespace) -> dict[str, object]:
    """Run CALLERS tasks per cloud until the end time; return success times and errors per cloud."""
    from redis.asyncio import Redis

    from clients.coolify import CoolifyClient
    from clients.digitalocean import DigitalOceanClient
    from clients.errors import CloudAPIError
    from jobs.budget import budget_for, client_hooks

    redis = Redis.from_url(args.redis)
    tokens = {"digitalocean": args.do_token, "coolify": args.coolify_token}
    hooks = {
        api: client_hooks(
            budget_for(redis, api=api, token=tokens[api], per_minute=LIMITS[api] * TIME_SCALE, max_wait_s=1e9)
            if args.budget
            else None
        )
        for api in LIMITS
    }
    limits = httpx.Limits(max_connections=args.callers * 2)
    do = DigitalOceanClient(
        api_url=f"{args.sandbox}/sandbox/digitalocean",
        token=args.do_token,
        http_client=httpx.AsyncClient(limits=limits, timeout=30),
        **hooks["digitalocean"],
    )
    coolify = CoolifyClient(
        api_url=f"{args.sandbox}/sandbox/coolify",
        token=args.coolify_token,
        http_client=httpx.AsyncClient(limits=limits, timeout=30),
        **hooks["coolify"],
    )
    ok: dict[str, list[float]] = {api: [] for api in LIMITS}
    errors: dict[str, int] = dict.fromkeys(LIMITS, 0)

    async def call(api: str) -> None:
        if api == "digitalocean":
            await do.list_droplets(tag_name="deployer")
        else:
            await coolify.list_servers()

    async def caller(api: str) -> None:
        while time.time() < args.end_at:
            try:
                await call(api)
            except CloudAPIError:
                errors[api] += 1
                continue
            ok[api].append(time.time())

    await asyncio.sleep(max(0.0, args.start_at - time.time()))  # every process starts at the same moment
    await asyncio.gather(*(caller(api) for api in LIMITS for _ in range(args.callers)))
    await redis.aclose()
    return {"ok": ok, "errors": errors}


def _caller_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sandbox", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--do-token", required=True)
    parser.add_argument("--coolify-token", required=True)
    parser.add_argument("--budget", action="store_true")
    parser.add_argument("--callers", type=int, default=CALLERS)
    parser.add_argument("--start-at", type=float, required=True)
    parser.add_argument("--end-at", type=float, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_callers(args))))


# ------------------------------------------------------------------------------------------- the benchmark


def _phase(sandbox: str, redis_url: str, *, budget: bool, duration: float) -> dict[str, dict[str, float]]:
    """One run of PROCESSES caller processes; per cloud: 2xx answers in the window, 429s, errors seen."""
    tag = uuid.uuid4().hex[:8]
    before = httpx.get(f"{sandbox}/sandbox/_control/requests", timeout=30).json()
    start_at = time.time() + 3.0  # every process connected and waiting
    end_at = start_at + duration
    command = [
        sys.executable,
        "-m",
        "bench.budget",
        "caller",
        "--sandbox",
        sandbox,
        "--redis",
        redis_url,
        "--do-token",
        f"do-bench-{tag}",
        "--coolify-token",
        f"1|coolify-bench-{tag}",
        "--start-at",
        repr(start_at),
        "--end-at",
        repr(end_at),
        *(["--budget"] if budget else []),
    ]
    procs = [
        subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603
        for _ in range(PROCESSES)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=duration + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"caller process failed: {err[-2000:]}")
        outputs.append(json.loads(out))
    log = httpx.get(f"{sandbox}/sandbox/_control/requests", timeout=30).json()[len(before) :]
    result: dict[str, dict[str, float]] = {}
    for api in LIMITS:
        answered = sum(1 for out in outputs for t in out["ok"][api] if start_at <= t <= end_at)
        result[api] = {
            "per_scaled_minute": answered / (duration * TIME_SCALE / 60.0),
            "refused": sum(1 for r in log if r["api"] == api and r["status"] == 429),
            "errors": sum(out["errors"][api] for out in outputs),
            "requests": sum(1 for r in log if r["api"] == api),
        }
    return result


def figures(quick: bool) -> list[Figure]:
    """The 429s and the rate reached with the budgets, against the same callers without them."""
    from deployer.embedded_redis import EmbeddedRedis, free_port

    duration = 8.0 if quick else 40.0
    port = free_port()
    sandbox = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DO_", "COOLIFY_", "SANDBOX_", "DEPLOYER_"))}
    env["SANDBOX_TIME_SCALE"] = str(TIME_SCALE)
    with tempfile.TemporaryFile() as log, EmbeddedRedis() as redis_server:
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "deployer.cli", "sandbox", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{sandbox}/sandbox/_control/state", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.1)
            with_budget = _phase(sandbox, redis_server.url, budget=True, duration=duration)
            without = _phase(sandbox, redis_server.url, budget=False, duration=duration)
        finally:
            proc.terminate()
            proc.wait(15)
    callers = f"{PROCESSES} processes x {CALLERS} callers per cloud, time scale {TIME_SCALE}, {duration:g} s"
    result: list[Figure] = []
    for api, limit in LIMITS.items():
        result.append(
            Figure(
                f"budget.{api}.refused",
                with_budget[api]["refused"],
                "429s",
                baseline=Baseline("no budget", without[api]["refused"]),
                goal=Goal("<=", 0),
                note=f"{callers}; {with_budget[api]['requests']:.0f} requests sent"
                f" ({without[api]['requests']:.0f} without budget)",
            )
        )
        result.append(
            Figure(
                f"budget.{api}.rate",
                round(with_budget[api]["per_scaled_minute"], 1),
                "req/min",
                baseline=Baseline("budget", limit),
                goal=Goal(">=", 0.9, on="ratio"),
                note=f"without budget {without[api]['per_scaled_minute']:.1f} req/min answered 2xx,"
                f" {without[api]['errors']:.0f} calls failed",
            )
        )
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["caller"]:
        _caller_main(sys.argv[2:])
    else:
        for figure in figures("--quick" in sys.argv):
            print(figure.line())
