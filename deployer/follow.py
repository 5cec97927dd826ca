"""`deployer deploy` and `deployer follow`: start a deployment and watch it from a terminal, a script or CI.

`follow` subscribes to `deploymentProgress` over websockets (`graphql-transport-ws`) and prints each event. On
a terminal it redraws one progress line (a bar over the pipeline's stages, the stage, the latest message);
otherwise it prints one line per event, for logs. The exit status tells a script how it ended: 0 for
COMPLETED or DESTROYED, 1 for FAILED or CANCELLED, 2 when the API could not be reached or refused the call.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

#: The pipeline's stages in order, for the progress bar.
STAGES = (
    "QUEUED",
    "CREATE_DROPLET",
    "WAIT_DROPLET",
    "REGISTER_SERVER",
    "VALIDATE_SERVER",
    "CREATE_APPLICATION",
    "START_DEPLOYMENT",
    "WAIT_BUILD",
    "DONE",
)
SUCCESS = frozenset({"COMPLETED", "DESTROYED"})
FAILURE = frozenset({"FAILED", "CANCELLED"})
EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
BAR_WIDTH = 24

SUBSCRIPTION = """subscription($id: ID!, $after: Int) {
  deploymentProgress(id: $id, afterSequence: $after) { sequence status stage message at }
}"""
DEPLOY = """mutation($input: DeployInput) {
  deploy(input: $input) { id status dropletName }
}"""
STATUS = """query($id: ID!) { deployment(id: $id) { status stage failedStage error ipAddress applicationUrl } }"""


class FollowError(Exception):
    """The API could not be reached, or it answered with a GraphQL error (the message says which).

    `code` is the GraphQL error's `extensions.code`, or UNREACHABLE when no usable answer came back.
    """

    def __init__(self, message: str, *, code: str = "UNREACHABLE") -> None:
        super().__init__(message if code == "UNREACHABLE" else f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Renderer:
    """Prints events: a redrawn progress line on a terminal, one line per event elsewhere (or, with `as_json`,
    one JSON object per event).

    On a terminal the bar shows the stages reached. When the deployment fails (or is cancelled) the bar stops at
    the stage that failed, marked `x`, and the label says FAILED at that stage: a failure never looks done.
    """

    out: TextIO
    live: bool
    as_json: bool = False
    #: The last pipeline stage reached before CLEANUP/DONE (where a failure happened).
    reached: str = "QUEUED"

    def event(self, event: dict[str, Any]) -> None:
        """Show one progress event."""
        stage = str(event["stage"])
        if stage in STAGES[:-1]:
            self.reached = stage
        if self.as_json:
            self.out.write(json.dumps(event) + "\n")
            self.out.flush()
            return
        if not self.live:
            self.out.write(f"[{event['sequence']:>3}] {event['status']:<10} {stage:<18} {event['message']}\n")
            self.out.flush()
            return
        failing = event["status"] in FAILURE or stage == "CLEANUP"
        if failing:
            done = STAGES.index(self.reached)
            filled = round(BAR_WIDTH * done / len(STAGES))
            bar = "#" * filled + "x" + "-" * (BAR_WIDTH - filled - 1)
            verb = "CANCELLED" if event["status"] == "CANCELLED" else "FAILED"
            label = f"{verb} at {self.reached}" if event["status"] in FAILURE else f"cleaning up ({self.reached})"
        else:
            done = len(STAGES) if event["status"] in SUCCESS else STAGES.index(stage) + 1 if stage in STAGES else 0
            filled = round(BAR_WIDTH * done / len(STAGES))
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            label = stage
        width = max(20, _columns() - BAR_WIDTH - 40)
        message = str(event["message"])
        message = message if len(message) <= width else message[: width - 1] + "…"
        self.out.write(f"\r\x1b[2K[{bar}] {done}/{len(STAGES)} {label:<18} {message}")
        self.out.flush()

    def finish(self, summary: str) -> None:
        """End the live line and print a summary."""
        if self.live:
            self.out.write("\n")
        self.out.write(summary + "\n")
        self.out.flush()


def _columns() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def graphql(url: str, query: str, variables: dict[str, Any], token: str | None) -> dict[str, Any]:
    """POST one operation to `<url>/graphql` and return its data; GraphQL errors raise FollowError."""
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                f"{url}/graphql", json={"query": query, "variables": variables}, headers=_headers(token)
            )
    except httpx.HTTPError as exc:
        raise FollowError(f"cannot reach {url}: {exc}") from exc
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        raise FollowError(f"{url} answered HTTP {response.status_code} without JSON") from None
    if body.get("errors"):
        error = body["errors"][0]
        raise FollowError(str(error.get("message")), code=str((error.get("extensions") or {}).get("code", "ERROR")))
    data: dict[str, Any] = body["data"]
    return data


async def follow(
    url: str,
    deployment_id: str,
    *,
    token: str | None = None,
    after: int | None = None,
    out: TextIO | None = None,
    as_json: bool = False,
) -> int:
    """Stream a deployment's progress until it ends; returns the exit status (0 ok, 1 failed, 2 error)."""
    stream = out or sys.stdout
    renderer = Renderer(stream, live=stream.isatty() and not as_json, as_json=as_json)
    ws_url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/graphql"
    last: dict[str, Any] | None = None
    try:
        async with connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            init_payload = {"Authorization": f"Bearer {token}"} if token else {}
            await ws.send(json.dumps({"type": "connection_init", "payload": init_payload}))
            ack = json.loads(await ws.recv())
            if ack.get("type") != "connection_ack":
                raise FollowError(f"the API refused the websocket: {ack}")
            variables = {"id": deployment_id, "after": after}
            await ws.send(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION, "variables": variables}})
            )
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "next":
                    payload = message["payload"]
                    if payload.get("errors"):
                        error = payload["errors"][0]
                        code = str((error.get("extensions") or {}).get("code", "ERROR"))
                        raise FollowError(str(error["message"]), code=code)
                    last = payload["data"]["deploymentProgress"]
                    renderer.event(last)
                elif message["type"] == "error":
                    raise FollowError(f"subscription error: {message.get('payload')}")
                elif message["type"] == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                elif message["type"] == "complete":
                    break
    except (OSError, WebSocketException) as exc:
        renderer.finish(f"error: cannot follow {deployment_id} at {ws_url}: {exc}")
        return EXIT_ERROR
    except FollowError as exc:
        renderer.finish(f"error: {exc}")
        return EXIT_ERROR
    try:
        final = (await graphql(url, STATUS, {"id": deployment_id}, token))["deployment"]
    except FollowError as exc:
        renderer.finish(f"error: {exc}")
        return EXIT_ERROR
    status = final["status"]
    if as_json:
        renderer.finish(json.dumps({"deployment": {"id": deployment_id, **final}}))
    else:
        renderer.finish(summary(deployment_id, final))
    if status in SUCCESS:
        return EXIT_OK
    if status in FAILURE:
        return EXIT_FAILED
    return EXIT_ERROR  # the stream ended early (server shutting down): the deployment goes on


def summary(deployment_id: str, final: dict[str, Any]) -> str:
    """What `follow` prints at the end. Its last line is the status, where a failure happened, and an address
    only while the application runs (a failed, cancelled or destroyed deployment's application and droplet are
    deleted); the lines of build output a failed build's error carries come before it."""
    status = final["status"]
    details = [f"deployment {deployment_id}: {status}"]
    if status in FAILURE and final.get("failedStage"):
        details[0] += f" at {final['failedStage']}"
    if status == "COMPLETED":
        if final.get("ipAddress"):
            details.append(f"ip {final['ipAddress']}")
        if final.get("applicationUrl"):
            details.append(f"url {final['applicationUrl']}")
    output: list[str] = []
    if final.get("error"):
        # A failed build's error ends with the last lines of its output: shown above, so that the summary
        # stays the last line (scripts read it).
        first, *rest = str(final["error"]).splitlines() or [""]
        details.append(f"error: {first}")
        output = [f"  | {line}" for line in rest]
    return "\n".join([*output, ", ".join(details)])


def parse_env(items: Sequence[str], environ: dict[str, str]) -> list[dict[str, str]]:
    """`KEY=value`, or `KEY` alone to take the value from this process's environment (keeps it off the command
    line and out of shell history)."""
    result = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            if key not in environ:
                raise FollowError(f"--env {key}: no value given and {key} is not set in the environment")
            value = environ[key]
        result.append({"key": key, "value": value})
    return result


def deploy_input(args: Any, environ: dict[str, str]) -> dict[str, Any]:
    """The `DeployInput` the `deploy` subcommand's options describe (only what was given)."""
    data: dict[str, Any] = {}
    if args.name:
        data["name"] = args.name
    if args.git:
        git: dict[str, Any] = {"repository": args.git}
        if args.branch:
            git["branch"] = args.branch
        if args.build_pack:
            git["buildPack"] = args.build_pack.upper()
        data["source"] = {"git": git}
    elif args.image:
        image, _, tag = args.image.partition(":")
        data["source"] = {"docker": {"image": image, **({"tag": tag} if tag else {})}}
    for field in ("region", "size"):
        if getattr(args, field):
            data[field] = getattr(args, field)
    if args.droplet_image:
        data["image"] = args.droplet_image
    if args.port:
        data["ports"] = args.port
    if args.env:
        data["env"] = parse_env(args.env, environ)
    if getattr(args, "idempotency_key", None):
        data["idempotencyKey"] = args.idempotency_key
    return data


async def deploy_and_follow(args: Any, environ: dict[str, str], out: TextIO | None = None) -> int:
    """Run `deploy`; print the new id; with `--wait`, follow it to the end."""
    stream = out or sys.stdout
    try:
        data = await graphql(args.url, DEPLOY, {"input": deploy_input(args, environ)}, args.token)
    except FollowError as exc:
        if getattr(args, "json", False):
            stream.write(json.dumps({"error": {"code": exc.code, "message": exc.message}}) + "\n")
        else:
            stream.write(f"error: {exc}\n")
        return EXIT_ERROR
    deployment = data["deploy"]
    as_json = bool(getattr(args, "json", False))
    if as_json:
        stream.write(json.dumps({"deploy": deployment}) + "\n")
    else:
        stream.write(f"deployment {deployment['id']} queued (droplet {deployment['dropletName']})\n")
    stream.flush()
    if not args.wait:
        return EXIT_OK
    return await follow(args.url, deployment["id"], token=args.token, out=stream, as_json=as_json)


def main_follow(args: Any) -> int:
    """Entry for `deployer follow`."""
    return asyncio.run(follow(args.url, args.id, token=args.token, after=args.after, as_json=bool(args.json)))


def main_deploy(args: Any) -> int:
    """Entry for `deployer deploy`."""
    return asyncio.run(deploy_and_follow(args, dict(os.environ)))
