"""Per-request log context: the request id (set by `graphql_api.edge`) and the caller (set once authenticated).

`RequestContextFilter` copies both onto every log record, so a line logged anywhere while serving a request
(a resolver, the progress hub, a library) says which request and which token name it belongs to.
"""

from __future__ import annotations

import contextvars
import logging

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
caller_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller", default=None)


class RequestContextFilter(logging.Filter):
    """Adds `request_id` and `caller` to every record logged while a request is served."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "caller", None) is None:
            record.caller = caller_var.get()
        return True
