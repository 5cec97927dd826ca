"""Why a pipeline step stopped: expected failures carry a message fit for users."""

from __future__ import annotations


class StepFailedError(Exception):
    """A step failed for a reason the user should read (timeout, failed build, refused request).

    The message never contains a secret; it is stored as the deployment's `error`.
    """


class StepTimeoutError(StepFailedError):
    """A bounded poll ran past its deadline; `last_seen` is what it saw last (for a caller's own message)."""

    def __init__(self, message: str, *, last_seen: str = "") -> None:
        super().__init__(message)
        self.last_seen = last_seen


class CancelledByUserError(StepFailedError):
    """Someone asked to cancel the deployment; the pipeline stops and cleans up."""
