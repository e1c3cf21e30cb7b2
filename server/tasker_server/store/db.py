"""Connection management: one ``Database`` per process, one ``AsyncSession`` per unit of work.

Accepted URLs (normalised to the asyncio drivers, so operators can paste what they know):

==========================================  ==========================================
given                                       used
==========================================  ==========================================
``sqlite:///path/to/file.db``               ``sqlite+aiosqlite:///path/to/file.db``
``sqlite+aiosqlite:///path``                unchanged
``postgres://u:p@host/db``                  ``postgresql+asyncpg://u:p@host/db``
``postgresql://…``                          ``postgresql+asyncpg://…``
``postgresql+asyncpg://…``                  unchanged
==========================================  ==========================================

In-memory SQLite is refused: every pooled connection would see its own empty database.

SQLite transactions all start with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe: the driver's
own transaction handling is switched off and a ``begin`` listener emits ours). That takes the write
lock up front, so a read-then-write (a claim) can never interleave with another writer; waiting is
bounded by ``busy_timeout``. Read-only sessions (``session(read_only=True)``) use a deferred
``BEGIN`` so that readers do not queue behind writers (WAL lets them run concurrently).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from tasker_server.domain.errors import Unavailable

# AsyncSession is re-exported: the engine passes a unit of work back into store functions, and
# only store/ imports SQLAlchemy.
__all__ = ["DEFAULT_URL", "AsyncSession", "Database", "normalize_url"]

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite+aiosqlite:///tasker.db"
"""Zero-config default: a SQLite file in the working directory."""

Dialect = Literal["sqlite", "postgresql"]

# Execution option read by the SQLite ``begin`` listener (see module docstring).
_READ_ONLY = "tasker_read_only"

_SQLITE_PRAGMAS = (
    # WAL: readers never block the writer and vice versa.
    "PRAGMA journal_mode=WAL",
    # Wait for the write lock instead of failing at once with "database is locked".
    "PRAGMA busy_timeout=10000",
    # SQLite ignores FOREIGN KEY clauses (and ON DELETE CASCADE) unless asked, per connection.
    "PRAGMA foreign_keys=ON",
    # Safe with WAL (no corruption on power loss, only the last commits may roll back).
    "PRAGMA synchronous=NORMAL",
)


def normalize_url(url: str) -> URL:
    """Parse ``url`` and pick the asyncio driver (see the module docstring for the mapping).

    Raises ``ValueError`` with a message that never repeats the URL (it may carry a password).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("database URL is not a valid URL") from None
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        if parsed.drivername not in ("postgres", "postgresql", "postgresql+asyncpg"):
            raise ValueError("PostgreSQL URLs must use the asyncpg driver (postgresql://…)")
        return parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        if parsed.drivername not in ("sqlite", "sqlite+aiosqlite"):
            raise ValueError("SQLite URLs must use the aiosqlite driver (sqlite:///path)")
        if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed.query):
            raise ValueError("in-memory SQLite is not supported; give a file (sqlite:///path)")
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ValueError("unsupported database; use sqlite:///path or postgresql://…")


class Database:
    """An async engine plus a session factory. Create with :meth:`from_url`; close with
    :meth:`dispose`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Identifies this process in change notifications (PostgreSQL NOTIFY) so that a replica
        # does not wake itself for its own commits.
        self.origin = ""
        self._write_gate = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        read_only: dict[str, Any] = {_READ_ONLY: True}
        if engine.dialect.name == "postgresql":
            # A read that spans several statements (GetTask: task, steps, attempts, transitions)
            # must see one snapshot, not a mix of before and after a concurrent commit.
            read_only["isolation_level"] = "REPEATABLE READ"
            read_only["postgresql_readonly"] = True
        self._read_only_sessions = async_sessionmaker(
            engine.execution_options(**read_only), expire_on_commit=False
        )

    @classmethod
    def from_url(cls, url: str = DEFAULT_URL, *, echo: bool = False) -> Database:
        """Build a ``Database`` for ``url`` (plain ``postgresql://``/``sqlite:///`` accepted)."""
        parsed = normalize_url(url)
        if parsed.get_backend_name() == "sqlite":
            engine = create_async_engine(parsed, echo=echo)
            _install_sqlite_hooks(engine)
        else:
            engine = create_async_engine(
                parsed,
                echo=echo,
                pool_size=10,
                max_overflow=10,
                # No pre-ping: it costs a round trip on every checkout (the hot path checks out a
                # connection per batch). A connection that died with a restarted PostgreSQL fails
                # its unit of work, which the engine's loops retry, and the pool replaces it.
                pool_pre_ping=False,
                # Sessions always end in COMMIT or ROLLBACK; the pool's extra ROLLBACK on return
                # would be one more round trip per unit of work.
                pool_reset_on_return=None,
                # Recycle before typical idle-connection killers (PgBouncer, cloud LBs) strike.
                pool_recycle=1800,
                # asyncpg waits 60 s by default for a connection; fail sooner and let callers retry.
                connect_args={"timeout": 10},
            )
        return cls(engine)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def dialect(self) -> Dialect:
        name = self._engine.dialect.name
        assert name in ("sqlite", "postgresql")
        return name  # type: ignore[return-value]

    @property
    def display_url(self) -> str:
        """The URL with the password masked; safe for logs."""
        return self._engine.url.render_as_string(hide_password=True)

    @asynccontextmanager
    async def session(self, *, read_only: bool = False) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on normal exit, rolled back on error.

        Connection-level failures (server down, connection lost, SQLite lock wait exhausted)
        surface as the domain's :class:`Unavailable` with a generic message; the driver's text stays
        in ``__cause__`` for logs only. Other errors (IntegrityError, …) pass through for the
        queries to map.

        ``read_only=True`` only changes SQLite's locking (deferred ``BEGIN``); writing in such a
        session may fail with "database is locked" under contention.
        """
        factory = self._read_only_sessions if read_only else self._sessions
        # SQLite has one writer. Queue writers in-process (fair, no busy polling) instead of
        # letting them spin in busy_timeout and time out under load; readers (WAL) go straight.
        gate = self._write_gate if self._write_gate is not None and not read_only else None
        held = False
        try:
            if gate is not None:
                await gate.acquire()
                held = True
            async with factory() as session, session.begin():
                session.info["origin"] = self.origin
                yield session
        except (OperationalError, InterfaceError, OSError) as exc:
            raise Unavailable("the database is unavailable", reason="DATABASE_UNAVAILABLE") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated or _outage_sqlstate(exc):
                raise Unavailable(
                    "the database is unavailable", reason="DATABASE_UNAVAILABLE"
                ) from exc
            raise
        finally:
            if held and gate is not None:
                gate.release()

    async def ping(self, timeout_seconds: float = 2.0) -> bool:
        """``SELECT 1`` within ``timeout_seconds``. Never raises: any failure is ``False``."""
        try:
            async with asyncio.timeout(timeout_seconds):
                conn_factory = self._engine.execution_options(**{_READ_ONLY: True})
                async with conn_factory.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            return True
        except Exception as exc:
            # Type only: driver messages can carry host names or credentials.
            log.warning("database ping failed: %s", type(exc).__name__)
            return False

    async def dispose(self) -> None:
        """Close every pooled connection. The ``Database`` must not be used afterwards."""
        await self._engine.dispose()


# SQLSTATEs that say "the server is going away, restarting or full", not "your statement is wrong":
# connection exceptions (class 08), operator intervention (57P01 admin shutdown, 57P02 crash
# shutdown, 57P03 cannot connect now — a PostgreSQL still starting up) and insufficient resources
# (class 53, e.g. too many connections). asyncpg raises them as ordinary errors, so without this a
# database restart surfaced as INTERNAL instead of UNAVAILABLE.
_OUTAGE_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03", "53")


def _outage_sqlstate(exc: DBAPIError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(_OUTAGE_SQLSTATE_PREFIXES)


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the driver (the recipe's first half); with it,
        # PRAGMA journal_mode also runs outside a transaction as it must.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
