"""The periodic sweep of one replica (every ``sweep_interval_seconds``).

It takes back leases never acknowledged and leases without heartbeats, closes silent streams,
ends leases past their hard deadline in the database (also those of vanished replicas), fails
tasks past their deadline, records worker liveness, prunes events past their retention, applies
other replicas' breaker changes and the ready-queue depth, and wakes the dispatcher for retries
whose backoff elapsed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from tasker_server.config import Settings
from tasker_server.domain.errors import Unavailable
from tasker_server.store.breakers import load_breakers
from tasker_server.store.db import Database
from tasker_server.store.dispatch import expired_leases, ready_depth
from tasker_server.store.events import prune_events
from tasker_server.store.journal import Journal
from tasker_server.store.outcomes import Outcome, OutcomeKind
from tasker_server.store.tasks import fail_overdue_tasks, has_overdue_tasks
from tasker_server.store.types import utcnow
from tasker_server.store.workers import touch_workers

from .breakers import Breakers
from .dispatcher import Dispatcher
from .events import EventBus
from .leases import LeaseRegistry
from .streams import WorkerStream

__all__ = ["DEPTH_INTERVAL_SECONDS", "PRUNE_INTERVAL_SECONDS", "Sweeper"]

log = logging.getLogger(__name__)

DEPTH_INTERVAL_SECONDS = 5.0
PRUNE_INTERVAL_SECONDS = 60.0


class Sweeper:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        streams: dict[str, WorkerStream],
        leases: LeaseRegistry,
        dispatcher: Dispatcher,
        bus: EventBus,
        breakers: Breakers,
        close_stream: Callable[[WorkerStream, str], Awaitable[None]],
    ) -> None:
        self.db = db
        self.settings = settings
        self._streams = streams
        self._leases = leases
        self._dispatcher = dispatcher
        self._bus = bus
        self.breakers = breakers
        self._close_stream = close_stream
        self._started_at = time.monotonic()
        self._breakers_seen: datetime | None = None
        self._next_depth = 0.0
        self._next_prune = 0.0

    def started(self) -> None:
        """The replica starts now: silence is judged from here (see ``_vanished_cutoff``)."""
        self._started_at = time.monotonic()
        self._breakers_seen = utcnow()

    @property
    def lease_ttl_seconds(self) -> float:
        """How long an acknowledged lease lives without a heartbeat."""
        s = self.settings
        return s.heartbeat_interval_seconds * 3 + s.lease_grace_seconds

    @property
    def worker_silence_seconds(self) -> float:
        """How long a worker may go unseen by every replica (the ``workers.last_seen_time`` each
        replica refreshes for its streams, and unary heartbeats refresh) before its leases are
        taken back: a dead stream plus a heartbeat period it could have used to reconnect."""
        return self.settings.keepalive_timeout_seconds + self.lease_ttl_seconds

    def _vanished_cutoff(self) -> datetime | None:
        # A replica that just started has not yet heard from workers reconnecting to it (after a
        # restart they are all "unseen"), and after a database outage no replica could record
        # anyone's liveness: it judges silence only once it has had the database that long.
        silence = self.worker_silence_seconds
        since = max(self._started_at, self._dispatcher.database_since)
        if time.monotonic() - since < silence:
            return None
        return utcnow() - timedelta(seconds=silence)

    async def run(self) -> None:
        """The sweep loop; returns only by cancellation. A failed sweep is logged and the next
        one runs on time; an exception escaping this (a bug) ends the loop, and the supervisor
        (``App``) stops the server."""
        interval = self.settings.sweep_interval_seconds
        next_liveness = 0.0
        while True:
            await asyncio.sleep(interval)
            try:
                await self._sweep_once()
                if time.monotonic() >= next_liveness:
                    next_liveness = time.monotonic() + self.settings.keepalive_interval_seconds
                    await self._record_liveness()
            except asyncio.CancelledError:
                raise
            except Unavailable:
                self._dispatcher.database_lost()
            except Exception:
                log.exception("sweep failed")

    async def _sweep_once(self) -> None:
        now = time.monotonic()
        ack_timeout = self.settings.ack_timeout_seconds
        lease_ttl = self.lease_ttl_seconds
        for stream in list(self._streams.values()):
            if now - stream.last_seen > self.settings.keepalive_timeout_seconds:
                log.warning("worker %s silent; closing its stream", stream.worker_id)
                stream.outbound.put_nowait(None)  # tells the stream handler to end
                await self._close_stream(stream, "keepalive timeout")
                continue
            # A worker that hands its leases to a job queue heartbeats them from the jobs, through
            # any replica and only once a job starts: they run to the hard deadline instead.
            ttl_applies = not stream.hands_off_leases
            for lease in self._leases.held(stream):
                stale = (not lease.acked and now - lease.offered_at > ack_timeout) or (
                    lease.acked and ttl_applies and now - lease.last_heartbeat > lease_ttl
                )
                if stale:
                    self._leases.cancel(lease.lease_id, "lease_expired")
                    kind = OutcomeKind.EXPIRE if lease.acked else OutcomeKind.RELEASE
                    self._dispatcher.submit(
                        Outcome(
                            lease.lease_id,
                            kind,
                            stream.worker_id,
                            message="lease not renewed in time",
                            lost=True,
                        )
                    )
        async with self.db.session(read_only=True) as s:
            expired = await expired_leases(s, utcnow(), self._vanished_cutoff())
            overdue = await has_overdue_tasks(s, utcnow())
        if overdue:
            async with self.db.session() as s:
                journal = Journal()
                overdue_leases = await fail_overdue_tasks(s, journal)
                await journal.flush(s)
            self._bus.committed(journal)
            for lease_id in overdue_leases:
                self._leases.cancel(lease_id, "deadline_exceeded")
            self._dispatcher.wake()
        for lease_id, vanished in expired:
            # Past its hard deadline (step timeout + slack): even a worker that still heartbeats
            # is told to stop, and the attempt counts as a transient failure (timed out).
            owner = self._leases.cancel(lease_id, "timed_out")
            self._dispatcher.submit(
                Outcome(
                    lease_id,
                    OutcomeKind.EXPIRE,
                    owner.worker_id if owner else "",
                    # With a live worker the handler overran its timeout; without one, the worker
                    # or its server replica vanished.
                    error_type="StepTimeout" if owner else "LeaseExpired",
                    message=(
                        "lease deadline passed"
                        if owner or not vanished
                        else f"worker not seen by any server for {self.worker_silence_seconds:g}s"
                    ),
                    # Only a handler overrunning on a live worker says something about the
                    # dependency; a vanished worker or replica does not.
                    lost=owner is None and vanished,
                )
            )
        await self._prune_events()
        await self.refresh_shared_state()
        # Retries whose backoff elapsed become claimable without any write: just look again.
        self._dispatcher.wake()

    async def _record_liveness(self) -> None:
        ids = list(self._streams)
        if not ids:
            return
        async with self.db.session() as s:
            await touch_workers(s, ids, utcnow())

    async def _prune_events(self) -> None:
        """Deletes events past ``event_retention_seconds``, at most once a minute."""
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
        cutoff = utcnow() - timedelta(seconds=self.settings.event_retention_seconds)
        for _ in range(20):  # bounded work per sweep; a backlog continues next time
            async with self.db.session() as s:
                journal = Journal()
                deleted = await prune_events(s, journal, cutoff)
                await journal.flush(s)
            self._bus.committed(journal)
            if not deleted:
                return

    async def refresh_shared_state(self) -> None:
        """Other replicas' breaker changes, and the ready-queue depth used by the backoff rule."""
        seen = utcnow()
        since = self._breakers_seen - timedelta(seconds=1) if self._breakers_seen else None
        await self.load_breakers(since)
        self._breakers_seen = seen
        if time.monotonic() >= self._next_depth:
            self._next_depth = time.monotonic() + DEPTH_INTERVAL_SECONDS
            async with self.db.session(read_only=True) as s:
                self._dispatcher.ready_depth = await ready_depth(s)

    async def load_breakers(self, since: datetime | None = None) -> None:
        """Applies breaker rows (startup, and other replicas' changes on each sweep)."""
        async with self.db.session(read_only=True) as s:
            rows = await load_breakers(s, since)
        for row in rows:
            self.breakers.configure(row.key, row.failure_threshold, row.reset_timeout_seconds)
            self.breakers.apply(
                row.key, row.state, row.opened_time, row.update_time, row.failure_count
            )
