"""The baseline of `bench.subscribers`: a bare Starlette websocket broadcast of the same bytes.

It speaks just enough `graphql-transport-ws` for the benchmark's clients (ack, pong, subscribe, complete),
follows the deployments' progress channels with one Redis pattern subscription, and sends every subscriber
of a deployment the frame deployer sends for `{ deploymentProgress(id: $id) { sequence } }` with operation id
`1`, encoded once per event. No database, no auth, no replay, no GraphQL: what fan-out costs at the least.

    .venv/bin/python -m bench.bare_broadcast --port 8001 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from jobs.progress import CHANNEL_PREFIX
from models.deployment import TERMINAL_STATUSES

COMPLETE = json.dumps({"id": "1", "type": "complete"}, separators=(",", ":"))
FINAL = {status.value for status in TERMINAL_STATUSES}


def create_app(redis_url: str) -> Starlette:
    """The broadcast app: websockets at `/graphql`, one pattern subscription to every progress channel."""
    followers: dict[str, set[WebSocket]] = {}

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="graphql-transport-ws")
        followed: str | None = None
        try:
            while True:
                message = json.loads(await websocket.receive_text())
                kind = message.get("type")
                if kind == "connection_init":
                    await websocket.send_text('{"type":"connection_ack"}')
                elif kind == "ping":
                    await websocket.send_text('{"type":"pong"}')
                elif kind == "subscribe":
                    if followed is not None:
                        followers.get(followed, set()).discard(websocket)
                    followed = str(message["payload"]["variables"]["id"])
                    followers.setdefault(followed, set()).add(websocket)
                elif kind == "complete" and followed is not None:
                    followers.get(followed, set()).discard(websocket)
        except WebSocketDisconnect:
            pass
        finally:
            if followed is not None:
                followers.get(followed, set()).discard(websocket)

    async def broadcast() -> None:
        redis = Redis.from_url(redis_url)
        pubsub = redis.pubsub()
        await pubsub.psubscribe(f"{CHANNEL_PREFIX}*")
        try:
            async for message in pubsub.listen():
                if message["type"] != "pmessage":
                    continue
                event = json.loads(message["data"])
                data = {"deploymentProgress": {"sequence": event["sequence"]}}
                frame = json.dumps({"id": "1", "type": "next", "payload": {"data": data}}, separators=(",", ":"))
                final = event["status"] in FINAL
                for websocket in list(followers.get(str(event["deployment_id"]), ())):
                    with contextlib.suppress(Exception):
                        await websocket.send_text(frame)
                        if final:
                            await websocket.send_text(COMPLETE)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await redis.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(broadcast())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return Starlette(routes=[WebSocketRoute("/graphql", endpoint)], lifespan=lifespan)


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.redis_url), host="127.0.0.1", port=args.port, log_level="warning")
