"""The orchestration engine of one replica: admission, dispatch, outcomes, sweeps.

Loops (one asyncio task each, under the engine's lifetime):

- tick: woken by events (acknowledgements and results from the streams, task created, worker
  connected or freed, namespace resumed, retry timers). Each tick is one transaction: it applies
  the batch of acknowledgements and outcomes (``store.outcomes``), admits pending tasks, claims
  ready steps for every session with free capacity; after the commit it pushes the assignments and
  answers the reporters. No polling of the database.
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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tasker_server.config import Settings
from tasker_server.domain.errors import NotFound, Unavailable
from tasker_server.domain.retry import BackoffFactors
from tasker_server.store.breakers import add_breaker_failures, load_breakers, save_breaker
from tasker_server.store.db import Database, Session
from tasker_server.store.dispatch import (
    ClaimedStep,
    admit_tasks,
    claim_steps,
    expired_leases,
    ready_depth,
    start_leases,
)
from tasker_server.store.events import prune_events
from tasker_server.store.journal import Journal
from tasker_server.store.models import Step, Task
from tasker_server.store.outcomes import (
    BatchResult,
    Outcome,
    OutcomeKind,
    Verdict,
    apply_outcomes,
)
from tasker_server.store.tasks import fail_overdue_tasks, has_overdue_tasks
from tasker_server.store.types import utcnow
from tasker_server.store.workers import (
    known_namespaces,
    live_leases,
    touch_workers,
    upsert_worker,
    worker_leases,
)

from .breakers import Breakers
from .creation import TaskCreator
from .hops import HopTrace
from .listener import ChangeListener
from .sessions import Lease, WorkerSession
from .stats import HandlerStats

__all__ = ["Cancellation", "Engine"]

log = logging.getLogger(__name__)

_BATCH = 512
# A failed tick puts back the operations nobody awaits, at most this many times each.
_CARRY_ATTEMPTS = 5
DEPTH_INTERVAL_SECONDS = 5.0
_BREAKER_EVENTS = {"open": "opened", "half_open": "half_opened", "closed": "closed"}
ACK_COALESCE_SECONDS = 0.02
_HOLDING_TOO_MANY = "the database is unavailable and this server holds too many unrecorded outcomes"
# Retry pauses of the tick while the database is unreachable: short enough that work resumes
# within a second of its return, long enough not to spin.
_OUTAGE_FIRST_PAUSE = 0.05
_OUTAGE_MAX_PAUSE = 0.5
PRUNE_INTERVAL_SECONDS = 60.0


# An operation for the tick: ("ack" | "outcome", payload, the reporter's future or None).
Op = tuple[str, Any, "asyncio.Future[Any] | None"]


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
        self._dispatch_needed = True
        self._ops: asyncio.Queue[Op] = asyncio.Queue()
        # True from a tick that found the database unreachable until one that committed.
        self.database_down = False
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random()
        self.breakers = Breakers()
        self._handler_stats = HandlerStats()
        # Ready steps per namespace, refreshed by the sweep: the "system load" backoff input.
        self.ready_depth: dict[str, int] = {}
        self._breakers_seen: datetime | None = None
        self.creator = TaskCreator(db, self._tasks_created)
        self._next_depth = 0.0
        self._events_signal = asyncio.Event()
        self._lease_owner: dict[str, WorkerSession] = {}
        self._listener = ChangeListener(db, self._changed_elsewhere)
        self._subscribers: list[Callable[[list[dict[str, Any]]], None]] = []
        self._ack_timer: asyncio.TimerHandle | None = None
        self._failed_ticks_by_op: dict[int, int] = {}
        self._started_at = time.monotonic()
        self.shutting_down = False
        self.hops = HopTrace(settings.trace_hops_file)
        self._committed_at = 0.0  # monotonic time of the last tick's commit (for ``hops``)
        # -- observability (issue 5): tick timing hook and event-retention throttle --
        self.tick_observers: list[Callable[[float, bool], None]] = []
        self._next_prune = 0.0
        # -- end observability --

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._started_at = time.monotonic()
        self.db.origin = self.settings.server_id
        await self.load_breakers()
        self._breakers_seen = utcnow()
        self._listener.start()
        self.creator.start()
        for name, loop in (("tick", self._tick_loop), ("sweep", self._sweep_loop)):
            self._tasks.append(asyncio.create_task(loop(), name=f"tasker-{name}"))
        self.wake(admit=True)

    async def stop(self) -> None:
        await self._listener.stop()
        await self.creator.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self.hops.close()

    def wake(self, *, admit: bool = False) -> None:
        """Something may be dispatchable (a task created, capacity freed, a timer elapsed)."""
        if admit:
            self._admit = True
        self._dispatch_needed = True
        self._wake.set()

    def _tasks_created(self, journal: Journal, any_created: bool) -> None:
        self.committed(journal)
        if any_created:
            self.wake(admit=True)

    def _flush_acks(self) -> None:
        self._ack_timer = None
        self._wake.set()

    def _changed_elsewhere(self) -> None:
        self.wake(admit=True)
        self._events_committed()

    def _enqueue(self, kind: str, payload: Any, future: asyncio.Future[Any] | None) -> None:
        self._ops.put_nowait((kind, payload, future))
        self._wake.set()

    # -- event notification (watchers) ----------------------------------------------------------

    def events_signal(self) -> asyncio.Event:
        """An Event set at the next commit that wrote events."""
        return self._events_signal

    def _events_committed(self) -> None:
        signal, self._events_signal = self._events_signal, asyncio.Event()
        signal.set()

    def subscribe(self, callback: Callable[[list[dict[str, Any]]], None]) -> None:
        """Calls ``callback(events)`` after every commit that wrote events (metrics, bridges)."""
        self._subscribers.append(callback)

    def committed(self, journal: Journal) -> None:
        """To be called after a unit of work that used ``journal`` committed."""
        if not journal.written:
            return
        self._events_committed()
        for callback in self._subscribers:
            try:
                callback(journal.written)
            except Exception:
                log.exception("commit subscriber failed")

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
        # Not when this server is shutting down: its workers keep running their handlers and
        # report to the next server (same lease ids, still valid in the database). Nor the
        # acknowledged leases of a worker that hands them to a job queue: its jobs heartbeat and
        # report by lease id without this stream; the sweep's silent-worker rule and the hard
        # deadline take them back if the jobs go quiet.
        for lease in [] if self.shutting_down else list(session.leases.values()):
            self._lease_owner.pop(lease.lease_id, None)
            if lease.acked and session.hands_off_leases:
                continue
            kind = OutcomeKind.EXPIRE if lease.acked else OutcomeKind.RELEASE
            self._submit(
                Outcome(lease.lease_id, kind, session.worker_id, message=reason, lost=True)
            )
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
            await upsert_worker(s, values)

    def ack(self, session: WorkerSession, lease_id: str) -> None:
        lease = session.leases.get(lease_id)
        if lease is None or lease.acked:
            return
        lease.acked = True
        lease.last_heartbeat = time.monotonic()
        # Acknowledgements do not wake the engine by themselves: the result of a short handler
        # usually follows within milliseconds and both then go into one transaction. A timer
        # bounds how late a long handler's ack (and its step.started event) is written.
        self._ops.put_nowait(("ack", (lease_id, session.worker_id, lease.correlation_id), None))
        if self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(
                ACK_COALESCE_SECONDS, self._flush_acks
            )

    async def reconcile(self, session: WorkerSession, held: list[str]) -> list[str]:
        """Matches a (re)connecting worker's ``held`` leases with what the database gives it.

        Leases live in the database, not in the replica that issued them. Each held lease still
        current there moves to this stream (one never acknowledged counts as acknowledged now:
        the worker had it); every other current lease of this worker is taken back at once —
        released if it never started, ended as lost if it did — except the acknowledged leases
        of a job-queue worker, whose jobs hold them. Returns the held leases that are no longer
        current (the worker is told to stop them). Call before ``open_session``.
        """
        async with self.db.session(read_only=True) as s:
            current = await worker_leases(s, session.worker_id)
        wanted = set(held)
        now = time.monotonic()
        for row in current:
            previous = self._lease_owner.pop(row.lease_id, None)
            if previous is not None:
                previous.leases.pop(row.lease_id, None)
            if row.lease_id in wanted:
                session.leases[row.lease_id] = Lease(
                    row.lease_id,
                    row.step_id,
                    row.task_id,
                    offered_at=now,
                    acked=True,
                    last_heartbeat=now,
                    correlation_id=row.correlation_id,
                )
                self._lease_owner[row.lease_id] = session
                if not row.started:
                    ack = (row.lease_id, session.worker_id, row.correlation_id)
                    self._enqueue("ack", ack, None)
            elif not (row.started and session.hands_off_leases):
                kind = OutcomeKind.EXPIRE if row.started else OutcomeKind.RELEASE
                message = "the worker reconnected without this lease"
                lost = Outcome(row.lease_id, kind, session.worker_id, message=message, lost=True)
                self._submit(lost)
        known = {row.lease_id for row in current}
        return [lease_id for lease_id in held if lease_id not in known]

    async def unknown_namespaces(self, namespaces: list[str]) -> list[str]:
        async with self.db.session(read_only=True) as s:
            known = await known_namespaces(s, namespaces)
        return [ns for ns in namespaces if ns not in known]

    async def heartbeat_anywhere(self, lease_ids: list[str]) -> dict[str, bool]:
        """Unary heartbeat (job-queue pattern): leases held here are renewed in memory; others
        are checked against the database (they may belong to another replica's worker)."""
        out = self.heartbeat(lease_ids)
        rest = [lease_id for lease_id, ok in out.items() if not ok]
        if rest:
            async with self.db.session() as s:
                live = await live_leases(s, rest, seen_at=utcnow())
            out.update({lease_id: lease_id in live for lease_id in rest})
        return out

    @property
    def _suspect_silence_seconds(self) -> float:
        """Silence after which a stream gets no new assignments: two keepalives unanswered, or
        half the keepalive timeout if that is longer."""
        s = self.settings
        return max(2 * s.keepalive_interval_seconds, s.keepalive_timeout_seconds / 2)

    @property
    def worker_silence_seconds(self) -> float:
        """How long a worker may go unseen by every replica (the ``workers.last_seen_time`` each
        replica refreshes for its streams, and unary heartbeats refresh) before its leases are
        taken back: a dead stream plus a heartbeat period it could have used to reconnect."""
        return self.settings.keepalive_timeout_seconds + self.lease_ttl_seconds

    def _vanished_cutoff(self) -> datetime | None:
        # A replica that just started has not yet heard from workers reconnecting to it (after a
        # restart they are all "unseen"): it judges silence only once it has been up that long.
        silence = self.worker_silence_seconds
        if time.monotonic() - self._started_at < silence:
            return None
        return utcnow() - timedelta(seconds=silence)

    @property
    def lease_ttl_seconds(self) -> float:
        """How long an acknowledged lease lives without a heartbeat."""
        s = self.settings
        return s.heartbeat_interval_seconds * 3 + s.lease_grace_seconds

    def heartbeat(self, lease_ids: list[str]) -> dict[str, bool]:
        """Renews leases held by streams of this replica; False for the others."""
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
        """Queues an outcome and waits until its batch committed (while the database is
        unreachable, until it returns). Past ``max_unrecorded_outcomes`` waiting, answers
        UNAVAILABLE at once: the worker keeps the result, and its lease, and sends it again."""
        if self._ops.qsize() >= self.settings.max_unrecorded_outcomes:
            return Verdict(outcome.lease_id, False, "UNAVAILABLE", _HOLDING_TOO_MANY)
        owner = self._lease_owner.pop(outcome.lease_id, None)
        if owner is not None:
            owner.leases.pop(outcome.lease_id, None)
            self.wake()
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._enqueue("outcome", outcome, future)
        return await future

    def _submit(self, outcome: Outcome) -> None:
        self._enqueue("outcome", outcome, None)

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

    async def _tick_loop(self) -> None:
        pause = _OUTAGE_FIRST_PAUSE  # doubles while the database stays unreachable
        while True:
            if not self._dispatch_needed:
                await self._wake.wait()
            self._wake.clear()
            batch: list[Op] = []
            while len(batch) < _BATCH and not self._ops.empty():
                batch.append(self._ops.get_nowait())
            if not self._ops.empty():
                self._wake.set()
            started = time.perf_counter()  # observability (issue 5)
            try:
                await self._tick(batch)
                self._observe_tick(time.perf_counter() - started, failed=False)
                if self.hops.enabled:
                    self._mark_hops(batch, started)
                if self._failed_ticks_by_op:
                    for _, payload, _ in batch:
                        self._failed_ticks_by_op.pop(id(payload), None)
                if self.database_down:
                    log.warning("database reachable again; %d operations applied", len(batch))
                    self.database_down = False
                pause = _OUTAGE_FIRST_PAUSE
            except asyncio.CancelledError:
                raise
            except Unavailable:
                # An outage is a pause, not a loss: every operation of the batch (reporters keep
                # waiting) goes back to the head of the queue and is applied once the database
                # answers again. Memory stays bounded because report() refuses new outcomes past
                # max_unrecorded_outcomes and no claim (new work) can commit meanwhile.
                self._observe_tick(time.perf_counter() - started, failed=True)
                if not self.database_down:
                    log.warning("database unavailable; holding acknowledgements and outcomes")
                    self.database_down = True
                self._requeue(batch)
                self._dispatch_needed = self._admit = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, _OUTAGE_MAX_PAUSE)
            except Exception as exc:
                self._observe_tick(time.perf_counter() - started, failed=True)
                log.exception("engine tick failed (%d operations); retrying", len(batch))
                for _, _, future in batch:
                    if future is not None and not future.done():
                        future.set_exception(exc)
                self._carry_over(batch)
                self._dispatch_needed = self._admit = True
                await asyncio.sleep(0.2)

    def _mark_hops(self, batch: list[Op], started: float) -> None:
        # perf_counter and monotonic are different clocks: convert the tick's start.
        tick_start = time.monotonic() - (time.perf_counter() - started)
        for kind, payload, _ in batch:
            if kind == "outcome":
                self.hops.mark(payload.lease_id, "tick_start", tick_start)
                self.hops.mark(payload.lease_id, "commit", self._committed_at)

    def _carry_over(self, batch: list[Op]) -> None:
        """Puts the failed batch's operations that nobody awaits back at the head of the queue.

        Reporters see their error and report again, but an acknowledgement (it counts the
        attempt) or the release of a dead stream's lease has no one to retry it: dropped, the
        attempt would go uncounted and the step would wait for its hard deadline. The head keeps
        an acknowledgement ahead of the result that follows it. An operation that keeps failing
        with an error that is not an outage (a bug) is dropped after a few ticks so it cannot
        wedge the engine.
        """
        carried = []
        for op in batch:
            if op[2] is not None:
                continue
            failures = self._failed_ticks_by_op.get(id(op[1]), 0) + 1
            if failures > _CARRY_ATTEMPTS:
                self._failed_ticks_by_op.pop(id(op[1]), None)
                log.error("dropping %s %r after %d failed ticks", op[0], op[1], failures - 1)
                continue
            self._failed_ticks_by_op[id(op[1])] = failures
            carried.append(op)
        self._requeue(carried)

    def _requeue(self, ops: list[Op]) -> None:
        """Puts ``ops`` back at the head of the queue, in their order."""
        if not ops:
            return
        queued = []
        while not self._ops.empty():
            queued.append(self._ops.get_nowait())
        for op in (*ops, *queued):
            self._ops.put_nowait(op)

    async def _tick(self, batch: list[Op]) -> None:
        """One unit of work: acknowledgements, outcomes, admission and claims in one transaction.

        Folding dependency resolution and the next claims into the transaction that records a
        result makes one commit per hop of a DAG, however many steps and workers are involved.
        """
        correlation_ids = {payload[0]: payload[2] for kind, payload, _ in batch if kind == "ack"}
        acks = list(correlation_ids)
        outcomes = [payload for kind, payload, _ in batch if kind == "outcome"]
        dispatch, self._dispatch_needed = self._dispatch_needed, False
        admit, self._admit = self._admit, False
        if not batch and not dispatch and not admit:
            return  # e.g. the ack timer fired after its acks already went out with a result
        claims: list[tuple[WorkerSession, list[ClaimedStep], int]] = []
        result = None
        async with self.db.session() as s:
            journal = Journal()
            await start_leases(s, journal, acks, correlation_ids=correlation_ids)
            if outcomes:
                result = await apply_outcomes(s, journal, outcomes, self._rng, self._factors)
                dispatch = dispatch or result.wake
                admit = admit or bool(result.finished_tasks)
                await self._feed(s, result, outcomes)
            if admit:
                await admit_tasks(s, journal, self.settings.max_parallel_tasks)
                dispatch = True
            if dispatch:
                claims = await self._claim_all(s, journal)
            await self._save_breaker_changes(s, journal)
            await journal.flush(s)
        self._committed_at = time.monotonic()
        self.committed(journal)
        for session, claimed, asked in claims:
            self._hand_out(session, claimed)
            if len(claimed) == asked:
                # The worker could take more than one batch: look again right away.
                self._dispatch_needed = True
        if result is not None:
            by_lease: dict[str, list[Verdict]] = {}
            for v in result.verdicts:
                by_lease.setdefault(v.lease_id, []).append(v)
            for kind, payload, future in batch:
                if kind != "outcome" or future is None or future.done():
                    continue
                answers = by_lease.get(payload.lease_id) or [Verdict(payload.lease_id, False)]
                future.set_result(answers.pop(0) if len(answers) > 1 else answers[0])

    # -- observability (issue 5) --
    def _observe_tick(self, seconds: float, *, failed: bool) -> None:
        for observer in self.tick_observers:
            with contextlib.suppress(Exception):
                observer(seconds, failed)

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
            self.committed(journal)
            if not deleted:
                return

    # -- end observability --

    async def _claim_all(
        self, s: Session, journal: Journal
    ) -> list[tuple[WorkerSession, list[ClaimedStep], int]]:
        """Claims for every session with free capacity; open breakers' keys are held back, and a
        half-open breaker lets exactly one trial step through (to the group's first worker)."""
        extra = self.settings.ack_timeout_seconds + self.settings.lease_grace_seconds
        blocked, trials = self.breakers.blocked_keys(journal.now)
        # A snapshot: sessions may open or close while the claims await the database. A stream
        # that has not answered a keepalive for a while may be blackholed: it gets no new work
        # (its leases are taken back when it times out, and must not land on it again).
        quiet = time.monotonic() - self._suspect_silence_seconds
        sessions = [
            session
            for session in self.sessions.values()
            if session.free > 0 and session.last_seen >= quiet
        ]
        free = {session.worker_id: min(session.free, _BATCH) for session in sessions}
        claimed: dict[str, list[ClaimedStep]] = {session.worker_id: [] for session in sessions}
        # Workers serving the same namespaces and handlers claim together, in one query.
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[WorkerSession]] = {}
        for session in sessions:
            signature = (tuple(sorted(session.namespaces)), tuple(sorted(session.handlers)))
            groups.setdefault(signature, []).append(session)
        for (namespaces, handlers), members in groups.items():
            first = members[0].worker_id
            for key in list(trials):  # rare: only while a breaker is half-open
                trial = await claim_steps(
                    s,
                    journal,
                    namespaces=list(namespaces),
                    handlers=list(handlers),
                    workers=[(first, 1)],
                    lease_extra_seconds=extra,
                    only_breaker_key=key,
                )
                if trial:
                    self.breakers.trial_started(key, trial[0].lease_id)
                    trials.remove(key)
                    claimed[first] += trial
            room = [(m.worker_id, free[m.worker_id] - len(claimed[m.worker_id])) for m in members]
            for step in await claim_steps(
                s,
                journal,
                namespaces=list(namespaces),
                handlers=list(handlers),
                workers=room,
                lease_extra_seconds=extra,
                open_breakers=blocked,
            ):
                claimed[step.worker_id].append(step)
        return [
            (session, claimed[session.worker_id], free[session.worker_id])
            for session in sessions
            if claimed[session.worker_id]
        ]

    def _factors(self, step: Step, task: Task) -> BackoffFactors:
        """The backoff context of a failing step (see domain/retry.py for how each counts)."""
        to_deadline = None
        if task.deadline is not None:
            to_deadline = max(0.0, (task.deadline - utcnow()).total_seconds())
        return BackoffFactors(
            queue_depth=self.ready_depth.get(step.namespace, 0),
            breaker_open=self.breakers.state(step.breaker_key) != "closed",
            handler_success_rate=self._handler_stats.rate(step.handler),
            priority=task.priority,
            seconds_to_deadline=to_deadline,
        )

    async def _feed(self, s: Session, result: BatchResult, outcomes: list[Outcome]) -> None:
        """Feeds the batch's outcomes to the breakers and the handlers' success rates. A closed
        breaker counts in the database (shared by the replicas); an open or half-open one is
        decided here (the half-open trial's outcome)."""
        batch: dict[str, tuple[bool, int]] = {}  # key -> (a success came, failures after it)
        for key, success, lease_id in result.breaker_feed:
            if self.breakers.state(key) != "closed":
                self.breakers.record(key, success, lease_id)
                continue
            reset, failures = batch.get(key, (False, 0))
            batch[key] = (True, 0) if success else (reset, failures + 1)
        for key, (reset, failures) in batch.items():
            before = self.breakers.failure_count(key)
            if not failures and (not reset or before == 0):
                continue  # nothing to count: the usual case of a healthy dependency
            conf = self.breakers.settings(key)
            after = await add_breaker_failures(
                s,
                key=key,
                failures=failures,
                reset=reset,
                failure_threshold=conf.failure_threshold,
                reset_timeout_seconds=conf.reset_timeout_seconds,
                now=utcnow(),
            )
            self.breakers.counted(key, after - failures if not reset else 0, after)
        for handler, success in result.handler_feed:
            self._handler_stats.add(handler, success)
        # A half-open trial whose lease ended without a verdict on the dependency (released,
        # lost, a permanent error) frees the trial slot for another step.
        fed = {lease_id for _, _, lease_id in result.breaker_feed}
        for o in outcomes:
            if o.lease_id not in fed:
                self.breakers.trial_ended(o.lease_id)

    async def _save_breaker_changes(self, s: Session, journal: Journal) -> None:
        for change in self.breakers.take_changes():
            conf = self.breakers.settings(change.key)
            await save_breaker(
                s,
                journal,
                key=change.key,
                state=change.new,
                failure_count=self.breakers.failure_count(change.key),
                failure_threshold=conf.failure_threshold,
                reset_timeout_seconds=conf.reset_timeout_seconds,
                opened_time=self.breakers.opened_at(change.key),
                event=f"circuit_breaker.{_BREAKER_EVENTS[change.new]}",
                metadata={"from": change.old, "to": change.new},
            )

    async def _refresh_shared_state(self) -> None:
        """Other replicas' breaker changes, and the ready-queue depth used by the backoff rule."""
        seen = utcnow()
        since = self._breakers_seen - timedelta(seconds=1) if self._breakers_seen else None
        await self.load_breakers(since)
        self._breakers_seen = seen
        if time.monotonic() >= self._next_depth:
            self._next_depth = time.monotonic() + DEPTH_INTERVAL_SECONDS
            async with self.db.session(read_only=True) as s:
                self.ready_depth = await ready_depth(s)

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

    async def load_breakers(self, since: datetime | None = None) -> None:
        """Applies breaker rows (startup, and other replicas' changes on each sweep)."""
        async with self.db.session(read_only=True) as s:
            rows = await load_breakers(s, since)
        for row in rows:
            self.breakers.configure(row.key, row.failure_threshold, row.reset_timeout_seconds)
            self.breakers.apply(
                row.key, row.state, row.opened_time, row.update_time, row.failure_count
            )

    def _hand_out(self, session: WorkerSession, claimed: list[ClaimedStep]) -> None:
        now = time.monotonic()
        for c in claimed:
            if session.closed:
                self._submit(Outcome(c.lease_id, OutcomeKind.RELEASE, session.worker_id))
                continue
            session.leases[c.lease_id] = Lease(
                c.lease_id, c.step_id, c.task_id, offered_at=now, correlation_id=c.correlation_id
            )
            self._lease_owner[c.lease_id] = session
            session.outbound.put_nowait(c)
            self.hops.mark(c.lease_id, "claimed", self._committed_at)
            self.hops.mark(c.lease_id, "queued")

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
        lease_ttl = self.lease_ttl_seconds
        for session in list(self.sessions.values()):
            if now - session.last_seen > self.settings.keepalive_timeout_seconds:
                log.warning("worker %s silent; closing its stream", session.worker_id)
                session.outbound.put_nowait(None)  # tells the stream handler to end
                await self.close_session(session, "keepalive timeout")
                continue
            # A worker that hands its leases to a job queue heartbeats them from the jobs, through
            # any replica and only once a job starts: they run to the hard deadline instead.
            ttl_applies = not session.hands_off_leases
            for lease in list(session.leases.values()):
                stale = (not lease.acked and now - lease.offered_at > ack_timeout) or (
                    lease.acked and ttl_applies and now - lease.last_heartbeat > lease_ttl
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
            self.committed(journal)
            self.cancel_leases(overdue_leases, "deadline_exceeded")
        for lease_id, vanished in expired:
            # Past its hard deadline (step timeout + slack): even a worker that still heartbeats
            # is told to stop, and the attempt counts as a transient failure (timed out).
            owner = self._lease_owner.pop(lease_id, None)
            if owner is not None:
                owner.leases.pop(lease_id, None)
                owner.outbound.put_nowait(Cancellation(lease_id, "timed_out"))
            self._submit(
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
        await self._prune_events()  # observability (issue 5): event retention
        await self._refresh_shared_state()
        # Retries whose backoff elapsed become claimable without any write: just look again.
        self.wake()

    async def _record_liveness(self) -> None:
        ids = list(self.sessions)
        if not ids:
            return
        async with self.db.session() as s:
            await touch_workers(s, ids, utcnow())
