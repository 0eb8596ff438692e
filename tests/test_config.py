"""Config.from_env and the signing key."""

from __future__ import annotations

import os
import stat

import pytest

from chat_server.auth import load_secret_key
from chat_server.config import Config, ConfigError, Rate


def test_defaults_match_the_contract():
    config = Config.from_env({})
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert config.resolved_database_url == "sqlite:///data/chat.db"
    assert config.auth_rate == Rate(10, 60) and config.message_rate == Rate(30, 10)
    assert config.access_ttl == 900 and config.refresh_ttl == 2592000
    assert config.bcrypt_rounds == 12 and config.max_upload_bytes == 25 * 1024 * 1024
    assert config.metrics is True and config.trust_proxy is False
    assert config.log_format == "text" and config.log_level == "INFO"
    assert str(config.resolved_media_dir) == "data/media"


def test_values_are_parsed():
    config = Config.from_env(
        {
            "CHAT_PORT": "9000",
            "CHAT_AUTH_RATE": "0",
            "CHAT_MESSAGE_RATE": "5/2.5",
            "CHAT_ALLOWED_ORIGINS": "https://a.example, https://b.example/",
            "CHAT_METRICS": "false",
            "CHAT_LOG_FORMAT": "JSON",
            "CHAT_LOG_LEVEL": "debug",
        }
    )
    assert config.port == 9000 and config.auth_rate is None
    assert config.message_rate == Rate(5, 2.5)
    assert config.allowed_origins == ("https://a.example", "https://b.example")
    assert config.metrics is False
    assert (config.log_format, config.log_level) == ("json", "DEBUG")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHAT_PORT", "http"),
        ("CHAT_PORT", "70000"),
        ("CHAT_AUTH_RATE", "10"),
        ("CHAT_MESSAGE_RATE", "-1/5"),
        ("CHAT_BCRYPT_ROUNDS", "2"),
        ("CHAT_METRICS", "maybe"),
        ("CHAT_LOG_FORMAT", "xml"),
        ("CHAT_DATABASE_URL", "mysql://x"),
        ("CHAT_SECRET_KEY", "too short"),
        ("CHAT_ACCESS_TTL", "0"),
    ],
)
def test_errors_name_the_variable(variable, value):
    with pytest.raises(ConfigError, match=variable):
        Config.from_env({variable: value})


def test_secret_key_is_generated_once_with_mode_0600(tmp_path):
    config = Config(data_dir=tmp_path / "data")
    key = load_secret_key(config)
    assert len(key) >= 32
    path = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret_key(config) == key


def test_a_short_stored_key_is_refused(tmp_path):
    (tmp_path / "secret_key").write_bytes(b"short")
    with pytest.raises(ConfigError, match="32 bytes"):
        load_secret_key(Config(data_dir=tmp_path))
