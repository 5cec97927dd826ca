"""Helpers for outage and chaos tests: GraphQL over HTTP to one API process, a progress subscriber that survives
the loss of its API, and a TCP proxy that can cut a backing service (PostgreSQL) away and bring it back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

SUBSCRIPTION = """subscription($id: ID!, $after: Int) {
  deploymentProgress(id: $id, afterSequence: $after) { sequence status stage message at }
}"""
STATUS = """query($id: ID!) { deployment(id: $id) { status stage error dropletId serverUuid applicationUuid
  events { sequence status stage message at } } }"""
FINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "DESTROYED"})


async def gql(url: str, query: str, variables: dict[str, Any] | None = None, *, timeout: float = 20) -> dict[str, Any]:
    """POST a GraphQL operation to the API at `url`."""
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        response = await client.post("/graphql", json={"query": query, "variables": variables or {}})
    body: dict[str, Any] = response.json()
    return body


async def wait_for(check: Callable[[], Awaitable[bool]], *, timeout: float, what: str, every: float = 0.1) -> None:
    """Poll `check` until it holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)


def event_time(event: dict[str, Any]) -> float:
    """An event's `at` as a Unix timestamp."""
    return datetime.fromisoformat(str(event["at"]).replace("Z", "+00:00")).timestamp()


class Subscriber:
    """Follows one deployment's progress over `graphql-transport-ws` until the server completes the stream.

    Records every event with the time it arrived. When its API goes away mid-stream, it reconnects to the next
    URL with `afterSequence` set to the last event it saw, as a client following the README would.
    """

    def __init__(self, deployment_id: str, urls: list[str]) -> None:
        self.deployment_id = deployment_id
        self.urls = urls
        self.events: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.reconnects: list[float] = []
        self.completed = asyncio.Event()
        self._changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Subscriber:
        """Start following in the background."""
        self.task = asyncio.create_task(self._run(), name=f"subscriber-{self.deployment_id}")
        return self

    async def wait_until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first event (already seen or to come) matching `predicate`."""

        async def found() -> dict[str, Any] | None:
            return next((e for e in self.events if predicate(e)), None)

        async with asyncio.timeout(timeout):
            async with self._changed:
                while (event := await found()) is None:
                    if self.completed.is_set():
                        raise AssertionError(f"{self.deployment_id} ended without the awaited event: {self.events}")
                    await self._changed.wait()
        return event

    async def finish(self, timeout: float) -> list[dict[str, Any]]:
        """Wait for the end of the stream; returns every event."""
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), timeout)
        return self.events

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _run(self) -> None:
        attempt = 0
        try:
            while True:
                url = self.urls[attempt % len(self.urls)].replace("http://", "ws://") + "/graphql"
                try:
                    if await self._follow(url):
                        return
                except (OSError, WebSocketException, TimeoutError):
                    pass  # the API went away: go on from the last event on the next one
                attempt += 1
                self.reconnects.append(time.time())
                await asyncio.sleep(0.2)
        finally:
            self.completed.set()
            await self._notify()

    async def _follow(self, url: str) -> bool:
        after = self.events[-1]["sequence"] if self.events else None
        async with connect(url, subprotocols=["graphql-transport-ws"], open_timeout=5) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"
            variables = {"id": self.deployment_id, "after": after}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION,
                                                                                 "variables": variables}}))  # fmt: skip
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 120))
                if message["type"] == "next":
                    assert "errors" not in message["payload"], message
                    self.events.append(message["payload"]["data"]["deploymentProgress"])
                    self.arrivals.append(time.time())
                    await self._notify()
                elif message["type"] == "complete":
                    return True
                elif message["type"] == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                else:
                    raise AssertionError(message)


class TcpProxy:
    """A TCP proxy in a thread of its own, so a test can cut a service away (`cut()`: every connection is
    dropped and new ones are refused, as when the server is down) and bring it back (`restore()`)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpProxy:
        """Start forwarding."""
        self._thread.start()
        self.restore()
        return self

    def cut(self) -> None:
        """Stop listening and drop every open connection."""
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def restore(self) -> None:
        """Listen (on the same port) and forward again."""
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    def close(self) -> None:
        """Cut and stop the thread."""
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))
