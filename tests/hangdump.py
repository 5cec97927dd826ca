"""When a test is about to hit its pytest-timeout, write where every asyncio task is waiting.

pytest-timeout (signal method) shows only the main thread, which for an async test is the event loop idling in
`select`; the task that hangs, and what it awaits, is what a rare CI hang needs to be explained. Ten seconds
before the test's timeout a daemon thread finds the running event loops and prints each task's stack to stderr
(pytest shows it with the failure). Reading stacks from another thread is racy, so a failure to print is
reported and ignored. It costs one timer thread per test, and nothing unless a test runs that long.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections.abc import Iterator

import pytest

#: Seconds before the test's timeout at which the stacks are written.
MARGIN_S = 10.0


def _timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 0)


def _awaits(coro: object) -> list[str]:
    """The chain of coroutines a task's coroutine is suspended in, down to what the innermost one awaits."""
    lines = []
    for _ in range(200):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            lines.append(f"    awaiting {coro!r}"[:400] + "\n")
            break
        lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}\n")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if coro is None:
            break
    return lines


def _dump(nodeid: str) -> None:
    try:
        loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]
        lines = [f"\n=== {nodeid}: close to its timeout; where the tasks of {len(loops)} running loop(s) wait ===\n"]
        for loop in loops:
            for task in list(asyncio.all_tasks(loop)):
                lines.append(f"--- {task.get_name()}\n")
                lines.extend(_awaits(task.get_coro()))
        sys.stderr.write("".join(lines))
    except Exception as exc:  # diagnostics only: never fail the test for it
        sys.stderr.write(f"\n=== {nodeid}: could not list its tasks ({exc!r}) ===\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Arm the dump for the test's call; disarm it when the call ends."""
    timeout = _timeout_of(item)
    timer = threading.Timer(timeout - MARGIN_S, _dump, (item.nodeid,)) if timeout > MARGIN_S else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
