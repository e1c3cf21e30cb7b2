"""Cross-replica wake-ups on PostgreSQL: LISTEN for the change notifications other replicas send.

Every unit of work that changes tasks or steps NOTIFYs ``tasker_changes`` with its replica's
origin (``store/journal.py``). Each replica keeps one dedicated connection LISTENing; a
notification from another replica wakes the dispatcher (a step may have become ready, a task may
have been created there) and the event watchers. SQLite has a single process: nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from tasker_server.store.db import Database
from tasker_server.store.journal import NOTIFY_CHANNEL

__all__ = ["ChangeListener"]

log = logging.getLogger(__name__)

_RECONNECT_SECONDS = 1.0


class ChangeListener:
    def __init__(self, db: Database, on_change: Callable[[], None]) -> None:
        self.db = db
        self.on_change = on_change

    def _notified(self, _conn: Any, _pid: int, _channel: str, origin: str) -> None:
        if origin != self.db.origin:
            self.on_change()

    async def run(self) -> None:
        """Listens until cancelled (PostgreSQL only), reconnecting after a lost connection."""
        while True:
            try:
                async with self.db.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver: Any = raw.driver_connection
                    await driver.add_listener(NOTIFY_CHANNEL, self._notified)
                    # Changes made while not listening are caught by one wake-up now.
                    self.on_change()
                    closed = asyncio.Event()
                    driver.add_termination_listener(lambda _conn, done=closed: done.set())
                    try:
                        await closed.wait()
                    finally:
                        with contextlib.suppress(Exception):
                            await driver.remove_listener(NOTIFY_CHANNEL, self._notified)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("change listener lost its connection: %s", type(exc).__name__)
            await asyncio.sleep(_RECONNECT_SECONDS)
