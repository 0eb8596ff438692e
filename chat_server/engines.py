"""The two database engines: an asyncpg pool, and SQLite connections each on its own thread.

Both offer the same asyncpg-style `Conn` (fetch, fetchrow, fetchval, execute),
`write()` for one autocommitted statement and `transaction()`, and raise the
same exceptions: `UniqueViolation` for a unique constraint,
`DatabaseUnavailable` for a driver outage and its `StorageFull` for a full disk
(which the engine also remembers for readiness: `storage_full()`). What differs: SQLite gets `$n`
parameters rewritten to `?n`, has one writer connection behind a lock (reads
go to a small pool of read-only connections; WAL lets them overlap), commits
the writes `atomic()` queues together in one transaction (one fsync) and
binds id lists as JSON (`in_ids`); PostgreSQL binds them as arrays and commits
writes that arrive together in one statement when the caller offers one
(`group_commit`).

This is the only module that imports a driver (asyncpg, sqlite3). The application's SQL lives in
db.py; the statements here only open, commit and roll back transactions and
set connection pragmas.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import queue
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

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
# SQLite: items that may wait for the next batch (a batch of 200 commits in a
# few ms, so this keeps any caller's wait short) before submitters queue up.
GROUP_COMMIT_QUEUE = 1000
# SQLite read connections, each with its own thread: a slow read (a big search)
# holds one while the others keep answering. WAL lets them read while the
# writer writes; more than a few only contend for the GIL on 1-2 cores.
SQLITE_READERS = 3
# How long readiness reports a full disk after a write failed for lack of space,
# unless a write succeeds first: readiness comes back by itself when space is
# freed while no write arrives to show it (the next failure reports it again).
STORAGE_FULL_HOLD = 30.0

T = TypeVar("T")
R = TypeVar("R")
# A transaction's work, given the transaction (see `Engine.atomic`).
Step = Callable[["Conn"], Awaitable[R]]


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

    async def atomic(self, step: Step[R]) -> R:
        """`step(tx)` in a transaction of its own; its result.

        SQLite commits the steps arriving together in one transaction, each in
        a savepoint (see `SqliteGroupCommit`): there `step` must await nothing
        but `tx` (and helpers that only use `tx`).
        """
        async with self.transaction() as tx:
            return await step(tx)

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
            # No inactivity expiry: asyncpg would arm and cancel a timer on every
            # release and acquire (a few per cent of a send's time on the loop).
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=PG_POOL_SIZE,
                reset=_no_reset,
                command_timeout=60,
                max_inactive_connection_lifetime=0,
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

    async def fetch_custom_plan(self, sql: str, *args: Any) -> list[Row]:
        """A read planned for its own arguments every time: a cached generic plan
        cannot see how common a full-text search's word is (and may walk every
        match). A read-only transaction, so its success proves nothing of disk space."""
        with self._writing(succeeded=False):
            try:
                async with self.pool.acquire() as conn, conn.transaction(readonly=True):
                    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
                    return await _PgConn(conn).fetch(sql, *args)
            except _PG_OUTAGES as exc:
                raise _unavailable(exc) from exc

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


def _sqlite_fetch(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    """One statement on `conn`, in its thread, with the engines' exceptions
    (`_sqlite_outages` inlined: this runs for every statement)."""
    try:
        return conn.execute(_sqlite_sql(sql), args).fetchall()
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" in str(exc):
            raise UniqueViolation(str(exc)) from exc
        raise
    except sqlite3.OperationalError as exc:
        if not _is_storage_full(exc):
            raise  # a bad query, a lock timeout, ...: not an outage
        raise _unavailable(exc) from exc
    except OSError as exc:
        raise _unavailable(exc) from exc


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():  # its caller gave up; the work was done all the same
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)


class _SqliteThread:
    """One sqlite3 connection and the one thread that uses it.

    `call(fn, *args)` runs `fn(connection, *args)` there and resolves with its
    result: a whole function per hop, so a group commit's batch costs one hop,
    not one per statement.
    """

    def __init__(self, path: Path, pragmas: Sequence[str]) -> None:
        self._path = path
        self._pragmas = pragmas
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._conn: Any = None  # a sqlite3.Connection once `open()` returned
        self._closed = False
        threading.Thread(target=self._work, name="sqlite", daemon=True).start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def _open(self, _: None) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        for pragma in self._pragmas:
            conn.execute(pragma)
        self._conn = conn

    async def open(self) -> None:
        await self.call(self._open)

    def call(self, fn: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if self._closed:
            future.set_exception(DatabaseUnavailable("database closed"))
            return future

        def job() -> None:
            try:
                result, exc = fn(self._conn, *args), None
            except BaseException as error:
                result, exc = None, error
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, result, exc)

        self._jobs.put(job)
        return future

    async def close(self) -> None:
        if self._conn is not None:
            await self.call(sqlite3.Connection.close)
        self._closed = True
        self._jobs.put(None)


class _SqliteConn(Conn):
    """Statements on a `_SqliteThread`'s connection, each one hop to its thread."""

    def __init__(self, thread: _SqliteThread) -> None:
        self._thread = thread

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._thread.call(_sqlite_fetch, sql, args)

    async def execute(self, sql: str, *args: Any) -> None:
        await self.fetch(sql, *args)


class _InThreadConn(Conn):
    """Statements on a connection from inside its own thread: the awaits never
    suspend, so a step written against `Conn` runs to its end in `_run_step`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return _sqlite_fetch(self._conn, sql, args)

    async def execute(self, sql: str, *args: Any) -> None:
        _sqlite_fetch(self._conn, sql, args)


def _run_step(step: Awaitable[R]) -> R:
    """Runs a coroutine that awaits only an `_InThreadConn`, without an event loop."""
    coroutine = step.__await__()
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a batched write step awaited something besides its transaction")


class SqliteEngine(Engine):
    """One writer connection, a pool of readers: WAL lets them overlap.

    Writes take `_write_lock`. The steps `atomic()` queues (sends, reactions,
    read markers) commit together: one transaction per batch, one function on
    the writer's thread.
    """

    name = "sqlite"

    def __init__(self, writer: _SqliteThread, readers: Sequence[_SqliteThread]) -> None:
        self._writer_thread = writer
        self._writer = _SqliteConn(writer)
        self._readers = list(readers)
        self._idle_readers: asyncio.Queue[_SqliteConn] = asyncio.Queue()
        for reader in readers:
            self._idle_readers.put_nowait(_SqliteConn(reader))
        self._write_lock = asyncio.Lock()
        self._group_commit = SqliteGroupCommit(self)

    @classmethod
    async def connect(cls, url: str, readers: int = SQLITE_READERS) -> SqliteEngine:
        # sqlite:///relative/path or sqlite:////absolute/path
        path = Path(unquote(url.removeprefix("sqlite:///")))
        pragmas = (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA foreign_keys=ON",
            f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        )
        # The writer checkpoints every 4,000 WAL pages (16 MiB) rather than SQLite's
        # 1,000: pages rewritten meanwhile (a busy room's) are copied back once.
        threads = [_SqliteThread(path, (*pragmas, "PRAGMA wal_autocheckpoint=4000"))]
        threads += [_SqliteThread(path, (*pragmas, "PRAGMA query_only=ON")) for _ in range(readers)]
        try:
            with _sqlite_outages():
                path.parent.mkdir(parents=True, exist_ok=True)
                for thread in threads:  # the writer first: it may create the file and set WAL
                    await thread.open()
        except BaseException:
            for thread in threads:
                await thread.close()
            raise
        return cls(threads[0], threads[1:])

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        reader = await self._idle_readers.get()
        try:
            return await reader.fetch(sql, *args)
        finally:
            self._idle_readers.put_nowait(reader)

    async def execute(self, sql: str, *args: Any) -> None:
        async with self.transaction() as tx:
            await tx.execute(sql, *args)

    async def write(self, sql: str, *args: Any) -> Row | None:
        async with self._write_lock:  # autocommit: one call to the database thread
            with self._writing():
                return await self._writer.fetchrow(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self._write_lock:
            with self._writing():
                await self._writer.execute("BEGIN IMMEDIATE")
                try:
                    yield self._writer
                    await self._writer.execute("COMMIT")
                except BaseException:
                    await self._writer_thread.call(_rollback)
                    raise

    async def atomic(self, step: Step[R]) -> R:
        return await self._group_commit.submit(step)

    async def _commit_batch(self, steps: list[Step[Any]]) -> list[Any]:
        async with self._write_lock:
            with self._writing():
                return await self._writer_thread.call(_commit_batch, steps)

    def connections_in_use(self) -> int:
        idle = self._idle_readers.qsize()
        return (1 if self._write_lock.locked() else 0) + len(self._readers) - idle

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
        async with self._write_lock:
            for thread in (self._writer_thread, *self._readers):
                await thread.close()


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may have rolled back already (it does on SQLITE_FULL);
    # a failed COMMIT may leave the transaction open.
    if conn.in_transaction:
        with _sqlite_outages():
            conn.execute("ROLLBACK")


def _commit_batch(conn: sqlite3.Connection, steps: list[Step[Any]]) -> list[Any]:
    """On the writer's thread: every step in one transaction, then one COMMIT: one
    fsync for the batch. Returns each step's result or exception.

    Steps rarely fail, so they run plainly first; if one fails, the
    transaction is rolled back and the batch runs again with each step in a
    savepoint (a failing step rolls back only itself). Steps use nothing but
    their transaction, so running one again is running it afresh. An outage,
    or a failure SQLite answered by rolling the whole transaction back, fails
    the batch: nothing in it committed."""
    tx = _InThreadConn(conn)
    with _sqlite_outages():
        conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            results = [_run_step(step(tx)) for step in steps]
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            _rollback(conn)
            if len(steps) == 1:  # alone: its failure is its result
                return [exc]
            with _sqlite_outages():
                conn.execute("BEGIN IMMEDIATE")
            results = [_step_in_savepoint(conn, tx, step) for step in steps]
        with _sqlite_outages():
            conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return results


def _step_in_savepoint(conn: sqlite3.Connection, tx: Conn, step: Step[R]) -> R | Exception:
    """One step of a batch: its failure rolls back its own statements only."""
    conn.execute("SAVEPOINT step")
    try:
        result: R | Exception = _run_step(step(tx))
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        if not conn.in_transaction:  # SQLite rolled the whole transaction back
            raise
        conn.execute("ROLLBACK TO step")
        result = exc
    conn.execute("RELEASE step")
    return result


class SqliteGroupCommit:
    """Group commit on SQLite: while a batch commits, steps queue up for the next.

    With synchronous=FULL every COMMIT waits for an fsync; one COMMIT for all
    the steps that arrived meanwhile turns N fsyncs (and N thread hops per
    statement) into one. Steps run in the order they were submitted, so
    numbering inside them (seq, pos) follows that order, and each caller
    learns its result only after the COMMIT (ack after commit). At most
    `limit` steps go in one batch and at most `queued` wait; further
    submitters wait for room.
    """

    def __init__(
        self,
        engine: SqliteEngine,
        limit: int = GROUP_COMMIT_LIMIT,
        queued: int = GROUP_COMMIT_QUEUE,
    ) -> None:
        self._engine = engine
        self._limit = limit
        self._room = asyncio.Semaphore(queued)
        self._pending: list[tuple[Step[Any], asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def submit(self, step: Step[R]) -> R:
        """Commits `step` with the others queued meanwhile; its result or exception."""
        await self._room.acquire()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((step, future))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_pending())
        return await future

    async def _commit_pending(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._limit]
                del self._pending[: self._limit]
                for _ in batch:
                    self._room.release()
                try:
                    results = await self._engine._commit_batch([step for step, _ in batch])
                except Exception as exc:
                    results = [exc] * len(batch)
                except BaseException:  # cancelled: the engine is closing
                    for _, future in batch:
                        _settle(future, None, DatabaseUnavailable("database closed"))
                    raise
                for (_, future), result in zip(batch, results, strict=True):
                    if isinstance(result, BaseException):
                        _settle(future, None, result)
                    else:
                        _settle(future, result, None)
        finally:
            self._committer = None
            for _, future in self._pending:  # only when cancelled (the engine closing)
                _settle(future, None, DatabaseUnavailable("database closed"))
            self._pending.clear()
