"""The end of a failed build's output, fit for a deployment's `error` and a progress event."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from clients.coolify import BuildLogLine

#: At most this many lines of a failed build's output are kept.
TAIL_LINES = 20
#: And at most this many bytes (UTF-8) of them.
TAIL_BYTES = 4096
#: Values shorter than this are not redacted: "1" or "on" would blank out half the log.
MIN_SECRET_LENGTH = 4
REDACTED = "[redacted]"


def failure_tail(lines: Sequence[BuildLogLine], *, secrets: Iterable[str] = ()) -> str:
    """The last visible lines (at most `TAIL_LINES` and `TAIL_BYTES`), with known secret values blanked out.

    A build may print its own environment; the values deployer itself handed to Coolify are replaced by
    `[redacted]` before the text is stored or announced. An over-long single line is cut from its start, so
    the end, where the error usually is, survives.
    """
    hidden = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
    kept: list[str] = []
    size = 0
    for line in reversed(lines[-TAIL_LINES:]):
        text = line.text
        for secret in hidden:
            text = text.replace(secret, REDACTED)
        cost = len(text.encode()) + 1
        if size + cost > TAIL_BYTES:
            if not kept:  # one huge line: keep its end
                kept.append("…" + text.encode()[-(TAIL_BYTES - 4) :].decode(errors="ignore"))
            break
        kept.append(text)
        size += cost
    return "\n".join(reversed(kept))
