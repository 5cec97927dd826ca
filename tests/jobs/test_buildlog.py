"""The tail of a failed build's output: bounded, secret-free, ending where the build ended."""

from __future__ import annotations

from clients.coolify import BuildLogLine
from jobs.buildlog import TAIL_BYTES, TAIL_LINES, failure_tail


def lines(*texts: str) -> list[BuildLogLine]:
    """Build-log lines from plain texts."""
    return [BuildLogLine(text=t, stream="stdout", timestamp=None, command=None) for t in texts]


def test_keeps_the_last_lines() -> None:
    """Only the last TAIL_LINES lines are kept, in order."""
    tail = failure_tail(lines(*(f"line {n}" for n in range(50))))
    assert tail.splitlines() == [f"line {n}" for n in range(50 - TAIL_LINES, 50)]


def test_bounded_in_bytes() -> None:
    """Long lines stop the tail at TAIL_BYTES; the newest lines are the ones kept."""
    tail = failure_tail(lines(*(f"{n:03d}" + "x" * 1000 for n in range(20))))
    assert len(tail.encode()) <= TAIL_BYTES
    assert tail.splitlines()[-1].startswith("019")


def test_one_huge_line_keeps_its_end() -> None:
    """A single line over the limit keeps its end, where the error is."""
    tail = failure_tail(lines("a" * 10_000 + " exit code: 1"))
    assert tail.endswith("exit code: 1") and tail.startswith("…")
    assert len(tail.encode()) <= TAIL_BYTES


def test_known_secret_values_are_redacted() -> None:
    """Values deployer handed to Coolify never reach the error; very short values are left alone."""
    tail = failure_tail(lines("DATABASE_URL=postgres://u:hunter22@db/x", "DEBUG=1"), secrets=["hunter22", "1"])
    assert "hunter22" not in tail
    assert "[redacted]" in tail and "DEBUG=1" in tail


def test_empty_output_gives_empty_text() -> None:
    """No visible output, no tail."""
    assert failure_tail([]) == ""
