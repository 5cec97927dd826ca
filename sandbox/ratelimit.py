"""Sliding-window request counters, the way both clouds limit a token's request rate."""

from __future__ import annotations

import math
from collections import deque

__all__ = ["RateWindow"]


class RateWindow:
    """Counts requests over the last ``period_s`` seconds and refuses the one past ``limit``.

    A limit of 0 turns the window off (every request is admitted).
    """

    def __init__(self, limit: int, period_s: float) -> None:
        self.limit = limit
        self.period_s = period_s
        self._hits: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._hits and self._hits[0] <= now - self.period_s:
            self._hits.popleft()

    def hit(self, now: float) -> bool:
        """Count a request at ``now``; False (and not counted) when the window is full."""
        if self.limit <= 0:
            return True
        self._expire(now)
        if len(self._hits) >= self.limit:
            return False
        self._hits.append(now)
        return True

    def remaining(self, now: float) -> int:
        """Requests left in the window at ``now``."""
        if self.limit <= 0:
            return 0
        self._expire(now)
        return max(0, self.limit - len(self._hits))

    def reset_at(self, now: float) -> int:
        """Epoch second at which the oldest counted request stops counting."""
        self._expire(now)
        oldest = self._hits[0] if self._hits else now
        return math.ceil(oldest + self.period_s)

    def retry_after(self, now: float) -> int:
        """Whole seconds until one more request would be admitted."""
        self._expire(now)
        if self.limit <= 0 or len(self._hits) < self.limit:
            return 0
        return max(1, math.ceil(self._hits[0] + self.period_s - now))

    def clear(self) -> None:
        """Forget every counted request."""
        self._hits.clear()
