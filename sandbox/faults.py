"""Fault switches: make the sandbox clouds misbehave on purpose.

A fault has a kind, an optional parameter, an optional hit count and an optional scope (HTTP method and a
path regex). The same text grammar is read from ``SANDBOX_FAULTS`` and accepted by the control API::

    FAULTS := FAULT ("," FAULT)*
    FAULT  := KIND ["=" PARAM] [":" COUNT] ["@" [METHOD ":"] PATH_REGEX]

    build_fails                          every new deployment fails
    rate_limit:2@GET:/v2/droplets        the next two GETs whose path matches /v2/droplets get a 429
    rate_limit=30:1                      the next request (any API) gets a 429 with Retry-After: 30
    server_error=503:1@POST:/deploy$     the next POST .../deploy gets a 503
    droplet_no_ip:1                      the next droplet created never gets a public IPv4
    sshd_never:1                         the next droplet created never answers SSH
    wrong_key:1@POST:/v2/droplets$       the next droplet created refuses Coolify's key
    response_lost=502:1@POST:/servers$   the next server create is carried out, but answered with a 502

``PATH_REGEX`` is searched (``re.search``) in the full request path, e.g.
``/sandbox/digitalocean/v2/droplets/123``; write ``\\x2c`` for a literal comma. ``COUNT`` is how many matching
hits the fault lasts (forever when omitted). Request faults (``rate_limit``, ``server_error``) replace the
response of a matching request before it is carried out; ``response_lost`` replaces it after (an "uncertain
create": the droplet, server or app exists, but the caller got a 5xx); event faults apply to the event a
matching request causes (a droplet create, a deployment, a server validation).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["REQUEST_FAULTS", "STATUS_FAULTS", "Fault", "FaultKind", "FaultSpecError", "Faults"]


class FaultKind(StrEnum):
    """The kinds of fault the sandbox can inject."""

    RATE_LIMIT = "rate_limit"  # 429 with Retry-After (PARAM: seconds, default 1)
    SERVER_ERROR = "server_error"  # 5xx (PARAM: status, default 500)
    BUILD_FAILS = "build_fails"  # a new Coolify deployment ends "failed"
    BUILD_HANGS = "build_hangs"  # a new Coolify deployment stays "in_progress" forever
    DROPLET_NO_IP = "droplet_no_ip"  # a new droplet becomes active but never gets a public IPv4
    DROPLET_CREATE_REJECTED = "droplet_create_rejected"  # POST /v2/droplets -> 422 droplet limit
    SERVER_UNREACHABLE = "server_unreachable"  # a server validation finds the host silent ("Connection timed out")
    SSHD_NEVER = "sshd_never"  # a new droplet's sshd never answers ("Connection timed out")
    WRONG_KEY = "wrong_key"  # a new droplet refuses Coolify's key ("Permission denied (publickey).")
    RESPONSE_LOST = "response_lost"  # the request is carried out, but its answer is a 5xx (PARAM: status)


REQUEST_FAULTS = frozenset({FaultKind.RATE_LIMIT, FaultKind.SERVER_ERROR})
STATUS_FAULTS = frozenset({FaultKind.SERVER_ERROR, FaultKind.RESPONSE_LOST})

_HEAD = re.compile(r"^(?P<kind>[a-z_]+)(?:=(?P<param>[0-9]+(?:\.[0-9]+)?))?(?::(?P<count>[0-9]+))?$")
_SCOPE = re.compile(r"^(?:(?P<method>[A-Za-z]+|\*):)?(?P<path>.*)$", re.DOTALL)


class FaultSpecError(ValueError):
    """A fault description that does not follow the grammar."""


def _to_kind(value: object) -> FaultKind:
    try:
        return FaultKind(str(value))
    except ValueError:
        kinds = ", ".join(k.value for k in FaultKind)
        raise FaultSpecError(f"unknown fault kind {value!r} (kinds: {kinds})") from None


@dataclass
class Fault:
    """One fault switch.

    Args:
        count: hits left before the fault switches itself off; None means until cleared.
        method: HTTP method the fault is limited to (None: any).
        path: regex searched in the request path (None: any).
        param: Retry-After seconds for rate_limit, HTTP status for server_error and response_lost.
    """

    kind: FaultKind
    count: int | None = None
    method: str | None = None
    path: str | None = None
    param: float | None = None
    hits: int = 0

    def __post_init__(self) -> None:
        self.kind = _to_kind(self.kind)
        if self.count is not None and self.count < 1:
            raise FaultSpecError("fault count must be at least 1")
        if self.method is not None:
            self.method = None if self.method in ("", "*") else self.method.upper()
        if self.path == "":
            self.path = None
        if self.path is not None:
            try:
                re.compile(self.path)
            except re.error as exc:
                raise FaultSpecError(f"bad path regex {self.path!r}: {exc}") from None
        with_status = self.kind in STATUS_FAULTS and self.param is not None
        if with_status and not (500 <= (self.param or 0) <= 599 and self.param == int(self.param or 0)):
            raise FaultSpecError(f"{self.kind.value} takes a 5xx status, e.g. {self.kind.value}=503")
        if self.kind is FaultKind.RATE_LIMIT and self.param is not None and self.param < 0:
            raise FaultSpecError("rate_limit takes Retry-After seconds >= 0")

    def matches(self, method: str, path: str) -> bool:
        """Tell whether a request falls within this fault's scope."""
        if self.method is not None and self.method != method.upper():
            return False
        return self.path is None or re.search(self.path, path) is not None

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Read one fault from the text grammar (see the module docstring)."""
        head, sep, scope = text.strip().partition("@")
        match = _HEAD.match(head.strip())
        if match is None:
            raise FaultSpecError(f"bad fault {text.strip()!r}: expected KIND[=PARAM][:COUNT][@[METHOD:]PATH]")
        method: str | None = None
        path: str | None = None
        if sep:
            scope_match = _SCOPE.match(scope.strip())
            assert scope_match is not None  # the pattern matches any text
            method, path = scope_match["method"], scope_match["path"]
        param = float(match["param"]) if match["param"] else None
        count = int(match["count"]) if match["count"] else None
        return cls(_to_kind(match["kind"]), count, method, path, param)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Fault:
        """Build a fault from a JSON object ``{kind, count?, method?, path?, param?}``."""
        unknown = set(data) - {"kind", "count", "method", "path", "param"}
        if unknown:
            raise FaultSpecError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        kind, count, method, path, param = (data.get(k) for k in ("kind", "count", "method", "path", "param"))
        if not isinstance(kind, str):
            raise FaultSpecError("fault kind must be a string")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
            raise FaultSpecError("fault count must be an integer")
        if method is not None and not isinstance(method, str):
            raise FaultSpecError("fault method must be a string")
        if path is not None and not isinstance(path, str):
            raise FaultSpecError("fault path must be a string")
        if param is not None and (not isinstance(param, int | float) or isinstance(param, bool)):
            raise FaultSpecError("fault param must be a number")
        return cls(_to_kind(kind), count, method, path, None if param is None else float(param))

    def to_dict(self) -> dict[str, object]:
        """JSON form, as the control API shows it."""
        return {
            "kind": self.kind.value,
            "count": self.count,
            "method": self.method,
            "path": self.path,
            "param": self.param,
            "hits": self.hits,
            "spec": str(self),
        }

    def __str__(self) -> str:
        text = self.kind.value
        if self.param is not None:
            text += f"={self.param:g}"
        if self.count is not None:
            text += f":{self.count}"
        if self.method or self.path:
            text += "@" + (f"{self.method}:" if self.method else "") + (self.path or "")
        return text


class Faults:
    """The active fault switches of a world, consumed hit by hit."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._faults: list[Fault] = list(faults)

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """Build the switches from a comma-separated spec (``SANDBOX_FAULTS``)."""
        return cls(Fault.parse(part) for part in spec.split(",") if part.strip())

    def add(self, *faults: Fault) -> None:
        """Switch faults on (after the ones already active)."""
        self._faults.extend(faults)

    def add_spec(self, spec: str) -> list[Fault]:
        """Parse a comma-separated spec and switch its faults on; returns them."""
        added = Faults.parse(spec).active
        self.add(*added)
        return added

    def clear(self, kind: FaultKind | str | None = None) -> int:
        """Switch off every fault, or every fault of one kind; returns how many were removed."""
        before = len(self._faults)
        if kind is None:
            self._faults.clear()
        else:
            wanted = FaultKind(kind)
            self._faults = [f for f in self._faults if f.kind is not wanted]
        return before - len(self._faults)

    def take(self, kinds: FaultKind | Iterable[FaultKind], method: str, path: str) -> Fault | None:
        """Consume one hit of the first active fault of these kinds that matches the request."""
        wanted = {kinds} if isinstance(kinds, FaultKind) else set(kinds)
        for fault in self._faults:
            if fault.kind in wanted and fault.matches(method, path):
                fault.hits += 1
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                return fault
        return None

    @property
    def active(self) -> list[Fault]:
        """The faults still switched on, in order."""
        return list(self._faults)

    def to_list(self) -> list[dict[str, object]]:
        """JSON form of the active faults."""
        return [f.to_dict() for f in self._faults]

    def __len__(self) -> int:
        return len(self._faults)
