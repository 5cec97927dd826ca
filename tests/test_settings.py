"""Settings.from_env: defaults, validation, and errors that name the variable."""

from __future__ import annotations

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
