"""What this replica tells the rest of the process after a commit that wrote events.

Watchers (``EventService``) wait on a signal and re-read the durable event log; subscribers
(metrics, the correlation cache of the tracing interceptor) get the written events themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tasker_server.store.journal import Journal

__all__ = ["EventBus"]

log = logging.getLogger(__name__)


class EventBus:
    def __init__(self) -> None:
        self._signal = asyncio.Event()
        self._subscribers: list[Callable[[list[dict[str, Any]]], None]] = []

    def signal(self) -> asyncio.Event:
        """An Event set at the next commit that wrote events."""
        return self._signal

    def notify(self) -> None:
        """Events were committed (here, or by another replica): wakes the current waiters."""
        signal, self._signal = self._signal, asyncio.Event()
        signal.set()

    def subscribe(self, callback: Callable[[list[dict[str, Any]]], None]) -> None:
        """Calls ``callback(events)`` after every commit that wrote events (metrics, bridges)."""
        self._subscribers.append(callback)

    def committed(self, journal: Journal) -> None:
        """To be called after a unit of work that used ``journal`` committed."""
        if not journal.written:
            return
        self.notify()
        for callback in self._subscribers:
            try:
                callback(journal.written)
            except Exception:
                # A subscriber is an observer: its bug must not undo or stall the engine's work.
                log.exception("commit subscriber failed")
