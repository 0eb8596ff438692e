"""All the application's SQL: the `Database` of small named queries, over either engine.

Statements are written once, in PostgreSQL style with `$1, $2` parameters
(engines.py runs them on asyncpg or sqlite3). Reads run on the engine
directly; every write runs in `transaction()` or, for one statement, `write()`.
Times are epoch milliseconds. What differs by engine: id lists are bound
through `in_ids()`/`ids_param()`; the send statement (PostgreSQL numbers,
inserts, attaches and marks read in one data-modifying CTE, and commits the
sends that arrive together in one statement; SQLite inserts with
`last_seq + 1` and a trigger bumps the room, attachments follow in the same
transaction); the row lock that makes a login's session insert wait for a
password change (PostgreSQL only: SQLite has one writer); and full-text
search (tsvector vs FTS5).
"""

from __future__ import annotations

import hmac
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .engines import Conn, Engine, PostgresEngine, Row, UniqueViolation, connect
from .mentions import NOTHING_WRITTEN, ROOM_MENTION_MAX_MEMBERS, Written
from .migrations import migrate
from .models import (
    NO_MENTIONS,
    AccessToken,
    Actor,
    AdminUser,
    Audit,
    Ban,
    Delivery,
    Invite,
    Job,
    Media,
    Member,
    Mentions,
    Message,
    PushSubscription,
    Reaction,
    Report,
    Room,
    Session,
    StreamEntry,
    TokenOwner,
    User,
    Webhook,
    now_ms,
)
from .rows import (
    to_access_token,
    to_admin_user,
    to_audit,
    to_ban,
    to_invite,
    to_job,
    to_media,
    to_member,
    to_mentions,
    to_message,
    to_push_subscription,
    to_report,
    to_room,
    to_session,
    to_stream_entry,
    to_token_owner,
    to_user,
    to_webhook,
)
from .search_index import SearchIndex

# --- columns: each list written once; `*_FIELDS` bare (RETURNING), `*_COLUMNS` qualified


def _qualified(alias: str, fields: str) -> str:
    return ", ".join(f"{alias}.{name}" for name in fields.split(", "))


USER_FIELDS = (
    "id, username, display_name, bio, avatar_media_id, created_at, is_admin, is_bot, deactivated_at"
)
USER_COLUMNS = _qualified("u", USER_FIELDS)
SESSION_FIELDS = "id, user_id, created_at, last_used_at, user_agent, revoked_at"
MEDIA_FIELDS = "id, uploader_id, filename, content_type, size, sha256, created_at, width, height"
MEDIA_COLUMNS = _qualified("md", MEDIA_FIELDS)
ROOM_COLUMNS = (
    "r.id, r.kind, r.name, r.topic, r.created_by, r.created_at, r.last_seq, r.last_pos,"
    " r.member_count,"
    " me.role AS my_role, COALESCE(me.last_read_seq, 0) AS my_last_read_seq,"
    " me.notify_level AS my_notify_level, me.muted_until AS my_muted_until,"
    # The viewer's mentions after their read marker: by name (index mentions_unread)
    # or by @room (index messages_room_mentions), a message naming both counted once;
    # nothing to count for a non-member or a room read to its end.
    " CASE WHEN me.user_id IS NULL OR me.last_read_seq >= r.last_seq THEN 0 ELSE"
    " (SELECT count(*) FROM mentions mn WHERE mn.user_id = me.user_id"
    "   AND mn.room_id = r.id AND mn.seq > me.last_read_seq)"
    " + (SELECT count(*) FROM messages mr WHERE mr.room_id = r.id AND mr.mentions_room"
    "   AND mr.seq > me.last_read_seq AND NOT EXISTS (SELECT 1 FROM mentions mx"
    "     WHERE mx.message_id = mr.id AND mx.user_id = me.user_id)) END AS unread_mentions"
)
# Rooms joined with the viewer's own membership row (`$1` is the viewer).
ROOMS_FOR_VIEWER = "rooms r LEFT JOIN members me ON me.room_id = r.id AND me.user_id = $1"
MEMBER_COLUMNS = f"{USER_COLUMNS}, mb.role, mb.joined_at"
MESSAGE_FIELDS = (
    "id, room_id, seq, sender_id, body, client_id, reply_to, created_at, edited_at, deleted, pos,"
    " pinned_pos, thread_id, reply_count, last_reply_at, mentioned_ids, mentions_room"
)
MESSAGE_COLUMNS = _qualified("m", MESSAGE_FIELDS)
PUSH_FIELDS = "id, user_id, endpoint, p256dh, auth, created_at, last_success_at"
PUSH_COLUMNS = _qualified("ps", PUSH_FIELDS)
# Subscriptions a user keeps (browsers, devices); registering one more drops the oldest.
MAX_PUSH_SUBSCRIPTIONS = 10
# What a deletion sets: a tombstone keeps id, seq and pos, and loses its body,
# mentions and pin (and, in `_drop_dependents`, attachments and reactions).
TOMBSTONE = (
    "body = '', deleted = TRUE, mentioned_ids = NULL, mentions_room = FALSE, pinned_pos = NULL"
)
STREAM_FIELDS = "room_id, pos, type, message_id, user_id, actor_id, detail, reaction_count"
AUDIT_FIELDS = "id, at, actor_id, action, target_type, target_id, ip, details"
JOB_FIELDS = "id, kind, target_id, actor_id, done_count, lease_until"
TOKEN_FIELDS = "id, user_id, name, created_at, expires_at, last_used_at"
INVITE_FIELDS = "id, code, created_by, max_uses, uses, expires_at, revoked_at, created_at"
# An invite's row as `_invite_refusal` reads it (append `WHERE ...`).
INVITE_STATE = (
    "id, created_by, max_uses, uses, expires_at, revoked_at, (SELECT deactivated_at"
    " FROM users WHERE users.id = invites.created_by) AS creator_deactivated_at FROM invites"
)
# Any active server admin (the setup token works while there is none).
ACTIVE_ADMIN = "SELECT 1 FROM users WHERE is_admin AND deactivated_at IS NULL"
# Larger than any seq or pos: the upper bound of "newest first" queries.
MAX_SEQ = 2**63 - 1
# Roles that manage a room (edit it, add and remove members, delete others' messages).
MANAGERS = ("owner", "admin")
# The `state` filter of the admins' user list, as a condition on `users u`.
ACCOUNT_STATES = {
    "active": " AND u.deactivated_at IS NULL",
    "deactivated": " AND u.deactivated_at IS NOT NULL",
    "all": "",
}
BAN_COLUMNS = f"{USER_COLUMNS}, b.reason, b.by_id, b.created_at AS banned_at"
# A report with its reporter (user columns) and room; the message is loaded apart.
REPORTS_SELECT = (
    "SELECT rp.id AS report_id, rp.state, rp.reason, rp.comment, rp.message_id,"
    " rp.created_at AS reported_at, rp.resolved_by, r.id AS room_id, r.name AS room_name,"
    f" r.kind AS room_kind, {USER_COLUMNS}"
    " FROM reports rp JOIN users u ON u.id = rp.reporter_id JOIN rooms r ON r.id = rp.room_id"
)


def outranks(moderator_role: str | None, member_role: str | None) -> bool:
    """Whether a moderator with `moderator_role` may remove or ban a member with
    `member_role` (None: not a member): managers may, the owner nobody may, and
    only the owner (or a server admin, acting as one) may an admin."""
    if moderator_role not in MANAGERS or member_role == "owner":
        return False
    return member_role != "admin" or moderator_role == "owner"


def _like_prefix(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


@dataclass(frozen=True)
class SendResult:
    message: Message
    created: bool  # False when an earlier send with the same client_id is returned


@dataclass(frozen=True)
class Edit:
    message: Message
    pos: int  # of its `message.edited`
    newly_mentioned: Mentions  # what the edit mentions that the message did not before


class NotMember(Exception):
    """A change to a room by someone who is not (or no longer) a member of it."""


class LastAdmin(Exception):
    """A change that would leave the server without an active admin."""


class BotAdmin(Exception):
    """A promotion of a bot: its tokens would carry admin powers past its owner."""


@dataclass(frozen=True)
class Deactivation:
    """What a deactivation ended: to close and announce after commit."""

    session_ids: list[int] = field(default_factory=list)
    # (room_id, user_id, member.left pos): the account's and its bots' memberships
    left_rooms: list[tuple[int, int, int]] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)  # personal access tokens revoked
    bot_ids: list[int] = field(default_factory=list)  # its bots, deactivated with it


@dataclass(frozen=True)
class PushTarget:
    """A subscription a new message is pushed to, with what the push says of its room."""

    subscription: PushSubscription
    room_kind: str
    room_name: str


@dataclass(frozen=True)
class ErasureBatch:
    """One committed batch of an erasure: the tombstones and their `message.deleted` pos."""

    deleted: list[tuple[Message, int]]
    done: bool  # the job is finished
    lease_until: int  # the job's renewed lease


class SignupRefused(Exception):
    """A signup's invite or setup token does not let it in; the message says why."""


class RoomNotManaged(Exception):
    """An invite to a room its creator does not manage; `visible`: the room is
    one they can see (403), else as good as absent to them (404)."""

    def __init__(self, room_id: int, *, visible: bool) -> None:
        super().__init__(room_id)
        self.room_id = room_id
        self.visible = visible


def _may_invite(kind: str, role: str | None, is_admin: bool) -> bool:
    """Whether a user with `role` in a room of `kind` (and server admin or not) may
    invite people into it: its managers may, a server admin into a public room
    only (they moderate private rooms without reading them), nobody into a DM."""
    return kind != "dm" and (role in MANAGERS or (is_admin and kind == "public"))


def _invite_refusal(invite: Row | None) -> str | None:
    """Why the invite (an INVITE_STATE row) cannot be used now; None if it can."""
    if invite is None:
        return "unknown invite"
    if invite["revoked_at"] is not None:
        return "this invite was revoked"
    if invite["creator_deactivated_at"] is not None:
        return "this invite is no longer valid: its creator's account was deactivated"
    if invite["expires_at"] <= now_ms():
        return "this invite has expired"
    if invite["uses"] >= invite["max_uses"]:
        return "this invite is used up"
    return None


class ReplyNotFound(Exception):
    """A reply to a message that is not in the room."""


class AccountDeactivated(Exception):
    """A join, add or new room's member whose account is deactivated (meanwhile)
    or does not exist: the join, and a room being created with it, roll back."""


class _AlreadyMember(Exception):
    """Rolls back a join that lost a race with the same join."""


# reactions and pins


class NotAllowed(Exception):
    """A member whose role does not allow the change (pins: managers, or anyone in a DM)."""


class LimitReached(Exception):
    """A per-message or per-room cap (distinct emoji, pins) would be exceeded."""


@dataclass(frozen=True, slots=True)
class ReactionChange:
    seq: int  # of the message reacted to
    count: int  # the emoji's count afterwards
    pos: int | None  # of the room event; None: nothing changed (idempotent repeat)


class Banned(Exception):
    """A join or add of a user banned from the room (rolled back)."""


class RoomGone(Exception):
    """A join of a room deleted meanwhile, or a second deletion (rolled back)."""


class _MembersChanged(Exception):
    """Rolls back a room deletion that a join committed under (it is tried again)."""


class Refused(Exception):
    """A moderation action the actor's role does not allow (checked under its locks);
    the message, when given, says why."""


@dataclass(frozen=True, slots=True)
class WebhookFields:
    """A new webhook's settings (integrations.py checks them)."""

    name: str
    kind: str
    url: str | None
    trigger: str | None
    secret: str
    secret_sha256: str


@dataclass(frozen=True, slots=True)
class _Send:
    room_id: int
    sender_id: int
    body: str
    client_id: str | None
    reply_to: int | None
    created_at: int
    attachments: tuple[Media, ...]
    mentions: Written


class Database:
    """The named queries of the application, over either engine."""

    def __init__(self, engine: Engine, installation_id: str) -> None:
        self.engine = engine
        # This database's id (sql/*/NNN_installation.sql), which tokens carry.
        self.installation_id = installation_id
        # Sends without attachments: each alone, or on PostgreSQL those
        # arriving together in one statement (`_send_batch`).
        self._commit_send = engine.group_commit(self._send_one, self._send_batch)
        # SQLite indexes messages for search behind the sends (search_index.py).
        self.search_index = SearchIndex(engine) if engine.name == "sqlite" else None

    @classmethod
    async def open(cls, url: str) -> Database:
        engine = await connect(url)
        try:
            await migrate(engine)
            installation_id = await cls._installation_id(engine)
        except BaseException:
            await engine.close()
            raise
        return cls(engine, installation_id)

    async def close(self) -> None:
        if self.search_index is not None:
            await self.search_index.finish()
        await self.engine.close()

    async def ping(self) -> None:
        await self.engine.fetchval("SELECT 1")

    def connections_in_use(self) -> int:
        return self.engine.connections_in_use()

    # --- users ---------------------------------------------------------------------

    async def create_user(
        self,
        username: str,
        display_name: str,
        password_hash: str,
        *,
        is_admin: bool = False,
        actor: Actor | None = None,
    ) -> User:
        """Raises UniqueViolation when the username is taken. An admin ends the
        setup token (see `create_setup_admin`): the first admin exists. With an
        `actor` (an admin creating the account) the creation is audited."""
        async with self.engine.transaction() as tx:
            if is_admin:
                await tx.execute("UPDATE installation SET setup_token_sha256 = NULL")
            user = await self._insert_user(tx, username, display_name, password_hash, is_admin)
            if actor is not None:
                details = {"is_admin": is_admin}
                await self._audit(tx, actor, "user.create", "user", user.id, details)
        return user

    @staticmethod
    async def _insert_user(
        tx: Conn, username: str, display_name: str, password_hash: str, is_admin: bool
    ) -> User:
        row = await tx.fetchrow(
            "INSERT INTO users (username, display_name, password_hash, created_at, is_admin)"
            f" VALUES ($1, $2, $3, $4, $5) RETURNING {USER_FIELDS}",
            username,
            display_name,
            password_hash,
            now_ms(),
            is_admin,
        )
        return to_user(row)

    async def get_user(self, user_id: int) -> User | None:
        row = await self.engine.fetchrow(
            f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1", user_id
        )
        return None if row is None else to_user(row)

    async def users_by_ids(self, ids: Sequence[int]) -> dict[int, User]:
        if not ids:
            return {}
        rows = await self.engine.fetch(
            f"SELECT {USER_COLUMNS} FROM users u WHERE u.id {self.engine.in_ids('$1')}",
            self.engine.ids_param(ids),
        )
        return {user.id: user for user in map(to_user, rows)}

    async def get_credentials(self, username: str) -> tuple[User, str] | None:
        row = await self.engine.fetchrow(
            f"SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.username = $1",
            username,
        )
        return None if row is None else (to_user(row), row["password_hash"])

    async def get_password_hash(self, user_id: int) -> str | None:
        return await self.engine.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)

    async def update_user(
        self,
        user_id: int,
        *,
        display_name: str | None,
        bio: str | None,
        avatar_media_id: int | None,
        set_avatar: bool,
    ) -> User:
        async with self.engine.transaction() as tx:
            row = await tx.fetchrow(
                "UPDATE users SET display_name = COALESCE($2, display_name),"
                " bio = COALESCE($3, bio),"
                " avatar_media_id = CASE WHEN $4 THEN $5 ELSE avatar_media_id END"
                f" WHERE id = $1 RETURNING {USER_FIELDS}",
                user_id,
                display_name,
                bio,
                set_avatar,
                avatar_media_id,
            )
        return to_user(row)

    async def search_users(self, prefix: str, after_username: str, limit: int) -> list[User]:
        rows = await self.engine.fetch(
            f"SELECT {USER_COLUMNS} FROM users u"
            " WHERE (u.username LIKE $1 ESCAPE '\\' OR lower(u.display_name) LIKE $1 ESCAPE '\\')"
            " AND u.username > $2 ORDER BY u.username LIMIT $3",
            _like_prefix(prefix),
            after_username,
            limit,
        )
        return [to_user(r) for r in rows]

    async def set_password(
        self, user_id: int, old_hash: str, new_hash: str, keep_session_id: int
    ) -> list[int] | None:
        """Replace the password if it is still `old_hash` (the one just verified)
        and revoke every other session; returns their ids, or None if the
        password changed meanwhile. The check is the update's own condition,
        so of two changes verified against the same password only one wins."""
        async with self.engine.transaction() as tx:
            changed = await tx.fetchrow(
                "UPDATE users SET password_hash = $3"
                " WHERE id = $1 AND password_hash = $2 RETURNING id",
                user_id,
                old_hash,
                new_hash,
            )
            if changed is None:
                return None
            rows = await tx.fetch(
                "UPDATE sessions SET revoked_at = $3"
                " WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL RETURNING id",
                user_id,
                keep_session_id,
                now_ms(),
            )
        return [r["id"] for r in rows]

    # --- sessions ------------------------------------------------------------------

    @staticmethod
    async def _installation_id(engine: Engine) -> str:
        return await engine.fetchval("SELECT id FROM installation")

    async def create_session(
        self, user_id: int, password_hash: str, refresh_jti: str, user_agent: str
    ) -> Session | None:
        """A new session, unless the user's password hash is no longer `password_hash`
        or the account is deactivated.

        Login verifies the password outside the database, so the check is
        repeated inside the insert (DESIGN.md invariant 9): a password change
        committed meanwhile makes this None instead of a session it never saw
        to revoke (a deactivation likewise). On PostgreSQL, `FOR SHARE` waits for
        a change in progress and re-reads the row; SQLite's one writer runs the
        two one at a time.
        """
        row = await self.engine.write(
            "INSERT INTO sessions (user_id, refresh_jti, user_agent, created_at, last_used_at)"
            " SELECT id, $3, $4, $5, $5 FROM users"
            " WHERE id = $1 AND password_hash = $2 AND deactivated_at IS NULL"
            f" FOR SHARE RETURNING {SESSION_FIELDS}",
            user_id,
            password_hash,
            refresh_jti,
            user_agent,
            now_ms(),
        )
        return None if row is None else to_session(row)

    async def get_session(self, session_id: int) -> Session | None:
        row = await self.engine.fetchrow(
            f"SELECT {SESSION_FIELDS} FROM sessions WHERE id = $1", session_id
        )
        return None if row is None else to_session(row)

    async def touch_session(self, session_id: int, stale_before: int) -> None:
        """Record use, at most once per staleness window (avoids a write per request)."""
        async with self.engine.transaction() as tx:
            await tx.execute(
                "UPDATE sessions SET last_used_at = $2 WHERE id = $1 AND last_used_at < $3",
                session_id,
                now_ms(),
                stale_before,
            )

    async def rotate_refresh(self, session_id: int, old_jti: str, new_jti: str) -> str:
        """Swap the session's refresh token id: 'rotated', 'reused' (now revoked) or 'revoked'."""
        now = now_ms()
        async with self.engine.transaction() as tx:
            row = await tx.fetchrow(
                "UPDATE sessions SET refresh_jti = $3, last_used_at = $4"
                " WHERE id = $1 AND refresh_jti = $2 AND revoked_at IS NULL RETURNING id",
                session_id,
                old_jti,
                new_jti,
                now,
            )
            if row is not None:
                return "rotated"
            revoked = await tx.fetchrow(
                "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL"
                " RETURNING id",
                session_id,
                now,
            )
        return "reused" if revoked is not None else "revoked"

    async def revoke_session(self, user_id: int, session_id: int) -> bool:
        async with self.engine.transaction() as tx:
            row = await tx.fetchrow(
                "UPDATE sessions SET revoked_at = $3"
                " WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING id",
                session_id,
                user_id,
                now_ms(),
            )
        return row is not None

    async def revoked_among(self, session_ids: Sequence[int]) -> list[int]:
        rows = await self.engine.fetch(
            "SELECT id FROM sessions WHERE revoked_at IS NOT NULL"
            f" AND id {self.engine.in_ids('$1')}",
            self.engine.ids_param(session_ids),
        )
        return [r["id"] for r in rows]

    async def list_sessions(self, user_id: int) -> list[Session]:
        rows = await self.engine.fetch(
            f"SELECT {SESSION_FIELDS} FROM sessions"
            " WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id",
            user_id,
        )
        return [to_session(r) for r in rows]

    # --- media ---------------------------------------------------------------------

    async def create_media(
        self,
        uploader_id: int,
        sha256: str,
        filename: str,
        content_type: str,
        size: int,
        width: int | None,
        height: int | None,
    ) -> Media:
        async with self.engine.transaction() as tx:
            row = await tx.fetchrow(
                "INSERT INTO media (uploader_id, sha256, filename, content_type, size, width,"
                " height, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                f" RETURNING {MEDIA_FIELDS}",
                uploader_id,
                sha256,
                filename,
                content_type,
                size,
                width,
                height,
                now_ms(),
            )
        return to_media(row)

    async def get_media(self, media_id: int) -> Media | None:
        row = await self.engine.fetchrow(
            f"SELECT {MEDIA_COLUMNS} FROM media md WHERE md.id = $1", media_id
        )
        return None if row is None else to_media(row)

    # Who may read a media row `md` (`$2` is the reader): its uploader; anyone when it
    # is someone's avatar; whoever may read a room where a non-deleted message
    # attaches it (members; anyone signed in for a public room).
    _MEDIA_READABLE = (
        "(md.uploader_id = $2"
        " OR EXISTS (SELECT 1 FROM users u WHERE u.avatar_media_id = md.id)"
        " OR EXISTS (SELECT 1 FROM message_attachments a"
        "   JOIN messages m ON m.id = a.message_id AND NOT m.deleted"
        "   JOIN rooms r ON r.id = m.room_id"
        "   WHERE a.media_id = md.id AND r.deleted_at IS NULL AND (r.kind = 'public' OR EXISTS ("
        "     SELECT 1 FROM members mb WHERE mb.room_id = r.id AND mb.user_id = $2))))"
    )

    async def readable_media(self, media_id: int, user_id: int) -> Media | None:
        """The media if `user_id` may read it (see _MEDIA_READABLE), in one query."""
        row = await self.engine.fetchrow(
            f"SELECT {MEDIA_COLUMNS} FROM media md WHERE md.id = $1 AND {self._MEDIA_READABLE}",
            media_id,
            user_id,
        )
        return None if row is None else to_media(row)

    # --- rooms ------------------------------------------------------------------------

    async def create_room(self, kind: str, name: str, topic: str, owner_id: int) -> Room:
        now = now_ms()
        async with self.engine.transaction() as tx:
            room_id = await tx.fetchval(
                "INSERT INTO rooms (kind, name, topic, created_by, created_at)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                kind,
                name,
                topic,
                owner_id,
                now,
            )
            await self._join(tx, room_id, owner_id, "owner", None)
            return await self._room_in(tx, room_id, owner_id)

    async def _room_in(self, conn: Conn, room_id: int, viewer_id: int) -> Room:
        row = await conn.fetchrow(
            f"SELECT {ROOM_COLUMNS} FROM {ROOMS_FOR_VIEWER} WHERE r.id = $2", viewer_id, room_id
        )
        return to_room(row)

    async def get_room(
        self, room_id: int, viewer_id: int, *, include_deleted: bool = False
    ) -> Room | None:
        """The room as the viewer sees it; a deleted room only with `include_deleted`
        (for what its stream still tells: the removed members' `room.removed`)."""
        row = await self.engine.fetchrow(
            f"SELECT {ROOM_COLUMNS} FROM {ROOMS_FOR_VIEWER}"
            " WHERE r.id = $2 AND ($3 OR r.deleted_at IS NULL)",
            viewer_id,
            room_id,
            include_deleted,
        )
        return None if row is None else to_room(row)

    async def rooms_seen_by(self, viewer_id: int, room_ids: Sequence[int]) -> dict[int, Room]:
        """{room_id: the room as the viewer sees it}, deleted rooms included (what
        their streams still tell), in one query."""
        rows = await self.engine.fetch(
            f"SELECT {ROOM_COLUMNS} FROM {ROOMS_FOR_VIEWER} WHERE r.id {self.engine.in_ids('$2')}",
            viewer_id,
            self.engine.ids_param(room_ids),
        )
        return {r["id"]: to_room(r) for r in rows}

    async def room_seen_by_members(self, room_id: int, user_ids: Sequence[int]) -> dict[int, Room]:
        """{user_id: the room as that user sees it} for those of `user_ids` who are
        its members, in one query (what `room.updated` tells each of them)."""
        rows = await self.engine.fetch(
            f"SELECT {ROOM_COLUMNS}, me.user_id AS viewer_id FROM rooms r"
            " JOIN members me ON me.room_id = r.id"
            f" WHERE r.id = $1 AND me.user_id {self.engine.in_ids('$2')}",
            room_id,
            self.engine.ids_param(user_ids),
        )
        return {r["viewer_id"]: to_room(r) for r in rows}

    async def list_my_rooms(self, user_id: int) -> list[Room]:
        rows = await self.engine.fetch(
            f"SELECT {ROOM_COLUMNS} FROM rooms r"
            " JOIN members me ON me.room_id = r.id AND me.user_id = $1"
            " WHERE r.deleted_at IS NULL ORDER BY r.id",
            user_id,
        )
        return [to_room(r) for r in rows]

    async def list_public_rooms(
        self, viewer_id: int, prefix: str, after_id: int, limit: int
    ) -> list[Room]:
        rows = await self.engine.fetch(
            f"SELECT {ROOM_COLUMNS} FROM {ROOMS_FOR_VIEWER}"
            " WHERE r.kind = 'public' AND r.deleted_at IS NULL"
            " AND lower(r.name) LIKE $2 ESCAPE '\\' AND r.id > $3"
            " ORDER BY r.id LIMIT $4",
            viewer_id,
            "%" + _like_prefix(prefix),
            after_id,
            limit,
        )
        return [to_room(r) for r in rows]

    async def update_room(
        self, room_id: int, viewer_id: int, name: str | None, topic: str | None
    ) -> tuple[Room, int] | None:
        """Renames a room as one of its managers, as the room event `room.updated`.

        Returns the room as the viewer sees it and the event's pos, or None when
        the viewer does not manage the room (checked under the member row's lock).
        """
        async with self.engine.transaction() as tx:
            if await self._locked_role(tx, room_id, viewer_id) not in MANAGERS:
                return None
            await tx.execute(
                "UPDATE rooms SET name = COALESCE($2, name), topic = COALESCE($3, topic)"
                " WHERE id = $1",
                room_id,
                name,
                topic,
            )
            pos = await self._append_event(tx, room_id, "room.updated", actor_id=viewer_id)
            return await self._room_in(tx, room_id, viewer_id), pos

    async def get_or_create_dm(self, user_id: int, other_id: int) -> tuple[Room, bool]:
        """The one DM room of two users; True when this call created it."""
        low, high = sorted((user_id, other_id))
        dm_key = f"{low}:{high}"
        existing = await self.engine.fetchval("SELECT id FROM rooms WHERE dm_key = $1", dm_key)
        if existing is None:
            now = now_ms()
            try:
                async with self.engine.transaction() as tx:
                    room_id = await tx.fetchval(
                        "INSERT INTO rooms (kind, name, topic, created_by, created_at, dm_key)"
                        " VALUES ('dm', '', '', $1, $2, $3) RETURNING id",
                        user_id,
                        now,
                        dm_key,
                    )
                    for member in (low, high):
                        await self._join(tx, room_id, member, "member", None)
                    return await self._room_in(tx, room_id, user_id), True
            except UniqueViolation:  # created concurrently by the other user
                existing = await self.engine.fetchval(
                    "SELECT id FROM rooms WHERE dm_key = $1", dm_key
                )
        room = await self.get_room(existing, user_id)
        assert room is not None
        return room, False

    async def last_positions(self, room_ids: Sequence[int]) -> dict[int, int]:
        """{room_id: last_pos} of the given rooms."""
        rows = await self.engine.fetch(
            f"SELECT id, last_pos FROM rooms WHERE id {self.engine.in_ids('$1')}",
            self.engine.ids_param(room_ids),
        )
        return {r["id"]: r["last_pos"] for r in rows}

    async def positions_of(self, user_id: int) -> dict[int, tuple[int, int]]:
        """{room_id: (last_seq, last_pos)} of every room the user is in."""
        rows = await self.engine.fetch(
            "SELECT r.id, r.last_seq, r.last_pos FROM rooms r"
            " JOIN members mb ON mb.room_id = r.id WHERE mb.user_id = $1",
            user_id,
        )
        return {r["id"]: (r["last_seq"], r["last_pos"]) for r in rows}

    async def joined_pos(self, room_id: int, user_id: int) -> int | None:
        """The pos of the member's `member.joined` (None: not a member)."""
        pos: int | None = await self.engine.fetchval(
            "SELECT joined_pos FROM members WHERE room_id = $1 AND user_id = $2", room_id, user_id
        )
        return pos

    async def event_time(self, room_id: int, pos: int) -> int | None:
        """When (epoch ms) the room event at `pos` was written (None: a message's or none)."""
        at: int | None = await self.engine.fetchval(
            "SELECT created_at FROM room_events WHERE room_id = $1 AND pos = $2", room_id, pos
        )
        return at

    async def joins_since(
        self, user_ids: Sequence[int], since_ms: int
    ) -> list[tuple[int, int, int]]:
        """(user_id, room_id, pos) of the given users' `member.joined` since `since_ms`."""
        rows = await self.engine.fetch(
            "SELECT user_id, room_id, pos FROM room_events WHERE type = 'member.joined'"
            f" AND created_at >= $2 AND user_id {self.engine.in_ids('$1')}",
            self.engine.ids_param(user_ids),
            since_ms,
        )
        return [(r["user_id"], r["room_id"], r["pos"]) for r in rows]

    # --- the room stream ----------------------------------------------------------------

    async def _append_event(
        self,
        tx: Conn,
        room_id: int,
        kind: str,
        *,
        message_id: int | None = None,
        user_id: int | None = None,
        actor_id: int | None = None,
        detail: str | None = None,
        reaction_count: int | None = None,
        joins: int = 0,
    ) -> int:
        """Numbers a change with the room's next pos, in the change's transaction.

        The UPDATE takes the room's row lock (SQLite: the writer's), so events
        commit in pos order with no gaps (DESIGN.md invariant 3). Every
        membership change is a `member.joined` (`joins` 1) or `member.left`
        (-1), so the same statement keeps `rooms.member_count` equal to the
        room's member rows.
        """
        pos: int = await tx.fetchval(
            "UPDATE rooms SET last_pos = last_pos + 1, member_count = member_count + $2"
            " WHERE id = $1 RETURNING last_pos",
            room_id,
            joins,
        )
        await tx.execute(
            f"INSERT INTO room_events ({STREAM_FIELDS}, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            room_id,
            pos,
            kind,
            message_id,
            user_id,
            actor_id,
            detail,
            reaction_count,
            now_ms(),
        )
        return pos

    async def _locked_role(self, tx: Conn, room_id: int, user_id: int) -> str | None:
        """The user's role in the room, its member row locked until the transaction ends.

        A change that needs membership checks it here, so a removal committing
        meanwhile either waits for the change or makes it fail (invariant 9).
        Member rows are locked before the room row everywhere: no deadlock.
        KEY SHARE, not SHARE: it blocks the removal (a DELETE) but not the
        read-marker updates of the member's own concurrent sends, which wait
        for the room row this transaction is about to lock.
        """
        role: str | None = await tx.fetchval(
            "SELECT role FROM members WHERE room_id = $1 AND user_id = $2 FOR KEY SHARE",
            room_id,
            user_id,
        )
        return role

    async def stream_entries(
        self, room_id: int, *, after_pos: int | None, before_pos: int | None, limit: int
    ) -> tuple[list[StreamEntry], bool]:
        """Up to `limit` stream entries in ascending pos, and whether more lie beyond.

        A message's `message.new` is its own row; every other event a room_events row.
        """
        upper = MAX_SEQ if before_pos is None else before_pos
        entries = (
            "SELECT room_id, pos, 'message.new' AS type, id AS message_id,"
            " CAST(NULL AS BIGINT) AS user_id, CAST(NULL AS BIGINT) AS actor_id,"
            " CAST(NULL AS TEXT) AS detail, CAST(NULL AS BIGINT) AS reaction_count"
            " FROM messages WHERE room_id = $1 AND pos > $2"
            f" AND pos < $3 UNION ALL SELECT {STREAM_FIELDS} FROM room_events"
            " WHERE room_id = $1 AND pos > $2 AND pos < $3"
        )
        order = "ASC" if after_pos is not None else "DESC"
        rows = await self.engine.fetch(
            f"{entries} ORDER BY pos {order} LIMIT $4", room_id, after_pos or 0, upper, limit + 1
        )
        has_more = len(rows) > limit
        found = [to_stream_entry(r) for r in rows[:limit]]
        if after_pos is None:
            found.reverse()
        return found, has_more

    async def stream_ranges(
        self, ranges: Sequence[tuple[int, int, int]]
    ) -> tuple[list[StreamEntry], dict[int, Message]]:
        """The stream entries of several rooms at once, each room's in
        (after_pos, upto_pos] (`ranges` of (room_id, after_pos, upto_pos)), in
        (room, pos) order, and the messages of their `message.new` entries,
        read in the same pass (a replay sends them all): a few queries however
        many rooms. Positions are gapless, so a range is also the count of
        entries it reads."""
        if not ranges:
            return [], {}
        if self.engine.name == "postgres":
            wanted = (
                "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])"
                " AS w (room_id, after_pos, upto_pos)"
            )
            params: list[Any] = [list(column) for column in zip(*ranges, strict=True)]
        else:  # one JSON array of [room_id, after_pos, upto_pos], parsed once per row
            wanted = (
                "SELECT value ->> 0 AS room_id, value ->> 1 AS after_pos,"
                " value ->> 2 AS upto_pos FROM json_each($1)"
            )
            params = [json.dumps(ranges)]

        def in_ranges(columns: str, table: str) -> str:
            return (
                f"WITH wanted AS ({wanted}) SELECT {columns} FROM wanted w JOIN {table}"
                " ON t.room_id = w.room_id AND t.pos > w.after_pos AND t.pos <= w.upto_pos"
            )

        message_rows = await self.engine.fetch(
            in_ranges(_qualified("t", MESSAGE_FIELDS), "messages t"), *params
        )
        event_rows = await self.engine.fetch(
            in_ranges(_qualified("t", STREAM_FIELDS), "room_events t"), *params
        )
        messages = await self._attach(message_rows)
        entries = [
            StreamEntry(m.room_id, m.pos, "message.new", m.id, None, None, None) for m in messages
        ]
        entries += [to_stream_entry(row) for row in event_rows]
        entries.sort(key=lambda entry: (entry.room_id, entry.pos))
        return entries, {message.id: message for message in messages}

    # --- members ----------------------------------------------------------------------

    async def add_member(
        self, room_id: int, user_id: int, role: str, actor_id: int | None
    ) -> int | None:
        """Adds a member as the room event `member.joined`; returns its pos.

        None if they already were one (their role is unchanged), also when the
        same join commits concurrently: the unique key decides, never a 500.
        Raises AccountDeactivated when the account is deactivated (or does not
        exist), Banned when the user is banned from the room, RoomGone when
        the room was deleted.

        An add by `actor_id` (None: the user joins) is checked in the same
        transaction (invariant 9): raises Refused, naming why, unless the actor
        manages the room, and owns it to add an admin. A server admin adds as
        their own role allows (they moderate rooms, they do not fill them).
        """
        try:
            async with self.engine.transaction() as tx:
                if actor_id is not None:
                    await self._may_add(tx, room_id, actor_id, user_id, role)
                return await self._join(tx, room_id, user_id, role, actor_id)
        except _AlreadyMember:
            return None

    async def _may_add(
        self, tx: Conn, room_id: int, actor_id: int, user_id: int, role: str
    ) -> None:
        """Raises Refused unless the actor may add `user_id` as `role`. The users'
        rows are locked first, in id order (a ban or deactivation of either waits,
        or is waited for), then the actor's member row (a kick of them waits)."""
        await tx.fetch(
            "SELECT id FROM users WHERE id IN ($1, $2) ORDER BY id FOR SHARE", actor_id, user_id
        )
        actor_role = await self._locked_role(tx, room_id, actor_id)
        if not self._may_give_role(actor_role, None, role):
            raise Refused("only the room's owner or an admin may add members")

    @staticmethod
    def _may_give_role(
        actor_role: str | None, member_role: str | None, role: str, *, own: bool = False
    ) -> bool:
        """Whether a member with `actor_role` may give `role` to a member with
        `member_role` (None: a user being added; `own`: the actor themself).

        As in Matrix and Mattermost: the owner and admins make members admins;
        only the owner (or a server admin, acting as one) makes an admin a
        member again, though an admin may step down; nobody changes the
        owner's role (see also `outranks`)."""
        if actor_role not in MANAGERS or member_role == "owner":
            return False
        if member_role == "admin" and role == "member":
            return actor_role == "owner" or own
        return True

    async def set_member_role(
        self, room_id: int, user_id: int, role: str, actor: Actor
    ) -> tuple[str | None, int | None]:
        """Gives a member `role` as the room event `member.role`, audited as
        `member.role`. Returns the member's role before (None: not a member,
        nothing changed) and the event's pos (None: the role was that already).

        Checked in the same transaction (invariant 9), locked as `kick_member`
        does: the actor's users row, then both member rows in user id order,
        the actor's shared, the target's FOR UPDATE, so a check of the target's
        own role (which takes KEY SHARE) waits for the change and reads the new
        role. Raises Refused, naming why, unless `_may_give_role` allows it.
        """
        async with self.engine.transaction() as tx:
            actor_role, before = await self._lock_moderation(tx, room_id, actor.user_id, user_id)
            if actor_role not in MANAGERS:
                raise Refused("only the room's owner or an admin may change roles")
            if before is None or before == role:
                return before, None
            if not self._may_give_role(actor_role, before, role, own=user_id == actor.user_id):
                if before == "owner":
                    raise Refused("nobody changes the owner's role")
                raise Refused("only the owner may make an admin a member again")
            await tx.execute(
                "UPDATE members SET role = $3 WHERE room_id = $1 AND user_id = $2",
                room_id,
                user_id,
                role,
            )
            pos = await self._append_event(
                tx, room_id, "member.role", user_id=user_id, actor_id=actor.user_id, detail=role
            )
            details = {"room_id": room_id, "role": role}
            await self._audit(tx, actor, "member.role", "user", user_id, details)
            return before, pos

    async def _join(
        self, tx: Conn, room_id: int, user_id: int, role: str, actor_id: int | None
    ) -> int:
        """Inserts the member unless the account is deactivated or banned from the
        room (invariant 9). The user's row is locked first, in its own statement
        (FOR SHARE: a ban's FOR NO KEY UPDATE and a deactivation's UPDATE wait
        for it and make it wait), so the insert's fresh snapshot reads any ban
        or deactivation committed before it, and one committed after it finds,
        and removes, the new member. Raises AccountDeactivated, Banned or
        _AlreadyMember for an insert refused for that reason."""
        await tx.fetch("SELECT id FROM users WHERE id = $1 FOR SHARE", user_id)
        inserted = await tx.fetchval(
            "INSERT INTO members (room_id, user_id, role, joined_at)"
            " SELECT $1, id, $3, $4 FROM users WHERE id = $2 AND deactivated_at IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM bans b WHERE b.room_id = $1 AND b.user_id = $2)"
            " ON CONFLICT (room_id, user_id) DO NOTHING RETURNING user_id",
            room_id,
            user_id,
            role,
            now_ms(),
        )
        if inserted is None:
            if not await tx.fetchval(
                "SELECT 1 FROM users WHERE id = $1 AND deactivated_at IS NULL", user_id
            ):
                raise AccountDeactivated()
            if await self._is_banned(tx, room_id, user_id):
                raise Banned()
            raise _AlreadyMember()
        pos = await self._append_event(
            tx, room_id, "member.joined", user_id=user_id, actor_id=actor_id, detail=role, joins=1
        )
        # The room row is locked now: a deletion committed meanwhile is seen here.
        if await tx.fetchval("SELECT deleted_at FROM rooms WHERE id = $1", room_id) is not None:
            raise RoomGone()
        await tx.execute(
            "UPDATE members SET joined_pos = $3 WHERE room_id = $1 AND user_id = $2",
            room_id,
            user_id,
            pos,
        )
        return pos

    async def remove_member(
        self, room_id: int, user_id: int, reason: str, actor_id: int | None
    ) -> int | None:
        """Removes a member as the room event `member.left`; returns its pos (None: not one).

        The member row is deleted before the room row is locked, as every
        change locks them (see `_locked_role`).
        """
        async with self.engine.transaction() as tx:
            return await self._leave(tx, room_id, user_id, reason, actor_id)

    async def _lock_moderation(
        self, tx: Conn, room_id: int, actor_id: int, user_id: int
    ) -> tuple[str | None, str | None]:
        """Locks a moderation of `user_id` by `actor_id` (a kick, a role change):
        the actor's users row shared, then both member rows in user id order, the
        actor's KEY SHARE, the target's FOR UPDATE (so a check of the target's own
        role waits for the change). Returns the actor's role as a moderator (a
        server admin as the owner) and the target's role (None: not a member)."""
        await tx.fetch("SELECT id FROM users WHERE id = $1 FOR SHARE", actor_id)
        roles: dict[int, str | None] = {}
        for member_id in sorted({actor_id, user_id}):
            lock = "FOR UPDATE" if member_id == user_id else "FOR KEY SHARE"
            roles[member_id] = await tx.fetchval(
                f"SELECT role FROM members WHERE room_id = $1 AND user_id = $2 {lock}",
                room_id,
                member_id,
            )
        return await self._as_moderator(tx, actor_id, roles[actor_id]), roles[user_id]

    async def kick_member(self, room_id: int, user_id: int, actor: Actor) -> int | None:
        """`remove_member` by a moderator (`member.left`, `kicked`), audited as
        `member.kick`; returns its pos, None when the user is not a member.

        Checked in the same transaction (invariant 9): the actor's users row is
        locked first (a demotion, deactivation or ban of them waits, or is waited
        for), then both member rows in user id order, the actor's shared, the
        target's for the removal. Raises Refused, naming why, unless the actor
        manages the room (a server admin as its owner) and outranks the user
        (or removes themself).
        """
        async with self.engine.transaction() as tx:
            role, target_role = await self._lock_moderation(tx, room_id, actor.user_id, user_id)
            if role not in MANAGERS:
                raise Refused("only the room's owner or an admin may remove members")
            if target_role is None:
                return None
            if user_id != actor.user_id and not outranks(role, target_role):
                raise Refused("cannot remove a member of equal or higher role")
            pos = await self._leave(tx, room_id, user_id, "kicked", actor.user_id)
            await self._audit(tx, actor, "member.kick", "user", user_id, {"room_id": room_id})
            return pos

    async def _leave(
        self, tx: Conn, room_id: int, user_id: int, reason: str, actor_id: int | None
    ) -> int | None:
        removed = await tx.fetchval(
            "DELETE FROM members WHERE room_id = $1 AND user_id = $2 RETURNING user_id",
            room_id,
            user_id,
        )
        if removed is None:
            return None
        return await self._append_event(
            tx, room_id, "member.left", user_id=user_id, actor_id=actor_id, detail=reason, joins=-1
        )

    async def get_member(self, room_id: int, user_id: int) -> Member | None:
        row = await self.engine.fetchrow(
            f"SELECT {MEMBER_COLUMNS} FROM members mb"
            " JOIN users u ON u.id = mb.user_id WHERE mb.room_id = $1 AND mb.user_id = $2",
            room_id,
            user_id,
        )
        return None if row is None else to_member(row)

    async def list_members(self, room_id: int, after_user_id: int, limit: int) -> list[Member]:
        rows = await self.engine.fetch(
            f"SELECT {MEMBER_COLUMNS} FROM members mb"
            " JOIN users u ON u.id = mb.user_id WHERE mb.room_id = $1 AND mb.user_id > $2"
            " ORDER BY mb.user_id LIMIT $3",
            room_id,
            after_user_id,
            limit,
        )
        return [to_member(r) for r in rows]

    async def mark_read(self, room_id: int, user_id: int, seq: int) -> int | None:
        """Moves the read marker forward to `seq`, clamped to the room's last_seq.

        Returns the marker afterwards, or None when the user is not a member.
        """

        async def step(tx: Conn) -> int | None:  # on SQLite, committed with the sends
            last_seq = await tx.fetchval("SELECT last_seq FROM rooms WHERE id = $1", room_id)
            if last_seq is None:
                return None
            await tx.execute(
                "UPDATE members SET last_read_seq = $3"
                " WHERE room_id = $1 AND user_id = $2 AND last_read_seq < $3",
                room_id,
                user_id,
                min(seq, last_seq),
            )
            marker: int | None = await tx.fetchval(
                "SELECT last_read_seq FROM members WHERE room_id = $1 AND user_id = $2",
                room_id,
                user_id,
            )
            return marker

        return await self.engine.atomic(step)

    # --- messages ----------------------------------------------------------------------

    async def _attach(self, rows: list[Row], conn: Conn | None = None) -> list[Message]:
        """Messages from rows, with their attachments loaded in one query."""
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        media_rows = await (conn or self.engine).fetch(
            f"SELECT a.message_id, {MEDIA_COLUMNS} FROM message_attachments a"
            " JOIN media md ON md.id = a.media_id"
            f" WHERE a.message_id {self.engine.in_ids('$1')} ORDER BY a.message_id, a.position",
            self.engine.ids_param(ids),
        )
        by_message: dict[int, list[Media]] = {}
        for row in media_rows:
            by_message.setdefault(row["message_id"], []).append(to_media(row))
        return [to_message(r, tuple(by_message.get(r["id"], ()))) for r in rows]

    async def _message_by_client_id(self, sender_id: int, client_id: str) -> Message | None:
        rows = await self.engine.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.sender_id = $1 AND m.client_id = $2",
            sender_id,
            client_id,
        )
        messages = await self._attach(rows)
        return messages[0] if messages else None

    # The send statements (see send_message). PostgreSQL: one data-modifying
    # CTE locks the sender's member row (a removal committing meanwhile makes
    # the send fail rather than slip in after it: invariant 9), bumps
    # rooms.last_seq and last_pos under the room's row lock, inserts, attaches
    # and moves the sender's read marker.
    _SEND_POSTGRES = f"""
WITH member AS (
    SELECT 1 FROM members WHERE room_id = $1 AND user_id = $2 FOR KEY SHARE
), bumped AS (
    UPDATE rooms SET last_seq = last_seq + 1, last_pos = last_pos + 1
    WHERE id = $1 AND EXISTS (SELECT 1 FROM member)
    RETURNING last_seq, last_pos
), inserted AS (
    INSERT INTO messages (room_id, seq, pos, sender_id, body, client_id, reply_to, created_at,
        thread_id, mentioned_ids, mentions_room)
    SELECT $1, last_seq, last_pos, $2, $3::text, $4::text, $5::bigint, $6::bigint,
        $8::bigint, $9::text, $10::boolean FROM bumped
    RETURNING {MESSAGE_FIELDS}
), attached AS (
    INSERT INTO message_attachments (message_id, media_id, position)
    SELECT inserted.id, a.media_id, a.position - 1
    FROM inserted, unnest($7::bigint[]) WITH ORDINALITY AS a (media_id, position)
), marked AS (
    UPDATE members SET last_read_seq = bumped.last_seq FROM bumped
    WHERE room_id = $1 AND user_id = $2
)
SELECT * FROM inserted
"""
    # Group commit on PostgreSQL: many plain sends (no attachments, reply or
    # mentions), to any rooms, in one statement. The senders' member rows are
    # locked first (in key order, as removals lock them), then the rooms in id
    # order (no deadlock between processes); non-members' sends are dropped
    # before numbering (so no seq or pos is skipped), each room's counters are
    # bumped once, and every row comes back with its batch position.
    _SEND_BATCH_POSTGRES = f"""
WITH sends AS (
    SELECT * FROM unnest(
        $1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[]
    ) WITH ORDINALITY AS b (room_id, sender_id, body, client_id, created_at, ord)
), member AS (
    SELECT m.room_id, m.user_id FROM members m
    WHERE (m.room_id, m.user_id) IN (SELECT room_id, sender_id FROM sends)
    ORDER BY m.room_id, m.user_id FOR KEY SHARE
), batch AS (
    SELECT s.* FROM sends s
    WHERE (s.room_id, s.sender_id) IN (SELECT room_id, user_id FROM member)
), numbered AS (
    SELECT batch.*, row_number() OVER (PARTITION BY room_id ORDER BY ord) AS n FROM batch
), locked AS (
    SELECT id FROM rooms WHERE id IN (SELECT room_id FROM numbered) ORDER BY id FOR UPDATE
), bumped AS (
    UPDATE rooms r SET last_seq = r.last_seq + c.count, last_pos = r.last_pos + c.count
    FROM (SELECT room_id, count(*) AS count FROM numbered GROUP BY room_id) c
    WHERE r.id = c.room_id AND r.id IN (SELECT id FROM locked)
    RETURNING r.id, r.last_seq - c.count AS base, r.last_pos - c.count AS base_pos
), inserted AS (
    INSERT INTO messages (room_id, seq, pos, sender_id, body, client_id, created_at)
    SELECT n.room_id, b.base + n.n, b.base_pos + n.n, n.sender_id, n.body, n.client_id,
        n.created_at
    FROM numbered n JOIN bumped b ON b.id = n.room_id
    RETURNING {MESSAGE_FIELDS}
), marked AS (
    UPDATE members m SET last_read_seq = x.seq
    FROM (SELECT room_id, sender_id, max(seq) AS seq FROM inserted GROUP BY 1, 2) x
    WHERE m.room_id = x.room_id AND m.user_id = x.sender_id
)
SELECT inserted.*, n.ord FROM inserted
JOIN bumped b ON b.id = inserted.room_id
JOIN numbered n ON n.room_id = inserted.room_id AND b.base + n.n = inserted.seq
"""
    # SQLite, whose write lock covers the whole statement: the insert reads
    # last_seq + 1 and last_pos + 1, and a trigger (sql/sqlite/004) bumps them
    # and the read marker.
    _SEND_SQLITE = f"""
INSERT INTO messages (room_id, seq, pos, sender_id, body, client_id, reply_to, created_at,
    thread_id, mentioned_ids, mentions_room)
SELECT $1, last_seq + 1, last_pos + 1, $2, $3, $4, $5, $6, $7, $8, $9 FROM rooms
WHERE id = $1 AND EXISTS (SELECT 1 FROM members WHERE room_id = $1 AND user_id = $2)
RETURNING {MESSAGE_FIELDS}
"""

    async def send_message(
        self,
        room_id: int,
        sender_id: int,
        body: str,
        client_id: str | None,
        reply_to: int | None,
        attachments: Sequence[Media],
        mentions: Written = NOTHING_WRITTEN,
    ) -> SendResult:
        """Commits a message with the room's next seq (DESIGN.md invariants 1 and 4).

        One statement takes the seq and inserts, so seqs commit in order with no
        gaps (see the send statements above); on PostgreSQL, sends without
        attachments, reply or mentions that arrive together share one statement
        (`_send_batch`); on SQLite, every send arriving together shares one
        transaction (`_send_step`, engines.SqliteGroupCommit). A repeated (sender,
        client_id) hits the unique index and returns the stored message. Raises
        NotMember when the sender is not in the room, ReplyNotFound when
        `reply_to` is no message of the room.
        """
        send = _Send(
            room_id,
            sender_id,
            body,
            client_id,
            reply_to,
            now_ms(),
            tuple(attachments),
            mentions,
        )
        if attachments or reply_to is not None or mentions:  # the batch carries none
            return await self._send_one(send)
        return await self._commit_send(send)

    async def _send_batch(self, sends: list[_Send]) -> list[SendResult | BaseException] | None:
        """Several sends in one statement (PostgreSQL); None: send them one by one."""
        try:
            rows = await self.engine.fetch(
                self._SEND_BATCH_POSTGRES,
                [s.room_id for s in sends],
                [s.sender_id for s in sends],
                [s.body for s in sends],
                [s.client_id for s in sends],
                [s.created_at for s in sends],
            )
        except UniqueViolation:  # a retried client_id: sending one by one handles it
            return None
        by_position = {row["ord"]: to_message(row) for row in rows}
        return [
            SendResult(by_position[i], created=True) if i in by_position else NotMember()
            for i in range(1, len(sends) + 1)
        ]

    async def _send_one(self, send: _Send) -> SendResult:
        try:
            if self.engine.name == "postgres" and not (send.reply_to is not None or send.mentions):
                row = await self.engine.write(self._SEND_POSTGRES, *self._send_args(send))
            else:  # SQLite: every send, in one transaction with those arriving together
                row = await self.engine.atomic(lambda tx: self._send_step(tx, send))
        except UniqueViolation:
            existing = await self._message_by_client_id(send.sender_id, send.client_id or "")
            if existing is None:
                raise
            return SendResult(existing, created=False)
        if row is None:
            raise NotMember()
        if self.search_index is not None:
            self.search_index.sent()
        return SendResult(to_message(row, send.attachments), created=True)

    def _send_sql(self) -> str:
        return self._SEND_POSTGRES if self.engine.name == "postgres" else self._SEND_SQLITE

    def _send_args(
        self, send: _Send, thread_id: int | None = None, mentions: Mentions = NO_MENTIONS
    ) -> tuple[Any, ...]:
        """The send statement's parameters (PostgreSQL's in its own order, media ids in $7)."""
        mentioned_ids = ",".join(map(str, mentions.user_ids)) or None
        args = (send.room_id, send.sender_id, send.body, send.client_id, send.reply_to)
        conversation = (thread_id, mentioned_ids, mentions.room)
        if self.engine.name == "postgres":
            media_ids = [media.id for media in send.attachments]
            return (*args, send.created_at, media_ids, *conversation)
        return (*args, send.created_at, *conversation)

    async def _insert_message(
        self,
        tx: Conn,
        send: _Send,
        thread_id: int | None = None,
        mentions: Mentions = NO_MENTIONS,
    ) -> Row | None:
        """The send statement inside a transaction, with the attachments (SQLite's after it)."""
        row = await tx.fetchrow(self._send_sql(), *self._send_args(send, thread_id, mentions))
        if row is not None and self.engine.name == "sqlite":
            for position, media in enumerate(send.attachments):
                await tx.execute(
                    "INSERT INTO message_attachments (message_id, media_id, position)"
                    " VALUES ($1, $2, $3)",
                    row["id"],
                    media.id,
                    position,
                )
        return row

    async def get_message(self, room_id: int, message_id: int) -> Message | None:
        rows = await self.engine.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1 AND m.room_id = $2",
            message_id,
            room_id,
        )
        messages = await self._attach(rows)
        return messages[0] if messages else None

    async def messages_by_ids(self, ids: Sequence[int]) -> dict[int, Message]:
        """The messages with these ids, as they are now (tombstones included)."""
        if not ids:
            return {}
        rows = await self.engine.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id {self.engine.in_ids('$1')}",
            self.engine.ids_param(ids),
        )
        return {message.id: message for message in await self._attach(rows)}

    async def edit_message(
        self, room_id: int, message_id: int, editor_id: int, body: str, mentions: Written
    ) -> Edit | None:
        """Replaces the body of the editor's own message, as the room event `message.edited`,
        and its mentions with those `mentions` writes (see `_remention`).

        Returns None when there is no such live message of the editor's; raises
        NotMember when the editor is not (or no longer) in the room.
        """
        async with self.engine.transaction() as tx:
            role = await self._locked_role(tx, room_id, editor_id)
            if role is None:
                raise NotMember()
            old = await tx.fetchrow(
                "SELECT mentioned_ids, mentions_room FROM messages WHERE id = $1 AND room_id = $2"
                " AND sender_id = $3 AND NOT deleted FOR NO KEY UPDATE",
                message_id,
                room_id,
                editor_id,
            )
            if old is None:
                return None
            new = await self._resolve_mentions(tx, room_id, role, mentions)
            row = await tx.fetchrow(
                "UPDATE messages SET body = $2, edited_at = $3, mentioned_ids = $4,"
                f" mentions_room = $5 WHERE id = $1 RETURNING {MESSAGE_FIELDS}",
                message_id,
                body,
                now_ms(),
                ",".join(map(str, new.user_ids)) or None,
                new.room,
            )
            assert row is not None  # locked above
            newly_mentioned = await self._remention(tx, old, new, row)
            pos = await self._append_event(
                tx, room_id, "message.edited", message_id=message_id, actor_id=editor_id
            )
        messages = await self._attach([row])
        return Edit(messages[0], pos, newly_mentioned)

    async def delete_message(
        self, room_id: int, message_id: int, actor: Actor
    ) -> tuple[Message, int] | None:
        """Tombstones a message as the room event `message.deleted`: id and seq stay,
        body and attachments go.

        The actor is its sender or one of the room's managers, or a server admin
        (checked under the member row's lock); deleting someone else's message
        is audited as `message.delete`. Returns the tombstone and the event's
        pos, or None when there is no such live message the actor may delete;
        raises NotMember when the actor is not (or no longer) in the room and
        not a server admin.
        """
        async with self.engine.transaction() as tx:
            role = await self._moderator_role(tx, room_id, actor.user_id)
            if role is None:
                raise NotMember()
            row = await tx.fetchrow(
                f"UPDATE messages SET {TOMBSTONE}, edited_at = $3"
                " WHERE id = $1 AND room_id = $2 AND NOT deleted AND (sender_id = $4 OR $5)"
                f" RETURNING {MESSAGE_FIELDS}",
                message_id,
                room_id,
                now_ms(),
                actor.user_id,
                role in MANAGERS,
            )
            if row is None:
                return None
            pos = await self._append_event(
                tx, room_id, "message.deleted", message_id=message_id, actor_id=actor.user_id
            )
            await self._drop_dependents(tx, [message_id])
            if row["sender_id"] != actor.user_id:
                details = {"room_id": room_id, "sender_id": row["sender_id"]}
                await self._audit(tx, actor, "message.delete", "message", message_id, details)
        return to_message(row), pos

    async def history(
        self, room_id: int, *, after_seq: int | None, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        """Up to `limit` messages in ascending seq, and whether more lie in the paging direction.

        With `after_seq` it pages forward from there (up to `before_seq` if
        given); otherwise it returns the newest messages before `before_seq`.
        """
        upper = MAX_SEQ if before_seq is None else before_seq
        if after_seq is not None:
            rows = await self.engine.fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.room_id = $1"
                " AND m.seq > $2 AND m.seq < $3 ORDER BY m.seq LIMIT $4",
                room_id,
                after_seq,
                upper,
                limit + 1,
            )
        else:
            rows = await self.engine.fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.room_id = $1"
                " AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3",
                room_id,
                upper,
                limit + 1,
            )
        has_more = len(rows) > limit
        rows = rows[:limit]
        if after_seq is None:
            rows.reverse()
        return await self._attach(rows), has_more

    # --- search -----------------------------------------------------------------------

    async def search_messages(
        self, user_id: int, query: str, room_id: int | None, before_id: int, limit: int
    ) -> list[Message]:
        """Full-text search, newest (highest id) first below `before_id`, over the
        rooms the user is in (or the one room given, if they are in it).

        Each engine walks the matches in the order it returns them and stops at
        `limit`, or ranks only the matches there are (see the two methods)."""
        if isinstance(self.engine, PostgresEngine):
            rows = await self._search_postgres(
                self.engine, user_id, query, room_id, before_id, limit
            )
        else:
            assert self.search_index is not None
            await self.search_index.before_search()
            rows = await self._search_sqlite(user_id, query, room_id, before_id, limit)
        return await self._attach(rows)

    @staticmethod
    async def _search_postgres(
        engine: PostgresEngine,
        user_id: int,
        query: str,
        room_id: int | None,
        before_id: int,
        limit: int,
    ) -> list[Row]:
        """The planner chooses between walking `messages_pkey` backwards (a word common
        in the scope: stops after about `limit` / its density rows) and the GIN
        bitmap of the word's matches, sorted (a rare word: costs its matches). The
        choice rests on the word's frequency, so the plan is made for each query
        (`force_custom_plan`: a prepared statement's generic plan cannot see the
        word and once walked the whole table for a rare one), with the search
        column's statistics raised (sql/postgres/009_scale.sql) to know rare words.
        """
        if room_id is None:
            scope = "m.room_id IN (SELECT room_id FROM members WHERE user_id = $2)"
            args: tuple[Any, ...] = (query, user_id, before_id, limit)
        else:
            scope = (
                "m.room_id = $5 AND EXISTS (SELECT 1 FROM members"
                " WHERE room_id = $5 AND user_id = $2)"
            )
            args = (query, user_id, before_id, limit, room_id)
        return await engine.fetch_custom_plan(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m"
            f" WHERE m.search @@ websearch_to_tsquery('simple', $1) AND {scope}"
            " AND m.id < $3 AND NOT m.deleted ORDER BY m.id DESC LIMIT $4",
            *args,
        )

    async def _search_sqlite(
        self, user_id: int, query: str, room_id: int | None, before_id: int, limit: int
    ) -> list[Row]:
        """FTS5 yields matches in rowid (= message id) order, newest first with
        `ORDER BY f.rowid DESC`: the FTS index is the outer loop (CROSS JOIN fixes
        the order), each match is checked against the scope, and the walk stops
        at `limit`. One room's search is one FTS query: the room's id is indexed
        too (sql/sqlite/010_scale.sql), and FTS5 intersects the word's matches
        with the room's messages by seeking, however common the word elsewhere."""
        words = " ".join('"' + word + '"' for word in re.findall(r"\w+", query))
        if not words:
            return []
        match = f"body : ({words})"
        if room_id is None:
            scope = "m.room_id IN (SELECT room_id FROM members WHERE user_id = $2)"
        else:
            match += f' AND room_id : "{int(room_id)}"'
            scope = "EXISTS (SELECT 1 FROM members WHERE room_id = m.room_id AND user_id = $2)"
        return await self.engine.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages_fts f CROSS JOIN messages m"
            f" ON m.id = f.rowid WHERE messages_fts MATCH $1 AND f.rowid < $3 AND {scope}"
            " AND NOT m.deleted ORDER BY f.rowid DESC LIMIT $4",
            match,
            user_id,
            before_id,
            limit,
        )

    # --- administration ---------------------------------------------------------------

    # A user as admins see it: the newest use of its sessions, and its live ones.
    _ADMIN_USER_COLUMNS = (
        f"{USER_COLUMNS},"
        " (SELECT max(s.last_used_at) FROM sessions s WHERE s.user_id = u.id) AS last_seen_at,"
        " (SELECT count(*) FROM sessions s WHERE s.user_id = u.id AND s.revoked_at IS NULL)"
        " AS session_count"
    )

    async def admin_users(
        self, prefix: str, state: str, after_id: int, limit: int
    ) -> list[AdminUser]:
        """Users whose username or display name starts with `prefix`, in id order."""
        rows = await self.engine.fetch(
            f"SELECT {self._ADMIN_USER_COLUMNS} FROM users u"
            " WHERE (u.username LIKE $1 ESCAPE '\\' OR lower(u.display_name) LIKE $1 ESCAPE '\\')"
            f" AND u.id > $2{ACCOUNT_STATES[state]} ORDER BY u.id LIMIT $3",
            _like_prefix(prefix),
            after_id,
            limit,
        )
        return [to_admin_user(r) for r in rows]

    async def admin_user(self, user_id: int, conn: Conn | None = None) -> AdminUser | None:
        row = await (conn or self.engine).fetchrow(
            f"SELECT {self._ADMIN_USER_COLUMNS} FROM users u WHERE u.id = $1", user_id
        )
        return None if row is None else to_admin_user(row)

    async def _locked_account(self, tx: Conn, user_id: int, removes_admin: bool) -> Row | None:
        """The account's row, locked with its bots' rows; None if there is none.

        A change that may take away an admin (a demotion, deactivation or
        erasure) also locks every active admin's row, so two such changes run
        one after the other and the second sees the first's outcome; it raises
        LastAdmin when the account is the only active admin. All in one
        statement, in id order, as a ban locks its users' rows: no deadlock
        with one. SQLite's one writer serializes them as well.
        """
        rows = await tx.fetch(
            f"SELECT {USER_FIELDS} FROM users WHERE id = $1 OR bot_owner_id = $1"
            " OR ($2 AND is_admin AND deactivated_at IS NULL) ORDER BY id FOR UPDATE",
            user_id,
            removes_admin,
        )
        row = next((r for r in rows if r["id"] == user_id), None)
        admins = [r["id"] for r in rows if r["is_admin"] and r["deactivated_at"] is None]
        if row is not None and removes_admin and admins == [user_id]:
            raise LastAdmin()
        return row

    async def change_account(
        self, actor: Actor, user_id: int, *, is_admin: bool | None, deactivated: bool | None
    ) -> tuple[AdminUser, Deactivation] | None:
        """Promotes, demotes, deactivates or reactivates an account, each change
        audited, all in one transaction. None: no such account; raises LastAdmin."""
        removes_admin = is_admin is False or deactivated is True
        ended = Deactivation()
        async with self.engine.transaction() as tx:
            account = await self._locked_account(tx, user_id, removes_admin)
            if account is None:
                return None
            if is_admin and account["is_bot"]:
                raise BotAdmin()
            if is_admin is not None and bool(account["is_admin"]) != is_admin:
                await tx.execute("UPDATE users SET is_admin = $2 WHERE id = $1", user_id, is_admin)
                action = "user.promote" if is_admin else "user.demote"
                await self._audit(tx, actor, action, "user", user_id)
            if deactivated and account["deactivated_at"] is None:
                ended = await self._deactivate(tx, actor, user_id)
                details = {
                    "sessions": len(ended.session_ids),
                    "rooms": len(ended.left_rooms),
                    "bots": len(ended.bot_ids),
                }
                await self._audit(tx, actor, "user.deactivate", "user", user_id, details)
            elif deactivated is False and account["deactivated_at"] is not None:
                await tx.execute("UPDATE users SET deactivated_at = NULL WHERE id = $1", user_id)
                await self._audit(tx, actor, "user.reactivate", "user", user_id)
            changed = await self.admin_user(user_id, tx)
        assert changed is not None
        return changed, ended

    async def _deactivate(self, tx: Conn, actor: Actor, user_id: int) -> Deactivation:
        """Deactivates the (locked) account and the bots it owns: their sessions,
        personal tokens and push subscriptions end, and they leave every room as
        `member.left` (`deactivated`) — member rows locked first, then each room
        row in id order (as every change locks them). A deactivated owner's bots
        (and so its webhooks) stop with it: its tokens to them must not outlive it."""
        now = now_ms()
        bots = await tx.fetch(
            "SELECT id FROM users WHERE bot_owner_id = $1 AND deactivated_at IS NULL ORDER BY id",
            user_id,
        )
        bot_ids = [r["id"] for r in bots]
        accounts = self.engine.ids_param([user_id, *bot_ids])
        among = self.engine.in_ids("$1")
        await tx.execute(f"UPDATE users SET deactivated_at = $2 WHERE id {among}", accounts, now)
        sessions = await tx.fetch(
            f"UPDATE sessions SET revoked_at = $2 WHERE user_id {among} AND revoked_at IS NULL"
            " RETURNING id",
            accounts,
            now,
        )
        # Nothing is pushed to a deactivated account's browsers any more.
        await tx.execute(f"DELETE FROM push_subscriptions WHERE user_id {among}", accounts)
        tokens = await tx.fetch(
            f"UPDATE access_tokens SET revoked_at = $2 WHERE user_id {among}"
            " AND revoked_at IS NULL RETURNING id",
            accounts,
            now,
        )
        memberships = await tx.fetch(
            f"SELECT room_id, user_id FROM members WHERE user_id {among}"
            " ORDER BY room_id, user_id FOR UPDATE",
            accounts,
        )
        left = []
        for member in memberships:
            room_id, member_id = member["room_id"], member["user_id"]
            await tx.execute(
                "DELETE FROM members WHERE room_id = $1 AND user_id = $2", room_id, member_id
            )
            pos = await self._append_event(
                tx,
                room_id,
                "member.left",
                user_id=member_id,
                actor_id=actor.user_id,
                detail="deactivated",
                joins=-1,
            )
            left.append((room_id, member_id, pos))
        return Deactivation([s["id"] for s in sessions], left, [t["id"] for t in tokens], bot_ids)

    async def erase_account(
        self, actor: Actor, user_id: int
    ) -> tuple[AdminUser, Deactivation, int] | None:
        """Deactivates the account (if it is not already), blanks its profile and
        queues the job that deletes its messages, in one audited transaction.

        Returns the account, what the deactivation ended and the job's id; None:
        no such account; raises LastAdmin."""
        ended = Deactivation()
        async with self.engine.transaction() as tx:
            account = await self._locked_account(tx, user_id, removes_admin=True)
            if account is None:
                return None
            if account["deactivated_at"] is None:
                ended = await self._deactivate(tx, actor, user_id)
            await tx.execute(
                "UPDATE users SET display_name = username, bio = '', avatar_media_id = NULL"
                " WHERE id = $1",
                user_id,
            )
            job_id: int = await tx.fetchval(
                "INSERT INTO jobs (kind, target_id, actor_id, created_at)"
                " VALUES ('erase', $1, $2, $3) RETURNING id",
                user_id,
                actor.user_id,
                now_ms(),
            )
            await self._audit(tx, actor, "user.erase", "user", user_id, {"job_id": job_id})
            erased = await self.admin_user(user_id, tx)
        assert erased is not None
        return erased, ended, job_id

    async def claim_job(self, now: int, lease_ms: int) -> Job | None:
        """Takes the lease of the oldest pending job whose lease is over (one
        never claimed, or whose node died), until `now + lease_ms`.

        PostgreSQL skips a job another node is claiming right now; the claim
        re-checks the lease, so exactly one node holds a job at a time."""
        skip = " SKIP LOCKED" if self.engine.name == "postgres" else ""
        row = await self.engine.write(
            "UPDATE jobs SET lease_until = $2 WHERE id = (SELECT id FROM jobs"
            " WHERE state = 'pending' AND lease_until < $1 ORDER BY id LIMIT 1"
            f" FOR UPDATE{skip}) RETURNING {JOB_FIELDS}",
            now,
            now + lease_ms,
        )
        return None if row is None else to_job(row)

    async def undeleted_count(self, sender_id: int) -> int:
        count: int = await self.engine.fetchval(
            "SELECT count(*) FROM messages WHERE sender_id = $1 AND NOT deleted", sender_id
        )
        return count

    async def erase_batch(self, job: Job, lease_ms: int, limit: int) -> ErasureBatch | None:
        """Tombstones up to `limit` of the job's user's messages as `message.deleted`
        room events (rooms in id order), counts them and renews the lease, in one
        transaction; the last batch marks the job done. None: the lease was lost
        (expired and taken by another node), and nothing was changed."""
        now = now_ms()
        async with self.engine.transaction() as tx:
            renewed = await tx.fetchrow(
                "UPDATE jobs SET lease_until = $3"
                " WHERE id = $1 AND lease_until = $2 AND state = 'pending' RETURNING id",
                job.id,
                job.lease_until,
                now + lease_ms,
            )
            if renewed is None:
                return None
            rows = await tx.fetch(
                f"UPDATE messages SET {TOMBSTONE}, edited_at = $3"
                " WHERE id IN (SELECT id FROM messages WHERE sender_id = $1 AND NOT deleted"
                " ORDER BY room_id, id LIMIT $2) AND NOT deleted"  # again, once locked
                f" RETURNING {MESSAGE_FIELDS}",
                job.target_id,
                limit,
                now,
            )
            tombstones = sorted(map(to_message, rows), key=lambda m: (m.room_id, m.id))
            deleted = []
            for message in tombstones:
                pos = await self._append_event(
                    tx,
                    message.room_id,
                    "message.deleted",
                    message_id=message.id,
                    actor_id=job.actor_id,
                )
                deleted.append((message, pos))
            if tombstones:
                await self._drop_dependents(tx, [m.id for m in tombstones])
            done = len(tombstones) < limit
            await tx.execute(
                "UPDATE jobs SET done_count = done_count + $2,"
                " state = CASE WHEN $3 THEN 'done' ELSE state END,"
                " finished_at = CASE WHEN $3 THEN $4 ELSE finished_at END WHERE id = $1",
                job.id,
                len(tombstones),
                done,
                now,
            )
        return ErasureBatch(deleted, done, now + lease_ms)

    # --- registration -------------------------------------------------------------------

    async def admin_exists(self) -> bool:
        return bool(await self.engine.fetchval(f"SELECT EXISTS ({ACTIVE_ADMIN})"))

    async def offer_setup_token(self, token_sha256: str) -> str | None:
        """Stores `token_sha256` as the setup token's hash unless a hash is stored
        already (another node's, or an earlier start's) or an admin exists.

        Returns the hash in force afterwards (ours or the one found), or None when
        an admin exists. The installation row is locked first, as `create_user`
        and `create_setup_admin` lock it, so nodes starting together agree on one.
        """
        async with self.engine.transaction() as tx:
            await tx.execute("SELECT setup_token_sha256 FROM installation FOR UPDATE")
            if await tx.fetchval(f"SELECT EXISTS ({ACTIVE_ADMIN})"):
                await tx.execute("UPDATE installation SET setup_token_sha256 = NULL")
                return None
            stored: str = await tx.fetchval(
                "UPDATE installation SET setup_token_sha256 = COALESCE(setup_token_sha256, $1)"
                " RETURNING setup_token_sha256",
                token_sha256,
            )
            return stored

    async def setup_token_matches(self, token_sha256: str) -> bool:
        stored = await self.engine.fetchval("SELECT setup_token_sha256 FROM installation")
        return stored is not None and hmac.compare_digest(stored, token_sha256)

    async def create_setup_admin(
        self, username: str, display_name: str, password_hash: str, token_sha256: str
    ) -> User:
        """The first admin, through the setup token: checked and spent (the hash
        cleared) in the insert's transaction, so it makes one admin at most.
        Raises SignupRefused (spent, or an admin exists) or UniqueViolation."""
        async with self.engine.transaction() as tx:
            stored = await tx.fetchval("SELECT setup_token_sha256 FROM installation FOR UPDATE")
            if (
                stored is None
                or not hmac.compare_digest(stored, token_sha256)
                or await tx.fetchval(f"SELECT EXISTS ({ACTIVE_ADMIN})")
            ):
                raise SignupRefused("the setup link was already used: an admin exists")
            await tx.execute("UPDATE installation SET setup_token_sha256 = NULL")
            return await self._insert_user(tx, username, display_name, password_hash, True)

    async def create_invited_user(
        self, username: str, display_name: str, password_hash: str, code: str
    ) -> tuple[User, list[tuple[int, int]]]:
        """An account through an invite, with the (room_id, pos) of each `member.joined`
        in the invite's rooms: those its creator may still invite to (see
        `_may_invite`), not deleted and not banning the user; the others are skipped.

        The invite row is locked, checked and its use counted in the insert's
        transaction: two signups racing for its last use make one account. The
        creator's users row is locked before it (a deactivation or demotion of
        theirs waits, or is seen), their member rows before the rooms' rows (a
        kick of them waits, or is seen), as every change locks them.
        Raises SignupRefused (naming why) or UniqueViolation; either creates nothing.
        """
        async with self.engine.transaction() as tx:
            creator = await tx.fetchrow(
                "SELECT id, is_admin FROM users WHERE id ="
                " (SELECT created_by FROM invites WHERE code = $1) FOR SHARE",
                code,
            )
            invite = await tx.fetchrow(f"SELECT {INVITE_STATE} WHERE code = $1 FOR UPDATE", code)
            refusal = _invite_refusal(invite)
            if refusal is not None or invite is None or creator is None:
                raise SignupRefused(refusal or "unknown invite")
            user = await self._insert_user(tx, username, display_name, password_hash, False)
            await tx.execute("UPDATE invites SET uses = uses + 1 WHERE id = $1", invite["id"])
            creator_roles = await tx.fetch(
                "SELECT room_id, role FROM members WHERE user_id = $1 AND room_id IN"
                " (SELECT room_id FROM invite_rooms WHERE invite_id = $2)"
                " ORDER BY room_id FOR KEY SHARE",
                creator["id"],
                invite["id"],
            )
            roles = {r["room_id"]: r["role"] for r in creator_roles}
            rooms = await tx.fetch(
                "SELECT r.id, r.kind FROM invite_rooms ir JOIN rooms r ON r.id = ir.room_id"
                " WHERE ir.invite_id = $1 AND r.deleted_at IS NULL AND NOT EXISTS"
                " (SELECT 1 FROM bans b WHERE b.room_id = r.id AND b.user_id = $2)"
                " ORDER BY r.id FOR UPDATE",
                invite["id"],
                user.id,
            )
            joined = [
                (r["id"], await self._join(tx, r["id"], user.id, "member", None))
                for r in rooms
                if _may_invite(r["kind"], roles.get(r["id"]), bool(creator["is_admin"]))
            ]
        return user, joined

    async def invite_status(self, code: str) -> tuple[str | None, list[tuple[int, str]]]:
        """Why the invite cannot be used now (None: it can) and, if it can, its
        rooms that still exist as (id, name)."""
        invite = await self.engine.fetchrow(f"SELECT {INVITE_STATE} WHERE code = $1", code)
        refusal = _invite_refusal(invite)
        if refusal is not None or invite is None:
            return refusal or "unknown invite", []
        rows = await self.engine.fetch(
            "SELECT r.id, r.name FROM invite_rooms ir JOIN rooms r ON r.id = ir.room_id"
            " WHERE ir.invite_id = $1 AND r.deleted_at IS NULL ORDER BY r.id",
            invite["id"],
        )
        return None, [(r["id"], r["name"]) for r in rows]

    async def create_invite(
        self, actor: Actor, code: str, max_uses: int, expires_at: int, room_ids: Sequence[int]
    ) -> Invite:
        """An invite by `actor`, to rooms they may invite to (see `_may_invite`),
        checked under their member rows' locks; audited as `invite.create`.
        Raises RoomNotManaged for the first room they may not invite to."""
        room_ids = sorted(room_ids)
        async with self.engine.transaction() as tx:
            is_admin = await self._is_admin(tx, actor.user_id)
            for room_id in room_ids:
                role = await self._locked_role(tx, room_id, actor.user_id)
                room = await tx.fetchrow(
                    "SELECT kind FROM rooms WHERE id = $1 AND deleted_at IS NULL", room_id
                )
                if room is None:
                    raise RoomNotManaged(room_id, visible=False)
                if not _may_invite(room["kind"], role, is_admin):
                    visible = is_admin or room["kind"] == "public" or role is not None
                    raise RoomNotManaged(room_id, visible=visible)
            row = await tx.fetchrow(
                "INSERT INTO invites (code, created_by, max_uses, expires_at, created_at)"
                f" VALUES ($1, $2, $3, $4, $5) RETURNING {INVITE_FIELDS}",
                code,
                actor.user_id,
                max_uses,
                expires_at,
                now_ms(),
            )
            invite = to_invite(row, tuple(room_ids))
            for room_id in room_ids:
                await tx.execute(
                    "INSERT INTO invite_rooms (invite_id, room_id) VALUES ($1, $2)",
                    invite.id,
                    room_id,
                )
            details = {"max_uses": max_uses, "room_ids": room_ids}
            await self._audit(tx, actor, "invite.create", "invite", invite.id, details)
        return invite

    async def list_invites(
        self, creator_id: int | None, before_id: int, limit: int
    ) -> list[Invite]:
        """Invites newest first: `creator_id`'s, or everyone's when None."""
        mine = "" if creator_id is None else " AND created_by = $3"
        rows = await self.engine.fetch(
            f"SELECT {INVITE_FIELDS} FROM invites WHERE id < $1{mine} ORDER BY id DESC LIMIT $2",
            before_id,
            limit,
            *(() if creator_id is None else (creator_id,)),
        )
        rooms: dict[int, list[int]] = {r["id"]: [] for r in rows}
        if rows:
            links = await self.engine.fetch(
                "SELECT invite_id, room_id FROM invite_rooms"
                f" WHERE invite_id {self.engine.in_ids('$1')} ORDER BY room_id",
                self.engine.ids_param(list(rooms)),
            )
            for link in links:
                rooms[link["invite_id"]].append(link["room_id"])
        return [to_invite(r, tuple(rooms[r["id"]])) for r in rows]

    async def revoke_invite(self, actor: Actor, invite_id: int) -> bool:
        """Revokes an invite as its creator or a server admin (audited as `invite.revoke`
        when it was not revoked yet). False: no such invite, or not theirs to revoke."""
        async with self.engine.transaction() as tx:
            invite = await tx.fetchrow(
                "SELECT created_by, revoked_at FROM invites WHERE id = $1 FOR UPDATE", invite_id
            )
            if invite is None or (
                invite["created_by"] != actor.user_id
                and not await self._is_admin(tx, actor.user_id)
            ):
                return False
            if invite["revoked_at"] is None:
                await tx.execute(
                    "UPDATE invites SET revoked_at = $2 WHERE id = $1", invite_id, now_ms()
                )
                await self._audit(tx, actor, "invite.revoke", "invite", invite_id)
        return True

    @staticmethod
    async def _is_admin(tx: Conn, user_id: int) -> bool:
        return bool(
            await tx.fetchval(
                "SELECT is_admin FROM users WHERE id = $1 AND deactivated_at IS NULL", user_id
            )
        )

    # --- reactions and pins -------------------------------------------------------------

    # Reaction changes and pins are numbered like every room change: member row
    # first (`_locked_role`), then the room row, under which counts and caps
    # are exact. A pin locks the message row before the room row, as
    # edit_message and delete_message do.

    async def _lock_room(self, tx: Conn, room_id: int) -> None:
        await tx.execute("SELECT id FROM rooms WHERE id = $1 FOR UPDATE", room_id)

    async def _reaction_count(self, conn: Conn, message_id: int, emoji: str) -> int:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM reactions WHERE message_id = $1 AND emoji = $2",
            message_id,
            emoji,
        )
        return count

    async def _live_message_seq(self, conn: Conn, room_id: int, message_id: int) -> int | None:
        """The seq of the room's message, unless it is deleted (or not there)."""
        seq: int | None = await conn.fetchval(
            "SELECT seq FROM messages WHERE id = $1 AND room_id = $2 AND NOT deleted",
            message_id,
            room_id,
        )
        return seq

    async def react(
        self, room_id: int, message_id: int, user_id: int, emoji: str, max_distinct: int
    ) -> ReactionChange | None:
        """Adds the user's reaction as the room event `reaction.added` (none when it was there).

        None when there is no such live message; raises NotMember (not, or no
        longer, in the room) and LimitReached (`max_distinct` emoji already).
        """

        async def step(tx: Conn) -> ReactionChange | None:  # on SQLite, with the sends
            if await self._locked_role(tx, room_id, user_id) is None:
                raise NotMember()
            await self._lock_room(tx, room_id)
            seq = await self._live_message_seq(tx, room_id, message_id)
            if seq is None:
                return None
            distinct: list[Row] = await tx.fetch(
                "SELECT DISTINCT emoji FROM reactions WHERE message_id = $1", message_id
            )
            if len(distinct) >= max_distinct and emoji not in {r["emoji"] for r in distinct}:
                raise LimitReached()
            added = await tx.fetchval(
                "INSERT INTO reactions (message_id, user_id, emoji, created_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING message_id",
                message_id,
                user_id,
                emoji,
                now_ms(),
            )
            kind = "reaction.added" if added else None
            return await self._reaction_changed(tx, kind, room_id, message_id, seq, user_id, emoji)

        return await self.engine.atomic(step)

    async def unreact(
        self, room_id: int, message_id: int, user_id: int, emoji: str
    ) -> ReactionChange | None:
        """Removes the user's reaction as the room event `reaction.removed` (none when it
        was not there). None when there is no such live message; raises NotMember."""

        async def step(tx: Conn) -> ReactionChange | None:  # on SQLite, with the sends
            if await self._locked_role(tx, room_id, user_id) is None:
                raise NotMember()
            await self._lock_room(tx, room_id)
            seq = await self._live_message_seq(tx, room_id, message_id)
            if seq is None:
                return None
            removed = await tx.fetchval(
                "DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3"
                " RETURNING message_id",
                message_id,
                user_id,
                emoji,
            )
            kind = "reaction.removed" if removed else None
            return await self._reaction_changed(tx, kind, room_id, message_id, seq, user_id, emoji)

        return await self.engine.atomic(step)

    async def _reaction_changed(
        self,
        tx: Conn,
        kind: str | None,
        room_id: int,
        message_id: int,
        seq: int,
        user_id: int,
        emoji: str,
    ) -> ReactionChange:
        """The emoji's count now, and the room event `kind` at the next pos (None: no change)."""
        count = await self._reaction_count(tx, message_id, emoji)
        pos = None
        if kind is not None:
            pos = await self._append_event(
                tx,
                room_id,
                kind,
                message_id=message_id,
                user_id=user_id,
                actor_id=user_id,
                detail=emoji,
                reaction_count=count,
            )
        return ReactionChange(seq, count, pos)

    async def reactors(
        self, room_id: int, message_id: int, emoji: str, after_user_id: int, limit: int
    ) -> list[User] | None:
        """Who reacted with `emoji`, by user id; None when there is no such live message."""
        if await self._live_message_seq(self.engine, room_id, message_id) is None:
            return None
        rows = await self.engine.fetch(
            f"SELECT {USER_COLUMNS} FROM reactions rx JOIN users u ON u.id = rx.user_id"
            " WHERE rx.message_id = $1 AND rx.emoji = $2 AND rx.user_id > $3"
            " ORDER BY rx.user_id LIMIT $4",
            message_id,
            emoji,
            after_user_id,
            limit,
        )
        return [to_user(r) for r in rows]

    async def with_reactions(self, messages: list[Message], viewer_id: int) -> list[Message]:
        """The messages with their reactions as `viewer_id` sees them, in one query for
        the whole page; each message's emoji in the order they were first used."""
        ids = [m.id for m in messages if not m.deleted]
        if not ids:
            return messages
        rows = await self.engine.fetch(
            "SELECT message_id, emoji, count(*) AS count, min(created_at) AS first_at,"
            " max(CASE WHEN user_id = $2 THEN 1 ELSE 0 END) AS me FROM reactions"
            f" WHERE message_id {self.engine.in_ids('$1')} GROUP BY message_id, emoji"
            " ORDER BY message_id, first_at, emoji",
            self.engine.ids_param(ids),
            viewer_id,
        )
        by_message: dict[int, list[Reaction]] = {}
        for row in rows:
            reaction = Reaction(row["emoji"], row["count"], bool(row["me"]))
            by_message.setdefault(row["message_id"], []).append(reaction)
        return [
            replace(m, reactions=tuple(by_message[m.id])) if m.id in by_message else m
            for m in messages
        ]

    async def pin(
        self, room_id: int, message_id: int, actor_id: int, any_member: bool, max_pins: int
    ) -> tuple[Message, int | None] | None:
        """Pins a live message as the room event `message.pinned`; returns it and the
        event's pos (None: it was pinned already), or None when there is no such
        live message. Managers pin, or any member when `any_member` (a DM).
        Raises NotMember, NotAllowed, LimitReached (`max_pins` pinned already)."""
        async with self.engine.transaction() as tx:
            await self._may_pin(tx, room_id, actor_id, any_member)
            pinned_pos = await self._locked_pin(tx, room_id, message_id)
            if pinned_pos is None:
                return None
            pos = None
            if not pinned_pos:
                await self._lock_room(tx, room_id)
                pins = await tx.fetchval(
                    "SELECT count(*) FROM messages WHERE room_id = $1 AND pinned_pos IS NOT NULL",
                    room_id,
                )
                if pins >= max_pins:
                    raise LimitReached()
                pos = await self._append_event(
                    tx, room_id, "message.pinned", message_id=message_id, actor_id=actor_id
                )
                await self._set_pin(tx, message_id, pos)
            row = await tx.fetchrow(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1", message_id
            )
        message = (await self._attach([row]))[0]
        return message, pos

    async def unpin(
        self, room_id: int, message_id: int, actor_id: int, any_member: bool
    ) -> tuple[Message, int] | None:
        """Unpins a message as the room event `message.unpinned`; None when it is not
        pinned. Raises NotMember and NotAllowed as `pin` does."""
        async with self.engine.transaction() as tx:
            await self._may_pin(tx, room_id, actor_id, any_member)
            if not await self._locked_pin(tx, room_id, message_id):
                return None
            pos = await self._append_event(
                tx, room_id, "message.unpinned", message_id=message_id, actor_id=actor_id
            )
            await self._set_pin(tx, message_id, None)
            row = await tx.fetchrow(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1", message_id
            )
        return (await self._attach([row]))[0], pos

    async def _may_pin(self, tx: Conn, room_id: int, actor_id: int, any_member: bool) -> None:
        role = await self._locked_role(tx, room_id, actor_id)
        if role is None:
            raise NotMember()
        if not any_member and role not in MANAGERS:
            raise NotAllowed()

    async def _locked_pin(self, tx: Conn, room_id: int, message_id: int) -> int | None:
        """The live message's pin pos (0: not pinned; None: no such live message), its
        row locked before the room's (as edits and deletions lock them)."""
        row = await tx.fetchrow(
            "SELECT pinned_pos FROM messages WHERE id = $1 AND room_id = $2 AND NOT deleted"
            " FOR NO KEY UPDATE",
            message_id,
            room_id,
        )
        return None if row is None else row["pinned_pos"] or 0

    @staticmethod
    async def _set_pin(tx: Conn, message_id: int, pinned_pos: int | None) -> None:
        await tx.execute(
            "UPDATE messages SET pinned_pos = $2 WHERE id = $1", message_id, pinned_pos
        )

    async def pinned_messages(self, room_id: int, limit: int) -> list[Message]:
        """The room's pinned messages, newest pin first."""
        rows = await self.engine.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m"
            " WHERE m.room_id = $1 AND m.pinned_pos IS NOT NULL ORDER BY m.pinned_pos DESC"
            " LIMIT $2",
            room_id,
            limit,
        )
        return await self._attach(rows)

    async def _drop_dependents(self, tx: Conn, message_ids: list[int]) -> None:
        """What a deleted message loses besides its body (see TOMBSTONE): its
        attachments, mention rows and reactions. Its `message.deleted` says so:
        no reaction.removed or message.unpinned of their own. Called once the
        room row is locked (by `_append_event`), so no reaction committed before
        the deletion is left behind."""
        ids = self.engine.ids_param(message_ids)
        for table in ("message_attachments", "mentions", "reactions"):
            await tx.execute(
                f"DELETE FROM {table} WHERE message_id {self.engine.in_ids('$1')}", ids
            )

    # --- threads and mentions --------------------------------------------------------------

    async def _send_step(self, tx: Conn, send: _Send) -> Row | None:
        """A send's statements in transaction `tx` (awaiting nothing else: on SQLite
        this runs inside a group commit). A reply or a send that writes mentions
        locks the sender's member row first, then the thread's first message (whose
        counters it bumps), then the room (by the send statement): the order edits
        and deletions lock them in. Names become members' ids here, under the same
        lock as the send."""
        if send.reply_to is None and not send.mentions:
            return await self._insert_message(tx, send)
        role = await self._locked_role(tx, send.room_id, send.sender_id)
        if role is None:
            raise NotMember()
        thread_id = None
        if send.reply_to is not None:
            thread_id = await self._join_thread(tx, send.room_id, send.reply_to, send.created_at)
        mentions = await self._resolve_mentions(tx, send.room_id, role, send.mentions)
        row = await self._insert_message(tx, send, thread_id, mentions)
        if row is not None and mentions.user_ids:
            await self._add_mentions(tx, row, mentions.user_ids)
        return row

    async def _join_thread(self, tx: Conn, room_id: int, reply_to: int, at: int) -> int:
        """Counts a reply on its thread's first message (`reply_to`'s thread, or
        `reply_to` itself); returns that message's id, the reply's thread_id."""
        thread_id: int | None = await tx.fetchval(
            "UPDATE messages SET reply_count = reply_count + 1,"
            " last_reply_at = CASE WHEN last_reply_at > $3 THEN last_reply_at ELSE $3 END"
            " WHERE id = (SELECT COALESCE(p.thread_id, p.id) FROM messages p"
            "   WHERE p.id = $1 AND p.room_id = $2) RETURNING id",
            reply_to,
            room_id,
            at,
        )
        if thread_id is None:
            raise ReplyNotFound()
        return thread_id

    async def _resolve_mentions(
        self, tx: Conn, room_id: int, role: str, written: Written
    ) -> Mentions:
        """What `written` mentions in the room now: the members it names, and
        `@room` if the author manages the room or it is small (mentions.py)."""
        if not written:
            return NO_MENTIONS
        user_ids: tuple[int, ...] = ()
        if written.names:
            rows = await tx.fetch(
                "SELECT u.id, u.username FROM members mb JOIN users u ON u.id = mb.user_id"
                f" WHERE mb.room_id = $1 AND u.username {self.engine.in_texts('$2')}",
                room_id,
                self.engine.ids_param(written.usernames()),
            )
            user_ids = written.resolve({r["username"]: r["id"] for r in rows})
        room = written.room and (
            role in MANAGERS
            or await tx.fetchval("SELECT member_count FROM rooms WHERE id = $1", room_id)
            <= ROOM_MENTION_MAX_MEMBERS
        )
        return Mentions(user_ids, room)

    async def _add_mentions(self, tx: Conn, message: Row, user_ids: Sequence[int]) -> None:
        await tx.execute(
            "INSERT INTO mentions (message_id, user_id, room_id, seq)"
            f" SELECT $1, u.id, $2, $3 FROM users u WHERE u.id {self.engine.in_ids('$4')}",
            message["id"],
            message["room_id"],
            message["seq"],
            self.engine.ids_param(user_ids),
        )

    async def _remention(self, tx: Conn, old: Row, new: Mentions, message: Row) -> Mentions:
        """Brings an edited message's mention rows to `new`, leaving those that stay
        untouched; returns what is newly mentioned (notified once, never again)."""
        was = to_mentions(old["mentioned_ids"], old["mentions_room"])
        gone = sorted(set(was.user_ids) - set(new.user_ids))
        added = tuple(sorted(set(new.user_ids) - set(was.user_ids)))
        if gone:
            await tx.execute(
                "DELETE FROM mentions WHERE message_id = $1"
                f" AND user_id {self.engine.in_ids('$2')}",
                message["id"],
                self.engine.ids_param(gone),
            )
        if added:
            await self._add_mentions(tx, message, added)
        return Mentions(added, new.room and not was.room)

    async def thread_replies(
        self, thread_id: int, after_seq: int, limit: int
    ) -> tuple[list[Message], bool]:
        """Up to `limit` replies of a thread in ascending seq, and whether more follow."""
        rows = await self.engine.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.thread_id = $1 AND m.seq > $2"
            " ORDER BY m.seq LIMIT $3",
            thread_id,
            after_seq,
            limit + 1,
        )
        return await self._attach(rows[:limit]), len(rows) > limit

    async def mentions_of(self, user_id: int, before_id: int, limit: int) -> list[Message]:
        """Others' messages mentioning the user by name or `@room` in the rooms the
        user is in, newest (highest id) first, below `before_id`: the newest
        `limit` of each kind through their indexes, then merged."""
        rows = await self.engine.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id IN ("
            " SELECT message_id FROM (SELECT mn.message_id FROM mentions mn"
            "   JOIN members mb ON mb.room_id = mn.room_id AND mb.user_id = mn.user_id"
            "   JOIN messages x ON x.id = mn.message_id AND x.sender_id <> $1"
            "   WHERE mn.user_id = $1 AND mn.message_id < $2"
            "   ORDER BY mn.message_id DESC LIMIT $3) named"
            " UNION SELECT id FROM (SELECT mr.id FROM messages mr"
            "   JOIN members mb ON mb.room_id = mr.room_id AND mb.user_id = $1"
            "   WHERE mr.mentions_room AND mr.sender_id <> $1 AND mr.id < $2"
            "   ORDER BY mr.id DESC LIMIT $3) everyone"
            ") ORDER BY m.id DESC LIMIT $3",
            user_id,
            before_id,
            limit,
        )
        return await self._attach(rows)

    # --- moderation -------------------------------------------------------------------
    #
    # Lock order, as everywhere: users rows, then member rows (by user id), then
    # the room row (`_append_event`). A ban locks the banned user's row FOR NO KEY
    # UPDATE, which a join's FOR SHARE waits for (and the other way round), so a
    # join either commits first and is undone by the ban, or sees the ban.

    async def _moderator_role(self, tx: Conn, room_id: int, user_id: int) -> str | None:
        """The user's role in the room (member row locked), or "owner" for a server
        admin, who moderates any room as its owner would."""
        return await self._as_moderator(tx, user_id, await self._locked_role(tx, room_id, user_id))

    @staticmethod
    async def _as_moderator(tx: Conn, user_id: int, role: str | None) -> str | None:
        if role == "owner":
            return role
        return "owner" if await Database._is_admin(tx, user_id) else role

    @staticmethod
    async def _is_banned(conn: Conn, room_id: int, user_id: int) -> bool:
        row = await conn.fetchval(
            "SELECT 1 FROM bans WHERE room_id = $1 AND user_id = $2", room_id, user_id
        )
        return row is not None

    async def ban_member(
        self, room_id: int, user_id: int, reason: str, actor: Actor
    ) -> tuple[Ban, int | None] | None:
        """Bans a user from the room: removes them if a member (`member.left`,
        `banned`), records the ban and audits `member.ban`, in one transaction.

        Returns the ban and the pos of the removal (None: was not a member), or
        None when already banned. Raises Refused unless the actor outranks the
        user (see `outranks`; nobody bans themself).
        """
        async with self.engine.transaction() as tx:
            await tx.fetch(
                "SELECT id FROM users WHERE id IN ($1, $2) ORDER BY id FOR NO KEY UPDATE",
                actor.user_id,
                user_id,
            )
            rows = await tx.fetch(
                "SELECT user_id, role FROM members WHERE room_id = $1 AND user_id IN ($2, $3)"
                " ORDER BY user_id FOR KEY SHARE",
                room_id,
                actor.user_id,
                user_id,
            )
            roles = {r["user_id"]: r["role"] for r in rows}
            role = await self._as_moderator(tx, actor.user_id, roles.get(actor.user_id))
            if user_id == actor.user_id or not outranks(role, roles.get(user_id)):
                raise Refused()
            banned = await tx.fetchval(
                "INSERT INTO bans (room_id, user_id, reason, by_id, created_at)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, user_id) DO NOTHING"
                " RETURNING user_id",
                room_id,
                user_id,
                reason,
                actor.user_id,
                now_ms(),
            )
            if banned is None:
                return None
            pos = await self._leave(tx, room_id, user_id, "banned", actor.user_id)
            details = {"room_id": room_id, "reason": reason}
            await self._audit(tx, actor, "member.ban", "user", user_id, details)
            row = await tx.fetchrow(
                f"SELECT {BAN_COLUMNS} FROM bans b JOIN users u ON u.id = b.user_id"
                " WHERE b.room_id = $1 AND b.user_id = $2",
                room_id,
                user_id,
            )
        return to_ban(row), pos

    async def unban_member(self, room_id: int, user_id: int, actor: Actor) -> bool:
        """Lifts a ban, audited as `member.unban`; False when there was none.
        Raises Refused unless the actor manages the room (or is a server admin)."""
        async with self.engine.transaction() as tx:
            if await self._moderator_role(tx, room_id, actor.user_id) not in MANAGERS:
                raise Refused()
            lifted = await tx.fetchval(
                "DELETE FROM bans WHERE room_id = $1 AND user_id = $2 RETURNING user_id",
                room_id,
                user_id,
            )
            if lifted is None:
                return False
            await self._audit(tx, actor, "member.unban", "user", user_id, {"room_id": room_id})
        return True

    async def list_bans(self, room_id: int, after_user_id: int, limit: int) -> list[Ban]:
        rows = await self.engine.fetch(
            f"SELECT {BAN_COLUMNS} FROM bans b JOIN users u ON u.id = b.user_id"
            " WHERE b.room_id = $1 AND b.user_id > $2 ORDER BY b.user_id LIMIT $3",
            room_id,
            after_user_id,
            limit,
        )
        return [to_ban(r) for r in rows]

    async def delete_room(self, room_id: int, actor: Actor) -> list[tuple[int, int]]:
        """Deletes a room (soft: `deleted_at`), as its owner or a server admin.

        In one transaction every member is removed (`member.left`,
        `room_deleted`; member rows locked in user id order before the room
        row), the room is marked deleted and `room.delete` audited. Returns the
        removed (user_id, pos) pairs. Raises Refused for anyone else, RoomGone
        when it is deleted already.

        A join fails once the room is marked (it reads `deleted_at` under the
        room row's lock), but one that committed between the member rows' lock and the
        room row's is a member the first pass did not see: then the whole
        deletion is tried again (member rows cannot be locked after the room
        row without risking a deadlock with that member's sends).
        """
        while True:
            try:
                return await self._delete_room_once(room_id, actor)
            except _MembersChanged:
                continue

    async def _delete_room_once(self, room_id: int, actor: Actor) -> list[tuple[int, int]]:
        async with self.engine.transaction() as tx:
            rows = await tx.fetch(
                "SELECT user_id, role FROM members WHERE room_id = $1 ORDER BY user_id FOR UPDATE",
                room_id,
            )
            roles = {r["user_id"]: r["role"] for r in rows}
            if await self._as_moderator(tx, actor.user_id, roles.get(actor.user_id)) != "owner":
                raise Refused()
            removed = []
            for user_id in roles:
                pos = await self._leave(tx, room_id, user_id, "room_deleted", actor.user_id)
                if pos is not None:
                    removed.append((user_id, pos))
            deleted = await tx.fetchval(
                "UPDATE rooms SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL"
                " RETURNING id",
                room_id,
                now_ms(),
            )
            if deleted is None:
                raise RoomGone()
            # The room row is locked now: a member seen here joined meanwhile.
            if await tx.fetchval("SELECT 1 FROM members WHERE room_id = $1 LIMIT 1", room_id):
                raise _MembersChanged()
            details = {"members": len(removed)}
            await self._audit(tx, actor, "room.delete", "room", room_id, details)
        return removed

    async def create_report(
        self, room_id: int, message_id: int, reporter_id: int, reason: str, comment: str
    ) -> int | None:
        """Files a report of a live message the reporter may read (a public room's,
        or a member's); None when there is no such message for them. The check is
        the insert's own condition. Raises UniqueViolation for a second report of
        the same message by the same reporter."""
        row = await self.engine.write(
            "INSERT INTO reports (message_id, room_id, reporter_id, reason, comment, created_at)"
            " SELECT m.id, m.room_id, $3, $4, $5, $6"
            " FROM messages m JOIN rooms r ON r.id = m.room_id"
            " WHERE m.id = $2 AND m.room_id = $1 AND NOT m.deleted AND r.deleted_at IS NULL"
            " AND (r.kind = 'public' OR EXISTS (SELECT 1 FROM members mb"
            "   WHERE mb.room_id = r.id AND mb.user_id = $3)) RETURNING id",
            room_id,
            message_id,
            reporter_id,
            reason,
            comment,
            now_ms(),
        )
        return None if row is None else int(row["id"])

    async def _reports(self, rows: list[Row]) -> list[Report]:
        messages = await self.messages_by_ids(sorted({r["message_id"] for r in rows}))
        return [to_report(r, messages[r["message_id"]]) for r in rows]

    async def get_report(self, report_id: int) -> Report | None:
        rows = await self.engine.fetch(f"{REPORTS_SELECT} WHERE rp.id = $1", report_id)
        reports = await self._reports(rows)
        return reports[0] if reports else None

    async def reports_page(self, state: str, before_id: int, limit: int) -> list[Report]:
        """Reports in `state` older than `before_id`, newest first."""
        rows = await self.engine.fetch(
            f"{REPORTS_SELECT} WHERE rp.state = $1 AND rp.id < $2 ORDER BY rp.id DESC LIMIT $3",
            state,
            before_id,
            limit,
        )
        return await self._reports(rows)

    async def decide_report(self, report_id: int, state: str, actor: Actor) -> Report | None:
        """Resolves or dismisses an open report, audited as `report.resolve` or
        `report.dismiss`; None when there is no such open report."""
        async with self.engine.transaction() as tx:
            decided = await tx.fetchrow(
                "UPDATE reports SET state = $2, resolved_by = $3, resolved_at = $4"
                " WHERE id = $1 AND state = 'open' RETURNING message_id",
                report_id,
                state,
                actor.user_id,
                now_ms(),
            )
            if decided is None:
                return None
            action = "report.resolve" if state == "resolved" else "report.dismiss"
            details = {"message_id": decided["message_id"]}
            await self._audit(tx, actor, action, "report", report_id, details)
        return await self.get_report(report_id)

    async def admin_ids(self) -> list[int]:
        """The server's active admins (who receive `report.new`)."""
        rows = await self.engine.fetch(
            "SELECT id FROM users WHERE is_admin AND deactivated_at IS NULL ORDER BY id"
        )
        return [r["id"] for r in rows]

    # --- notifications ----------------------------------------------------------------

    async def set_notify(
        self, room_id: int, user_id: int, level: str, muted_until: int | None
    ) -> Room:
        """Sets the member's level and mute for the room (a member's own setting, not
        the room's shared state: no room event). NotMember for a non-member."""
        async with self.engine.transaction() as tx:
            updated = await tx.fetchval(
                "UPDATE members SET notify_level = $3, muted_until = $4"
                " WHERE room_id = $1 AND user_id = $2 RETURNING user_id",
                room_id,
                user_id,
                level,
                muted_until,
            )
            if updated is None:
                raise NotMember()
            return await self._room_in(tx, room_id, user_id)

    async def push_targets(
        self, room_id: int, sender_id: int, mentions: Mentions, now: int, limit: int
    ) -> list[PushTarget]:
        """The subscriptions of the members (not the sender) a new message notifies:
        level `all`, or `mentions` and mentioned, and not muted at `now`."""
        level = "COALESCE(mb.notify_level, CASE WHEN r.kind = 'dm' THEN 'all' ELSE 'mentions' END)"
        rows = await self.engine.fetch(
            f"SELECT {PUSH_COLUMNS}, r.kind AS room_kind, r.name AS room_name"
            " FROM members mb JOIN rooms r ON r.id = mb.room_id"
            " JOIN push_subscriptions ps ON ps.user_id = mb.user_id"
            " WHERE mb.room_id = $1 AND mb.user_id <> $2"
            " AND (mb.muted_until IS NULL OR mb.muted_until <= $3)"
            f" AND ({level} = 'all' OR ({level} = 'mentions'"
            f"   AND ($4 OR mb.user_id {self.engine.in_ids('$5')})))"
            " ORDER BY ps.id LIMIT $6",
            room_id,
            sender_id,
            now,
            mentions.room,
            self.engine.ids_param(mentions.user_ids),
            limit,
        )
        return [PushTarget(to_push_subscription(r), r["room_kind"], r["room_name"]) for r in rows]

    async def add_push_subscription(
        self, user_id: int, endpoint: str, p256dh: str, auth: str
    ) -> tuple[PushSubscription, bool]:
        """Registers the endpoint for the user (True: new to them). An endpoint is one
        row: someone else's moves to this user; the user's oldest beyond
        MAX_PUSH_SUBSCRIPTIONS go."""
        for _ in range(2):  # a concurrent first registration of the endpoint: once more
            try:
                async with self.engine.transaction() as tx:
                    return await self._upsert_push_subscription(tx, user_id, endpoint, p256dh, auth)
            except UniqueViolation:
                continue
        raise RuntimeError("push subscription upsert raced twice")

    async def _upsert_push_subscription(
        self, tx: Conn, user_id: int, endpoint: str, p256dh: str, auth: str
    ) -> tuple[PushSubscription, bool]:
        existing = await tx.fetchrow(
            "SELECT id, user_id FROM push_subscriptions WHERE endpoint = $1 FOR UPDATE",
            endpoint,
        )
        if existing is None:
            row = await tx.fetchrow(
                "INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth, created_at)"
                f" VALUES ($1, $2, $3, $4, $5) RETURNING {PUSH_FIELDS}",
                user_id,
                endpoint,
                p256dh,
                auth,
                now_ms(),
            )
        else:
            row = await tx.fetchrow(
                "UPDATE push_subscriptions SET user_id = $2, p256dh = $3, auth = $4"
                f" WHERE id = $1 RETURNING {PUSH_FIELDS}",
                existing["id"],
                user_id,
                p256dh,
                auth,
            )
        assert row is not None
        await tx.execute(
            "DELETE FROM push_subscriptions WHERE user_id = $1 AND id NOT IN"
            " (SELECT id FROM push_subscriptions WHERE user_id = $1 ORDER BY id DESC LIMIT $2)",
            user_id,
            MAX_PUSH_SUBSCRIPTIONS,
        )
        created = existing is None or existing["user_id"] != user_id
        return to_push_subscription(row), created

    async def any_push_subscription(self) -> bool:
        return bool(await self.engine.fetchval("SELECT EXISTS (SELECT 1 FROM push_subscriptions)"))

    async def push_subscriptions(self, user_id: int) -> list[PushSubscription]:
        rows = await self.engine.fetch(
            f"SELECT {PUSH_FIELDS} FROM push_subscriptions WHERE user_id = $1 ORDER BY id",
            user_id,
        )
        return [to_push_subscription(r) for r in rows]

    async def delete_push_subscription(self, subscription_id: int, user_id: int) -> bool:
        """Deletes one of the user's subscriptions; False if they have no such one."""
        row = await self.engine.write(
            "DELETE FROM push_subscriptions WHERE id = $1 AND user_id = $2 RETURNING id",
            subscription_id,
            user_id,
        )
        return row is not None

    async def drop_push_subscription(self, subscription_id: int) -> bool:
        """Deletes a subscription its push service called gone (404 or 410)."""
        row = await self.engine.write(
            "DELETE FROM push_subscriptions WHERE id = $1 RETURNING id", subscription_id
        )
        return row is not None

    async def push_succeeded(self, subscription_id: int, at: int) -> None:
        await self.engine.write(
            "UPDATE push_subscriptions SET last_success_at = $2 WHERE id = $1",
            subscription_id,
            at,
        )

    # --- integrations -------------------------------------------------------------------
    #
    # Personal access tokens, bot accounts and webhooks (tokens.py, integrations.py,
    # webhooks.py). A bot is a users row with is_bot and its owner; a webhook has
    # a bot of its own. Lock order as everywhere: users rows, member rows, room row.

    async def create_access_token(
        self, user_id: int, name: str, token_sha256: str, expires_at: int | None, limit: int
    ) -> AccessToken | None:
        """A new token of an active account that has fewer than `limit` live ones.

        None: the account is deactivated or at its limit. The owner's row is
        locked FOR UPDATE before counting (as `_bot_owner` does), so two
        concurrent creates count one after the other: `FOR SHARE` would let
        both count the same tokens and both insert."""
        async with self.engine.transaction() as tx:
            owner = await tx.fetchrow(
                "SELECT deactivated_at FROM users WHERE id = $1 FOR UPDATE", user_id
            )
            if owner is None or owner["deactivated_at"] is not None:
                return None
            live = await tx.fetchval(
                "SELECT count(*) FROM access_tokens WHERE user_id = $1 AND revoked_at IS NULL",
                user_id,
            )
            if live >= limit:
                return None
            row = await tx.fetchrow(
                "INSERT INTO access_tokens (user_id, name, token_sha256, created_at, expires_at)"
                f" VALUES ($1, $2, $3, $4, $5) RETURNING {TOKEN_FIELDS}",
                user_id,
                name,
                token_sha256,
                now_ms(),
                expires_at,
            )
        return to_access_token(row)

    async def access_tokens(self, user_id: int) -> list[AccessToken]:
        """The user's tokens that are not revoked (expired ones too, until revoked)."""
        rows = await self.engine.fetch(
            f"SELECT {TOKEN_FIELDS} FROM access_tokens"
            " WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id",
            user_id,
        )
        return [to_access_token(r) for r in rows]

    async def revoke_access_token(self, user_id: int, token_id: int) -> bool:
        row = await self.engine.write(
            "UPDATE access_tokens SET revoked_at = $3"
            " WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING id",
            token_id,
            user_id,
            now_ms(),
        )
        return row is not None

    async def token_owner(self, token_sha256: str) -> TokenOwner | None:
        """The token with this hash and whether it is live (one indexed lookup)."""
        row = await self.engine.fetchrow(
            "SELECT t.id, t.user_id, t.expires_at, t.last_used_at, t.revoked_at, u.deactivated_at"
            " FROM access_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_sha256 = $1",
            token_sha256,
        )
        return None if row is None else to_token_owner(row)

    async def touch_access_token(self, token_id: int, stale_before: int) -> None:
        """Record use, at most once per staleness window (not a write per request)."""
        await self.engine.write(
            "UPDATE access_tokens SET last_used_at = $2"
            " WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3) RETURNING id",
            token_id,
            now_ms(),
            stale_before,
        )

    async def dead_tokens_among(self, token_ids: Sequence[int]) -> list[int]:
        """Which of these tokens no longer authenticate (revoked or expired)."""
        rows = await self.engine.fetch(
            "SELECT id FROM access_tokens WHERE (revoked_at IS NOT NULL OR expires_at <= $2)"
            f" AND id {self.engine.in_ids('$1')}",
            self.engine.ids_param(token_ids),
            now_ms(),
        )
        return [r["id"] for r in rows]

    async def _insert_bot(self, tx: Conn, owner_id: int, username: str, display_name: str) -> User:
        """A bot account owned by `owner_id`, with no usable password (raises
        UniqueViolation when the username is taken)."""
        row = await tx.fetchrow(
            "INSERT INTO users (username, display_name, password_hash, created_at, is_bot,"
            f" bot_owner_id) VALUES ($1, $2, '!', $3, TRUE, $4) RETURNING {USER_FIELDS}",
            username,
            display_name,
            now_ms(),
            owner_id,
        )
        return to_user(row)

    async def _bot_owner(self, tx: Conn, owner_id: int) -> None:
        """Locks the would-be owner's row; NotAllowed if it is a bot or deactivated."""
        owner = await tx.fetchrow(
            "SELECT is_bot, deactivated_at FROM users WHERE id = $1 FOR UPDATE", owner_id
        )
        if owner is None or owner["is_bot"] or owner["deactivated_at"] is not None:
            raise NotAllowed()

    async def create_bot(
        self, owner_id: int, username: str, display_name: str, token_sha256: str, limit: int
    ) -> User:
        """A bot owned by `owner_id` with its first token (named after it). Raises
        NotAllowed (the owner is a bot, or deactivated), LimitReached (the owner
        has `limit` active bots besides its webhooks'), UniqueViolation (name taken)."""
        async with self.engine.transaction() as tx:
            await self._bot_owner(tx, owner_id)
            count = await tx.fetchval(
                "SELECT count(*) FROM users u WHERE u.bot_owner_id = $1 AND u.is_bot"
                " AND u.deactivated_at IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.bot_id = u.id)",
                owner_id,
            )
            if count >= limit:
                raise LimitReached()
            bot = await self._insert_bot(tx, owner_id, username, display_name)
            await tx.execute(
                "INSERT INTO access_tokens (user_id, name, token_sha256, created_at)"
                " VALUES ($1, $2, $3, $4)",
                bot.id,
                username,
                token_sha256,
                now_ms(),
            )
        return bot

    async def named_bot(self, username: str, display_name: str) -> User:
        """The account named `username`, made an ownerless bot if there is none yet
        (whoever makes it first: the unique name decides)."""
        async with self.engine.transaction() as tx:
            await tx.execute(
                "INSERT INTO users (username, display_name, password_hash, created_at, is_bot)"
                " VALUES ($1, $2, '!', $3, TRUE) ON CONFLICT (username) DO NOTHING",
                username,
                display_name,
                now_ms(),
            )
            row = await tx.fetchrow(
                f"SELECT {USER_FIELDS} FROM users WHERE username = $1", username
            )
        return to_user(row)

    async def bots(self, owner_id: int, after_id: int, limit: int) -> list[User]:
        """Active bots in id order: those `owner_id` owns, or every one (0)."""
        rows = await self.engine.fetch(
            f"SELECT {USER_COLUMNS} FROM users u WHERE u.is_bot AND u.deactivated_at IS NULL"
            " AND ($1 = 0 OR u.bot_owner_id = $1) AND u.id > $2"
            " ORDER BY u.id LIMIT $3",
            owner_id,
            after_id,
            limit,
        )
        return [to_user(r) for r in rows]

    async def delete_bot(
        self, actor: Actor, bot_id: int, *, as_admin: bool
    ) -> tuple[User, Deactivation] | None:
        """Deactivates a bot its owner (or an admin) deletes, with its webhook if it has
        one, audited as `bot.delete`. None: no such active bot of theirs."""
        async with self.engine.transaction() as tx:
            row = await tx.fetchrow(
                f"SELECT {USER_FIELDS}, bot_owner_id FROM users WHERE id = $1 FOR UPDATE", bot_id
            )
            if (
                row is None
                or not row["is_bot"]
                or row["deactivated_at"] is not None
                or not (as_admin or row["bot_owner_id"] == actor.user_id)
            ):
                return None
            ended = await self._deactivate(tx, actor, bot_id)
            await tx.execute(
                "UPDATE webhooks SET deleted_at = $2 WHERE bot_id = $1 AND deleted_at IS NULL",
                bot_id,
                now_ms(),
            )
            await self._audit(tx, actor, "bot.delete", "user", bot_id)
            bot = await tx.fetchrow(f"SELECT {USER_FIELDS} FROM users WHERE id = $1", bot_id)
        return to_user(bot), ended

    # A webhook with its bot (user columns) and its own columns as `to_webhook` reads them.
    _WEBHOOKS_SELECT = (
        f"SELECT {USER_COLUMNS}, w.id AS hook_id, w.room_id, w.name, w.kind, w.url, w.trigger_on,"
        " w.secret, w.created_by AS hook_created_by, w.created_at AS hook_created_at,"
        " w.last_delivery_at, w.failures FROM webhooks w JOIN users u ON u.id = w.bot_id"
    )

    async def create_webhook(
        self,
        actor: Actor,
        room_id: int,
        fields: WebhookFields,
        bot_username: str,
        limit: int,
    ) -> tuple[Webhook, int]:
        """A webhook and its bot (owned by the creator), added to the room as a
        member; returns it and the pos of the bot's `member.joined`.

        Raises NotAllowed (the creator is a bot, or is not the room's owner or
        admin: a server admin's moderation does not extend to reading the room
        through a hook), LimitReached (the room has `limit` webhooks), RoomGone,
        UniqueViolation."""
        async with self.engine.transaction() as tx:
            await self._bot_owner(tx, actor.user_id)
            if await self._locked_role(tx, room_id, actor.user_id) not in MANAGERS:
                raise NotAllowed()
            count = await tx.fetchval(
                "SELECT count(*) FROM webhooks WHERE room_id = $1 AND deleted_at IS NULL", room_id
            )
            if count >= limit:
                raise LimitReached()
            bot = await self._insert_bot(tx, actor.user_id, bot_username, fields.name)
            pos = await self._join(tx, room_id, bot.id, "member", actor.user_id)
            hook_id = await tx.fetchval(
                "INSERT INTO webhooks (room_id, bot_id, created_by, name, kind, url, trigger_on,"
                " secret, secret_sha256, scanned_pos, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
                room_id,
                bot.id,
                actor.user_id,
                fields.name,
                fields.kind,
                fields.url,
                fields.trigger,
                fields.secret,
                fields.secret_sha256,
                pos,  # an outgoing hook hears messages posted after it was made
                now_ms(),
            )
            row = await tx.fetchrow(f"{self._WEBHOOKS_SELECT} WHERE w.id = $1", hook_id)
        return to_webhook(row), pos

    async def room_webhooks(self, room_id: int) -> list[Webhook]:
        rows = await self.engine.fetch(
            f"{self._WEBHOOKS_SELECT} WHERE w.room_id = $1 AND w.deleted_at IS NULL ORDER BY w.id",
            room_id,
        )
        return [to_webhook(r) for r in rows]

    async def webhook_by_secret(self, secret_sha256: str) -> Webhook | None:
        row = await self.engine.fetchrow(
            f"{self._WEBHOOKS_SELECT} WHERE w.secret_sha256 = $1 AND w.deleted_at IS NULL",
            secret_sha256,
        )
        return None if row is None else to_webhook(row)

    async def delete_webhook(
        self, actor: Actor, room_id: int, webhook_id: int
    ) -> tuple[User, Deactivation] | None:
        """Deletes the webhook and deactivates its bot. None: no such webhook in the
        room; raises NotAllowed when the actor does not manage the room."""
        bot_id = await self.engine.fetchval(
            "SELECT bot_id FROM webhooks WHERE id = $1 AND room_id = $2 AND deleted_at IS NULL",
            webhook_id,
            room_id,
        )
        if bot_id is None:
            return None
        async with self.engine.transaction() as tx:
            bot = await tx.fetchrow(
                f"SELECT {USER_FIELDS} FROM users WHERE id = $1 FOR UPDATE", bot_id
            )
            if await self._moderator_role(tx, room_id, actor.user_id) not in MANAGERS:
                raise NotAllowed()
            deleted = await tx.fetchval(
                "UPDATE webhooks SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL"
                " RETURNING id",
                webhook_id,
                now_ms(),
            )
            if deleted is None or bot is None:  # deleted meanwhile
                return None
            ended = Deactivation()
            if bot["deactivated_at"] is None:
                ended = await self._deactivate(tx, actor, bot_id)
        return to_user(bot), ended

    # Outgoing deliveries (webhooks.py): each outgoing hook turns its room's new
    # messages into delivery rows (`scan_webhook`), which workers claim by lease.

    async def outgoing_webhook_rooms(self) -> set[int]:
        rows = await self.engine.fetch(
            "SELECT DISTINCT room_id FROM webhooks WHERE kind = 'outgoing' AND deleted_at IS NULL"
        )
        return {r["room_id"] for r in rows}

    async def webhooks_behind(self) -> list[int]:
        """Outgoing hooks whose room has events they have not scanned yet."""
        rows = await self.engine.fetch(
            "SELECT w.id FROM webhooks w JOIN rooms r ON r.id = w.room_id"
            " WHERE w.kind = 'outgoing' AND w.deleted_at IS NULL AND r.last_pos > w.scanned_pos"
            " ORDER BY w.id"
        )
        return [r["id"] for r in rows]

    async def scan_webhook(self, webhook_id: int, limit: int) -> int | None:
        """Writes a delivery row (its id and the message's: the body is built when
        it is tried, from the message as it is then) for each qualifying message
        of the hook's room after its `scanned_pos`, up to `limit` messages, and
        moves `scanned_pos` on, in one transaction under the hook's row lock:
        each message is turned into a delivery once, by one node.

        Qualifying: posted while the hook's bot is a member (after its current
        `joined_pos`: a hook whose bot was kicked or banned delivers nothing,
        and one whose bot is added back resumes from then on, not the backlog),
        not deleted, not by an outgoing hook's bot (their messages are answers to
        deliveries: so two hooks answering each other cannot loop; incoming
        hooks' posts and other bots' messages do trigger), and for trigger
        `mention` mentioning the bot. The room's `last_pos` is read
        before its messages and the bot's membership: a message with a pos up
        to it has committed with it, and a removal committed after the
        membership is read comes after `last_pos`.
        Returns the number of deliveries written; None when another node is
        scanning the hook."""
        skip = " SKIP LOCKED" if self.engine.name == "postgres" else ""
        async with self.engine.transaction() as tx:
            hook = await tx.fetchrow(
                "SELECT room_id, bot_id, trigger_on, scanned_pos FROM webhooks"
                f" WHERE id = $1 AND deleted_at IS NULL FOR UPDATE{skip}",
                webhook_id,
            )
            if hook is None:
                return None
            last_pos = await tx.fetchval(
                "SELECT last_pos FROM rooms WHERE id = $1", hook["room_id"]
            )
            bot_member = await tx.fetchrow(
                "SELECT joined_pos FROM members WHERE room_id = $1 AND user_id = $2",
                hook["room_id"],
                hook["bot_id"],
            )
            rows = []
            if bot_member is not None:
                rows = await tx.fetch(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.room_id = $1"
                    " AND m.pos > $2 AND m.pos <= $3 ORDER BY m.pos LIMIT $4",
                    hook["room_id"],
                    max(hook["scanned_pos"], bot_member["joined_pos"]),
                    last_pos,
                    limit,
                )
            scanned = last_pos if len(rows) < limit else rows[-1]["pos"]
            answering = {
                r["bot_id"]
                for r in await tx.fetch(
                    "SELECT bot_id FROM webhooks WHERE room_id = $1 AND kind = 'outgoing'",
                    hook["room_id"],
                )
            }
            bot_id = hook["bot_id"]
            written = 0
            for message in await self._attach(rows, tx):
                if (
                    message.deleted
                    or message.sender_id in answering
                    or (hook["trigger_on"] == "mention" and bot_id not in message.mentions.user_ids)
                ):
                    continue
                await tx.execute(
                    "INSERT INTO webhook_deliveries (id, webhook_id, message_id,"
                    " next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $4)"
                    " ON CONFLICT (webhook_id, message_id) DO NOTHING",
                    str(uuid.uuid4()),
                    webhook_id,
                    message.id,
                    now_ms(),
                )
                written += 1
            await tx.execute(
                "UPDATE webhooks SET scanned_pos = $2 WHERE id = $1", webhook_id, scanned
            )
        return written

    async def next_delivery_due(self) -> int | None:
        """When the next pending delivery nobody holds is due (epoch ms), if any."""
        due: int | None = await self.engine.fetchval(
            "SELECT min(next_attempt_at) FROM webhook_deliveries"
            " WHERE state = 'pending' AND lease_until < $1",
            now_ms(),
        )
        return due

    async def claim_delivery(self, now: int, lease_ms: int) -> Delivery | None:
        """Takes the lease of a due pending delivery until `now + lease_ms` (PostgreSQL
        skips one another node is claiming: exactly one node holds each), with its
        message as it is now. One whose message was deleted since it was written
        is marked `skipped` on the way: nothing deleted is sent with its old body."""
        skip = " SKIP LOCKED" if self.engine.name == "postgres" else ""
        async with self.engine.transaction() as tx:
            while True:
                row = await tx.fetchrow(
                    "UPDATE webhook_deliveries SET lease_until = $2 WHERE id = (SELECT id"
                    " FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $1"
                    f" AND lease_until < $1 ORDER BY next_attempt_at LIMIT 1 FOR UPDATE{skip})"
                    " RETURNING id, webhook_id, message_id, attempts, lease_until",
                    now,
                    now + lease_ms,
                )
                if row is None:
                    return None
                hook = await tx.fetchrow(
                    "SELECT room_id, bot_id, url, secret, deleted_at FROM webhooks WHERE id = $1",
                    row["webhook_id"],
                )
                if hook is None or hook["deleted_at"] is not None:  # the hook went, and its
                    await tx.execute(  # deliveries with it
                        "UPDATE webhook_deliveries SET state = 'failed', last_error = 'deleted'"
                        " WHERE webhook_id = $1 AND state = 'pending'",
                        row["webhook_id"],
                    )
                    return None
                found = await tx.fetch(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1", row["message_id"]
                )
                messages = await self._attach(found, tx)
                if messages and not messages[0].deleted:
                    break
                await tx.execute(
                    "UPDATE webhook_deliveries SET state = 'skipped', lease_until = 0,"
                    " last_error = 'message deleted' WHERE id = $1",
                    row["id"],
                )
        return Delivery(  # the hook's row exists: deliveries cascade with it
            row["id"],
            row["webhook_id"],
            hook["room_id"],
            hook["bot_id"],
            hook["url"],
            hook["secret"],
            messages[0],
            row["attempts"],
            row["lease_until"],
        )

    async def release_delivery(self, delivery: Delivery) -> None:
        """Gives up the lease of an attempt cut short (a shutdown): the delivery is
        due again at once, for any node (receivers dedupe by X-Chat-Delivery)."""
        await self.engine.write(
            "UPDATE webhook_deliveries SET lease_until = 0"
            " WHERE id = $1 AND lease_until = $2 RETURNING id",
            delivery.id,
            delivery.lease_until,
        )

    async def record_attempt(
        self, delivery: Delivery, error: str | None, retry_at: int | None
    ) -> bool:
        """Counts an attempt of a delivery whose lease this node holds: done
        (`error` None), to retry at `retry_at`, or failed for good (neither).
        The webhook's `last_delivery_at` and `failures` (failed attempts since
        its last success) follow. False: the lease was lost, nothing changed."""
        now = now_ms()
        state = "done" if error is None else ("pending" if retry_at is not None else "failed")
        async with self.engine.transaction() as tx:
            updated = await tx.fetchval(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, state = $3,"
                " next_attempt_at = $4, last_error = $5, lease_until = 0"
                " WHERE id = $1 AND lease_until = $2 AND state = 'pending' RETURNING id",
                delivery.id,
                delivery.lease_until,
                state,
                retry_at or now,
                error,
            )
            if updated is None:
                return False
            await tx.execute(
                "UPDATE webhooks SET last_delivery_at = $2,"
                " failures = CASE WHEN $3 THEN 0 ELSE failures + 1 END WHERE id = $1",
                delivery.webhook_id,
                now,
                error is None,
            )
        return True

    async def delivery_states(self, webhook_id: int) -> list[tuple[str, int]]:
        """(state, attempts) of the hook's deliveries, oldest first (for operators and tests)."""
        rows = await self.engine.fetch(
            "SELECT state, attempts FROM webhook_deliveries WHERE webhook_id = $1"
            " ORDER BY created_at, id",
            webhook_id,
        )
        return [(r["state"], r["attempts"]) for r in rows]

    # --- audit ----------------------------------------------------------------------------

    @staticmethod
    async def _audit(
        tx: Conn,
        actor: Actor | None,
        action: str,
        target_type: str,
        target_id: int | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Records an admin or moderation action in the action's own transaction,
        so the log holds exactly the actions that committed (API.md "Audit").
        `actor` None: the server itself (a shell command, a background job)."""
        await tx.execute(
            "INSERT INTO audit_log (at, actor_id, action, target_type, target_id, ip, details)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            now_ms(),
            None if actor is None else actor.user_id,
            action,
            target_type,
            target_id,
            "" if actor is None else actor.ip,
            json.dumps(details or {}, separators=(",", ":")),
        )

    async def audit_page(self, before_id: int, limit: int) -> list[Audit]:
        """Audit entries older than `before_id`, newest first."""
        rows = await self.engine.fetch(
            f"SELECT {AUDIT_FIELDS} FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
            before_id,
            limit,
        )
        return [to_audit(r) for r in rows]
