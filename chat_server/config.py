"""Configuration from the environment (API.md's Configuration table).

Every setting is a `CHAT_*` variable; `run.py` flags only fill in variables, so
there is one parser and one place that names each variable in its errors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration variable holds a value we cannot use; the message names it."""


@dataclass(frozen=True)
class Rate:
    """At most `count` events per `per_seconds`."""

    count: int
    per_seconds: float


def _parse_rate(text: str) -> Rate | None:
    if text.strip() == "0":
        return None
    count, sep, seconds = text.partition("/")
    if not sep:
        raise ValueError("expected N/S, e.g. 10/60, or 0 to turn the limit off")
    rate = Rate(int(count), float(seconds))
    if rate.count < 1 or rate.per_seconds <= 0:
        raise ValueError("N and S must be positive")
    return rate


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError("expected a port number 0-65535")
    return port


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("expected a positive integer")
    return value


def _bcrypt_rounds(text: str) -> int:
    value = int(text)
    if not 4 <= value <= 31:
        raise ValueError("expected 4-31")
    return value


def _origins(text: str) -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip()
        if value.lower() not in allowed and value.upper() not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value.upper() if value.upper() in allowed else value.lower()

    return parse


def _database_url(text: str) -> str:
    if not text.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ValueError("expected sqlite:///path or postgresql://user:pass@host:port/db")
    return text


@dataclass(frozen=True)
class Setting:
    """One environment variable: its parser, its default (as text) and its help line."""

    variable: str
    parse: Callable[[str], Any]
    default: str | None
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("CHAT_HOST", str, "127.0.0.1", "address to listen on"),
    Setting("CHAT_PORT", _parse_port, "8080", "port to listen on"),
    Setting("CHAT_DATA_DIR", Path, "./data", "SQLite file, media, generated secret"),
    Setting("CHAT_MEDIA_DIR", Path, None, "uploaded files (default <data dir>/media)"),
    Setting("CHAT_DATABASE_URL", _database_url, None, "sqlite:///... (default) or postgresql://"),
    Setting("CHAT_REDIS_URL", str, None, "redis://host:port/db to run several processes as one"),
    Setting("CHAT_SECRET_KEY", str, None, "token signing key, at least 32 bytes"),
    Setting("CHAT_ACCESS_TTL", _positive_int, "900", "access token lifetime in seconds"),
    Setting("CHAT_REFRESH_TTL", _positive_int, "2592000", "refresh token lifetime in seconds"),
    Setting("CHAT_BCRYPT_ROUNDS", _bcrypt_rounds, "12", "bcrypt cost factor"),
    Setting("CHAT_MAX_UPLOAD_MB", _positive_int, "25", "largest upload in MiB"),
    Setting("CHAT_ALLOWED_ORIGINS", _origins, "", "comma list of allowed browser origins"),
    Setting("CHAT_AUTH_RATE", _parse_rate, "10/60", "signups/logins per IP and per username"),
    Setting("CHAT_MESSAGE_RATE", _parse_rate, "30/10", "messages per user"),
    Setting("CHAT_METRICS", _parse_bool, "true", "serve /metrics"),
    Setting("CHAT_TRUST_PROXY", _parse_bool, "false", "take the client IP from X-Forwarded-For"),
    Setting("CHAT_LOG_FORMAT", _choice("text", "json"), "text", "text or json"),
    Setting("CHAT_LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", "log level"),
)


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./data")
    media_dir: Path | None = None
    database_url: str | None = None
    redis_url: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    access_ttl: int = 900
    refresh_ttl: int = 2592000
    bcrypt_rounds: int = 12
    max_upload_mb: int = 25
    allowed_origins: tuple[str, ...] = ()
    auth_rate: Rate | None = Rate(10, 60)
    message_rate: Rate | None = Rate(30, 10)
    metrics: bool = True
    trust_proxy: bool = False
    log_format: str = "text"
    log_level: str = "INFO"
    # Not environment settings: knobs for embedders and tests.
    ws_outbox_limit: int = 1024  # frames queued per WebSocket before it is closed with 1013
    ready_hold: float = 2.0  # seconds a new WebSocket holds live messages for a `resume`

    def __post_init__(self) -> None:
        # Embedders may pass plain strings for paths.
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.media_dir is not None:
            object.__setattr__(self, "media_dir", Path(self.media_dir))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = env.get(setting.variable)
            if raw is None or (raw == "" and setting.default is None):
                raw = setting.default
            if raw is None:
                continue
            try:
                values[setting.variable.removeprefix("CHAT_").lower()] = setting.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{setting.variable}={raw!r}: {exc}") from None
        config = cls(**values)
        if config.secret_key is not None and len(config.secret_key.encode()) < 32:
            raise ConfigError("CHAT_SECRET_KEY: must be at least 32 bytes")
        return config

    @property
    def resolved_media_dir(self) -> Path:
        return self.media_dir or self.data_dir / "media"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'chat.db'}"

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024
