"""The orchestration of one replica, behind one facade: streams, leases, dispatch, sweeps, events.

The parts, one concern each:

- ``streams.WorkerStream``: one open ``Connect`` stream (what its worker runs, its outbound queue);
- ``leases.LeaseRegistry``: the only owner of which stream holds which lease;
- ``dispatcher.Dispatcher``: the tick loop (acknowledgements and outcomes in, claims out);
- ``sweeper.Sweeper``: the periodic sweep (timeouts, deadlines, liveness, pruning, shared state);
- ``events.EventBus``: what a commit tells watchers and subscribers; ``events.EventLog``: the
  event log as watchers read it;
- ``creation.TaskCreator`` and ``listener.ChangeListener``: batched task creation, and NOTIFYs of
  other replicas (PostgreSQL).

``loops()`` gives the long-running coroutines; the application runs them under one supervised
task group (``App``), so a loop that dies stops the server instead of being forgotten.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from tasker_server.config import Settings
from tasker_server.domain.errors import NotFound, PermissionDenied
from tasker_server.store.breakers import load_breakers, save_breaker
from tasker_server.store.db import Database
from tasker_server.store.journal import Journal
from tasker_server.store.outcomes import Outcome, OutcomeKind, Verdict
from tasker_server.store.types import utcnow
from tasker_server.store.workers import (
    known_namespaces,
    live_leases,
    upsert_worker,
    worker_identity,
    worker_leases,
)

from .breakers import Breakers
from .creation import TaskCreator
from .dispatcher import Dispatcher
from .events import EventBus, EventLog
from .hops import HopTrace
from .leases import LeaseRegistry
from .listener import ChangeListener
from .streams import Lease, WorkerStream
from .sweeper import Sweeper

__all__ = ["Orchestrator"]

log = logging.getLogger(__name__)


class Orchestrator:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        # The open streams of this replica by worker id; the dispatcher and the sweeper read it.
        self.streams: dict[str, WorkerStream] = {}
        self.leases = LeaseRegistry()
        self.bus = EventBus()
        self.events = EventLog(db, self.bus)
        self.breakers = Breakers()
        self.hops = HopTrace(settings.trace_hops_file)
        self.dispatcher = Dispatcher(
            db, settings, self.streams, self.leases, self.bus, self.breakers, self.hops
        )
        self.sweeper = Sweeper(
            db,
            settings,
            self.streams,
            self.leases,
            self.dispatcher,
            self.bus,
            self.breakers,
            self.close_stream,
        )
        self.creator = TaskCreator(db, self._tasks_created)
        self._listener = ChangeListener(db, self._changed_elsewhere)
        self.shutting_down = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Loads the shared state the loops start from; then run ``loops()``."""
        self.db.origin = self.settings.server_id
        await self.sweeper.load_breakers()
        self.sweeper.started()
        self.wake(admit=True)

    def loops(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """The replica's long-running loops by name; each returns only when cancelled."""
        loops = [
            ("tick", self.dispatcher.run()),
            ("sweep", self.sweeper.run()),
            ("creator", self.creator.run()),
        ]
        if self.db.dialect == "postgresql":
            loops.append(("listener", self._listener.run()))
        return loops

    async def stop(self) -> None:
        """After the loops were cancelled: fails task creations still queued, closes the hop
        trace."""
        await self.creator.stop()
        self.hops.close()

    # -- wake-ups and events --------------------------------------------------------------------

    def wake(self, *, admit: bool = False) -> None:
        """Something may be dispatchable (a task created, capacity freed, a timer elapsed)."""
        self.dispatcher.wake(admit=admit)

    def committed(self, journal: Journal) -> None:
        """To be called after a unit of work that used ``journal`` committed."""
        self.bus.committed(journal)

    def subscribe(self, callback: Callable[[list[dict[str, Any]]], None]) -> None:
        """Calls ``callback(events)`` after every commit that wrote events (metrics, bridges)."""
        self.bus.subscribe(callback)

    @property
    def tick_observers(self) -> list[Callable[[float, bool], None]]:
        return self.dispatcher.tick_observers

    @property
    def database_down(self) -> bool:
        return self.dispatcher.database_down

    @property
    def ready_depth(self) -> dict[str, int]:
        return self.dispatcher.ready_depth

    def _tasks_created(self, journal: Journal, any_created: bool) -> None:
        self.committed(journal)
        if any_created:
            self.wake(admit=True)

    def _changed_elsewhere(self) -> None:
        self.wake(admit=True)
        self.bus.notify()

    # -- streams --------------------------------------------------------------------------------

    async def open_stream(self, stream: WorkerStream) -> None:
        self.streams[stream.worker_id] = stream
        await self._upsert_worker(stream, "connected")
        self.wake()

    async def close_stream(
        self, stream: WorkerStream, reason: str, *, hand_back: bool = True
    ) -> None:
        """Forgets a stream that ended. Unless ``hand_back`` is False (the worker reconnected on
        a new stream, and ``reconcile`` decides about its leases), its leases are taken back."""
        if stream.closed:
            return
        stream.closed = True
        if self.streams.get(stream.worker_id) is stream:
            del self.streams[stream.worker_id]
        # A dead stream cannot be trusted to deliver cancellations or results: hand its work back.
        # Not when this server is shutting down: its workers keep running their handlers and
        # report to the next server (same lease ids, still valid in the database). Nor the
        # acknowledged leases of a worker that hands them to a job queue: its jobs heartbeat and
        # report by lease id without this stream; the sweep's silent-worker rule and the hard
        # deadline take them back if the jobs go quiet.
        held = self.leases.take_all(stream)
        for lease in held if hand_back and not self.shutting_down else []:
            if lease.acked and stream.hands_off_leases:
                continue
            kind = OutcomeKind.EXPIRE if lease.acked else OutcomeKind.RELEASE
            lost = Outcome(
                lease.lease_id,
                kind,
                stream.worker_id,
                message=reason,
                lost=True,
                stream_since=stream.connect_time,
            )
            self.dispatcher.submit(lost)
        with contextlib.suppress(Exception):
            await self._upsert_worker(stream, "disconnected")

    async def _upsert_worker(self, stream: WorkerStream, state: str) -> None:
        now = utcnow()
        values = {
            "id": stream.worker_id,
            "name": stream.name,
            "namespaces": stream.namespaces,
            "handlers": stream.handlers,
            "capacity": stream.capacity,
            "in_flight": self.leases.count(stream),
            "sdk_language": stream.sdk_language,
            "sdk_version": stream.sdk_version,
            "identity": stream.identity,
            "server_id": self.settings.server_id,
            "connect_time": stream.connect_time,
            "last_seen_time": now,
            "state": state,
        }
        async with self.db.session() as s:
            await upsert_worker(s, values)

    async def reconcile(self, stream: WorkerStream, held: list[str]) -> list[str]:
        """Matches a (re)connecting worker's ``held`` leases with what the database gives it.

        Leases live in the database, not in the replica that issued them. Each held lease still
        current there moves to this stream (one never acknowledged counts as acknowledged now:
        the worker had it); every other current lease of this worker is taken back at once —
        released if it never started, ended as lost if it did — except the acknowledged leases
        of a job-queue worker, whose jobs hold them. Returns the held leases that are no longer
        current (the worker is told to stop them). Call before ``open_stream``.

        With authentication on, a worker_id (and its leases) belongs to the identity that first
        connected it: a hello from another identity is refused before it touches anything.
        A stream of the same worker still open here (the process reconnected, its old stream
        died unnoticed) is closed without handing its leases back: they are decided here.
        """
        previous = self.streams.get(stream.worker_id)
        async with self.db.session(read_only=True) as s:
            owner = await worker_identity(s, stream.worker_id)
        for holder in (owner, previous.identity if previous is not None else None):
            if holder is not None and stream.identity is not None and holder != stream.identity:
                raise PermissionDenied(
                    f"worker_id {stream.worker_id[:64]!r} is connected as another identity",
                    reason="WORKER_ID_TAKEN",
                )
        if previous is not None:
            previous.outbound.put_nowait(None)
            await self.close_stream(previous, "replaced by a new stream", hand_back=False)
        async with self.db.session(read_only=True) as s:
            current = await worker_leases(s, stream.worker_id)
        wanted = set(held)
        now = time.monotonic()
        for row in current:
            self.leases.take(row.lease_id)
            if row.lease_id in wanted:
                lease = Lease(
                    row.lease_id,
                    row.step_id,
                    row.task_id,
                    offered_at=now,
                    acked=True,
                    last_heartbeat=now,
                    correlation_id=row.correlation_id,
                )
                self.leases.add(stream, lease)
                if not row.started:
                    ack = (row.lease_id, stream.worker_id, row.correlation_id)
                    self.dispatcher.enqueue("ack", ack, None)
            elif not (row.started and stream.hands_off_leases):
                kind = OutcomeKind.EXPIRE if row.started else OutcomeKind.RELEASE
                message = "the worker reconnected without this lease"
                lost = Outcome(row.lease_id, kind, stream.worker_id, message=message, lost=True)
                self.dispatcher.submit(lost)
        known = {row.lease_id for row in current}
        return [lease_id for lease_id in held if lease_id not in known]

    async def unknown_namespaces(self, namespaces: list[str]) -> list[str]:
        async with self.db.session(read_only=True) as s:
            known = await known_namespaces(s, namespaces)
        return [ns for ns in namespaces if ns not in known]

    # -- leases ---------------------------------------------------------------------------------

    def ack(self, stream: WorkerStream, lease_id: str) -> None:
        self.dispatcher.ack(stream, lease_id)

    def heartbeat(self, lease_ids: list[str]) -> dict[str, bool]:
        """Renews leases held by streams of this replica; False for the others."""
        return self.leases.heartbeat(lease_ids)

    async def heartbeat_anywhere(self, lease_ids: list[str]) -> dict[str, bool]:
        """Unary heartbeat (job-queue pattern): leases held here are renewed in memory; others
        are checked against the database (they may belong to another replica's worker)."""
        out = self.leases.heartbeat(lease_ids)
        rest = [lease_id for lease_id, ok in out.items() if not ok]
        if rest:
            async with self.db.session() as s:
                live = await live_leases(s, rest, seen_at=utcnow())
            out.update({lease_id: lease_id in live for lease_id in rest})
        return out

    async def report(self, outcome: Outcome, *, patient: bool = True) -> Verdict:
        """See ``Dispatcher.report``."""
        return await self.dispatcher.report(outcome, patient=patient)

    def cancel_leases(self, lease_ids: list[str], reason: str) -> None:
        """Tells the workers holding these leases to stop (their steps were already moved)."""
        for lease_id in lease_ids:
            self.leases.cancel(lease_id, reason)
        self.wake()

    @property
    def lease_ttl_seconds(self) -> float:
        """How long an acknowledged lease lives without a heartbeat."""
        return self.sweeper.lease_ttl_seconds

    @property
    def worker_silence_seconds(self) -> float:
        return self.sweeper.worker_silence_seconds

    # -- breakers -------------------------------------------------------------------------------

    async def reset_breaker(self, key: str, actor: str, reason: str) -> None:
        async with self.db.session() as s:
            known = await load_breakers(s, keys=[key])
            if not known and key not in self.breakers.known_keys():
                raise NotFound("circuit breaker", key, reason="CIRCUIT_BREAKER_NOT_FOUND")
            journal = Journal()
            self.breakers.reset(key)
            self.breakers.take_changes()  # recorded below with the operator's actor and reason
            conf = self.breakers.settings(key)
            await save_breaker(
                s,
                journal,
                key=key,
                state="closed",
                failure_count=0,
                failure_threshold=conf.failure_threshold,
                reset_timeout_seconds=conf.reset_timeout_seconds,
                opened_time=None,
                event="circuit_breaker.closed",
                metadata={"actor": actor, "reason": reason, "manual": True},
            )
            await journal.flush(s)
        self.committed(journal)
        self.wake()
