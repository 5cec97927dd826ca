"""Per-job log context: the deployment id and job key are bound when a job starts and cleared when it ends."""

from __future__ import annotations

import contextvars
import logging
from typing import Any

deployment_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("deployment_id", default=None)
job_key_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_key", default=None)


class JobContextFilter(logging.Filter):
    """Adds `deployment_id` and `job_key` to every record logged while a job runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "deployment_id", None) is None:
            record.deployment_id = deployment_id_var.get()
        if getattr(record, "job_key", None) is None:
            record.job_key = job_key_var.get()
        return True


async def bind_job(ctx: Any) -> None:
    """SAQ `before_process`: bind the job's key and deployment id."""
    job = ctx.get("job")
    if job is not None:
        job_key_var.set(job.key)
        deployment_id_var.set((job.kwargs or {}).get("deployment_id"))


async def unbind_job(ctx: Any) -> None:
    """SAQ `after_process`: clear what `bind_job` set."""
    job_key_var.set(None)
    deployment_id_var.set(None)
