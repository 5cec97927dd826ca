"""In-memory stand-ins for the DigitalOcean v2 and Coolify v1 APIs (imports starlette, nothing of ours)."""

from sandbox.app import create_app
from sandbox.faults import Fault, FaultKind, Faults
from sandbox.state import ManualClock, SandboxConfig, World

__all__ = ["Fault", "FaultKind", "Faults", "ManualClock", "SandboxConfig", "World", "create_app"]
