"""Alembic environment.

Two entry points:

- programmatic (``tasker_server.store.migrate``): a sync ``Connection`` is passed in
  ``config.attributes["connection"]``, already inside the caller's transaction;
- the ``alembic`` CLI: the URL comes from ``TASKER_DATABASE_URL`` (default: the SQLite file),
  and an async engine is created here.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection

from tasker_server.store.db import DEFAULT_URL, Database, normalize_url
from tasker_server.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    db = Database.from_url(url)
    try:
        async with db.engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await db.dispose()


def _url() -> str:
    return os.environ.get("TASKER_DATABASE_URL", DEFAULT_URL)


if context.is_offline_mode():
    context.configure(
        url=normalize_url(_url()),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=normalize_url(_url()).get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
    else:
        asyncio.run(_run_from_url(_url()))
