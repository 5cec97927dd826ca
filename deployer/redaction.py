"""Secrets out of log lines, whatever logged them and at whatever level, and no forged lines.

`redact(text, secrets)` removes what may be a secret from one log message:

- every configured secret (API tokens, cloud API keys, DEPLOYER_SECRET_KEY, default env values), verbatim;
- `Bearer …`/`Basic …` credentials and the value of any `Authorization`, `authToken`, `token`, `password`,
  `secret` or `api_key` field, in header, JSON or `key=value` form;
- GraphQL `variables` objects, `value` fields and `value:` arguments (env values travel there);
- the `payload` of a websocket `connection_init` message (it carries the token).

Websocket frames and handshake headers logged at DEBUG by the websockets library (through `uvicorn.error`)
are dropped entirely by `RedactingFilter`: they hold every message in full. Access log lines lose their
query string (a GET may carry variables).

`escape_controls(text)` writes control characters, line and paragraph separators and lone surrogates as
escapes, so client text cannot start a new log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"
#: Configured secrets shorter than this are not searched for verbatim (they would redact ordinary words).
MIN_SECRET_LENGTH = 8

_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s'\",;}\])]+")
_SECRET_FIELD = re.compile(
    r"""(?ix)
    (["']?\b(?:authorization|auth[_-]?token|token|access[_-]?token|password|passwd|secret|secret[_-]?key|api[_-]?key
        |x-api-key|cookie)\b["']?\s*[:=]\s*)
    """
)
_VALUE_FIELD = re.compile(r"""(?i)(["']?\b(?:variables|value)\b["']?\s*[:=]\s*)""")
_CONNECTION_INIT = re.compile(r"connection_init", re.I)
_PAYLOAD_FIELD = re.compile(r"""(?i)(["']?\bpayload\b["']?\s*[:=]\s*)""")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _value_end(text: str, start: int) -> int:
    """Where the value starting at `start` ends: a balanced JSON/GraphQL value, a quoted string or a bare word.

    A value cut short (a truncated log line) runs to the end of the text.
    """
    if start >= len(text):
        return start
    opener = text[start]
    if opener in "\"'":
        if text.startswith('"""', start):  # a GraphQL block string
            end = text.find('"""', start + 3)
            return len(text) if end < 0 else end + 3
        index = start + 1
        while index < len(text):
            if text[index] == "\\":
                index += 2
                continue
            if text[index] == opener:
                return index + 1
            index += 1
        return len(text)
    if opener in "{[":
        depth = 0
        index = start
        quote: str | None = None
        while index < len(text):
            char = text[index]
            if quote:
                if char == "\\":
                    index += 2
                    continue
                if char == quote:
                    quote = None
            elif char in "\"'":
                quote = char
            elif char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth == 0:
                    return index + 1
            index += 1
        return len(text)
    match = re.compile(r"[^\s,;}\])]*").match(text, start)
    return match.end() if match else start


def _redact_values(text: str, field: re.Pattern[str]) -> str:
    """Replace the value after every match of `field` (a `name:`/`name=` prefix) with REDACTED."""
    out: list[str] = []
    position = 0
    for match in field.finditer(text):
        if match.start() < position:
            continue
        start = match.end()
        end = _value_end(text, start)
        if end == start:
            continue
        out.append(text[position:start])
        out.append(f'"{REDACTED}"' if text[start] in "\"'{[" else REDACTED)
        position = end
    out.append(text[position:])
    return "".join(out)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without anything that may be a secret (see the module docstring)."""
    for secret in secrets:
        if len(secret) >= MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, REDACTED)
    text = _CREDENTIAL.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _redact_values(text, _SECRET_FIELD)
    text = _redact_values(text, _VALUE_FIELD)
    if _CONNECTION_INIT.search(text):
        text = _redact_values(text, _PAYLOAD_FIELD)
    return text


def escape_controls(text: str) -> str:
    """Control characters, U+2028/U+2029 and lone surrogates written as escapes (no forged log lines)."""

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        return _NAMED_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")

    return _CONTROL.sub(escape, text)


def _is_frame_trace(record: logging.LogRecord) -> bool:
    """A websockets-library DEBUG record (frames, handshake headers), logged through uvicorn's logger."""
    path = record.pathname.replace("\\", "/")
    return record.levelno <= logging.DEBUG and "/websockets/" in path and "/uvicorn/" not in path


class RedactingFilter(logging.Filter):
    """Drop websocket frame traces; redact every other record's message and arguments in place.

    Args:
        secrets: configured secret strings to remove verbatim wherever they appear.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        if _is_frame_trace(record):
            return False
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) >= 3:
            path = str(record.args[2])
            if "?" in path:
                record.args = (*record.args[:2], path.split("?", 1)[0] + "?" + REDACTED, *record.args[3:])
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what we can, never the arguments
            message = str(record.msg)
        record.msg = redact(message, self.secrets)
        record.args = None
        return True
