"""/push/subscriptions: the caller's browsers that Web Push reaches (API.md "Notifications").

A subscription is what a browser's `PushManager.subscribe()` gave: the push
service's endpoint and the keys to encrypt for. The endpoint is a URL the
server will call, so it goes through `Outbound.check` (https, public
addresses only, unless CHAT_OUTBOUND_PRIVATE). One endpoint is one
subscription: registering it again is 200, and an endpoint another user
registered (a shared browser profile, a new sign-in) moves to the caller.
"""

from __future__ import annotations

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from . import keys
from .auth import require_auth
from .errors import NotFound
from .outbound import OutboundRefused
from .validation import Validator, path_id, read_json
from .vapid import b64url_decode

MAX_ENDPOINT = 2048
KEYS_RULE = "{p256dh: a P-256 public key (65 bytes), auth: 16 bytes}, both base64url"


def _valid_keys(value: object) -> tuple[str, str] | None:
    """The subscription's `keys` as given, if they decode to what RFC 8291 needs."""
    if not isinstance(value, dict):
        return None
    p256dh, auth = value.get("p256dh"), value.get("auth")
    if not isinstance(p256dh, str) or not isinstance(auth, str) or len(p256dh + auth) > 200:
        return None
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(p256dh))
        secret = b64url_decode(auth)
    except ValueError:
        return None
    if len(secret) != 16 or len(b64url_decode(p256dh)) != 65:  # uncompressed point only
        return None
    return p256dh, auth


async def create_subscription(request: web.Request) -> web.Response:
    me = await require_auth(request)
    body = await read_json(request)
    v = Validator(body)
    endpoint = v.string(
        "endpoint", required=True, min_len=1, max_len=MAX_ENDPOINT, reason="an https URL"
    )
    subscription_keys = _valid_keys(body.get("keys"))
    if subscription_keys is None:
        v.errors["keys"] = KEYS_RULE
    if "endpoint" not in v.errors:
        try:
            await request.app[keys.OUTBOUND].check(endpoint, https_only=True)
        except OutboundRefused as refused:
            v.errors["endpoint"] = refused.reason
    v.check()
    assert subscription_keys is not None
    subscription, created = await request.app[keys.DB].add_push_subscription(
        me.user_id, endpoint, *subscription_keys
    )
    request.app[keys.PUSHER].subscription_added()
    return web.json_response(subscription.to_json(), status=201 if created else 200)


async def list_subscriptions(request: web.Request) -> web.Response:
    me = await require_auth(request)
    subscriptions = await request.app[keys.DB].push_subscriptions(me.user_id)
    return web.json_response({"items": [s.to_json() for s in subscriptions]})


async def delete_subscription(request: web.Request) -> web.Response:
    me = await require_auth(request)
    subscription_id = path_id(request, "subscription_id")
    if not await request.app[keys.DB].delete_push_subscription(subscription_id, me.user_id):
        raise NotFound("no such subscription")
    return web.Response(status=204)
