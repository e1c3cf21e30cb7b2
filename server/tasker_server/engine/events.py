"""What this replica tells the rest of the process after a commit that wrote events, and the
durable event log as watchers read it.

Watchers (``WatchEvents``, ``WatchTask``) wait on the bus's signal and re-read the log
(``EventLog.follow``); subscribers (metrics, the correlation cache of the tracing interceptor) get
the written events themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from tasker_server.domain import errors
from tasker_server.store.db import Database
from tasker_server.store.events import events_after, last_sequence, pruned_through
from tasker_server.store.journal import Journal
from tasker_server.store.models import Event

__all__ = ["EventBus", "EventLog"]

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


class EventLog:
    """Reads of the durable event log for watchers, woken by ``bus``."""

    def __init__(self, db: Database, bus: EventBus) -> None:
        self.db = db
        self._bus = bus

    async def live_end(self) -> int:
        """The sequence of the last event: a watcher starting here sees only new events."""
        async with self.db.session(read_only=True) as s:
            return await last_sequence(s)

    async def resume_point(self, after: int) -> int:
        """Where a watch resumes: ``after``, or the log's end if ``after`` is beyond it. No client
        can have seen events that were never written; a sequence from the future would otherwise
        hide every event until the log caught up with it, the end of the watched task included."""
        if after <= 0:
            return after
        return min(after, await self.live_end())

    async def check_retention(self, after: int) -> None:
        """OUT_OF_RANGE when events after ``after`` may have been pruned (retention): resuming
        there would silently skip them."""
        if after <= 0:
            return
        async with self.db.session(read_only=True) as s:
            through = await pruned_through(s)
        if after >= through:
            return
        raise errors.OutOfRange(
            f"events after sequence {after} are no longer retained (pruned through {through}); "
            "replay from 0 or start at the live end",
            reason="EVENTS_PRUNED",
            metadata={"after_sequence": str(after), "pruned_through": str(through)},
        )

    async def follow(
        self,
        after: int,
        *,
        task_id: int | None = None,
        namespaces: Sequence[str] = (),
        names: Sequence[str] = (),
    ) -> AsyncIterator[list[Event]]:
        """Pages of the log after ``after``, in sequence order, read at the caller's pace (a slow
        watcher never slows the engine). An empty page means "caught up"; the next page then
        waits for a commit that wrote events (commits of other replicas: at most a second)."""
        while True:
            signal = self._bus.signal()
            async with self.db.session(read_only=True) as s:
                page = await events_after(
                    s, after, task_id=task_id, namespaces=namespaces, names=names
                )
            yield page
            if page:
                after = page[-1].seq
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancellation
            # of a watcher whose client went away, leaving its stream handler running.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await signal.wait()
