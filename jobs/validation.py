"""Getting a fresh droplet validated by Coolify, the way Coolify really behaves.

What the real Coolify does (v4.3, `app/Jobs/ValidateAndInstallServerJob.php`, `app/Traits/SshRetryable.php`,
`app/Actions/Server/ValidateServer.php`, `app/Http/Controllers/Api/ServersController.php`):

- `POST /servers/{uuid}/validate {"install": true}` only queues the install job and answers 201 at once.
- The job sets `is_validating` true, tries SSH three times a few seconds apart, and if sshd does not answer it
  writes "Server is not reachable… Error: ssh: connect to host … port 22: Connection refused" into
  `validation_logs`, sets `is_validating` false and stops. It never tries again by itself. DigitalOcean says
  `active` when the VM is powered on; sshd answers 20-60 s later, so the first validation often ends this way.
- A refused key ("Permission denied (publickey)") is not among SshRetryable's transient errors: retrying it is
  pointless.
- Once SSH works it installs Docker (minutes) and re-queues itself, keeping `is_validating` true, then sets
  `is_reachable`/`is_usable` and finally `is_validating` false.
- The install job never clears `validation_logs`: an early failure stays written after a later success. Old
  logs are no verdict; the flags are, once `is_validating` has gone false after our request.
- The API starts another job even while one is running; two install jobs at once race on the host. So we never
  ask while `is_validating` is true.

:func:`validate_until_usable` drives that: it waits out a running validation, asks once, waits for the verdict,
asks again with backoff while the host is merely unreachable, and fails at once on a refused key.

`GET /servers` (shared by every waiting deployment, :mod:`jobs.polls`) has the flags but neither `is_validating`
nor the logs (`ServersController::servers` selects only id, name, uuid, ip, user, port, description and loads
the settings), so every decision still comes from `GET /servers/{uuid}`. The list only spares reads during the
long part: while our last read showed Coolify installing Docker, a poll whose list entry shows the same flags
skips the read (see :class:`_ServerReader`).
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.coolify import Server, ValidationFailure, classify_validation_failure, validation_text
from jobs.errors import StepFailedError, StepTimeoutError
from jobs.run import Run

#: Longest wait between two validation requests for a host that is not answering yet, in poll intervals.
MAX_BACKOFF_POLLS = 6
#: Polls to wait for a requested validation to show any sign of life before judging by what is there.
PICKUP_POLLS = 6
#: While Coolify installs Docker and the shared list shows no change, read the server itself every this many polls.
INSTALL_READ_EVERY = 6
_LOG_CHARS = 300


@dataclass
class _Verdict:
    """How one requested validation ended."""

    usable: bool
    logs: str | None


def _flags(server: Server) -> str:
    return f"reachable={server.is_reachable}, usable={server.is_usable}"


def _summary(logs: str | None) -> str:
    """The failure in one short line: "Server is not reachable: ssh: … Connection refused", not the advice."""
    text = validation_text(logs)
    head, marker, detail = text.rpartition("Error:")
    if marker and detail.strip():
        text = f"{head.split('.')[0].strip() or 'Error'}: {detail.strip()}"
    if not text:
        return "no details"
    return text[:_LOG_CHARS] + ("…" if len(text) > _LOG_CHARS else "")


async def validate_until_usable(run: Run, server_uuid: str, *, key_hint: str) -> None:
    """Return once Coolify can use the server; raise `StepFailedError` when it cannot or time runs out.

    Args:
        key_hint: says which key Coolify logs in with, for the error when the host refuses it.
    """
    timings = run.deps.config.timings
    attempt = _Attempts(deadline=run.clock() + timings.server_timeout_s)
    try:
        await _validate(run, server_uuid, attempt, key_hint)
    except StepTimeoutError as exc:
        seen = exc.last_seen or "nothing yet"
        said = f"; the last validation said: {attempt.last_failure}" if attempt.last_failure else ""
        raise StepTimeoutError(
            f"Timed out after {timings.server_timeout_s:g} s waiting for Coolify to validate the server "
            f"({attempt.requests} validation request(s)); last seen: {seen}{said}"
        ) from None


@dataclass
class _Attempts:
    """What the validation loop has done so far."""

    deadline: float
    requests: int = 0
    last_failure: str | None = None


async def _validate(run: Run, server_uuid: str, attempt: _Attempts, key_hint: str) -> None:
    interval = run.deps.config.timings.server_poll_interval_s
    coolify = run.deps.coolify
    while True:
        server = await coolify.get_server(server_uuid)
        if server.is_validating:
            # A validation is already running (ours, from an attempt that was interrupted, or someone's in
            # Coolify's UI): asking again would start a second install job on the same host.
            server = await _wait_while_validating(run, server_uuid, attempt.deadline)
        if server.usable:
            return
        if attempt.requests:  # our last request found the host unreachable: back off before asking again
            wait = interval * min(2 ** (attempt.requests - 1), MAX_BACKOFF_POLLS)
            if run.clock() + wait >= attempt.deadline:
                raise StepTimeoutError("out of time", last_seen=attempt.last_failure or "")
            await run.event(
                f"Coolify could not reach the server yet ({attempt.last_failure}); asking again in {wait:.3g} s"
            )
            await run.check_cancel()
            await run.sleep(wait)
            server = await coolify.get_server(server_uuid)
            if server.is_validating or server.usable:
                continue  # someone else asked meanwhile: wait for that one instead
        attempt.requests += 1
        await coolify.validate_server(server_uuid, install=True)
        await run.event(f"Asked Coolify to validate the server and install Docker (request {attempt.requests})")
        verdict = await _await_verdict(run, server_uuid, attempt.deadline, server.validation_logs)
        if verdict.usable:
            return
        attempt.last_failure = _judge(verdict.logs, key_hint)


def _judge(logs: str | None, key_hint: str) -> str:
    """Raise for a final failure; return a description of a failure worth asking again about."""
    kind = classify_validation_failure(logs)
    if kind is ValidationFailure.KEY_REJECTED:
        raise StepFailedError(
            f"The server refused Coolify's SSH key ({_summary(logs)}). {key_hint} Asking again will not help."
        )
    if kind is ValidationFailure.OTHER and logs:
        raise StepFailedError(f"Coolify could not validate the server: {_summary(logs)}")
    return _summary(logs) if logs else "not reachable yet"


class _ServerReader:
    """Reads the server during one wait, letting the shared `GET /servers` stand in while Docker installs.

    Installing Docker (`is_validating`, reachable, not yet usable) takes minutes on a real host. While the last
    read showed that and the shared list still shows the same flags, :meth:`read` skips the request, up to
    `INSTALL_READ_EVERY - 1` polls in a row: an install can also fail without changing the flags (an OS or a
    Docker version Coolify refuses), which only the server's own `is_validating` and logs show. Any change in the
    list, a missing entry or a failed list call means a read.
    """

    def __init__(self, run: Run, server_uuid: str) -> None:
        self._run = run
        self._uuid = server_uuid
        self.last: Server | None = None
        self._skipped = 0

    async def read(self) -> Server | None:
        """The server read now, or None when the shared list shows the install still going unchanged."""
        polls, last = self._run.deps.polls, self.last
        installing = last is not None and last.is_validating and last.is_reachable and not last.usable
        if polls is not None and last is not None and installing and self._skipped < INSTALL_READ_EVERY - 1:
            interval = self._run.deps.config.timings.server_poll_interval_s
            listed = await polls.server(self._uuid, interval)
            if listed is not None and (listed.is_reachable, listed.is_usable, listed.force_disabled) == (
                last.is_reachable,
                last.is_usable,
                last.force_disabled,
            ):
                self._skipped += 1
                return None
        self._skipped = 0
        self.last = await self._run.deps.coolify.get_server(self._uuid)
        return self.last


async def _wait_while_validating(run: Run, server_uuid: str, deadline: float) -> Server:
    """Poll until `is_validating` is false; returns the server as last read."""
    timings = run.deps.config.timings
    reader = _ServerReader(run, server_uuid)

    async def check(attempt: int) -> tuple[Server | None, str]:
        seen = await reader.read()
        if seen is None:
            assert reader.last is not None
            return None, f"Coolify is validating ({_flags(reader.last)})"
        if not seen.is_validating:
            return seen, "done"
        return None, f"Coolify is validating ({_flags(seen)})"

    return await run.poll(
        "a validation already running to finish",
        check,
        interval=timings.server_poll_interval_s,
        timeout=max(0.0, deadline - run.clock()),
    )


async def _await_verdict(run: Run, server_uuid: str, deadline: float, logs_before: str | None) -> _Verdict:
    """Wait until the validation we requested has visibly ended, and say how.

    It has ended once `is_validating` was seen true and is false again, or the logs changed, or the server is
    usable. A job that ran and failed entirely between two polls with the very same text as before shows none
    of that: after `PICKUP_POLLS` quiet polls the current state is taken as its verdict.
    """
    timings = run.deps.config.timings
    started = False
    reader = _ServerReader(run, server_uuid)

    async def check(attempt: int) -> tuple[_Verdict | None, str]:
        nonlocal started
        server = await reader.read()
        if server is None:  # the install goes on, as the shared list shows
            assert reader.last is not None
            return None, f"Coolify is validating: installing Docker ({_flags(reader.last)})"
        if server.is_validating:
            started = True
            stage = "installing Docker" if server.is_reachable else "connecting over SSH"
            return None, f"Coolify is validating: {stage} ({_flags(server)})"
        if server.usable:
            return _Verdict(usable=True, logs=None), "usable"
        if started or server.validation_logs != logs_before or attempt >= PICKUP_POLLS:
            return _Verdict(usable=False, logs=server.validation_logs), "failed"
        return None, f"waiting for Coolify to start the validation ({_flags(server)})"

    return await run.poll(
        "Coolify to validate the server",
        check,
        interval=timings.server_poll_interval_s,
        timeout=max(0.0, deadline - run.clock()),
    )
