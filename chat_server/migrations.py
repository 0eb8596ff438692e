"""The migration runner over the top-level `sql/<engine>/NNN_name.sql` files.

Migrations are numbered and append-only; `schema_migrations` records which
ones a database has. The only statements here are that bookkeeping and the
lock that serialises it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .engines import Engine
from .models import now_ms

# Arbitrary constant naming the advisory lock that serialises migrations.
MIGRATION_LOCK_ID = 0x43484154


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def _migrations_dir(engine: str) -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):  # installed, then checkout
        if (candidate / engine).is_dir():
            return candidate / engine
    raise FileNotFoundError(f"no migrations folder for {engine}")


def load_migrations(engine: str) -> list[Migration]:
    found = []
    for path in sorted(_migrations_dir(engine).glob("*.sql")):
        number, _, name = path.stem.partition("_")
        found.append(Migration(int(number), name, path.read_text()))
    return found


async def migrate(engine: Engine) -> list[int]:
    """Apply pending migrations in one transaction; returns the versions applied.

    PostgreSQL takes a transaction-scoped advisory lock first and SQLite's
    BEGIN IMMEDIATE takes the write lock, so processes starting together
    apply each migration once.
    """
    async with engine.transaction() as tx:
        if engine.name == "postgres":
            await tx.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
        )
        applied = {r["version"] for r in await tx.fetch("SELECT version FROM schema_migrations")}
        done = []
        for migration in load_migrations(engine.name):
            if migration.version in applied:
                continue
            await engine.run_script(tx, migration.sql)
            await tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                now_ms(),
            )
            done.append(migration.version)
        return done
