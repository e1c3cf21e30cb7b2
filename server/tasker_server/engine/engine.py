"""The orchestration engine of one replica: admission, dispatch, outcomes, sweeps.

Loops (one asyncio task each, under the engine's lifetime):

- dispatch: woken by events (task created, outcomes committed, worker connected or freed,
  namespace resumed, retry timers), admits pending tasks, then claims ready steps for every session
  with free capacity and pushes assignments into the sessions' queues. No polling of the database.
- outcomes: drains acknowledgements and results from all streams and applies them in one
  transaction per batch (``store.outcomes``), then answers each reporter and wakes dispatch.
- sweep: every ``sweep_interval_seconds``: leases never acknowledged, leases without heartbeats,
  dead streams, leases past their hard deadline in the database (also those of vanished replicas),
  worker liveness, and a wake for retries whose backoff elapsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tasker_server.config import Settings
from tasker_server.domain.states import StepState
from tasker_server.store.db import Database
from tasker_server.store.dispatch import (
    ClaimedStep,
    admit_tasks,
    claim_steps,
    expired_leases,
    start_leases,
)
from tasker_server.store.journal import Journal
from tasker_server.store.models import Namespace, Step, Worker
from tasker_server.store.outcomes import Outcome, OutcomeKind, Verdict, apply_outcomes
from tasker_server.store.types import utcnow

from .sessions import Lease, WorkerSession

__all__ = ["Cancellation", "Engine"]

log = logging.getLogger(__name__)

_BATCH = 512


@dataclass(frozen=True, slots=True)
class Cancellation:
    lease_id: str
    reason: str


class Engine:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.sessions: dict[str, WorkerSession] = {}
        self._wake = asyncio.Event()
        self._admit = True
        self._ops: asyncio.Queue[tuple[str, Any, asyncio.Future[Any] | None]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random()
        self._events_signal = asyncio.Event()
        self._lease_owner: dict[str, WorkerSession] = {}
        self.on_events: list[Callable[[], Awaitable[None] | None]] = []

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        for name, loop in (
            ("dispatch", self._dispatch_loop),
            ("outcomes", self._outcome_loop),
            ("sweep", self._sweep_loop),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=f"tasker-{name}"))
        self.wake(admit=True)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def wake(self, *, admit: bool = False) -> None:
        if admit:
            self._admit = True
        self._wake.set()

    # -- event notification (watchers) ----------------------------------------------------------

    def events_signal(self) -> asyncio.Event:
        """An Event set at the next commit that wrote events."""
        return self._events_signal

    def _events_committed(self) -> None:
        signal, self._events_signal = self._events_signal, asyncio.Event()
        signal.set()

    def notify_committed(self, journal_had_events: bool) -> None:
        if journal_had_events:
            self._events_committed()

    # -- sessions -------------------------------------------------------------------------------

    async def open_session(self, session: WorkerSession) -> None:
        self.sessions[session.worker_id] = session
        await self._upsert_worker(session, "connected")
        self.wake()

    async def close_session(self, session: WorkerSession, reason: str) -> None:
        if session.closed:
            return
        session.closed = True
        if self.sessions.get(session.worker_id) is session:
            del self.sessions[session.worker_id]
        # A dead stream cannot be trusted to deliver cancellations or results: hand its work back.
        for lease in list(session.leases.values()):
            self._lease_owner.pop(lease.lease_id, None)
            kind = OutcomeKind.EXPIRE if lease.acked else OutcomeKind.RELEASE
            self._submit(Outcome(lease.lease_id, kind, session.worker_id, message=reason))
        session.leases.clear()
        with contextlib.suppress(Exception):
            await self._upsert_worker(session, "disconnected")

    async def _upsert_worker(self, session: WorkerSession, state: str) -> None:
        now = utcnow()
        values = {
            "id": session.worker_id,
            "name": session.name,
            "namespaces": session.namespaces,
            "handlers": session.handlers,
            "capacity": session.capacity,
            "in_flight": len(session.leases),
            "sdk_language": session.sdk_language,
            "sdk_version": session.sdk_version,
            "server_id": self.settings.server_id,
            "connect_time": session.connect_time,
            "last_seen_time": now,
            "state": state,
        }
        async with self.db.session() as s:
            ins = (pg_insert if self.db.dialect == "postgresql" else sqlite_insert)(Worker)
            changes = {k: v for k, v in values.items() if k != "id"}
            await s.execute(
                ins.values(**values).on_conflict_do_update(index_elements=[Worker.id], set_=changes)
            )

    def ack(self, session: WorkerSession, lease_id: str) -> None:
        lease = session.leases.get(lease_id)
        if lease is None or lease.acked:
            return
        lease.acked = True
        lease.last_heartbeat = time.monotonic()
        self._ops.put_nowait(("ack", (lease_id, session.worker_id), None))

    def adopt_lease(self, session: WorkerSession, lease_id: str) -> None:
        self._lease_owner[lease_id] = session

    async def unknown_namespaces(self, namespaces: list[str]) -> list[str]:
        async with self.db.session(read_only=True) as s:
            known = set(
                (await s.execute(select(Namespace.name).where(Namespace.name.in_(namespaces))))
                .scalars()
                .all()
            )
        return [ns for ns in namespaces if ns not in known]

    async def heartbeat_anywhere(self, lease_ids: list[str]) -> dict[str, bool]:
        """Unary heartbeat (job-queue pattern): leases held here are renewed in memory; others
        are checked against the database (they may belong to another replica's worker)."""
        out = self.heartbeat(None, lease_ids)
        rest = [lease_id for lease_id, ok in out.items() if not ok]
        if rest:
            async with self.db.session(read_only=True) as s:
                live = set(
                    (
                        await s.execute(
                            select(Step.lease_id).where(
                                Step.lease_id.in_(rest),
                                Step.state.in_(
                                    [StepState.ENQUEUED.value, StepState.IN_PROGRESS.value]
                                ),
                            )
                        )
                    )
                    .scalars()
                    .all()
                )
            out.update({lease_id: lease_id in live for lease_id in rest})
        return out

    def heartbeat(self, session: WorkerSession | None, lease_ids: list[str]) -> dict[str, bool]:
        now = time.monotonic()
        out = {}
        for lease_id in lease_ids:
            owner = self._lease_owner.get(lease_id)
            lease = owner.leases.get(lease_id) if owner else None
            if lease is not None:
                lease.last_heartbeat = now
            out[lease_id] = lease is not None
        return out

    async def report(self, outcome: Outcome) -> Verdict:
        """Queues an outcome and waits until its batch committed."""
        owner = self._lease_owner.pop(outcome.lease_id, None)
        if owner is not None:
            owner.leases.pop(outcome.lease_id, None)
            self.wake()
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._ops.put_nowait(("outcome", outcome, future))
        return await future

    def _submit(self, outcome: Outcome) -> None:
        self._ops.put_nowait(("outcome", outcome, None))

    def cancel_leases(self, lease_ids: list[str], reason: str) -> None:
        """Tells the workers holding these leases to stop (their steps were already moved)."""
        for lease_id in lease_ids:
            owner = self._lease_owner.pop(lease_id, None)
            if owner is None:
                continue
            owner.leases.pop(lease_id, None)
            owner.outbound.put_nowait(Cancellation(lease_id, reason))
        self.wake()

    # -- loops ----------------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._dispatch_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatch failed; retrying shortly")
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _dispatch_once(self) -> None:
        if self._admit:
            self._admit = False
            async with self.db.session() as s:
                journal = Journal()
                admitted = await admit_tasks(s, journal, self.settings.max_parallel_tasks)
                await journal.flush(s)
            self.notify_committed(admitted > 0)
        lease_seconds_extra = self.settings.ack_timeout_seconds + self.settings.lease_grace_seconds
        for session in list(self.sessions.values()):
            free = session.free
            if free <= 0:
                continue
            async with self.db.session() as s:
                journal = Journal()
                claimed = await claim_steps(
                    s,
                    journal,
                    namespaces=session.namespaces,
                    handlers=session.handlers,
                    limit=min(free, _BATCH),
                    worker_id=session.worker_id,
                    lease_extra_seconds=lease_seconds_extra,
                )
                await journal.flush(s)
            if not claimed:
                continue
            self._hand_out(session, claimed)

    def _hand_out(self, session: WorkerSession, claimed: list[ClaimedStep]) -> None:
        now = time.monotonic()
        for c in claimed:
            if session.closed:
                self._submit(Outcome(c.lease_id, OutcomeKind.RELEASE, session.worker_id))
                continue
            session.leases[c.lease_id] = Lease(c.lease_id, c.step_id, c.task_id, offered_at=now)
            self._lease_owner[c.lease_id] = session
            session.outbound.put_nowait(c)

    async def _outcome_loop(self) -> None:
        while True:
            first = await self._ops.get()
            batch = [first]
            while len(batch) < _BATCH and not self._ops.empty():
                batch.append(self._ops.get_nowait())
            try:
                await self._apply(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("applying %d outcomes failed", len(batch))
                for _, _, future in batch:
                    if future is not None and not future.done():
                        future.set_exception(exc)
                await asyncio.sleep(0.2)

    async def _apply(self, batch: list[tuple[str, Any, asyncio.Future[Any] | None]]) -> None:
        acks = [payload[0] for kind, payload, _ in batch if kind == "ack"]
        outcomes = [payload for kind, payload, _ in batch if kind == "outcome"]
        async with self.db.session() as s:
            journal = Journal()
            await start_leases(s, journal, acks)
            result = await apply_outcomes(s, journal, outcomes, self._rng) if outcomes else None
            had_events = bool(journal.events)
            await journal.flush(s)
        self.notify_committed(had_events)
        if result is not None:
            verdicts = iter(result.verdicts)
            by_lease: dict[str, list[Verdict]] = {}
            for v in verdicts:
                by_lease.setdefault(v.lease_id, []).append(v)
            for kind, payload, future in batch:
                if kind != "outcome" or future is None or future.done():
                    continue
                answers = by_lease.get(payload.lease_id) or [Verdict(payload.lease_id, False)]
                future.set_result(answers.pop(0) if len(answers) > 1 else answers[0])
            if result.wake:
                self.wake(admit=bool(result.finished_tasks))

    async def _sweep_loop(self) -> None:
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
            except Exception:
                log.exception("sweep failed")

    async def _sweep_once(self) -> None:
        now = time.monotonic()
        ack_timeout = self.settings.ack_timeout_seconds
        lease_ttl = self.settings.heartbeat_interval_seconds * 3 + self.settings.lease_grace_seconds
        for session in list(self.sessions.values()):
            if now - session.last_seen > self.settings.keepalive_timeout_seconds:
                log.warning("worker %s silent; closing its stream", session.worker_id)
                session.outbound.put_nowait(None)  # tells the stream handler to end
                await self.close_session(session, "keepalive timeout")
                continue
            for lease in list(session.leases.values()):
                stale = (not lease.acked and now - lease.offered_at > ack_timeout) or (
                    lease.acked and now - lease.last_heartbeat > lease_ttl
                )
                if stale:
                    session.leases.pop(lease.lease_id, None)
                    self._lease_owner.pop(lease.lease_id, None)
                    kind = OutcomeKind.EXPIRE if lease.acked else OutcomeKind.RELEASE
                    session.outbound.put_nowait(Cancellation(lease.lease_id, "lease_expired"))
                    self._submit(
                        Outcome(
                            lease.lease_id,
                            kind,
                            session.worker_id,
                            message="lease not renewed in time",
                        )
                    )
        async with self.db.session(read_only=True) as s:
            expired = await expired_leases(s, utcnow())
        for lease_id in expired:
            if lease_id not in self._lease_owner:
                self._submit(Outcome(lease_id, OutcomeKind.EXPIRE, message="lease deadline passed"))
        # Retries whose backoff elapsed become claimable without any write: just look again.
        self.wake()

    async def _record_liveness(self) -> None:
        ids = list(self.sessions)
        if not ids:
            return
        async with self.db.session() as s:
            await s.execute(
                update(Worker)
                .where(Worker.id.in_(ids))
                .values(last_seen_time=utcnow())
                .execution_options(synchronize_session=False)
            )
