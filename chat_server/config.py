"""Configuration: one table of settings, read from the environment, flags or code.

Each setting is a `Config` field declared once with `setting(default, cast, help)`.
Its name gives the variable (`CHAT_` + NAME) and the flag (`--name`); the cast turns
text from the environment or a flag, or a value given to `Config(...)` in code, into
the field's value and refuses anything out of bounds, so every path obeys the same
rules. `SETTINGS` lists them for the command line, `--help` and the README's table
(`markdown_table`, checked against README.md by the tests).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

Cast = Callable[[Any], Any]


class ConfigError(ValueError):
    """A setting holds a value we cannot use; the message names where it came from."""


@dataclass(frozen=True)
class Rate:
    """At most `count` events per `per_seconds`."""

    count: int
    per_seconds: float


# --- casts: text or a value in, a checked value out (ValueError says what is expected) ---

DIGITS = re.compile(r"-?[0-9]+")


def _integer(low: int, high: int | None = None, what: str = "a whole number") -> Cast:
    expected = f"{what} {low}-{high}" if high is not None else f"{what} of at least {low}"

    def cast(value: Any) -> int:
        if isinstance(value, str) and DIGITS.fullmatch(value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected {expected}")
        if value < low or (high is not None and value > high):
            raise ValueError(f"expected {expected}")
        return value

    return cast


def _rate(value: Any) -> Rate | None:
    expected = "expected N/S (at most N per S seconds, e.g. 10/60), or 0 to turn the limit off"
    if value is None or isinstance(value, Rate):
        rate = value
    elif isinstance(value, str):
        if value.strip() == "0":
            return None
        count, _, seconds = value.strip().partition("/")
        try:
            rate = Rate(int(count), float(seconds))
        except ValueError:
            raise ValueError(expected) from None
    else:
        raise ValueError(expected)
    if rate is not None and (
        rate.count < 1 or not math.isfinite(rate.per_seconds) or rate.per_seconds <= 0
    ):
        raise ValueError(expected)
    return rate


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _path(value: Any) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise ValueError("expected a directory path")
    return Path(value)


def _text(max_len: int) -> Cast:
    def cast(value: Any) -> str:
        if not isinstance(value, str) or not 1 <= len(value.strip()) <= max_len:
            raise ValueError(f"expected text of 1-{max_len} characters")
        return value.strip()

    return cast


def _choice(*allowed: str) -> Cast:
    def cast(value: Any) -> str:
        for option in allowed:
            if isinstance(value, str) and value.strip().lower() == option.lower():
                return option
        raise ValueError(f"expected one of {', '.join(allowed)}")

    return cast


def _origins(value: Any) -> tuple[str, ...]:
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    origins = tuple(str(o).strip().rstrip("/") for o in items if str(o).strip())
    for origin in origins:
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ValueError(f"{origin!r} is not an origin like https://chat.example.org")
    return origins


def _http_url(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value.strip()):
        raise ValueError("expected an address like https://chat.example.org")
    return value.strip().rstrip("/")


def _database_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(
        ("sqlite:///", "postgresql://", "postgres://")
    ):
        raise ValueError("expected sqlite:///path or postgresql://user:pass@host:port/db")
    return value


def _redis_url(value: Any) -> str:
    expected = "expected redis://[:password@]host[:port][/db], rediss://... or unix:///path"
    if not isinstance(value, str):
        raise ValueError(expected)
    parts = urlsplit(value.strip())
    try:
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise ValueError(expected) from None
    if parts.scheme == "unix":
        ok = bool(parts.path)
    else:
        ok = parts.scheme in ("redis", "rediss") and bool(re.fullmatch(r"(/[0-9]*)?", parts.path))
    if not ok:
        raise ValueError(expected)
    return value.strip()


def _secret(value: Any) -> str:
    if not isinstance(value, str) or len(value.encode()) < 32:
        raise ValueError("must be at least 32 bytes")
    return value


def _vapid_key(value: Any) -> str:
    # The shape only: vapid.py parses the key (and names this setting if it cannot).
    text = value.strip() if isinstance(value, str) else ""
    if not (text.startswith("-----BEGIN") or re.fullmatch(r"[A-Za-z0-9_-]{43}=?", text)):
        raise ValueError("expected a PEM private key or 32 bytes in base64url")
    return text


def _token(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[!-~]{16,}", value):
        raise ValueError("must be at least 16 printable ASCII characters without spaces")
    return value


# --- the table -------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting: its cast, its default as written in the environment, its help."""

    cast: Cast
    text_default: str | None  # None: unset unless given
    help: str
    unset: str = ""  # what the default means when it is not a plain value
    secret: bool = False  # never shown in errors or repr
    name: str = ""  # the Config field, filled in below

    @property
    def variable(self) -> str:
        return "CHAT_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def default_text(self) -> str:
        """The default as the README and `--help` state it."""
        if self.unset:
            return self.unset
        return "unset" if self.text_default is None else f"`{self.text_default}`"


def setting(
    default: str | None, cast: Cast, help: str, *, unset: str = "", secret: bool = False
) -> Any:
    """A Config field that is also a setting; `default` is written as in the environment."""
    spec = Setting(cast, default, help, unset, secret)
    value = None if default is None else cast(default)
    return field(default=value, repr=not secret, metadata={"setting": spec})


@dataclass(frozen=True)
class Config:
    host: str = setting("127.0.0.1", _text(255), "address to listen on")
    port: int = setting("8080", _integer(0, 65535, "a port number"), "port to listen on")
    data_dir: Path = setting("./data", _path, "SQLite file, media, generated secret")
    media_dir: Path | None = setting(
        None, _path, "uploaded files; several machines share one", unset="`<CHAT_DATA_DIR>/media`"
    )
    database_url: str | None = setting(
        None,
        _database_url,
        "or `postgresql://user:pass@host:5432/db`",
        unset="`sqlite:///<CHAT_DATA_DIR>/chat.db`",
    )
    redis_url: str | None = setting(
        None, _redis_url, "`redis://host:port/db`: several processes act as one"
    )
    secret_key: str | None = setting(
        None,
        _secret,
        "token signing key, at least 32 bytes; several processes share one",
        unset="generated once into the data dir (mode 0600)",
        secret=True,
    )
    access_ttl: int = setting("900", _integer(1), "access token lifetime in seconds")
    refresh_ttl: int = setting("2592000", _integer(1), "refresh token lifetime in seconds")
    bcrypt_rounds: int = setting("12", _integer(4, 31), "password hashing cost (4-31)")
    max_upload_mb: int = setting("25", _integer(1), "largest upload in MiB")
    allowed_origins: tuple[str, ...] = setting(
        "",
        _origins,
        "comma list of browser origins allowed for CORS and WebSocket",
        unset="same origin only",
    )
    auth_rate: Rate | None = setting(
        "10/60", _rate, "signups and logins: N per S seconds per IP and per username; `0`: off"
    )
    message_rate: Rate | None = setting(
        "30/10", _rate, "messages: N per S seconds per user; `0`: off"
    )
    metrics: bool = setting("true", _boolean, "`false` removes `/metrics`")
    metrics_token: str | None = setting(
        None, _token, "when set, `/metrics` needs it as a Bearer token", secret=True
    )
    trust_proxy: bool = setting("false", _boolean, "take the client IP from `X-Forwarded-For`")
    log_format: str = setting(
        "text", _choice("text", "json"), "`json` for one JSON object per line"
    )
    log_level: str = setting(
        "INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "DEBUG, INFO, WARNING or ERROR"
    )
    server_name: str = setting("Chat", _text(64), "shown by the web client and in `GET /server`")
    public_url: str | None = setting(
        None,
        _http_url,
        "the address people use (behind a proxy: its address)",
        unset="`http://<CHAT_HOST>:<CHAT_PORT>`",
    )
    registration: str = setting(
        "invite", _choice("open", "invite", "closed"), "who may sign up: open, invite or closed"
    )
    push_preview: bool = setting(
        "true", _boolean, "`false` leaves message text out of push payloads"
    )
    outbound_private: bool = setting(
        "false",
        _boolean,
        "`true` lets push and webhooks reach private and loopback addresses",
    )
    vapid_private_key: str | None = setting(
        None,
        _vapid_key,
        "Web Push (VAPID) P-256 private key, PEM or base64url; several machines share one",
        unset="generated once into the data dir (mode 0600)",
        secret=True,
    )

    # Not environment settings: knobs for embedders and tests.
    ws_outbox_limit: int = 1024  # frames queued per WebSocket before it is closed with 1013
    ready_hold: float = 2.0  # seconds live events wait for a resuming WebSocket's replay
    auth_timeout: float = 10.0  # seconds a WebSocket may take to send its `auth` frame
    webhook_backoff: float = 1.0  # seconds before an outgoing webhook's first retry (then x2)

    def __post_init__(self) -> None:
        for spec in SETTINGS:
            value = getattr(self, spec.name)
            if value is None and spec.text_default is None:
                continue
            object.__setattr__(self, spec.name, _cast(spec, value, spec.name))

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None
    ) -> Config:
        """The `CHAT_*` variables, overridden by `flags` (text by field name, as typed
        after `--name`). An error names the flag or variable the bad value came from."""
        env = os.environ if environ is None else environ
        flags = flags or {}
        values: dict[str, Any] = {}
        for spec in SETTINGS:
            if spec.name in flags:
                values[spec.name] = _cast(spec, flags[spec.name], spec.flag)
                continue
            raw = env.get(spec.variable)
            if raw is None or (raw == "" and spec.text_default is None):
                continue
            values[spec.name] = _cast(spec, raw, spec.variable)
        return cls(**values)

    @property
    def resolved_media_dir(self) -> Path:
        return self.media_dir or self.data_dir / "media"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'chat.db'}"

    @property
    def resolved_public_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return self.public_url or f"http://{host}:{self.port}"

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024


SETTINGS: tuple[Setting, ...] = tuple(
    replace(f.metadata["setting"], name=f.name) for f in fields(Config) if "setting" in f.metadata
)


def _cast(spec: Setting, value: Any, source: str) -> Any:
    try:
        return spec.cast(value)
    except ValueError as exc:
        shown = "" if spec.secret else f" {value!r}" if source.startswith("--") else f"={value!r}"
        raise ConfigError(f"{source}{shown}: {exc}") from None


def mask_password(url: str) -> str:
    """`url` with any password replaced by `***` (for logs and messages)."""
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if sep and at and ":" in userinfo:
        authority = f"{userinfo.partition(':')[0]}:***@{hostport}"
    masked = f"{scheme}{sep}{authority}{slash}{tail}"
    return re.sub(r"(password=)[^&]*", r"\1***", masked)


def markdown_table() -> str:
    """The README's configuration table."""
    lines = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    for spec in SETTINGS:
        lines.append(f"| `{spec.variable}` | `{spec.flag}` | {spec.default_text} | {spec.help} |")
    return "\n".join(lines) + "\n"
