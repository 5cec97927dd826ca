"""Settings.from_env: defaults, validation, and errors that name the variable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from settings import Settings, SettingsError

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOycV6yacZ1iezqAOdgb8SoSEr/veIPsDDsJhlP2sP2A c"
CLOUDS = {
    "DO_API_KEY": "dop_v1_abc",
    "COOLIFY_API_KEY": "1|abc",
    "COOLIFY_API_URL": "https://coolify.example.com",
    "COOLIFY_PROJECT_UUID": "proj",
    "COOLIFY_SSH_PUBLIC_KEY": KEY,
}


def test_defaults_match_the_contract() -> None:
    """With only the cloud credentials set, every other setting takes its documented default."""
    settings = Settings.from_env(CLOUDS)
    assert settings.max_active_droplets == 3
    assert settings.digitalocean.api_url == "https://api.digitalocean.com"
    assert settings.digitalocean.name_prefix == "eliza"
    assert settings.coolify.environment_name == "production"
    assert settings.timings.droplet_poll_interval_s == 5
    assert settings.timings.droplet_timeout_s == 300
    assert settings.timings.server_timeout_s == 600
    assert settings.timings.build_timeout_s == 1800
    assert settings.database_url.startswith("sqlite://")


def test_fractions_of_a_second_are_accepted() -> None:
    """Every _S setting accepts fractions, as the tests use 0.05."""
    settings = Settings.from_env({**CLOUDS, "BUILD_POLL_INTERVAL_S": "0.05", "DROPLET_TIMEOUT_S": "1.5"})
    assert settings.timings.build_poll_interval_s == 0.05
    assert settings.timings.droplet_timeout_s == 1.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_ACTIVE_DROPLETS", "zero"),
        ("MAX_ACTIVE_DROPLETS", "0"),
        ("DROPLET_POLL_INTERVAL_S", "-1"),
        ("DROPLET_TIMEOUT_S", "nan"),
        ("DATABASE_URL", "mysql://x"),
        ("REDIS_URL", "http://x"),
        ("DO_API_URL", "ftp://x"),
        ("DROPLET_REGION", "NYC 3"),
        ("DROPLET_NAME_PREFIX", "bad_prefix"),
        ("COOLIFY_SSH_PUBLIC_KEY", "not a key"),
        ("DO_API_KEY", "changeme"),
        ("DEPLOYER_DEFAULT_ENV", "1BAD=x"),
        ("DEPLOYER_API_TOKENS", "ci:short"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_an_invalid_setting_is_named(name: str, value: str) -> None:
    """An invalid value raises SettingsError whose message names the variable."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**CLOUDS, name: value})


def test_missing_cloud_credentials_are_refused_unless_dev() -> None:
    """serve/worker need the cloud credentials; dev (require_clouds=False) does not."""
    with pytest.raises(SettingsError, match="DO_API_KEY"):
        Settings.from_env({})
    assert Settings.from_env({}, require_clouds=False).digitalocean.api_key == ""


def test_secrets_stay_out_of_repr() -> None:
    """Neither the API keys nor default env values nor API tokens appear in the settings' repr."""
    settings = Settings.from_env(
        {
            **CLOUDS,
            "DEPLOYER_DEFAULT_ENV": "A=topsecretvalue",
            "DEPLOYER_API_TOKENS": "ci:tok-0123456789abcdef:read",
        }
    )
    text = repr(settings)
    for secret in ("dop_v1_abc", "1|abc", "topsecretvalue", "tok-0123456789abcdef"):
        assert secret not in text


def test_default_env_and_tokens_are_parsed() -> None:
    """DEPLOYER_DEFAULT_ENV and DEPLOYER_API_TOKENS parse into pairs and scoped tokens."""
    settings = Settings.from_env(
        {
            **CLOUDS,
            "DEPLOYER_DEFAULT_ENV": "A=1;B=two=2\nC=",
            "DEPLOYER_API_TOKENS": "ci:tok-0123456789abcdef:read+deploy,ops:tok-fedcba9876543210",
        }
    )
    assert settings.default_env == (("A", "1"), ("B", "two=2"), ("C", ""))
    ci, ops = settings.api_tokens
    assert ci.scopes == {"read", "deploy"}
    assert ops.scopes == {"read", "deploy", "env", "admin"}


def test_tokens_may_be_configured_by_their_hash() -> None:
    """`name:sha256:<hex>` holds no token; the Authenticator accepts the token whose hash it is."""
    from graphql_api.auth import Authenticator, token_digest

    digest = token_digest("tok-0123456789abcdef")
    settings = Settings.from_env({**CLOUDS, "DEPLOYER_API_TOKENS": f"ci:sha256:{digest}:read,ops:tok-fedcba9876543210"})
    ci, ops = settings.api_tokens
    assert (ci.name, ci.token, ci.scopes) == ("ci", "", {"read"})
    assert ci.digest == digest and ops.digest == token_digest("tok-fedcba9876543210")
    caller = Authenticator(settings.api_tokens).authenticate("tok-0123456789abcdef")
    assert caller is not None and caller.name == "ci"


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ("a:tok-0123456789abcdef,a:tok-fedcba9876543210", "used twice"),
        ("a:tok-0123456789abcdef,b:tok-0123456789abcdef", "same token"),
        (f"a:tok-0123456789abcdef,b:sha256:{hashlib.sha256(b'tok-0123456789abcdef').hexdigest()}", "same token"),
        ("a:sha256:xyz", "64 hex"),
        ("a b:tok-0123456789abcdef", "bad name"),
        ("a:tok 0123456789abcdef", "printable characters"),
        ("a:tok-0123456789abcdef:read+root", "unknown scopes"),
    ],
)
def test_bad_or_repeated_tokens_are_refused(tokens: str, message: str) -> None:
    """Duplicate names, one token twice (even once hashed), bad hashes, names and scopes stop the start."""
    with pytest.raises(SettingsError, match=message) as refused:
        Settings.from_env({**CLOUDS, "DEPLOYER_API_TOKENS": tokens})
    assert "tok-0123456789abcdef" not in str(refused.value)


def test_the_tokens_file_is_read_with_comments(tmp_path: Path) -> None:
    """DEPLOYER_API_TOKENS_FILE: one token per line, `#` comments, and no name shared with the variable."""
    path = tmp_path / "tokens"
    path.write_text("# ops team\n\nops:tok-fedcba9876543210:read+env  # rotated monthly\n")
    settings = Settings.from_env(
        {**CLOUDS, "DEPLOYER_API_TOKENS": "ci:tok-0123456789abcdef", "DEPLOYER_API_TOKENS_FILE": str(path)}
    )
    assert [t.name for t in settings.api_tokens] == ["ci"]
    assert [(t.name, t.scopes) for t in settings.file_tokens] == [("ops", {"read", "env"})]
    assert settings.auth_enabled
    path.write_text("ci:tok-1111111111111111\n")
    with pytest.raises(SettingsError, match="used twice"):
        Settings.from_env(
            {**CLOUDS, "DEPLOYER_API_TOKENS": "ci:tok-0123456789abcdef", "DEPLOYER_API_TOKENS_FILE": str(path)}
        )
    with pytest.raises(SettingsError, match="DEPLOYER_API_TOKENS_FILE cannot be read"):
        Settings.from_env({**CLOUDS, "DEPLOYER_API_TOKENS_FILE": str(tmp_path / "missing")})


def test_serve_needs_tokens_or_an_explicit_allow_and_a_secret_key() -> None:
    """`check_serve`: no tokens is refused unless DEPLOYER_ALLOW_ANONYMOUS; the secret key is always needed."""
    key = {"DEPLOYER_SECRET_KEY": "k" * 32}
    with pytest.raises(SettingsError, match="DEPLOYER_ALLOW_ANONYMOUS"):
        Settings.from_env({**CLOUDS, **key}).check_serve()
    Settings.from_env({**CLOUDS, **key, "DEPLOYER_ALLOW_ANONYMOUS": "true"}).check_serve()
    Settings.from_env({**CLOUDS, **key, "DEPLOYER_API_TOKENS": "ci:tok-0123456789abcdef"}).check_serve()
    with pytest.raises(SettingsError, match="DEPLOYER_SECRET_KEY"):
        Settings.from_env({**CLOUDS, "DEPLOYER_ALLOW_ANONYMOUS": "true"}).check_serve()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEPLOYER_SECRET_KEY", "short"),
        ("DEPLOYER_SECRET_KEY", "k" * 32 + ",short"),
        ("DEPLOYER_ALLOW_ANONYMOUS", "maybe"),
        ("DEPLOYER_MAX_BODY_BYTES", "10"),
        ("DEPLOYER_MAX_WS_PER_IP", "0"),
        ("DEPLOYER_MUTATIONS_PER_MINUTE", "lots"),
        ("LOG_FORMAT", "xml"),
        ("DEPLOYER_DEFAULT_ENV", "KEY\n=x"),
    ],
)
def test_security_settings_are_validated(name: str, value: str) -> None:
    """The new settings are checked at start like every other."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**CLOUDS, name: value})


def test_limits_and_log_format_defaults() -> None:
    """Documented defaults: 1 MiB bodies, 100 websockets per token, 200 per address, 120 mutations a minute."""
    settings = Settings.from_env(CLOUDS)
    assert settings.limits.max_body_bytes == 1048576
    assert (settings.limits.ws_per_token, settings.limits.ws_per_ip) == (100, 200)
    assert settings.limits.mutations_per_minute == 120
    assert settings.log_format == "text" and not settings.allow_anonymous and not settings.auth_enabled


def test_request_budgets_default_to_the_clouds_limits() -> None:
    """DigitalOcean's 250 and Coolify's 200 requests a minute unless set; 0 turns a budget off."""
    settings = Settings.from_env(CLOUDS)
    assert (settings.digitalocean.requests_per_minute, settings.coolify.requests_per_minute) == (250, 200)
    off = Settings.from_env({**CLOUDS, "DO_REQUESTS_PER_MINUTE": "0", "COOLIFY_REQUESTS_PER_MINUTE": "120"})
    assert (off.digitalocean.requests_per_minute, off.coolify.requests_per_minute) == (0, 120)


@pytest.mark.parametrize(
    ("name", "value"),
    [("DO_REQUESTS_PER_MINUTE", "-1"), ("DO_REQUESTS_PER_MINUTE", "fast"), ("COOLIFY_REQUESTS_PER_MINUTE", "2.5")],
)
def test_request_budgets_are_validated(name: str, value: str) -> None:
    """A budget that is not a whole number from 0 up stops the start, naming the variable."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**CLOUDS, name: value})
