"""Why a pipeline step stopped: expected failures carry a message fit for users."""

from __future__ import annotations


class StepFailedError(Exception):
    """A step failed for a reason the user should read (timeout, failed build, refused request).

    The message never contains a secret; it is stored as the deployment's `error`.
    """


class StepTimeoutError(StepFailedError):
    """A bounded poll ran past its deadline."""


class CancelledByUserError(StepFailedError):
    """Someone asked to cancel the deployment; the pipeline stops and cleans up."""
