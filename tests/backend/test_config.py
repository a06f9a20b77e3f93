"""Settings: defaults, a TOML file, STUDIO_* variables winning, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import Settings
from backend.errors import ConfigError


def test_defaults_are_the_embedded_mode() -> None:
    settings = Settings.load(env={})
    assert settings.redis_url == settings.amqp_url == "" and settings.comfyui_urls == ()
    assert settings.effective_database_url.startswith("sqlite:///") and settings.assets_dir == Path("data/assets")


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "studio.toml"
    config.write_text('data_dir = "/srv/studio"\nwelcome_credits = 5\ncomfyui_urls = ["http://a:8188", "http://b:8188"]\n')
    settings = Settings.load(env={"STUDIO_CONFIG": str(config), "STUDIO_WELCOME_CREDITS": "7"})
    assert settings.data_dir == Path("/srv/studio") and settings.welcome_credits == 7
    assert settings.comfyui_urls == ("http://a:8188", "http://b:8188")
    from_env = Settings.load(env={"STUDIO_COMFYUI_URLS": "http://a:8188, http://b:8188"})
    assert from_env.comfyui_urls == ("http://a:8188", "http://b:8188")


@pytest.mark.parametrize(
    "env, message",
    [
        ({"STUDIO_WELCOME_CREDITS": "lots"}, "invalid value"),
        ({"STUDIO_SIGNUP_MODE": "maybe"}, "signup_mode must be one of"),
        ({"STUDIO_MAX_UPLOAD_BYTES": "0"}, "must be positive"),
        ({"STUDIO_LOGIN_BACKOFF_SECONDS": "soon"}, "invalid value"),
        ({"STUDIO_LOGIN_BACKOFF_SECONDS": "-1.5"}, "must be positive"),
        ({"STUDIO_CONFIG": "/nonexistent/studio.toml"}, "Cannot read config file"),
        ({"STUDIO_ASSET_STORE": "nfs"}, "asset_store must be one of local, s3"),
        ({"STUDIO_ASSET_STORE": "s3"}, "needs s3_bucket"),
        ({"STUDIO_ASSET_STORE": "s3", "STUDIO_S3_BUCKET": "b", "STUDIO_S3_PRESIGN_SECONDS": "0"}, "must be positive"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(env=env)


def test_unknown_keys_in_the_file_are_an_error(tmp_path: Path) -> None:
    config = tmp_path / "studio.toml"
    config.write_text('databse_url = "postgresql://x"\n')
    with pytest.raises(ConfigError, match="Unknown setting 'databse_url'"):
        Settings.load(env={}, config_file=config)


def test_s3_settings_from_file_and_environment_keep_the_secret_out_of_repr(tmp_path: Path) -> None:
    config = tmp_path / "studio.toml"
    config.write_text('asset_store = "s3"\ns3_bucket = "studio-assets"\ns3_path_style = true\ns3_prefix = "studio/"\n')
    settings = Settings.load(env={"STUDIO_CONFIG": str(config), "STUDIO_S3_ACCESS_KEY": "AKIDEXAMPLE",
                                  "STUDIO_S3_SECRET_KEY": "wJalrXUtnFEMI-secret", "STUDIO_S3_ENDPOINT": "http://h:7480"})
    assert (settings.asset_store, settings.s3_bucket, settings.s3_path_style, settings.s3_prefix) == \
        ("s3", "studio-assets", True, "studio/")
    assert (settings.s3_endpoint, settings.s3_secret_key) == ("http://h:7480", "wJalrXUtnFEMI-secret")
    assert "wJalrXUtnFEMI" not in repr(settings) and "AKIDEXAMPLE" not in repr(settings)
