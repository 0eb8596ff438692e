"""The two database engines: an asyncpg pool and a pair of aiosqlite connections.

Both offer the same asyncpg-style `Conn` (fetch, fetchrow, fetchval, execute),
`write()` for one autocommitted statement and `transaction()`, and raise the
same exceptions: `UniqueViolation` for a unique constraint,
`DatabaseUnavailable` for a driver outage and its `StorageFull` for a full disk
(which the engine also remembers for readiness: `storage_full()`). What differs: SQLite gets `$n`
parameters rewritten to `?n`, has one writer connection behind a lock (reads
go to a second connection; WAL lets them overlap) and binds id lists as JSON
(`in_ids`); PostgreSQL binds them as arrays and commits writes that arrive
together in one statement when the caller offers one (`group_commit`).

This is the only module that imports a driver. The application's SQL lives in
db.py; the statements here only open, commit and roll back transactions and
set connection pragmas.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import re
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

import aiosqlite
import asyncpg

Row = Any  # asyncpg.Record or sqlite3.Row: both index by column name

# Connections kept open to PostgreSQL per process; sends hold one for a
# transaction of a few statements, so 10 keeps 2 cores busy.
PG_POOL_SIZE = 10
# How long a SQLite connection waits on another process's write lock.
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Most items committed by one group-commit statement, and how many such
# statements may run at once (a second one overlaps the first's commit wait).
GROUP_COMMIT_LIMIT = 200
GROUP_COMMITTERS = 2
# How long readiness reports a full disk after a write failed for lack of space,
# unless a write succeeds first: readiness comes back by itself when space is
# freed while no write arrives to show it (the next failure reports it again).
STORAGE_FULL_HOLD = 30.0

T = TypeVar("T")
R = TypeVar("R")


class UniqueViolation(Exception):
    """An INSERT or UPDATE hit a unique constraint (both engines)."""


class DatabaseUnavailable(OSError):
    """The database cannot be reached now (connection refused or lost, pool closed, ...).

    The query may well succeed later; callers answer 503 and let the client
    retry. An OSError, like most of the driver failures it stands for, so code
    that treats I/O failures as transient (the relay's polling) keeps doing so.
    """


class StorageFull(DatabaseUnavailable):
    """The database cannot grow: its disk is full (SQLITE_FULL, SQLSTATE 53100).

    Reads still work and writes work again once space is freed, without a
    restart: callers answer it like an outage (503, retry later).
    """


# What the drivers raise when the database, not the query, is at fault.
_PG_OUTAGES = (
    OSError,  # refused, reset, timed out (asyncpg's command_timeout is a TimeoutError)
    asyncpg.PostgresConnectionError,  # cannot connect now, connection gone, ...
    asyncpg.InterfaceError,  # pool closed or closing, connection released
    asyncpg.InternalClientError,  # a connection broken mid-query
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.DiskFullError,
)


def _unavailable(exc: BaseException) -> DatabaseUnavailable:
    if _is_storage_full(exc):
        return StorageFull("database storage full")
    # Named by the driver's exception type only: its text may name hosts and users.
    return DatabaseUnavailable(type(exc).__name__)


def _is_storage_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        # Extended result codes (SQLITE_FULL | n << 8) keep the primary code in the low byte.
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    return isinstance(exc, asyncpg.exceptions.DiskFullError)


@contextmanager
def _sqlite_outages() -> Iterator[None]:
    """SQLite's failures of the database, not of the query, as DatabaseUnavailable."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if not _is_storage_full(exc):
            raise  # a bad query, a lock timeout, ...: not an outage
        raise _unavailable(exc) from exc
    except OSError as exc:
        raise _unavailable(exc) from exc


class Conn(ABC):
    """One connection (or a transaction on it) with asyncpg-style methods."""

    @abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    @abstractmethod
    async def execute(self, sql: str, *args: Any) -> None: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]


class Engine(Conn):
    """A database: reads on it directly, writes in `write()` or `transaction()`."""

    name: str
    _storage_full_at: float | None = None

    def storage_full(self) -> bool:
        """True while writes fail for lack of space: one did in the last
        STORAGE_FULL_HOLD seconds, and none has succeeded since."""
        at = self._storage_full_at
        return at is not None and time.monotonic() - at < STORAGE_FULL_HOLD

    @contextmanager
    def _writing(self, *, succeeded: bool = True) -> Iterator[None]:
        """Around statements that write: remembers a failure for lack of space
        and, when `succeeded` says that success proves there is space, forgets it."""
        try:
            yield
        except StorageFull:
            self._storage_full_at = time.monotonic()
            raise
        if succeeded:
            self._storage_full_at = None

    @abstractmethod
    async def write(self, sql: str, *args: Any) -> Row | None:
        """One statement that writes, committed on its own; returns its first row."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Conn]:
        """Async context manager yielding a `Conn` whose work commits together."""

    def group_commit(
        self,
        one: Callable[[T], Awaitable[R]],
        many: Callable[[list[T]], Awaitable[list[R | BaseException] | None]],
    ) -> Callable[[T], Awaitable[R]]:
        """The function that commits one item, given how to commit one and many.

        By default each item goes alone through `one`; PostgreSQL hands items
        arriving together to `many`, in one statement (see `GroupCommit`).
        """
        return one

    @abstractmethod
    def connections_in_use(self) -> int: ...

    @abstractmethod
    def ids_param(self, ids: Sequence[int] | Sequence[str]) -> Any:
        """`ids` as one parameter usable with `in_ids()` (or, strings, `in_texts()`)."""

    @abstractmethod
    def in_ids(self, param: str) -> str:
        """SQL testing membership in the id list bound to `param` (e.g. `$2`)."""

    @abstractmethod
    def in_texts(self, param: str) -> str:
        """Like `in_ids`, for a list of strings (bound with `ids_param()` too)."""

    @abstractmethod
    async def run_script(self, conn: Conn, script: str) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


async def connect(url: str) -> Engine:
    """The engine for a `sqlite:///path` or `postgres://...` URL."""
    if url.startswith("sqlite://"):
        return await SqliteEngine.connect(url)
    return await PostgresEngine.connect(url)


# --- PostgreSQL -------------------------------------------------------------------


class _PgConn(Conn):
    """A pooled connection; the engine that lent it turns outages into DatabaseUnavailable."""

    def __init__(self, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return await self._conn.fetch(sql, *args)
        except asyncpg.UniqueViolationError as exc:
            raise UniqueViolation(str(exc)) from exc

    async def execute(self, sql: str, *args: Any) -> None:
        try:
            await self._conn.execute(sql, *args)
        except asyncpg.UniqueViolationError as exc:
            raise UniqueViolation(str(exc)) from exc


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pool reset hook that skips asyncpg's per-release round trip.

    Safe because nothing here leaves session state on a pooled connection:
    no SET, no session advisory locks, no LISTEN (DESIGN.md).
    """


class PostgresEngine(Engine):
    name = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, url: str) -> PostgresEngine:
        url = "postgresql://" + url.split("://", 1)[1]
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=PG_POOL_SIZE, reset=_no_reset, command_timeout=60
            )
        except _PG_OUTAGES as exc:
            raise _unavailable(exc) from exc
        return cls(pool)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        # Some writes come this way (a group commit's statement), and a sort
        # may spill to disk: a full disk is remembered, a success proves nothing.
        with self._writing(succeeded=False):
            try:
                async with self.pool.acquire() as conn:
                    return await _PgConn(conn).fetch(sql, *args)
            except _PG_OUTAGES as exc:
                raise _unavailable(exc) from exc

    async def execute(self, sql: str, *args: Any) -> None:
        with self._writing():
            try:
                async with self.pool.acquire() as conn:
                    await _PgConn(conn).execute(sql, *args)
            except _PG_OUTAGES as exc:
                raise _unavailable(exc) from exc

    async def write(self, sql: str, *args: Any) -> Row | None:
        # Autocommit: a lone statement commits on its own, in one round trip.
        with self._writing():
            return await self.fetchrow(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        with self._writing():
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    yield _PgConn(conn)
            except DatabaseUnavailable:  # from another engine call inside the transaction
                raise
            except _PG_OUTAGES as exc:  # acquiring, a statement, BEGIN, COMMIT or releasing
                raise _unavailable(exc) from exc

    def group_commit(
        self,
        one: Callable[[T], Awaitable[R]],
        many: Callable[[list[T]], Awaitable[list[R | BaseException] | None]],
    ) -> Callable[[T], Awaitable[R]]:
        return GroupCommit(one, many).submit

    def connections_in_use(self) -> int:
        return self.pool.get_size() - self.pool.get_idle_size()

    def ids_param(self, ids: Sequence[int] | Sequence[str]) -> Any:
        return list(ids)

    def in_ids(self, param: str) -> str:
        return f"= ANY({param}::bigint[])"

    def in_texts(self, param: str) -> str:
        return f"= ANY({param}::text[])"

    async def run_script(self, conn: Conn, script: str) -> None:
        await conn.execute(script)

    async def close(self) -> None:
        await self.pool.close()


class GroupCommit(Generic[T, R]):
    """Group commit: while a statement runs, items queue up and go in the next one.

    On PostgreSQL a commit waits for the WAL flush; sharing one statement (and
    so one commit) among the sends that arrive meanwhile multiplies
    throughput under load and costs nothing when idle (a lone item goes
    through `one`). `many` commits a list in one statement and returns each
    item's result or exception in order, or None when the list cannot go as
    one statement: each item then goes alone through `one`.
    """

    def __init__(
        self,
        one: Callable[[T], Awaitable[R]],
        many: Callable[[list[T]], Awaitable[list[R | BaseException] | None]],
        limit: int = GROUP_COMMIT_LIMIT,
        committers: int = GROUP_COMMITTERS,
    ) -> None:
        self._one = one
        self._many = many
        self._limit = limit
        self._max_committers = committers
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._committers: set[asyncio.Task[None]] = set()

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queues `item`; the future resolves once it is committed (or failed)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._committers) < self._max_committers:
            committer = asyncio.create_task(self._commit_pending())
            self._committers.add(committer)
            committer.add_done_callback(self._committers.discard)
        return future

    async def _commit_pending(self) -> None:
        while self._pending:
            batch = self._pending[: self._limit]
            del self._pending[: self._limit]
            try:
                results = await self._commit([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _commit(self, items: list[T]) -> list[R | BaseException]:
        if len(items) > 1:
            results = await self._many(items)
            if results is not None:
                return results
        return [await self._capture(self._one(item)) for item in items]

    @staticmethod
    async def _capture(result: Awaitable[R]) -> R | BaseException:
        try:
            return await result
        except Exception as exc:
            return exc


# --- SQLite -----------------------------------------------------------------------

_PARAM = re.compile(r"\$(\d+)")
# Row locks: SQLite's single writer already serializes every write transaction.
_ROW_LOCK = re.compile(r"\s+FOR (?:KEY SHARE|SHARE|NO KEY UPDATE|UPDATE)\b")


@functools.lru_cache(maxsize=512)
def _sqlite_sql(sql: str) -> str:
    return _PARAM.sub(r"?\1", _ROW_LOCK.sub("", sql))


class _SqliteConn(Conn):
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            with _sqlite_outages():
                return list(await self._conn.execute_fetchall(_sqlite_sql(sql), args))
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise UniqueViolation(str(exc)) from exc
            raise

    async def execute(self, sql: str, *args: Any) -> None:
        await self.fetch(sql, *args)


class SqliteEngine(Engine):
    """One writer connection behind a lock, one reader: WAL lets them overlap."""

    name = "sqlite"

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = _SqliteConn(reader)
        self._reader_conn = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    async def connect(cls, url: str) -> SqliteEngine:
        # sqlite:///relative/path or sqlite:////absolute/path
        path = Path(unquote(url.removeprefix("sqlite:///")))
        with _sqlite_outages():
            path.parent.mkdir(parents=True, exist_ok=True)
            conns = []
            for _ in range(2):
                conn = await aiosqlite.connect(path, isolation_level=None)
                conn.row_factory = sqlite3.Row
                for pragma in (
                    "PRAGMA journal_mode=WAL",
                    "PRAGMA synchronous=FULL",
                    "PRAGMA foreign_keys=ON",
                    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
                ):
                    await conn.execute(pragma)
                conns.append(conn)
        return cls(*conns)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._reader.fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        async with self.transaction() as tx:
            await tx.execute(sql, *args)

    async def write(self, sql: str, *args: Any) -> Row | None:
        async with self._write_lock:  # autocommit: one call to the database thread
            with self._writing():
                return await _SqliteConn(self._writer).fetchrow(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self._write_lock:
            with self._writing():
                await self._control("BEGIN IMMEDIATE")
                try:
                    yield _SqliteConn(self._writer)
                    await self._control("COMMIT")
                except BaseException:
                    # SQLite may have rolled back already (it does on SQLITE_FULL);
                    # a failed COMMIT may leave the transaction open.
                    if self._writer.in_transaction:
                        await self._control("ROLLBACK")
                    raise

    async def _control(self, statement: str) -> None:
        with _sqlite_outages():
            await self._writer.execute(statement)

    def connections_in_use(self) -> int:
        return 1 if self._write_lock.locked() else 0

    def ids_param(self, ids: Sequence[int] | Sequence[str]) -> Any:
        return json.dumps(list(ids))

    def in_ids(self, param: str) -> str:
        return f"IN (SELECT value FROM json_each({param}))"

    def in_texts(self, param: str) -> str:
        return self.in_ids(param)

    async def run_script(self, conn: Conn, script: str) -> None:
        # executescript() would COMMIT first; split into statements instead
        # (complete_statement knows a trigger body's semicolons are not the end).
        statement = ""
        for line in script.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                await conn.execute(statement)
                statement = ""
        if statement.strip() and not statement.strip().startswith("--"):
            await conn.execute(statement)

    async def close(self) -> None:
        await self._writer.close()
        await self._reader_conn.close()
