"""Process-wide logging set-up: one line per record, with the job's deployment id when there is one."""

from __future__ import annotations

import logging
import sys

from jobs.logcontext import JobContextFilter


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        deployment_id = getattr(record, "deployment_id", None)
        return f"{line} deployment_id={deployment_id}" if deployment_id else line


def configure_logging(level: str) -> None:
    """Log to stderr at `level`; quiet the chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(JobContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "tortoise", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
