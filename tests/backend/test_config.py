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
