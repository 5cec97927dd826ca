"""OpenSSH public keys as both clouds read them: the key blob, and DigitalOcean's MD5 fingerprint."""

from __future__ import annotations

import base64
import binascii
import hashlib

__all__ = ["DEFAULT_COOLIFY_PUBLIC_KEY", "md5_fingerprint", "ssh_key_blob"]

# The public half of the Coolify private key seeded as "sandbox-private-key". Give it to DigitalOcean
# (POST /v2/account/keys, then ssh_keys on droplet create) so Coolify can "SSH" into the droplet.
DEFAULT_COOLIFY_PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIzAiOxZr50ntAD7GmkwjK+YTwRyT6HwhBqhfltUgJR7 coolify-sandbox"
)

_SSH_KEY_TYPES = frozenset(
    {
        "ssh-rsa",
        "ssh-dss",
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


def ssh_key_blob(public_key: str) -> bytes | None:
    """Decode the key blob of an OpenSSH public key line (``type base64 [comment]``); None if malformed."""
    parts = public_key.strip().split()
    if len(parts) < 2 or parts[0] not in _SSH_KEY_TYPES:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(blob) < 4:
        return None
    name_len = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + name_len] != parts[0].encode():
        return None
    return blob


def md5_fingerprint(blob: bytes) -> str:
    """DigitalOcean's SSH key fingerprint: MD5 of the key blob, colon-separated hex."""
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
