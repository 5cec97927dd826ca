"""Process-wide logging set-up: one line per record, secrets redacted, in text or JSON (`LOG_FORMAT`).

Every record of every logger (uvicorn's and the websockets library's included: `serve` hands uvicorn no
logging config of its own) goes through one handler that:

- adds the job's `deployment_id`/`job_key` (`jobs.logcontext`) and the request's `request_id`/`caller`
  (`graphql_api.logcontext`);
- redacts secrets and drops websocket frame traces (`deployer.redaction`), at every level;
- writes text lines with control characters escaped and traceback lines indented, or JSON objects.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

from deployer.redaction import RedactingFilter, escape_controls, redact
from graphql_api.logcontext import RequestContextFilter
from jobs.logcontext import JobContextFilter
from settings import Settings

#: Record attributes carried into log lines when set.
CONTEXT_FIELDS = ("deployment_id", "job_key", "request_id", "caller")


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value…`; the message on one line, a traceback indented below it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        context = " ".join(
            f"{name}={escape_controls(str(value))}"
            for name in CONTEXT_FIELDS
            if (value := getattr(record, name, None)) is not None
        )
        if context:
            line = f"{line} {context}"
        details = _details(record, self, self.secrets)
        return f"{line}\n{_indent(details)}" if details else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields and any exception."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = str(value)
        details = _details(record, self, self.secrets)
        if details:
            entry["exception"] = details
        return json.dumps(entry, ensure_ascii=True, default=str)


def _details(record: logging.LogRecord, formatter: logging.Formatter, secrets: tuple[str, ...]) -> str:
    """The record's traceback and stack, redacted (exception messages may quote input)."""
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return redact("\n".join(parts), secrets) if parts else ""


def _indent(text: str) -> str:
    """Every line of a traceback indented and escaped, so none of it can pass for a log line of its own."""
    return "\n".join(f"    | {escape_controls(line)}" for line in text.splitlines())


def configure_logging(level: str, *, fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    """Log to stderr at `level` in `fmt` ("text" or "json"), redacting `secrets`; quiet the chatty libraries."""
    secrets = tuple(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else TextFormatter(secrets))
    handler.addFilter(JobContextFilter())
    handler.addFilter(RequestContextFilter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "tortoise", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []  # everything goes through the one redacting handler above
        logger.propagate = True


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret the settings hold, to be redacted verbatim from log lines."""
    secrets = [token.token for token in (*settings.api_tokens, *settings.file_tokens) if token.token]
    secrets += [settings.digitalocean.api_key, settings.coolify.api_key]
    secrets += [part for part in settings.secret_key.split(",") if part]
    secrets += [value for _, value in settings.default_env]
    return [secret for secret in secrets if secret]


def configure_from_settings(settings: Settings, *, extra_secrets: Iterable[str] = ()) -> None:
    """`configure_logging` with the settings' LOG_LEVEL, LOG_FORMAT and secrets."""
    configure_logging(
        settings.log_level, fmt=settings.log_format, secrets=[*settings_secrets(settings), *extra_secrets]
    )
