"""Save the sandbox world to a JSON file and load it back, so a restarted dev stack finds its droplets again.

The world is written generically: every attribute of ``World`` that holds plain data (numbers, strings,
bytes, lists, dicts, sets, enums and the sandbox's dataclasses, read field by field through
``dataclasses.fields``) is saved, so a field added to a record is saved without touching this module. What
is runtime rather than world is left out: the configuration (read from ``SANDBOX_*`` at every start), the
clock, the fault switches (``SANDBOX_FAULTS`` again at start) and the request log. Attributes holding other
objects (the rate-limit windows) are not saved and start afresh.

Time-based changes are computed from timestamps when the world is read, so a droplet created before a
restart is ``active`` after it, as it would be on the real cloud. Writes are atomic (a temporary file, then a
rename). ``SaveAfterWrites`` wraps the sandbox app and saves after every request that may change the world.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import enum
import importlib
import json
import logging
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.state import World

__all__ = ["FORMAT", "RUNTIME_ATTRIBUTES", "SaveAfterWrites", "WorldFileError", "dump_world", "load_world", "save"]

logger = logging.getLogger("sandbox.persist")
FORMAT = 1
#: World attributes that are runtime state, not the world: never saved, never overwritten by a load.
RUNTIME_ATTRIBUTES = frozenset({"config", "clock", "faults", "requests"})
#: Only classes from these modules are rebuilt from a file (a world file cannot name arbitrary classes).
_TRUSTED_MODULES = ("sandbox.",)


class WorldFileError(ValueError):
    """The world file cannot be read back (corrupt, another format, or records that no longer fit)."""


class _Unsaved(TypeError):
    """A value that is not plain data (so its attribute is left out)."""


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _encode(value: Any) -> Any:
    if value is None or (isinstance(value, bool | int | float | str) and not isinstance(value, enum.Enum)):
        return value
    if isinstance(value, enum.Enum):
        return {"__enum__": _name(type(value)), "value": _encode(value.value)}
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "__dataclass__": _name(type(value)),
            "fields": {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)},
        }
    if isinstance(value, list):
        return [_encode(item) for item in value]
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(item) for item in value]}
    if isinstance(value, frozenset | set):
        kind = "__frozenset__" if isinstance(value, frozenset) else "__set__"
        return {kind: [_encode(item) for item in value]}
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, random.Random):
        return {"__random__": _encode(value.getstate())}
    raise _Unsaved(type(value).__name__)


def _class(name: str) -> type:
    module, _, qualname = name.partition(":")
    if not module.startswith(_TRUSTED_MODULES):
        raise WorldFileError(f"the world file names a class outside the sandbox: {name}")
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise WorldFileError(f"the world file names an unknown class {name}") from exc
    if not isinstance(found, type):
        raise WorldFileError(f"{name} is not a class")
    return found


def _dataclass(name: str, raw: dict[str, Any]) -> Any:
    cls = _class(name)
    if not dataclasses.is_dataclass(cls):
        raise WorldFileError(f"{name} is not a dataclass")
    obj = object.__new__(cls)  # no __init__/__post_init__: the saved values were valid when saved
    for f in dataclasses.fields(cls):
        if f.name in raw:
            value = _decode(raw[f.name])
        elif f.default is not dataclasses.MISSING:
            value = f.default  # a field added since the file was written
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise WorldFileError(f"{name}.{f.name} is missing from the world file and has no default")
        object.__setattr__(obj, f.name, value)
    return obj


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "__dataclass__" in value:
        return _dataclass(value["__dataclass__"], value["fields"])
    if "__enum__" in value:
        return _class(value["__enum__"])(_decode(value["value"]))
    if "__bytes__" in value:
        return base64.b64decode(value["__bytes__"])
    if "__tuple__" in value:
        return tuple(_decode(item) for item in value["__tuple__"])
    if "__frozenset__" in value:
        return frozenset(_decode(item) for item in value["__frozenset__"])
    if "__set__" in value:
        return {_decode(item) for item in value["__set__"]}
    if "__dict__" in value:
        return {_decode(k): _decode(v) for k, v in value["__dict__"]}
    if "__random__" in value:
        rng = random.Random()
        rng.setstate(_decode(value["__random__"]))
        return rng
    raise WorldFileError(f"unexpected object in the world file: keys {sorted(value)[:5]}")


def dump_world(world: World) -> dict[str, Any]:
    """The world as JSON-ready data (see the module docstring for what is left out)."""
    attributes: dict[str, Any] = {}
    for name, value in vars(world).items():
        if name in RUNTIME_ATTRIBUTES:
            continue
        try:
            attributes[name] = _encode(value)
        except _Unsaved:
            continue
    return {"format": FORMAT, "world": attributes}


def load_world(world: World, data: Any) -> None:
    """Replace the world's saved attributes with those in `data` (from `dump_world`); WorldFileError when the
    data does not fit, in which case the world is left as it was."""
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("world"), dict):
        raise WorldFileError("not a sandbox world file of this version")
    try:
        decoded = {name: _decode(raw) for name, raw in data["world"].items() if name not in RUNTIME_ATTRIBUTES}
    except (KeyError, TypeError, ValueError) as exc:
        raise WorldFileError(f"the world file is damaged: {exc}") from exc
    for name, value in decoded.items():
        setattr(world, name, value)


def save(world: World, path: Path) -> None:
    """Write the world to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(dump_world(world), out, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load(world: World, path: Path) -> bool:
    """Load `path` into the world; False when there is no file. WorldFileError when it cannot be read back."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WorldFileError(f"{path} is not JSON: {exc}") from exc
    load_world(world, data)
    return True


class SaveAfterWrites:
    """ASGI middleware in front of the sandbox app: saves the world after every request that is not a GET or
    HEAD (those are the ones that change it), so a stack killed without warning loses nothing it answered."""

    def __init__(self, app: ASGIApp, world: World, path: Path, *, on_error: Callable[[Exception], None] | None = None):
        self.app = app
        self.world = world
        self.path = path
        self._on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, then save when it could have changed the world."""
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
                self.save()

    def save(self) -> None:
        """Save now; a failure is logged (the sandbox keeps serving from memory)."""
        try:
            save(self.world, self.path)
        except (OSError, TypeError, ValueError) as exc:
            logger.warning("could not save the sandbox world to %s: %s", self.path, exc)
            if self._on_error is not None:
                self._on_error(exc)
