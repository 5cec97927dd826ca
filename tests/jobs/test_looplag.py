"""`jobs.looplag`: the worker's event-loop lag monitor."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from jobs.looplag import LoopLagMonitor, percentile


def test_percentiles_are_nearest_rank() -> None:
    """p50 and p99 of 1..100 ms are 50 and 99; no samples give zeros."""
    monitor = LoopLagMonitor()
    for ms in range(100, 0, -1):
        monitor.record(float(ms))
    summary = monitor.summary()
    assert (summary.samples, summary.p50_ms, summary.p99_ms, summary.max_ms) == (100, 50.0, 99.0, 100.0)
    assert monitor.summary(last=10).samples == 10
    assert percentile([], 0.99) == 0.0
    assert LoopLagMonitor().summary().describe() == "p50 0.0 ms, p99 0.0 ms, max 0.0 ms over 0 samples"


async def test_a_blocked_loop_shows_as_lag() -> None:
    """A callback that holds the loop for 0.2 s shows as a sample of about that lag; an idle loop's are small."""
    metadata: dict[str, Any] = {}
    monitor = LoopLagMonitor(interval_s=0.01, metadata=metadata)
    monitor.start()
    await asyncio.sleep(0.2)
    time.sleep(0.2)  # the whole loop waits, as it would behind a slow parse
    await asyncio.sleep(0.05)
    summary = await monitor.stop()
    assert summary.max_ms >= 150
    assert summary.p50_ms < 100
    assert summary.samples >= 10


async def test_a_slow_minute_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """When the last minute's p99 is over the threshold, the monitor says so at WARNING, and publishes it."""
    metadata: dict[str, Any] = {}
    monitor = LoopLagMonitor(interval_s=0.01, warn_ms=20, metadata=metadata)
    monitor._per_minute = monitor._per_publish = 5  # a "minute" of five samples
    with caplog.at_level(logging.WARNING, logger="deployer.looplag"):
        monitor.start()
        for _ in range(6):
            time.sleep(0.05)
            await asyncio.sleep(0.015)
        await monitor.stop()
    assert any("event loop lag over the last minute" in r.getMessage() for r in caplog.records)
    assert metadata["loop_lag_ms"]["p99"] >= 20
