"""The server's VAPID key pair (RFC 8292): who a Web Push comes from.

Browsers bind a subscription to the public key they were given
(`GET /server`'s `vapid_public_key`), so every process must sign with the same
private key, and keep it: CHAT_VAPID_PRIVATE_KEY, or a key generated once into
`<CHAT_DATA_DIR>/vapid_private_key.pem` (mode 0600) where processes share the
data dir. Losing the key ends every subscription.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from yarl import URL

from .config import Config, ConfigError

VAPID_FILE = "vapid_private_key.pem"
# A JWT is good for at most 24 h (RFC 8292 §2); one is reused until an hour before that.
JWT_LIFETIME = 12 * 3600
JWT_RENEW_BEFORE = 3600
MAX_CACHED_TOKENS = 256  # push services (audiences) whose token is kept


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding; ValueError for anything else."""
    if not text or not all(c.isalnum() or c in "-_=" for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key in PEM, or its raw 32-byte scalar in base64url."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
    else:
        scalar = b64url_decode(text)
        if len(scalar) != 32:
            raise ValueError("a raw key is 32 bytes")
        key = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("not a P-256 (prime256v1) private key")
    return key


def load_private_key(config: Config) -> ec.EllipticCurvePrivateKey:
    """CHAT_VAPID_PRIVATE_KEY, or the key in the data dir, generated there the first time."""
    if config.vapid_private_key is not None:
        try:
            return parse_private_key(config.vapid_private_key)
        except ValueError as exc:
            raise ConfigError(f"CHAT_VAPID_PRIVATE_KEY: {exc}") from None
    path = Path(config.data_dir) / VAPID_FILE
    if not path.exists():
        _create_once(path)
    try:
        return parse_private_key(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _create_once(path: Path) -> None:
    """Writes a new key to `path` unless a process sharing the directory did first:
    the key is written whole to a private temporary file, then linked into place
    (an atomic create-if-absent), so no process ever reads half a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another process's key won
            os.link(temporary, path)
    finally:
        temporary.unlink()


class Vapid:
    """Signs the `Authorization: vapid t=<JWT>, k=<public key>` of pushes."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, subject: str) -> None:
        self._key = private_key
        self.subject = subject  # a contact for push services: mailto: or https URL
        point = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        # What browsers' PushManager.subscribe takes as `applicationServerKey`.
        self.public_key = b64url(point)
        self._tokens: dict[str, tuple[str, int]] = {}  # audience -> (JWT, its exp)

    def authorization(self, endpoint: str, now: float | None = None) -> str:
        """The header for a push to `endpoint`: a JWT for the endpoint's origin."""
        audience = str(URL(endpoint).origin())
        at = int(time.time() if now is None else now)
        cached = self._tokens.get(audience)
        if cached is None or cached[1] - JWT_RENEW_BEFORE <= at:
            if len(self._tokens) >= MAX_CACHED_TOKENS:
                self._tokens.clear()
            expires = at + JWT_LIFETIME
            claims = {"aud": audience, "exp": expires, "sub": self.subject}
            cached = jwt.encode(claims, self._key, algorithm="ES256"), expires
            self._tokens[audience] = cached
        return f"vapid t={cached[0]}, k={self.public_key}"
