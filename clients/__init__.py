"""HTTP clients for the DigitalOcean and Coolify APIs (httpx only; nothing from this project)."""

from clients.coolify import (
    Application,
    CoolifyClient,
    CoolifyDeployment,
    DeploymentStatus,
    DeployResult,
    EnvVar,
    EnvVarSpec,
    PrivateKey,
    Server,
)
from clients.digitalocean import (
    Account,
    DigitalOceanClient,
    Droplet,
    DropletStatus,
    SSHKey,
    ssh_key_fingerprint,
)
from clients.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthError,
    CloudAPIError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    RequestBudgetError,
    UpstreamServerError,
)
from clients.http import RetryPolicy

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "Account",
    "Application",
    "AuthError",
    "CloudAPIError",
    "ConflictError",
    "CoolifyClient",
    "CoolifyDeployment",
    "DeployResult",
    "DeploymentStatus",
    "DigitalOceanClient",
    "Droplet",
    "DropletStatus",
    "EnvVar",
    "EnvVarSpec",
    "NotFoundError",
    "PrivateKey",
    "RateLimitedError",
    "RequestBudgetError",
    "RetryPolicy",
    "SSHKey",
    "Server",
    "UpstreamServerError",
    "ssh_key_fingerprint",
]
