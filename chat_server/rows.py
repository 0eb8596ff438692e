"""Row -> model mappers for the rows db.py's queries return (by column name).

The column lists that produce these rows live next to the queries in db.py.
"""

from __future__ import annotations

import json
from typing import Any

from .engines import Row
from .models import (
    NO_MENTIONS,
    AccessToken,
    AdminUser,
    Audit,
    Ban,
    Invite,
    Job,
    Media,
    Member,
    Mentions,
    Message,
    PushSubscription,
    Report,
    Room,
    Session,
    StreamEntry,
    TokenOwner,
    User,
    Webhook,
)


def to_user(row: Row) -> User:
    return User(
        row["id"],
        row["username"],
        row["display_name"],
        row["bio"],
        row["avatar_media_id"],
        row["created_at"],
        bool(row["is_admin"]),
        bool(row["is_bot"]),
        row["deactivated_at"] is not None,
    )


def to_session(row: Row) -> Session:
    return Session(
        row["id"],
        row["user_id"],
        row["created_at"],
        row["last_used_at"],
        row["user_agent"],
        row["revoked_at"] is not None,
    )


def to_media(row: Row) -> Media:
    return Media(
        row["id"],
        row["uploader_id"],
        row["filename"],
        row["content_type"],
        row["size"],
        row["sha256"],
        row["created_at"],
        row["width"],
        row["height"],
    )


def to_room(row: Row) -> Room:
    return Room(
        row["id"],
        row["kind"],
        row["name"],
        row["topic"],
        row["created_by"],
        row["created_at"],
        row["last_seq"],
        row["last_pos"],
        row["member_count"],
        row["my_role"],
        row["my_last_read_seq"],
        row["unread_mentions"],
        row["my_notify_level"],
        row["my_muted_until"],
    )


def to_message(row: Row, attachments: tuple[Media, ...] = ()) -> Message:
    return Message(
        row["id"],
        row["room_id"],
        row["seq"],
        row["sender_id"],
        row["body"],
        row["client_id"],
        row["reply_to"],
        row["created_at"],
        row["edited_at"],
        bool(row["deleted"]),
        row["pos"],
        attachments,
        pinned=row["pinned_pos"] is not None,
        thread_id=row["thread_id"],
        reply_count=row["reply_count"],
        last_reply_at=row["last_reply_at"],
        mentions=to_mentions(row["mentioned_ids"], row["mentions_room"]),
    )


def to_mentions(mentioned_ids: str | None, room: Any) -> Mentions:
    """A message's mentions from its row: "1,5,9" (or NULL) and the `@room` flag."""
    if mentioned_ids is None and not room:
        return NO_MENTIONS
    ids = tuple(int(i) for i in mentioned_ids.split(",")) if mentioned_ids else ()
    return Mentions(ids, bool(room))


def to_member(row: Row) -> Member:
    return Member(to_user(row), row["role"], row["joined_at"])


def to_stream_entry(row: Row) -> StreamEntry:
    return StreamEntry(
        row["room_id"],
        row["pos"],
        row["type"],
        row["message_id"],
        row["user_id"],
        row["actor_id"],
        row["detail"],
        row["reaction_count"],
    )


def to_audit(row: Row) -> Audit:
    return Audit(
        row["id"],
        row["at"],
        row["actor_id"],
        row["action"],
        row["target_type"],
        row["target_id"],
        row["ip"],
        json.loads(row["details"]),
    )


def to_admin_user(row: Row) -> AdminUser:
    return AdminUser(to_user(row), row["last_seen_at"], row["session_count"])


def to_job(row: Row) -> Job:
    return Job(
        row["id"],
        row["kind"],
        row["target_id"],
        row["actor_id"],
        row["done_count"],
        row["lease_until"],
    )


def to_invite(row: Row, room_ids: tuple[int, ...]) -> Invite:
    return Invite(
        row["id"],
        row["code"],
        row["max_uses"],
        row["uses"],
        row["expires_at"],
        row["created_by"],
        room_ids,
        row["created_at"],
        row["revoked_at"] is not None,
    )


def to_ban(row: Row) -> Ban:
    """A row of user columns plus the ban's `reason`, `by_id` and `banned_at`."""
    return Ban(to_user(row), row["reason"], row["by_id"], row["banned_at"])


def to_report(row: Row, message: Message) -> Report:
    """A row of the reporter's user columns plus the report's and its room's (see db.py)."""
    return Report(
        row["report_id"],
        row["state"],
        row["reason"],
        row["comment"],
        to_user(row),
        message,
        row["room_id"],
        row["room_name"],
        row["room_kind"],
        row["reported_at"],
        row["resolved_by"],
    )


def to_push_subscription(row: Row) -> PushSubscription:
    return PushSubscription(
        row["id"],
        row["user_id"],
        row["endpoint"],
        row["p256dh"],
        row["auth"],
        row["created_at"],
        row["last_success_at"],
    )


def to_access_token(row: Row) -> AccessToken:
    return AccessToken(
        row["id"],
        row["user_id"],
        row["name"],
        row["created_at"],
        row["expires_at"],
        row["last_used_at"],
    )


def to_token_owner(row: Row) -> TokenOwner:
    live = row["revoked_at"] is None and row["deactivated_at"] is None
    return TokenOwner(row["id"], row["user_id"], row["expires_at"], row["last_used_at"], live)


def to_webhook(row: Row) -> Webhook:
    """A row of the bot's user columns plus the webhook's (`hook_*`, see db.py)."""
    return Webhook(
        row["hook_id"],
        row["room_id"],
        row["name"],
        row["kind"],
        to_user(row),
        row["url"],
        row["trigger_on"],
        row["secret"],
        row["hook_created_by"],
        row["hook_created_at"],
        row["last_delivery_at"],
        row["failures"],
    )
