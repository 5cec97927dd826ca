"""The client subcommands that cover the API: `list`, `status`, `cancel`, `destroy`, `env` and `logs`.

Each one is a GraphQL call to a running API (`--url`, default `$DEPLOYER_URL`; `--token`, default
`$DEPLOYER_TOKEN`). Output is meant for people; with `--json` it is one JSON document on stdout for scripts.
Exit status: 0 when the call did what was asked, 1 when the deployment it waited for did not end as asked
(`destroy --wait`), 2 when the API could not be reached or refused the call (the message, or with `--json` a
`{"error": {"code", "message"}}` document, goes to stderr).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from typing import Any, TextIO

from deployer.follow import EXIT_ERROR, EXIT_FAILED, EXIT_OK, FollowError, follow, graphql, parse_env

FIELDS = """id status stage failedStage error name dropletName dropletId ipAddress serverUuid applicationUuid
applicationUrl createdAt updatedAt finishedAt source { description }"""
LIST = (
    "query($status: [DeploymentStatus!], $first: Int, $after: String) {"
    " deployments(status: $status, first: $first, after: $after) {"
    " totalCount pageInfo { hasNextPage endCursor } edges { node { " + FIELDS + " } } } }"
)
STATUS = "query($id: ID!) { deployment(id: $id) { " + FIELDS + " events { sequence } } }"
CANCEL = "mutation($id: ID!) { cancelDeployment(id: $id) { " + FIELDS + " } }"
DESTROY = "mutation($id: ID!) { destroyDeployment(id: $id) { " + FIELDS + " } }"
LOGS = """query($id: ID!, $lines: Int) { deployment(id: $id) { id status error
  buildLog(lines: $lines) { coolifyDeploymentUuid status totalLines visible lines { text stream at } } } }"""
APP_DEPLOYMENT = """query($app: ID!) { deployments(applicationUuid: $app, first: 1) { edges { node {
  id application { uuid name envKeys { key isBuildTime isRuntime isPreview isLiteral isMultiline } } } } } }"""
ENV_RESULT = "applicationUuid action keys appliedKeys failedKeys missingKeys deleted restart { mode deploymentUuid }"
BULK_SET = (
    "mutation($app: ID!, $vars: [EnvVarInput!]!, $restart: Boolean) {"
    " bulkSetEnv(applicationUuid: $app, variables: $vars, restart: $restart) { " + ENV_RESULT + " } }"
)
DELETE = (
    "mutation($app: ID!, $key: String!, $restart: Boolean) {"
    " deleteEnv(applicationUuid: $app, key: $key, restart: $restart) { " + ENV_RESULT + " } }"
)
#: Statuses whose application no longer exists, so no address is shown for them.
GONE = frozenset({"FAILED", "CANCELLED", "DESTROYING", "DESTROYED"})


class Output:
    """Where results and errors go: text for people, or JSON documents with `--json`."""

    def __init__(self, as_json: bool, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.as_json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def result(self, data: Any, text: str) -> None:
        """Print a result: `data` as JSON with `--json`, else `text`."""
        self.out.write((json.dumps(data, indent=2) if self.as_json else text).rstrip("\n") + "\n")
        self.out.flush()

    def error(self, exc: FollowError) -> int:
        """Report a failed call and return the exit status for it."""
        if self.as_json:
            self.err.write(json.dumps({"error": {"code": exc.code, "message": exc.message}}) + "\n")
        else:
            self.err.write(f"error: {exc}\n")
        self.err.flush()
        return EXIT_ERROR


def describe(deployment: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows `status` prints: only what is known, and an address only while the application exists."""
    rows = [("id", deployment["id"]), ("status", deployment["status"]), ("stage", deployment["stage"])]
    if deployment.get("failedStage"):
        rows.append(("failed at", deployment["failedStage"]))
    if deployment.get("error"):
        rows.append(("error", deployment["error"]))
    for label, key in (("name", "name"), ("droplet", "dropletName")):
        if deployment.get(key):
            rows.append((label, str(deployment[key])))
    if deployment.get("source"):
        rows.append(("source", deployment["source"]["description"]))
    live = deployment["status"] not in GONE
    if live and deployment.get("ipAddress"):
        rows.append(("ip", deployment["ipAddress"]))
    if deployment.get("applicationUuid"):
        rows.append(("application", deployment["applicationUuid"] + ("" if live else " (deleted)")))
    if live and deployment["status"] == "COMPLETED" and deployment.get("applicationUrl"):
        rows.append(("url", deployment["applicationUrl"]))
    rows += [("created", deployment["createdAt"]), ("updated", deployment["updatedAt"])]
    if deployment.get("finishedAt"):
        rows.append(("finished", deployment["finishedAt"]))
    return rows


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def _statuses(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip().upper() for value in values for part in value.split(",") if part.strip()]


async def cmd_list(args: Any, output: Output) -> int:
    """`deployer list [--status S]… [--first N] [--after CURSOR]`: deployments, newest first."""
    variables = {"status": _statuses(args.status), "first": args.first, "after": args.after}
    data = (await graphql(args.url, LIST, variables, args.token))["deployments"]
    nodes = [edge["node"] for edge in data["edges"]]
    lines = [f"{'ID':<36}  {'STATUS':<10}  {'STAGE':<18}  {'NAME':<16}  CREATED"]
    for node in nodes:
        name = str(node.get("name") or "-")[:16]
        lines.append(f"{node['id']:<36}  {node['status']:<10}  {node['stage']:<18}  {name:<16}  {node['createdAt']}")
    footer = f"{len(nodes)} of {data['totalCount']} deployment(s)"
    if data["pageInfo"]["hasNextPage"]:
        footer += f"; next page: --after {data['pageInfo']['endCursor']}"
    output.result(
        {"deployments": nodes, "totalCount": data["totalCount"], "pageInfo": data["pageInfo"]},
        "\n".join([*lines, footer]) if nodes else footer,
    )
    return EXIT_OK


async def cmd_status(args: Any, output: Output) -> int:
    """`deployer status ID`: one deployment."""
    deployment = (await graphql(args.url, STATUS, {"id": args.id}, args.token))["deployment"]
    deployment.pop("events", None)
    output.result(deployment, _table(describe(deployment)))
    return EXIT_OK


async def cmd_cancel(args: Any, output: Output) -> int:
    """`deployer cancel ID`: stop a QUEUED or PROCESSING deployment."""
    deployment = (await graphql(args.url, CANCEL, {"id": args.id}, args.token))["cancelDeployment"]
    output.result(deployment, f"deployment {deployment['id']}: cancel requested ({deployment['status']})")
    return EXIT_OK


async def cmd_destroy(args: Any, output: Output) -> int:
    """`deployer destroy ID [--wait]`: delete the deployment's server and droplet (with --wait, until gone)."""
    before = (await graphql(args.url, STATUS, {"id": args.id}, args.token))["deployment"]
    last = max((event["sequence"] for event in before["events"]), default=0)
    deployment = (await graphql(args.url, DESTROY, {"id": args.id}, args.token))["destroyDeployment"]
    if not args.wait:
        output.result(deployment, f"deployment {deployment['id']}: {deployment['status']}")
        return EXIT_OK
    stream = io.StringIO() if output.as_json else output.out
    code = await follow(args.url, args.id, token=args.token, after=last, out=stream)
    if code == EXIT_ERROR:
        return EXIT_ERROR
    final = (await graphql(args.url, STATUS, {"id": args.id}, args.token))["deployment"]
    final.pop("events", None)
    if output.as_json:
        output.result(final, "")
    return EXIT_OK if final["status"] in ("DESTROYED", "CANCELLED") else EXIT_FAILED


async def cmd_logs(args: Any, output: Output) -> int:
    """`deployer logs ID [--lines N]`: the end of the latest Coolify build log."""
    deployment = (await graphql(args.url, LOGS, {"id": args.id, "lines": args.lines}, args.token))["deployment"]
    log = deployment["buildLog"]
    if log is None:
        text = f"deployment {deployment['id']} ({deployment['status']}): Coolify has no build log for it"
        if deployment.get("error"):
            text += f"\nerror: {deployment['error']}"
    elif not log["visible"]:
        text = "Coolify hides build logs from this API's Coolify token (it needs the read:sensitive ability)"
    else:
        header = f"# Coolify deployment {log['coolifyDeploymentUuid']} ({log['status']})"
        shown = len(log["lines"])
        if shown < log["totalLines"]:
            header += f", last {shown} of {log['totalLines']} lines"
        text = "\n".join([header, *(line["text"] for line in log["lines"])])
    output.result(deployment, text)
    return EXIT_OK


async def cmd_env(args: Any, output: Output) -> int:
    """`deployer env list|set|unset APP …`: an application's environment (keys only when listing)."""
    restart = not getattr(args, "no_restart", False)
    if args.env_command == "list":
        data = (await graphql(args.url, APP_DEPLOYMENT, {"app": args.app}, args.token))["deployments"]["edges"]
        application = data[0]["node"]["application"] if data else None
        if application is None:
            raise FollowError(f"no application {args.app} deployed by deployer exists in Coolify", code="NOT_FOUND")
        keys = application["envKeys"]
        lines = [f"{'KEY':<32}  FLAGS"]
        for key in keys:
            flags = [name for name, on in (("build", key["isBuildTime"]), ("runtime", key["isRuntime"]),
                     ("preview", key["isPreview"]), ("literal", key["isLiteral"]),
                     ("multiline", key["isMultiline"])) if on]  # fmt: skip
            lines.append(f"{key['key']:<32}  {','.join(flags)}")
        output.result({"applicationUuid": args.app, "envKeys": keys}, "\n".join(lines))
        return EXIT_OK
    if args.env_command == "set":
        variables = parse_env(args.pairs, dict(os.environ))
        variables_doc = {"app": args.app, "vars": variables, "restart": restart}
        update = (await graphql(args.url, BULK_SET, variables_doc, args.token))["bulkSetEnv"]
    else:
        update = (await graphql(args.url, DELETE, {"app": args.app, "key": args.key, "restart": restart}, args.token))[
            "deleteEnv"
        ]
    restarted = update["restart"]["mode"]
    text = f"{update['action']} {', '.join(update['appliedKeys']) or '(nothing)'} on {update['applicationUuid']}"
    if update.get("missingKeys"):
        text += f"; not set: {', '.join(update['missingKeys'])}"
    text += f"; restart: {restarted}"
    output.result(update, text)
    return EXIT_OK


COMMANDS = {
    "list": cmd_list,
    "status": cmd_status,
    "cancel": cmd_cancel,
    "destroy": cmd_destroy,
    "logs": cmd_logs,
    "env": cmd_env,
}


def main_command(args: Any) -> int:
    """Entry of the API client subcommands: run one, turn API errors into exit status 2."""
    output = Output(bool(getattr(args, "json", False)))

    async def run() -> int:
        try:
            return await COMMANDS[args.command](args, output)
        except FollowError as exc:
            return output.error(exc)

    return asyncio.run(run())
