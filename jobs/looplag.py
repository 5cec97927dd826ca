"""Event-loop lag of a worker process: how late its timers fire, sampled all the time.

A worker runs every deployment of its process on one asyncio loop. When that loop is busy (too many jobs,
a slow parse, a blocking call), every poll, heartbeat and lease renewal of every job fires late, and a lease
that is renewed too late is lost. The monitor sleeps `interval_s` again and again and records how much later
than asked each sleep returned: that is the wait any callback scheduled at that moment would have seen.

The last `window` samples (ten minutes at the default interval) are kept; `summary()` gives their
percentiles. The worker logs a summary when it stops and, at WARNING, whenever the p99 of the last minute is
over `warn_ms`; it also shows the summary in its SAQ worker info (`metadata.loop_lag_ms`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("deployer.looplag")

#: Seconds between two samples.
INTERVAL_S = 0.1
#: Samples kept (ten minutes at `INTERVAL_S`).
WINDOW = 6000
#: A p99 over this many milliseconds, over the last minute, is logged as a warning.
WARN_MS = 250.0
#: Seconds between two updates of the summary in `metadata`.
PUBLISH_S = 10.0


@dataclass(frozen=True)
class LagSummary:
    """Percentiles of the kept samples, in milliseconds."""

    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def describe(self) -> str:
        """One line for a log: `p50 0.4 ms, p99 3.1 ms, max 12.0 ms over 600 samples`."""
        percentiles = f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms"
        return f"{percentiles} over {self.samples} samples"

    def as_dict(self) -> dict[str, float]:
        """For SAQ's worker info metadata (JSON)."""
        return {"samples": self.samples, "p50": self.p50_ms, "p99": self.p99_ms, "max": self.max_ms}


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class LoopLagMonitor:
    """Samples the running loop's lag in a background task; `summary()` at any time.

    Args:
        interval_s: seconds between samples.
        window: how many samples to keep.
        warn_ms: log a warning (at most once a minute) when the last minute's p99 is over this.
        metadata: a dict (SAQ's worker metadata) whose `loop_lag_ms` gets the last minute's summary every
            `PUBLISH_S` seconds.
    """

    def __init__(
        self,
        *,
        interval_s: float = INTERVAL_S,
        window: int = WINDOW,
        warn_ms: float = WARN_MS,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.warn_ms = warn_ms
        self.metadata = metadata
        self._samples_ms: deque[float] = deque(maxlen=window)
        self._per_minute = max(1, round(60 / interval_s))
        self._per_publish = max(1, round(PUBLISH_S / interval_s))
        self._task: asyncio.Task[None] | None = None

    def record(self, lag_ms: float) -> None:
        """Add one sample (the monitor's own task calls it; tests may too)."""
        self._samples_ms.append(max(0.0, lag_ms))

    def summary(self, last: int | None = None) -> LagSummary:
        """Percentiles of the kept samples, or of the `last` ones only."""
        values = list(self._samples_ms)
        if last is not None:
            values = values[-last:]
        values.sort()
        return LagSummary(
            samples=len(values),
            p50_ms=percentile(values, 0.50),
            p99_ms=percentile(values, 0.99),
            max_ms=values[-1] if values else 0.0,
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        count = 0
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval_s)
            self.record((loop.time() - asked - self.interval_s) * 1000)
            count += 1
            if self.metadata is not None and count % self._per_publish == 0:
                self.metadata["loop_lag_ms"] = self.summary(last=self._per_minute).as_dict()
            if count % self._per_minute == 0:
                minute = self.summary(last=self._per_minute)
                if minute.p99_ms > self.warn_ms:
                    logger.warning("event loop lag over the last minute: %s", minute.describe())

    def start(self) -> None:
        """Start sampling on the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> LagSummary:
        """Stop sampling; returns the summary of the kept samples."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return self.summary()
