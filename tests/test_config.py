"""The settings table: environment, flags, code and README alike; the signing key; /metrics."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from chat_server import create_app
from chat_server.auth import load_secret_key
from chat_server.config import SETTINGS, Config, ConfigError, Rate, markdown_table, mask_password

from .helpers import error_of, make_config


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


def test_the_contracts_newer_settings():
    config = Config.from_env({})
    assert config.server_name == "Chat" and config.registration == "invite"
    assert config.push_preview is True and config.outbound_private is False
    assert config.metrics_token is None
    assert config.resolved_public_url == "http://127.0.0.1:8080"
    config = Config.from_env(
        {
            "CHAT_SERVER_NAME": " Team chat ",
            "CHAT_PUBLIC_URL": "https://chat.example.org/",
            "CHAT_REGISTRATION": "OPEN",
            "CHAT_PUSH_PREVIEW": "no",
            "CHAT_OUTBOUND_PRIVATE": "1",
            "CHAT_METRICS_TOKEN": "m" * 24,
        }
    )
    assert config.server_name == "Team chat" and config.registration == "open"
    assert config.resolved_public_url == "https://chat.example.org"
    assert config.push_preview is False and config.outbound_private is True
    assert config.metrics_token == "m" * 24 and "m" * 24 not in repr(config)


def test_flags_override_the_environment_and_errors_name_the_flag():
    config = Config.from_env({"CHAT_PORT": "9000"}, {"port": "9001"})
    assert config.port == 9001
    with pytest.raises(ConfigError, match=r"^--port 'x': expected a port number"):
        Config.from_env({"CHAT_PORT": "9000"}, {"port": "x"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 70000),
        ("port", "http"),
        ("port", True),
        ("bcrypt_rounds", 3),
        ("access_ttl", 0),
        ("auth_rate", Rate(0, 60)),
        ("message_rate", "10"),
        ("log_format", "xml"),
        ("registration", "sometimes"),
        ("database_url", "mysql://x"),
        ("redis_url", "localhost:6379"),
        ("redis_url", "redis://host:port/0"),
        ("allowed_origins", ("chat.example",)),
        ("public_url", "chat.example.org"),
        ("server_name", " "),
        ("data_dir", ""),
    ],
)
def test_config_built_in_code_obeys_the_same_rules(field, value):
    with pytest.raises(ConfigError, match=f"^{field}="):
        Config(**{field: value})


def test_values_given_in_code_are_normalised_like_the_environment():
    config = Config(data_dir="somewhere", log_level="debug", auth_rate="5/1", port="81")
    assert config.data_dir == Path("somewhere") and config.log_level == "DEBUG"
    assert config.auth_rate == Rate(5, 1) and config.port == 81
    assert Config(**{s.name: getattr(config, s.name) for s in SETTINGS}) == config


def test_secrets_stay_out_of_errors():
    for field, value in (("secret_key", "hunter2"), ("metrics_token", "hunter2 x")):
        with pytest.raises(ConfigError) as raised:
            Config(**{field: value})
        assert field in str(raised.value) and "hunter2" not in str(raised.value)


def test_passwords_are_masked():
    assert (
        mask_password("postgresql://chat:pw@db:5432/chat") == "postgresql://chat:***@db:5432/chat"
    )
    assert mask_password("redis://:pw@[::1]:6379/0") == "redis://:***@[::1]:6379/0"
    assert mask_password("postgresql://db/chat?password=pw") == "postgresql://db/chat?password=***"
    assert mask_password("sqlite:///data/chat.db") == "sqlite:///data/chat.db"


def test_the_readme_table_is_the_settings_table():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    table = "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))
    assert table == markdown_table(), (
        "README.md's configuration table is stale; print the current one with"
        " python -c 'from chat_server.config import markdown_table as t; print(t(), end=\"\")'"
    )


async def test_the_metrics_token_guards_metrics(aiohttp_client, tmp_path, database_url):
    token = "metrics-" + "t" * 24
    client = await aiohttp_client(
        create_app(make_config(tmp_path, database_url, metrics_token=token))
    )
    assert (await error_of(await client.get("/metrics"), 401))["code"] == "unauthorized"
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 32})
    assert (await error_of(wrong, 401))["code"] == "unauthorized"
    right = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert right.status == 200 and "chat_http_requests" in await right.text()


async def test_metrics_are_open_without_a_token(client):
    assert (await client.get("/metrics")).status == 200
