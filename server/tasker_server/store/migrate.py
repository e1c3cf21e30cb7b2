"""Schema migrations (Alembic), run programmatically; no ``alembic.ini`` needed.

From code::

    await upgrade(db)            # to head; a no-op when already there
    await current(db)            # revision id in the database, or None when never migrated

From a shell::

    python -m tasker_server.store.migrate --database-url URL [upgrade [REV] | current | heads]

The Alembic CLI works too (for ``revision --autogenerate`` while developing)::

    TASKER_DATABASE_URL=sqlite:///dev.db \\
        alembic -c server/tasker_server/store/migrations/alembic.ini revision --autogenerate -m msg
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from .db import DEFAULT_URL, Database

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current", "head", "main", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Arbitrary constant: serialises concurrent upgrades from servers starting together on PostgreSQL
# (without it both run CREATE TABLE and one fails). SQLite's BEGIN IMMEDIATE already serialises.
_PG_MIGRATION_LOCK = 0x7A5C3E1


def alembic_config() -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    return cfg


def head() -> str:
    """The newest revision shipped with this build."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migration chain must have exactly one head, found {heads}")
    return heads[0]


async def upgrade(db: Database, revision: str = "head") -> None:
    """Migrate ``db`` to ``revision`` in one transaction; safe to call on every start-up."""
    async with db.engine.connect() as conn:
        await conn.run_sync(_upgrade_sync, revision)


async def current(db: Database) -> str | None:
    """The revision recorded in the database (``None`` before the first upgrade)."""
    async with db.engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )


def _upgrade_sync(conn: Connection, revision: str) -> None:
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        # Batch migrations on SQLite copy a table and DROP the original; with foreign keys on,
        # that DROP would fire ON DELETE CASCADE into the children. The pragma is ignored inside
        # a transaction, so flip it on the raw connection before BEGIN.
        _sqlite_foreign_keys(conn, enabled=False)
    try:
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            if sqlite:
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left {len(broken)} dangling foreign keys")
    finally:
        if sqlite:
            _sqlite_foreign_keys(conn, enabled=True)


def _sqlite_foreign_keys(conn: Connection, *, enabled: bool) -> None:
    # ``.connection`` is the pooled DBAPI connection; using it does not autobegin a transaction.
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if enabled else 'OFF'}")
    finally:
        cursor.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m tasker_server.store.migrate``: upgrade (default), current or heads."""
    parser = argparse.ArgumentParser(prog="python -m tasker_server.store.migrate")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show the full error (may include host names)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TASKER_DATABASE_URL", DEFAULT_URL),
        help="default: $TASKER_DATABASE_URL or %(default)s",
    )
    sub = parser.add_subparsers(dest="command")
    up = sub.add_parser("upgrade", help="migrate to a revision (default head)")
    up.add_argument("revision", nargs="?", default="head")
    sub.add_parser("current", help="print the revision in the database")
    sub.add_parser("heads", help="print the newest revision of this build")
    args = parser.parse_args(argv)

    if args.command == "heads":
        print(head())
        return 0
    try:
        db = Database.from_url(args.database_url)
    except ValueError as exc:
        parser.error(str(exc))
    command_ = args.command or "upgrade"
    try:
        return asyncio.run(_run(db, command_, getattr(args, "revision", "head")))
    except Exception as exc:
        if args.verbose:
            raise
        # Driver messages can carry host names or credentials: name the failure, not its text.
        failure = type(exc).__name__
        print(f"{command_} failed on {db.display_url}: {failure} (-v: details)", file=sys.stderr)
        return 1


async def _run(db: Database, cmd: str, revision: str) -> int:
    try:
        if cmd == "current":
            print(await current(db) or "(none)")
        else:
            await upgrade(db, revision)
            print(f"database at {await current(db)}")
        return 0
    finally:
        await db.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
