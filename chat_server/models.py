"""The contract's objects as frozen dataclasses; `to_json()` gives API.md's shapes.

Times are epoch milliseconds internally and ISO 8601 UTC strings on the wire.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

# Image types we decode for dimensions and thumbnails, and serve inline.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as `2026-11-28T15:44:00.123Z`. Every message
    and event carries such times and a replay formats thousands: the part up to
    the second is formatted once for all the times in that second."""
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    return f"{_iso_second(seconds)}.{millis:03d}Z"


@lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    return (_EPOCH + timedelta(seconds=seconds)).isoformat()


_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    display_name: str
    bio: str
    avatar_media_id: int | None
    created_at: int
    is_admin: bool = False
    is_bot: bool = False
    deactivated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "bio": self.bio,
            "avatar_media_id": self.avatar_media_id,
            "created_at": iso(self.created_at),
            "is_admin": self.is_admin,
            "is_bot": self.is_bot,
            "deactivated": self.deactivated,
        }


@dataclass(frozen=True, slots=True)
class AdminUser:
    """A user as server admins see it: with its newest session use and live sessions."""

    user: User
    last_seen_at: int | None
    session_count: int

    def to_json(self) -> dict[str, Any]:
        return self.user.to_json() | {
            "last_seen_at": iso(self.last_seen_at),
            "session_count": self.session_count,
        }


@dataclass(frozen=True, slots=True)
class Job:
    """A background job (an account's erasure), claimed by a node until `lease_until`."""

    id: int
    kind: str
    target_id: int
    actor_id: int | None
    done_count: int
    lease_until: int


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performs an audited action, and from where (API.md "Audit")."""

    user_id: int
    ip: str


@dataclass(frozen=True, slots=True)
class Audit:
    id: int
    at: int
    actor_id: int | None
    action: str
    target_type: str
    target_id: int | None
    ip: str
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": iso(self.at),
            "actor_id": self.actor_id,
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "ip": self.ip,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class Session:
    id: int
    user_id: int
    created_at: int
    last_used_at: int
    user_agent: str
    revoked: bool

    def to_json(self, current_session_id: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": iso(self.created_at),
            "last_used_at": iso(self.last_used_at),
            "user_agent": self.user_agent,
            "current": self.id == current_session_id,
        }


# A member's notification levels for a room (API.md "Notifications").
NOTIFY_LEVELS = ("all", "mentions", "none")


def default_notify_level(kind: str) -> str:
    """Every message of a DM notifies; in other rooms, only mentions do."""
    return "all" if kind == "dm" else "mentions"


@dataclass(frozen=True, slots=True)
class Room:
    id: int
    kind: str
    name: str
    topic: str
    created_by: int | None
    created_at: int
    last_seq: int
    last_pos: int
    member_count: int
    my_role: str | None
    my_last_read_seq: int
    unread_mentions: int = 0  # messages after the read marker that mention the viewer
    notify_level: str | None = None  # the viewer's, as set (None: the kind's default)
    muted_until: int | None = None  # the viewer's mute

    def to_json(self) -> dict[str, Any]:
        notify = None
        if self.my_role is not None:
            level = self.notify_level or default_notify_level(self.kind)
            notify = {"level": level, "muted_until": iso(self.muted_until)}
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "topic": self.topic,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "last_seq": self.last_seq,
            "last_pos": self.last_pos,
            "member_count": self.member_count,
            "my_role": self.my_role,
            "my_last_read_seq": self.my_last_read_seq,
            "unread_count": max(0, self.last_seq - self.my_last_read_seq),
            "unread_mentions": self.unread_mentions,
            "notify": notify,
        }


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One position of a room stream as stored: the event type and the rows it names."""

    room_id: int
    pos: int
    type: str
    message_id: int | None
    user_id: int | None
    actor_id: int | None
    detail: str | None  # the role of member.joined/member.role, the reason of member.left,
    # the emoji of reaction.added/removed
    reaction_count: int | None = None  # reaction.added/removed: the emoji's count after it


@dataclass(frozen=True, slots=True)
class Member:
    user: User
    role: str
    joined_at: int

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user.to_json(), "role": self.role, "joined_at": iso(self.joined_at)}


@dataclass(frozen=True, slots=True)
class Media:
    id: int
    uploader_id: int
    filename: str
    content_type: str
    size: int
    sha256: str
    created_at: int
    width: int | None
    height: int | None

    @property
    def is_image(self) -> bool:
        return self.content_type in IMAGE_TYPES

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "created_at": iso(self.created_at),
            "width": self.width,
            "height": self.height,
        }


@dataclass(frozen=True, slots=True)
class Reaction:
    """One emoji's reactions on a message, as one viewer sees them (`me`: theirs among them)."""

    emoji: str
    count: int
    me: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"emoji": self.emoji, "count": self.count, "me": self.me}


@dataclass(frozen=True, slots=True)
class Mentions:
    """Whom a message mentions: members by user id (ascending), and `@room`."""

    user_ids: tuple[int, ...] = ()
    room: bool = False

    def __bool__(self) -> bool:
        return self.room or bool(self.user_ids)

    def to_json(self) -> dict[str, Any]:
        return {"user_ids": list(self.user_ids), "room": self.room}


NO_MENTIONS = Mentions()


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    room_id: int
    seq: int
    sender_id: int
    body: str
    client_id: str | None
    reply_to: int | None
    created_at: int
    edited_at: int | None
    deleted: bool
    pos: int  # of its `message.new` in the room stream (not part of the Message object)
    attachments: tuple[Media, ...] = field(default=())
    pinned: bool = False
    # Filled per viewer (Database.with_reactions) where `me` matters; () for a new message.
    reactions: tuple[Reaction, ...] = field(default=())
    thread_id: int | None = None  # its thread's first message, for a reply
    reply_count: int = 0  # for a thread's first message: its replies (tombstones too)
    last_reply_at: int | None = None
    mentions: Mentions = NO_MENTIONS

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room_id": self.room_id,
            "seq": self.seq,
            "sender_id": self.sender_id,
            "body": "" if self.deleted else self.body,
            "client_id": self.client_id,
            "reply_to": self.reply_to,
            "thread_id": self.thread_id,
            "attachments": [] if self.deleted else [m.to_json() for m in self.attachments],
            "created_at": iso(self.created_at),
            "edited_at": iso(self.edited_at),
            "deleted": self.deleted,
            "pinned": self.pinned and not self.deleted,
            "reactions": [] if self.deleted else [r.to_json() for r in self.reactions],
            "mentions": (NO_MENTIONS if self.deleted else self.mentions).to_json(),
            "thread": (
                {"reply_count": self.reply_count, "last_reply_at": iso(self.last_reply_at)}
                if self.reply_count
                else None
            ),
        }


@dataclass(frozen=True, slots=True)
class Invite:
    id: int
    code: str
    max_uses: int
    uses: int
    expires_at: int
    created_by: int
    room_ids: tuple[int, ...]
    created_at: int
    revoked: bool

    def to_json(self) -> dict[str, Any]:
        """Without `url`, which the public address gives (registration.py)."""
        return {
            "id": self.id,
            "code": self.code,
            "max_uses": self.max_uses,
            "uses": self.uses,
            "expires_at": iso(self.expires_at),
            "created_by": self.created_by,
            "room_ids": list(self.room_ids),
            "created_at": iso(self.created_at),
            "revoked": self.revoked,
        }


@dataclass(frozen=True, slots=True)
class Ban:
    """A user barred from a room until lifted (API.md "Registration and server administration")."""

    user: User
    reason: str
    by: int | None  # who banned them; None once that account is gone
    created_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user.to_json(),
            "reason": self.reason,
            "by": self.by,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Report:
    """A user's report of a message, as admins review it."""

    id: int
    state: str  # open | resolved | dismissed
    reason: str
    comment: str
    reporter: User
    message: Message
    room_id: int
    room_name: str
    room_kind: str
    created_at: int
    resolved_by: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "reason": self.reason,
            "comment": self.comment,
            "reporter": self.reporter.to_json(),
            "message": self.message.to_json(),
            "room": {"id": self.room_id, "name": self.room_name, "kind": self.room_kind},
            "created_at": iso(self.created_at),
            "resolved_by": self.resolved_by,
        }


@dataclass(frozen=True, slots=True)
class PushSubscription:
    """A browser's Web Push subscription: where to push and the keys to encrypt for."""

    id: int
    user_id: int
    endpoint: str
    p256dh: str  # the browser's P-256 public key, base64url
    auth: str  # its 16-byte authentication secret, base64url
    created_at: int
    last_success_at: int | None

    def to_json(self) -> dict[str, Any]:
        """What its owner sees: the push service's origin, never the endpoint's secret path."""
        scheme, _, rest = self.endpoint.partition("://")
        return {
            "id": self.id,
            "endpoint_origin": f"{scheme}://{rest.split('/', 1)[0]}",
            "created_at": iso(self.created_at),
            "last_success_at": iso(self.last_success_at),
        }


# --- integrations ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A personal access token as its owner lists it (the token itself is shown once)."""

    id: int
    user_id: int
    name: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "last_used_at": iso(self.last_used_at),
        }


@dataclass(frozen=True, slots=True)
class TokenOwner:
    """What authenticating a personal access token needs to know about it."""

    id: int
    user_id: int
    expires_at: int | None
    last_used_at: int | None
    live: bool  # not revoked, and its owner not deactivated


@dataclass(frozen=True, slots=True)
class Webhook:
    id: int
    room_id: int
    name: str
    kind: str  # "incoming" | "outgoing"
    bot: User
    url: str | None
    trigger: str | None
    secret: str
    created_by: int | None
    created_at: int
    last_delivery_at: int | None
    failures: int

    def to_json(self, hook_url: str | None) -> dict[str, Any]:
        """`hook_url` None: seen by someone who may not know the secret (nor the
        outgoing `url`, which may hold the receiver's credentials)."""
        return {
            "id": self.id,
            "room_id": self.room_id,
            "name": self.name,
            "kind": self.kind,
            "bot": self.bot.to_json(),
            "url": self.url if hook_url is not None else None,
            "trigger": self.trigger,
            "secret": self.secret if hook_url is not None else None,
            "hook_url": hook_url if self.kind == "incoming" else None,
            "created_at": iso(self.created_at),
            "last_delivery_at": iso(self.last_delivery_at),
            "failures": self.failures,
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed delivery of a message to an outgoing webhook (webhooks.py)."""

    id: str  # UUID, the X-Chat-Delivery header
    webhook_id: int
    room_id: int
    bot_id: int
    url: str
    secret: str
    message: Message  # as it is now: the body is built from it at each attempt
    attempts: int  # made before this one
    lease_until: int
