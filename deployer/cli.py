"""The `deployer` command: dev, serve, worker, sandbox, schema, token, and the client commands deploy and follow.

This is the composition root: the only place that reads the environment into `Settings` and wires the
packages together. An invalid setting stops the program here with a message naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from settings import Settings, SettingsError


def _settings(
    *, require_clouds: bool, require_redis: bool, check: Callable[[Settings], None] | None = None
) -> Settings:
    try:
        settings = Settings.from_env(os.environ, require_clouds=require_clouds)
        if check is not None:
            check(settings)
    except SettingsError as exc:
        print(f"deployer: invalid setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if require_redis and not settings.redis_url:
        print("deployer: invalid setting: REDIS_URL is required but not set", file=sys.stderr)
        raise SystemExit(2)
    return settings


def _cmd_dev(args: argparse.Namespace) -> int:
    from deployer.devstack import run_dev

    settings = _settings(require_clouds=False, require_redis=False)
    return asyncio.run(run_dev(settings, host=args.host, port=args.port, environ=os.environ, fresh=args.fresh))


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from deployer.logs import configure_from_settings
    from graphql_api.app import create_app

    settings = _settings(require_clouds=False, require_redis=True, check=Settings.check_serve)
    configure_from_settings(settings)
    if not settings.auth_enabled:
        logging.getLogger("deployer.api").warning(
            "DEPLOYER_ALLOW_ANONYMOUS is set and no API tokens are configured: anyone who can send requests to"
            " %s:%s may deploy, change env and destroy. Only requests addressed to localhost, 127.0.0.1 or"
            " [::1] are answered.",
            args.host,
            args.port,
        )
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # our redacting handler (deployer.logs) takes uvicorn's records
        proxy_headers=True,
        ws_max_size=settings.limits.max_body_bytes,
    )
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from deployer.logs import configure_from_settings
    from jobs.worker import run_worker

    settings = _settings(require_clouds=True, require_redis=True, check=Settings.check_secret_key)
    configure_from_settings(settings)
    asyncio.run(run_worker(settings))
    return 0


def _cmd_token_create(args: argparse.Namespace) -> int:
    from deployer.tokens import create_token

    try:
        token, line = create_token(args.name, args.scopes)
    except SettingsError as exc:
        print(f"deployer: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(line)
    print(
        f"The first line is the token for {args.name}: it is shown only now, so store it (DEPLOYER_TOKEN for"
        " the CLI). The second line is what the server needs: add it to DEPLOYER_API_TOKENS (comma-separated)"
        " or as a line of DEPLOYER_API_TOKENS_FILE (then send the API processes SIGHUP).",
        file=sys.stderr,
    )
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from models.db import close_db, init_db

    settings = _settings(require_clouds=False, require_redis=False)

    async def run() -> None:
        await init_db(settings.database_url)  # applies what is missing, under the migration lock
        await close_db()

    asyncio.run(run())
    print("deployer: the database schema is up to date", file=sys.stderr)
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from clients.coolify import CoolifyClient
    from clients.digitalocean import DigitalOceanClient
    from jobs.budget import CloudBudgets, client_hooks, cloud_budgets
    from jobs.doctor import run_checks
    from jobs.enqueue import redis_from_url

    settings = _settings(require_clouds=True, require_redis=False)

    async def run() -> bool:
        async with contextlib.AsyncExitStack() as stack:
            # With a Redis configured, doctor's requests draw from the budgets the workers share.
            budgets = CloudBudgets()
            if settings.redis_url:
                redis = redis_from_url(settings.redis_url)
                stack.push_async_callback(redis.aclose)
                budgets = cloud_budgets(redis, settings)
            do = await stack.enter_async_context(
                DigitalOceanClient(
                    api_url=settings.digitalocean.api_url,
                    token=settings.digitalocean.api_key,
                    **client_hooks(budgets.digitalocean),
                )
            )
            coolify = await stack.enter_async_context(
                CoolifyClient(
                    api_url=settings.coolify.api_url,
                    token=settings.coolify.api_key,
                    **client_hooks(budgets.coolify),
                )
            )
            checks = await run_checks(settings, do, coolify)
        for check in checks:
            print(check.line())
        return all(check.ok for check in checks)

    return 0 if asyncio.run(run()) else 1


def _cmd_sandbox(args: argparse.Namespace) -> int:
    import uvicorn

    from sandbox.app import create_app as create_sandbox
    from sandbox.state import SandboxConfig, World

    world = World(SandboxConfig.from_env(os.environ))
    print(
        f"SANDBOX: simulated DigitalOcean at http://{args.host}:{args.port}/sandbox/digitalocean",
        file=sys.stderr,
    )
    print(f"SANDBOX: simulated Coolify at http://{args.host}:{args.port}/sandbox/coolify", file=sys.stderr)
    uvicorn.run(create_sandbox(world), host=args.host, port=args.port, log_level="warning")
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from deployer.follow import main_deploy

    return main_deploy(args)


def _cmd_follow(args: argparse.Namespace) -> int:
    from deployer.follow import main_follow

    return main_follow(args)


def _client_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--url",
        default=os.environ.get("DEPLOYER_URL", "http://127.0.0.1:8000"),
        help="the deployer API (default $DEPLOYER_URL or http://127.0.0.1:8000)",
    )
    cmd.add_argument("--token", default=os.environ.get("DEPLOYER_TOKEN"), help="API token (default $DEPLOYER_TOKEN)")
    cmd.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")


def _cmd_client(args: argparse.Namespace) -> int:
    from deployer.commands import main_command

    return main_command(args)


def _add_client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`list`, `status`, `cancel`, `destroy`, `logs` and `env`: GraphQL calls to a running API."""
    listing = sub.add_parser("list", help="deployments, newest first")
    listing.add_argument("--status", action="append", help="only these statuses (repeatable or comma-separated)")
    listing.add_argument("--first", type=int, default=20, help="how many (at most 100; default 20)")
    listing.add_argument("--after", help="the cursor printed at the end of the previous page")
    status = sub.add_parser("status", help="one deployment")
    cancel = sub.add_parser("cancel", help="stop a QUEUED or PROCESSING deployment and delete what it created")
    destroy = sub.add_parser("destroy", help="delete a deployment's server and droplet and free its slot")
    destroy.add_argument("--wait", action="store_true", help="follow until DESTROYED; exit 1 if it does not end so")
    logs = sub.add_parser("logs", help="the end of the latest Coolify build log of a deployment")
    logs.add_argument("--lines", type=int, default=100, help="how many lines (at most 1000; default 100)")
    for cmd in (status, cancel, destroy, logs):
        cmd.add_argument("id", help="the deployment id")
    env = sub.add_parser("env", help="an application's environment variables")
    env_sub = env.add_subparsers(dest="env_command", required=True)
    env_list = env_sub.add_parser("list", help="keys and flags (never values)")
    env_set = env_sub.add_parser("set", help="create or update variables, then restart once")
    env_unset = env_sub.add_parser("unset", help="delete a variable, then restart")
    for cmd in (env_list, env_set, env_unset):
        cmd.add_argument("app", help="the application uuid (a deployment's applicationUuid)")
    env_set.add_argument("pairs", nargs="+", metavar="KEY[=VALUE]", help="KEY alone reads the value from your env")
    env_unset.add_argument("key")
    for cmd in (env_set, env_unset):
        cmd.add_argument("--no-restart", action="store_true", help="save the change without restarting the app")
    for cmd in (listing, status, cancel, destroy, logs, env_list, env_set, env_unset):
        _client_options(cmd)
        cmd.set_defaults(func=_cmd_client)
    for name, cmd in (("list", listing), ("status", status), ("cancel", cancel), ("destroy", destroy),
                      ("logs", logs)):  # fmt: skip
        cmd.set_defaults(command=name)
    for cmd in (env_list, env_set, env_unset):
        cmd.set_defaults(command="env")


def _cmd_assets(args: argparse.Namespace) -> int:
    from pathlib import Path

    from deployer.assets import main as fetch_assets

    settings = _settings(require_clouds=False, require_redis=False)
    return fetch_assets(Path(settings.assets_dir), with_test_assets=args.test, strict=args.strict)


def _cmd_schema(args: argparse.Namespace) -> int:
    from graphql_api.schema import sdl

    sys.stdout.write(sdl())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `deployer` command."""
    parser = argparse.ArgumentParser(prog="deployer", description="GraphQL-driven Coolify deployments on DigitalOcean")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, help_text, port in (
        ("dev", _cmd_dev, "API + worker + embedded Redis, SQLite and sandbox clouds in one command", 8000),
        ("serve", _cmd_serve, "the API alone (production)", 8000),
        ("sandbox", _cmd_sandbox, "the simulated DigitalOcean and Coolify APIs alone", 9000),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--host", default="127.0.0.1")
        cmd.add_argument("--port", type=int, default=port)
        cmd.set_defaults(func=func)
        if name == "dev":
            cmd.add_argument(
                "--fresh", action="store_true", help="start with no deployments and an empty sandbox world"
            )
    sub.add_parser("worker", help="a SAQ worker alone (production)").set_defaults(func=_cmd_worker)
    deploy = sub.add_parser("deploy", help="start a deployment through the API (and with --wait, follow it)")
    _client_options(deploy)
    deploy.add_argument("--name")
    source = deploy.add_mutually_exclusive_group()
    source.add_argument("--image", help="a Docker image to run, e.g. nginx:alpine")
    source.add_argument("--git", help="a public git repository (https URL) for Coolify to build")
    deploy.add_argument("--branch")
    deploy.add_argument("--build-pack", choices=["nixpacks", "static", "dockerfile", "dockercompose", "railpack"])
    deploy.add_argument("--port", type=int, action="append", help="a port the app listens on (repeatable)")
    deploy.add_argument("--region")
    deploy.add_argument("--size")
    deploy.add_argument("--droplet-image", help="the droplet's OS image slug")
    deploy.add_argument(
        "--env", action="append", metavar="KEY[=VALUE]", help="an env var; KEY alone reads the value from your env"
    )
    deploy.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="run this again with the same KEY and input (within 24 h) to get the same deployment, never a second",
    )
    deploy.add_argument("--wait", action="store_true", help="follow the deployment; exit 0 if it completes")
    deploy.set_defaults(func=_cmd_deploy)
    follow = sub.add_parser("follow", help="stream a deployment's progress; exit 0 completed, 1 failed, 2 error")
    _client_options(follow)
    follow.add_argument("id")
    follow.add_argument("--after", type=int, help="only events after this sequence number")
    follow.set_defaults(func=_cmd_follow)
    _add_client_commands(sub)
    assets = sub.add_parser("assets", help="fetch GraphiQL (pinned, hash-checked) into DEPLOYER_ASSETS_DIR")
    assets.add_argument("--test", action="store_true", help="also the Compose Specification schema for the tests")
    assets.add_argument("--strict", action="store_true", help="exit 1 when anything could not be fetched")
    assets.set_defaults(func=_cmd_assets)
    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    create = token.add_parser("create", help="print a new random token once, and the hashed line to configure")
    create.add_argument("name", help="who or what will use it (shown in logs and audit rows)")
    create.add_argument(
        "--scopes", default="read,deploy,env,admin", help="comma-separated: read, deploy, env, admin (default all)"
    )
    create.set_defaults(func=_cmd_token_create)
    sub.add_parser("schema", help="print the GraphQL SDL").set_defaults(func=_cmd_schema)
    sub.add_parser(
        "doctor", help="read-only checks of the configured clouds and settings; exit 1 if any fails"
    ).set_defaults(func=_cmd_doctor)
    sub.add_parser("migrate", help="apply the database migrations (serve and worker also do at start)").set_defaults(
        func=_cmd_migrate
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `deployer` command."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
