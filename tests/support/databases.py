"""Database fixtures: a fresh, migrated database per test on every backend.

- ``db_url``   — parametrised over the backends (ids ``sqlite`` / ``postgres``); a URL to a fresh,
  migrated database. ``TASKER_TEST_BACKENDS=sqlite`` (comma list) limits the backends.
- ``database`` — a connected :class:`Database` on ``db_url`` (disposed after the test).
- ``pg_url``   — like ``db_url`` but PostgreSQL only (for SKIP LOCKED, LISTEN/NOTIFY, …).
- ``pg_cluster`` — the session's throwaway PostgreSQL cluster. Skipped when PostgreSQL is not
  installed, unless ``TASKER_REQUIRE_POSTGRES`` is set (CI), which turns that into a failure.

The URL fixtures are synchronous on purpose: pytest-asyncio cannot resolve an async fixture through
``request.getfixturevalue`` from inside another async fixture, and ``db_url`` resolves the
PostgreSQL fixtures lazily so that sqlite-only runs never start a server. Their few async calls run
on a private event loop in a worker thread.

Migrations run once per session per backend; each test gets a copy (PostgreSQL:
``CREATE DATABASE … TEMPLATE``; SQLite: a copy of the migrated file), so tests cost milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import pytest

from tasker_server.store.db import Database
from tasker_server.store.migrate import upgrade
from tests.support.postgres import PostgresCluster, find_bin_dir

ALL_BACKENDS = ("sqlite", "postgres")
_TEMPLATE_DB = "tasker_template"
_counter = itertools.count(1)
T = TypeVar("T")


def _backends() -> list[str]:
    wanted = os.environ.get("TASKER_TEST_BACKENDS")
    if not wanted:
        return list(ALL_BACKENDS)
    chosen = [b.strip() for b in wanted.split(",") if b.strip()]
    unknown = set(chosen) - set(ALL_BACKENDS)
    if unknown:
        raise pytest.UsageError(f"TASKER_TEST_BACKENDS: unknown backends {sorted(unknown)}")
    return chosen


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh loop in a worker thread (see module docstring)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _admin(cluster: PostgresCluster, sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(cluster.url("postgres"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run(go())


async def _migrate(url: str) -> None:
    db = Database.from_url(url)
    try:
        await upgrade(db)
    finally:
        # Connections to a template database make CREATE DATABASE … TEMPLATE fail; to a SQLite
        # file they leave the WAL unmerged, so the copy would miss the schema.
        await db.dispose()


def require_pg_bin_dir() -> Path:
    """PostgreSQL's bin dir; skips the test when it is absent, fails if TASKER_REQUIRE_POSTGRES."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        message = "PostgreSQL binaries (initdb, postgres) not found on PATH or /usr/lib/postgresql"
        if os.environ.get("TASKER_REQUIRE_POSTGRES"):
            pytest.fail(f"TASKER_REQUIRE_POSTGRES is set but {message}")
        pytest.skip(message)
    return bin_dir


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(require_pg_bin_dir())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_template(pg_cluster: PostgresCluster) -> str:
    """Name of a migrated database to copy from."""
    _admin(pg_cluster, f"CREATE DATABASE {_TEMPLATE_DB}")
    _run(_migrate(pg_cluster.url(_TEMPLATE_DB)))
    return _TEMPLATE_DB


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a migrated SQLite file to copy from."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    _run(_migrate(f"sqlite:///{path}"))
    return path


def _copy_pg_template(cluster: PostgresCluster, template: str) -> str:
    name = f"t{next(_counter)}"
    _admin(cluster, f"CREATE DATABASE {name} TEMPLATE {template}")
    return name


def _drop_pg(cluster: PostgresCluster, name: str) -> None:
    # FORCE: a test that leaked a connection must not break the run.
    _admin(cluster, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=_backends())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL (plain ``sqlite:///`` or ``postgresql://``) to a fresh, migrated database."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "tasker.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
    else:
        # Resolved lazily so that sqlite-only runs never start PostgreSQL.
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        pg_template_name: str = request.getfixturevalue("pg_template")
        name = _copy_pg_template(cluster, pg_template_name)
        try:
            yield cluster.url(name)
        finally:
            _drop_pg(cluster, name)


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster, pg_template: str) -> Iterator[str]:
    """A URL to a fresh, migrated PostgreSQL database (PostgreSQL-only tests)."""
    name = _copy_pg_template(pg_cluster, pg_template)
    try:
        yield pg_cluster.url(name)
    finally:
        _drop_pg(pg_cluster, name)


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    """A connected :class:`Database` on ``db_url``; disposed after the test."""
    db = Database.from_url(db_url)
    try:
        yield db
    finally:
        await db.dispose()
