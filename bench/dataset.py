"""Seeds a chat database of a given size straight into either engine's schema.

The schema comes from the server's own migrations (``chat_server.migrations``),
applied through the server's engine; then the rows are bulk-loaded in chunks
(PostgreSQL: ``COPY``; SQLite: ``executemany`` with the journal off), so
3 million messages take seconds, not the hours sends through the API would.

What a real send writes is written here too, so the server reads a consistent
database: each message has its room's next ``seq`` and ``pos`` and its
full-text entry (SQLite's FTS5 table; PostgreSQL's generated ``tsvector``),
each membership its ``member.joined`` room event and ``joined_pos``, each room
its ``last_seq``/``last_pos`` (and ``member_count`` when the schema has it),
each member a read marker.

The shape (``Shape``): 5,000 users, 2,000 public rooms; room 1 has 2,000
members and a third of the messages; the first 16 users ("probes", the users
the benchmark logs in as) are members of rooms 1..300, and user 1 owns them.
Other rooms have 10-80 members. A message's room is drawn with weights that
fall off with the room's rank (a few busy rooms, a long tail), its sender is a
member of the room, its body a few words of a Zipf-distributed vocabulary;
``COMMON_WORD`` is in ``common_share`` of the messages, ``RARE_WORD`` in
one of every ``rare_every``. The newest messages are 5 in each probe room,
and a probe's read marker is 5 messages behind in each of its rooms;
everyone else has read everything.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import bcrypt

from bench.targets import PASSWORD
from chat_server import engines
from chat_server.auth import PasswordHasher
from chat_server.migrations import migrate

COMMON_WORD = "weather"
RARE_WORD = "zeppelin"
BIG_ROOM = 1
CHUNK = 50_000
DAY_MS = 86_400_000
# Words of the vocabulary are made of these syllables; neither special word can
# be one (both have letters no syllable ends with in that order).
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


@dataclass(frozen=True)
class Shape:
    messages: int
    users: int = 5_000
    rooms: int = 2_000
    big_room_members: int = 2_000
    big_room_share: float = 1 / 3
    probes: int = 16
    probe_rooms: int = 300
    room_members: tuple[int, int] = (10, 80)
    common_share: float = 0.10
    unread_per_probe_room: int = 5
    seed: int = 20261128

    @property
    def rare_every(self) -> int:
        """One message in 20,000, but at least 10 in all, so small sizes find it too."""
        return max(1, min(20_000, self.messages // 10))


def username(user_id: int) -> str:
    return f"user{user_id}"


def size_label(n: int) -> str:
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1_000_000:g}M"
    if n >= 1_000 and n % 100 == 0:
        return f"{n / 1_000:g}k"
    return str(n)


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


@dataclass
class Seeded:
    """What was loaded: counts, timings, and the facts a check compares the server with."""

    shape: Shape
    seconds: dict[str, float] = field(default_factory=dict)
    last_seq: dict[int, int] = field(default_factory=dict)  # room -> its newest seq
    joins: dict[int, int] = field(default_factory=dict)  # room -> its member.joined count
    members: dict[int, list[int]] = field(default_factory=dict)
    rare_rooms: list[int] = field(default_factory=list)  # the room of each rare-word message
    common_hits: int = 0
    last_body: dict[int, str] = field(default_factory=dict)  # room -> its newest message's body

    def last_pos(self, room_id: int) -> int:
        return self.joins[room_id] + self.last_seq.get(room_id, 0)

    def probe_rooms(self, user_id: int) -> list[int]:
        return [r for r, users in self.members.items() if user_id in users]


# --- the rows -----------------------------------------------------------------------
class Generator:
    """The rows of one dataset, deterministic for a shape; messages come in chunks."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.rng = random.Random(shape.seed)
        self.now = int(time.time() * 1000)
        self.start = self.now - 365 * DAY_MS
        self.seeded = Seeded(shape)
        self._members()
        self._vocabulary()

    def _members(self) -> None:
        s, rng = self.shape, self.rng
        probes = list(range(1, s.probes + 1))
        others = range(s.probes + 1, s.users + 1)
        members: dict[int, list[int]] = {BIG_ROOM: list(range(1, s.big_room_members + 1))}
        for room in range(2, s.rooms + 1):
            k = rng.randint(*s.room_members)
            if room <= s.probe_rooms:
                members[room] = probes + rng.sample(others, max(0, k - len(probes)))
            else:
                members[room] = rng.sample(others, k)
        self.seeded.members = members
        self.seeded.joins = {room: len(users) for room, users in members.items()}

    def _vocabulary(self) -> None:
        rng = self.rng
        syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
        words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(6000)})
        rng.shuffle(words)
        weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(words))))
        self.bodies = [
            " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(3, 16)))
            for _ in range(8192)
        ]

    def password_hash(self) -> str:
        # One bcrypt (cost 4) for everybody: every seeded user logs in with PASSWORD.
        prehashed = PasswordHasher._prehash(PASSWORD)
        return bcrypt.hashpw(prehashed, bcrypt.gensalt(4)).decode()

    def users(self) -> list[tuple[Any, ...]]:
        pw = self.password_hash()
        return [
            (u, username(u), f"User {u}", pw, self.start - DAY_MS)
            for u in range(1, self.shape.users + 1)
        ]

    def rooms(self) -> list[tuple[Any, ...]]:
        """Counters are set after the messages (``Seeded.last_seq``)."""
        return [
            (r, "public", f"room-{r}", users[0], self.start)
            for r, users in self.seeded.members.items()
        ]

    def memberships(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """(members rows, room_events rows): each member's `member.joined` at pos 1, 2, ..."""
        members, events = [], []
        for room, users in self.seeded.members.items():
            for pos, user in enumerate(users, 1):
                role = "owner" if pos == 1 else "member"
                at = self.start + pos
                members.append((room, user, role, at, pos))
                events.append((room, pos, "member.joined", user, role, at))
        return members, events

    def messages(self) -> Iterator[list[tuple[Any, ...]]]:
        """Chunks of (id, room_id, seq, pos, sender_id, body, client_id, created_at), by id."""
        s, rng, seeded = self.shape, self.rng, self.seeded
        rooms = [r for r in seeded.members if r != BIG_ROOM]
        rng.shuffle(rooms)  # which rooms are busy is random
        weights = [1 / (rank + 1) ** 0.8 for rank in range(len(rooms))]
        rest = sum(weights)
        share = s.big_room_share
        cum = list(itertools.accumulate([share * rest / (1 - share), *weights]))
        rooms = [BIG_ROOM, *rooms]
        members = seeded.members
        seq = dict.fromkeys(members, 0)
        joins = seeded.joins
        bodies, n_bodies = self.bodies, len(self.bodies)
        rare_every, rare_at = s.rare_every, s.rare_every // 2
        common = s.common_share
        client_prefix = f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4000-"
        step = (self.now - self.start) / max(1, s.messages)
        # The newest messages: `unread_per_probe_room` in each probe room, so a
        # probe's unread messages (and a resume's missed events) are messages,
        # as many at every size.
        tail = [
            r
            for _ in range(s.unread_per_probe_room)
            for r in rng.sample(range(1, s.probe_rooms + 1), s.probe_rooms)
        ][-s.messages :]
        spread = s.messages - len(tail)

        def rooms_in_id_order() -> Iterator[int]:
            for start in range(0, spread, CHUNK):
                yield from rng.choices(rooms, cum_weights=cum, k=min(CHUNK, spread - start))
            yield from tail

        order = rooms_in_id_order()
        next_id = 1
        while next_id <= s.messages:
            chunk = []
            for room in itertools.islice(order, CHUNK):
                body = bodies[rng.randrange(n_bodies)]
                if rng.random() < common:
                    body = f"{body} {COMMON_WORD}"
                    seeded.common_hits += 1
                if next_id % rare_every == rare_at:
                    body = f"{RARE_WORD} {body}"
                    seeded.rare_rooms.append(room)
                seq[room] += 1
                n_seq = seq[room]
                chunk.append(
                    (
                        next_id,
                        room,
                        n_seq,
                        joins[room] + n_seq,
                        rng.choice(members[room]),
                        body,
                        f"{client_prefix}{next_id:016x}",
                        int(self.start + next_id * step),
                    )
                )
                seeded.last_body[room] = body
                next_id += 1
            yield chunk
        seeded.last_seq = {r: n for r, n in seq.items() if n}


USER_COLS = ("id", "username", "display_name", "password_hash", "created_at")
ROOM_COLS = ("id", "kind", "name", "created_by", "created_at")
MEMBER_COLS = ("room_id", "user_id", "role", "joined_at", "joined_pos")
EVENT_COLS = ("room_id", "pos", "type", "user_id", "detail", "created_at")
MESSAGE_COLS = ("id", "room_id", "seq", "pos", "sender_id", "body", "client_id", "created_at")


# --- loading ------------------------------------------------------------------------
async def seed(url: str, shape: Shape) -> Seeded:
    """Creates the schema with the server's migrations at `url` (an empty
    database), then loads the dataset. Prints nothing; `Seeded.seconds` has
    the time each phase took."""
    t0 = time.monotonic()
    engine = await engines.connect(url)
    try:
        await migrate(engine)
    finally:
        await engine.close()
    gen = Generator(shape)
    gen.seeded.seconds["migrate"] = round(time.monotonic() - t0, 2)
    if url.startswith("sqlite:"):
        path = Path(unquote(url.removeprefix("sqlite:///")))
        await asyncio.to_thread(_load_sqlite, path, gen)
    else:
        await _load_postgres(url, gen)
    gen.seeded.seconds["total"] = round(time.monotonic() - t0, 2)
    return gen.seeded


def _ahead(chunks: Iterator[list[tuple[Any, ...]]]) -> Iterator[list[tuple[Any, ...]]]:
    """The chunks, each next one generated in a thread while the caller loads
    this one (sqlite3 and the PostgreSQL backend work without the GIL, so the
    two overlap); two chunks in memory at most."""
    with ThreadPoolExecutor(1, thread_name_prefix="dataset") as pool:
        pending = pool.submit(next, chunks, None)
        while (chunk := pending.result()) is not None:
            pending = pool.submit(next, chunks, None)
            yield chunk


def _placeholders(cols: Sequence[str]) -> str:
    return ", ".join("?" for _ in cols)


def _insert(table: str, cols: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({_placeholders(cols)})"


def _counters(seeded: Seeded) -> list[tuple[int, int, int]]:
    return [(seeded.last_seq.get(r, 0), seeded.last_pos(r), r) for r in seeded.members]


def _load_sqlite(path: Path, gen: Generator) -> None:
    """One connection, no journal, no fsync; the FTS index and the heavy indexes
    are built once after the rows instead of row by row; the triggers a send
    fires are dropped meanwhile and put back exactly as the migrations made them."""
    seconds, seeded = gen.seeded.seconds, gen.seeded
    db = sqlite3.connect(path, isolation_level=None)
    try:
        if db.execute("SELECT count(*) FROM users").fetchone()[0]:
            raise RuntimeError(f"{path} already has users: seed an empty database")
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-262144")  # 256 MiB
        db.execute("PRAGMA temp_store=MEMORY")
        saved = db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'messages'"
            " AND type IN ('trigger', 'index') AND sql IS NOT NULL"
        ).fetchall()
        for kind, name, _ in saved:
            db.execute(f"DROP {kind.upper()} {name}")
        t = time.monotonic()
        db.execute("BEGIN")
        db.executemany(_insert("users", USER_COLS), gen.users())
        db.executemany(_insert("rooms", ROOM_COLS), gen.rooms())
        members, events = gen.memberships()
        db.executemany(_insert("members", MEMBER_COLS), members)
        db.executemany(
            _insert("room_events", EVENT_COLS),
            ((r, p, k, u, d, at) for r, p, k, u, d, at in events),
        )
        for chunk in _ahead(gen.messages()):
            db.executemany(_insert("messages", MESSAGE_COLS), chunk)
        db.execute("COMMIT")
        seconds["rows"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        # The index's columns as this schema has them (room_id since 010), all indexed
        # (fts_indexed since 011: search indexes what is past the mark first).
        fts = (
            "rowid, body, room_id" if _has_column(db, "messages_fts", "room_id") else "rowid, body"
        )
        db.execute(
            f"INSERT INTO messages_fts ({fts}) SELECT {fts.replace('rowid', 'id')} FROM messages"
        )
        if _has_column(db, "fts_indexed", "upto"):
            db.execute("UPDATE fts_indexed SET upto = (SELECT coalesce(max(id), 0) FROM messages)")
        seconds["fts"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        db.execute("BEGIN")
        for _, _, sql in sorted(saved, key=lambda row: row[0] != "index"):
            db.execute(sql)
        db.executemany(
            "UPDATE rooms SET last_seq = ?, last_pos = ? WHERE id = ?", _counters(seeded)
        )
        _set_read_markers(db.execute, gen.shape, "max")
        if _has_column(db, "rooms", "member_count"):
            db.execute(
                "UPDATE rooms SET member_count ="
                " (SELECT count(*) FROM members m WHERE m.room_id = rooms.id)"
            )
        db.execute("COMMIT")
        seconds["indexes"] = round(time.monotonic() - t, 2)
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()


def _has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))


def _set_read_markers(execute: Any, shape: Shape, greatest: str) -> Any:
    """Everyone has read everything, but the probes are `unread_per_probe_room` behind."""
    return execute(
        "UPDATE members SET last_read_seq = (SELECT CASE WHEN members.user_id <= "
        f"{int(shape.probes)} THEN {greatest}(r.last_seq - {int(shape.unread_per_probe_room)}, 0)"
        " ELSE r.last_seq END FROM rooms r WHERE r.id = members.room_id)"
    )


async def _load_postgres(url: str, gen: Generator) -> None:
    """COPY with foreign-key triggers off (session_replication_role: the rows
    are consistent by construction); the messages' secondary indexes (the GIN
    one above all) are dropped during the COPY and rebuilt after; then
    VACUUM ANALYZE, which autovacuum would do to a table this size."""
    import asyncpg

    seconds, seeded = gen.seeded.seconds, gen.seeded
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT count(*) FROM users"):
            raise RuntimeError("the database already has users: seed an empty database")
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        saved = await conn.fetch(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i"
            " WHERE i.tablename = 'messages' AND i.schemaname = current_schema()"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
        )
        unique = await conn.fetch(
            "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
            " WHERE conrelid = 'messages'::regclass AND contype = 'u'"
        )
        for row in saved:
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')
        for row in unique:
            await conn.execute(f'ALTER TABLE messages DROP CONSTRAINT "{row["conname"]}"')
        t = time.monotonic()
        await conn.copy_records_to_table("users", records=gen.users(), columns=USER_COLS)
        await conn.copy_records_to_table("rooms", records=gen.rooms(), columns=ROOM_COLS)
        members, events = gen.memberships()
        await conn.copy_records_to_table("members", records=members, columns=MEMBER_COLS)
        await conn.copy_records_to_table("room_events", records=events, columns=EVENT_COLS)
        chunks = gen.messages()
        with ThreadPoolExecutor(1, thread_name_prefix="dataset") as pool:
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(pool, next, chunks, None)
            while (chunk := await pending) is not None:  # as _ahead, without blocking the loop
                pending = loop.run_in_executor(pool, next, chunks, None)
                await conn.copy_records_to_table("messages", records=chunk, columns=MESSAGE_COLS)
        seconds["rows"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        for row in unique:
            await conn.execute(
                f'ALTER TABLE messages ADD CONSTRAINT "{row["conname"]}" {row["def"]}'
            )
        for row in saved:
            await conn.execute(row["indexdef"])
        seconds["indexes"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        async with conn.transaction():
            await conn.executemany(
                "UPDATE rooms SET last_seq = $1, last_pos = $2 WHERE id = $3", _counters(seeded)
            )
            await _set_read_markers(conn.execute, gen.shape, "greatest")
            has_count = await conn.fetchval(
                "SELECT 1 FROM information_schema.columns"
                " WHERE table_name = 'rooms' AND column_name = 'member_count'"
            )
            if has_count:
                await conn.execute(
                    "UPDATE rooms SET member_count ="
                    " (SELECT count(*) FROM members m WHERE m.room_id = rooms.id)"
                )
            for table in ("users", "rooms", "messages"):
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT max(id) FROM {table}))"
                )
        await conn.execute("VACUUM ANALYZE")
        seconds["vacuum_analyze"] = round(time.monotonic() - t, 2)
    finally:
        await conn.close()


async def disk_bytes(url: str) -> int:
    """The database's size on disk (SQLite: the file and its WAL)."""
    if url.startswith("sqlite:"):
        path = Path(unquote(url.removeprefix("sqlite:///")))
        return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        size: int = await conn.fetchval("SELECT pg_database_size(current_database())")
        return size
    finally:
        await conn.close()


def main() -> None:
    """``python -m bench.dataset 3M sqlite:///tmp/chat.db`` (or a PostgreSQL URL of an
    empty database): seeds it and prints the time each phase took."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench.dataset", description=main.__doc__)
    ap.add_argument("messages", help="how many messages, e.g. 10k, 300k, 3M")
    ap.add_argument("url", help="sqlite:///path or postgresql://... (an empty database)")
    args = ap.parse_args()
    shape = Shape(messages=parse_size(args.messages))
    seeded = asyncio.run(seed(args.url, shape))
    size = asyncio.run(disk_bytes(args.url))
    print(
        f"{shape.messages:,} messages in {seeded.seconds['total']} s {seeded.seconds};"
        f" {size / 2**20:,.0f} MiB on disk; rare word in {len(seeded.rare_rooms)} messages,"
        f" common word in {seeded.common_hits:,}"
    )


if __name__ == "__main__":
    main()
