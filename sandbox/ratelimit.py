"""Request-rate windows, the way each cloud limits one caller, and how their times are written in headers.

- DigitalOcean counts each token's requests over a **rolling** window: every request counts for one hour
  (or one minute, for the burst limit) after it was made, and ``ratelimit-reset`` is when the oldest counted
  request expires (research digitalocean-api.md, "Rate limits"). That is ``RollingWindow``.
- Coolify uses Laravel's ``throttle`` middleware (``RateLimiter::for('api', Limit::perMinute(API_RATE_LIMIT)
  ->by(user id))`` in app/Providers/RouteServiceProvider.php). Laravel's ``RateLimiter::hit()`` opens a
  **fixed** window at the first hit (a ``:timer`` cache key living ``decaySeconds``) and counts every hit in
  it; ``availableIn()`` is the time left on the timer. That is ``FixedWindow``.

``PerCaller`` keeps one window per caller key (a token, or an IP for unauthenticated probes). Every window
length is divided by ``time_scale``; ``header_seconds`` writes whole seconds when the scale is 1, as both real
APIs do, and fractions otherwise.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["FixedWindow", "PerCaller", "RateWindow", "RollingWindow", "header_seconds"]


class RateWindow(Protocol):
    """What both kinds of window answer."""

    limit: int

    def hit(self, now: float) -> bool:
        """Count a request at ``now``; False (and not counted) when the window is full."""
        ...

    def remaining(self, now: float) -> int:
        """Requests left in the window at ``now``."""
        ...

    def reset_at(self, now: float) -> float:
        """Epoch time at which a counted request stops counting (the window frees up)."""
        ...

    def retry_after(self, now: float) -> float:
        """Seconds until one more request would be admitted (0 when it would be now)."""
        ...


class RollingWindow:
    """Counts requests over the last ``period_s`` seconds and refuses the one past ``limit`` (0: no limit)."""

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

    def reset_at(self, now: float) -> float:
        """Epoch time at which the oldest counted request stops counting."""
        self._expire(now)
        oldest = self._hits[0] if self._hits else now
        return oldest + self.period_s

    def retry_after(self, now: float) -> float:
        """Seconds until the oldest counted request expires, when the window is full; else 0."""
        self._expire(now)
        if self.limit <= 0 or len(self._hits) < self.limit:
            return 0.0
        return self._hits[0] + self.period_s - now


class FixedWindow:
    """Laravel's limiter: the first hit opens a window of ``period_s``; at most ``limit`` hits fit in it."""

    def __init__(self, limit: int, period_s: float) -> None:
        self.limit = limit
        self.period_s = period_s
        self._count = 0
        self._ends_at: float | None = None

    def _roll(self, now: float) -> None:
        if self._ends_at is not None and now >= self._ends_at:
            self._count, self._ends_at = 0, None

    def hit(self, now: float) -> bool:
        """Count a request at ``now``; False (and not counted: Laravel checks before it hits) when full."""
        if self.limit <= 0:
            return True
        self._roll(now)
        if self._count >= self.limit:
            return False
        if self._ends_at is None:
            self._ends_at = now + self.period_s
        self._count += 1
        return True

    def remaining(self, now: float) -> int:
        """Hits left in the current window (``X-RateLimit-Remaining``)."""
        if self.limit <= 0:
            return 0
        self._roll(now)
        return max(0, self.limit - self._count)

    def reset_at(self, now: float) -> float:
        """When the current window closes (``X-RateLimit-Reset`` on a 429)."""
        self._roll(now)
        return self._ends_at if self._ends_at is not None else now

    def retry_after(self, now: float) -> float:
        """Seconds until the window closes, when it is full; else 0 (``Retry-After``)."""
        self._roll(now)
        if self.limit <= 0 or self._count < self.limit or self._ends_at is None:
            return 0.0
        return self._ends_at - now


W = TypeVar("W", RollingWindow, FixedWindow)


class PerCaller(Generic[W]):
    """One window per caller key, made on first use (limits are per token, not global)."""

    def __init__(self, make: Callable[[], W]) -> None:
        self._make: Callable[[], W] = make
        self._windows: dict[str, W] = {}

    def __getitem__(self, key: str) -> W:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = self._make()
        return window

    def __len__(self) -> int:
        return len(self._windows)


def header_seconds(value: float, time_scale: float, *, minimum: float = 0.0) -> str:
    """A time for a header: whole seconds (rounded up) at scale 1, like the real APIs; else milliseconds."""
    value = max(value, minimum)
    if time_scale == 1:
        return str(math.ceil(value - 1e-9))
    text = f"{math.ceil(value * 1000 - 1e-6) / 1000:.3f}".rstrip("0").rstrip(".")
    return text or "0"
