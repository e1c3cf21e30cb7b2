"""The tick loop of one replica: acknowledgements and outcomes in, claims and assignments out.

Woken by events (acknowledgements and results from the streams, task created, worker connected
or freed, namespace resumed, retry timers). Each tick is one transaction: it applies the batch of
acknowledgements and outcomes (``store.outcomes``), admits pending tasks, claims ready steps for
every stream with free capacity; after the commit it pushes the assignments and answers the
reporters. No polling of the database.

A database outage is a pause: the batch goes back to the head of the queue, reporters keep
waiting, and ``report`` refuses new outcomes past ``max_unrecorded_outcomes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from tasker_server.config import Settings
from tasker_server.domain.errors import Unavailable
from tasker_server.domain.fencing import NOT_HELD, held_by
from tasker_server.domain.retry import BackoffFactors
from tasker_server.store.breakers import add_breaker_failures, save_breaker
from tasker_server.store.db import AsyncSession, Database
from tasker_server.store.dispatch import ClaimedStep, admit_tasks, claim_steps, start_leases
from tasker_server.store.journal import Journal
from tasker_server.store.models import Step, Task
from tasker_server.store.outcomes import BatchResult, Outcome, OutcomeKind, Verdict, apply_outcomes
from tasker_server.store.types import utcnow

from .breakers import Breakers
from .events import EventBus
from .hops import HopTrace
from .leases import LeaseRegistry
from .stats import HandlerStats
from .streams import Lease, WorkerStream

__all__ = ["ACK_COALESCE_SECONDS", "Dispatcher"]

log = logging.getLogger(__name__)

_BATCH = 512
# A failed tick puts back the operations nobody awaits, at most this many times each.
_CARRY_ATTEMPTS = 5
_BREAKER_EVENTS = {"open": "opened", "half_open": "half_opened", "closed": "closed"}
ACK_COALESCE_SECONDS = 0.02
_HOLDING_TOO_MANY = "the database is unavailable and this server holds too many unrecorded outcomes"
# Retry pauses of the tick while the database is unreachable: short enough that work resumes
# within a second of its return, long enough not to spin.
_OUTAGE_FIRST_PAUSE = 0.05
_OUTAGE_MAX_PAUSE = 0.5

# An operation for the tick: ("ack" | "outcome", payload, the reporter's future or None).
Op = tuple[str, Any, "asyncio.Future[Any] | None"]


class Dispatcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        streams: dict[str, WorkerStream],
        leases: LeaseRegistry,
        bus: EventBus,
        breakers: Breakers,
        hops: HopTrace,
    ) -> None:
        self.db = db
        self.settings = settings
        self._streams = streams
        self._leases = leases
        self._bus = bus
        self.breakers = breakers
        self._hops = hops
        self._wake = asyncio.Event()
        self._admit = True
        self._dispatch_needed = True
        self._ops: asyncio.Queue[Op] = asyncio.Queue()
        # True from a unit of work that found the database unreachable until a tick committed;
        # the event is set meanwhile (impatient reporters wait on it).
        self.database_down = False
        self._outage = asyncio.Event()
        # Monotonic time since which the database has answered without a break: after an
        # outage nobody could record workers' liveness (see Sweeper._vanished_cutoff).
        self.database_since = time.monotonic()
        self._rng = random.Random()
        self._handler_stats = HandlerStats()
        # Ready steps per namespace, refreshed by the sweeper: the "system load" backoff input.
        self.ready_depth: dict[str, int] = {}
        self._ack_timer: asyncio.TimerHandle | None = None
        self._failed_ticks_by_op: dict[int, int] = {}
        self._committed_at = 0.0  # monotonic time of the last tick's commit (for ``hops``)
        # Monotonic times of the last tick's stages, stamped on its outcomes (``hops``).
        self._tick_stages: dict[str, float] = {}
        # Tick durations and failures, for metrics.
        self.tick_observers: list[Callable[[float, bool], None]] = []

    def wake(self, *, admit: bool = False) -> None:
        """Something may be dispatchable (a task created, capacity freed, a timer elapsed)."""
        if admit:
            self._admit = True
        self._dispatch_needed = True
        self._wake.set()

    def _flush_acks(self) -> None:
        self._ack_timer = None
        self._wake.set()

    def enqueue(self, kind: str, payload: Any, future: asyncio.Future[Any] | None) -> None:
        self._ops.put_nowait((kind, payload, future))
        self._wake.set()

    def submit(self, outcome: Outcome) -> None:
        """Queues an outcome nobody waits for (a lease taken back)."""
        self.enqueue("outcome", outcome, None)

    def ack(self, stream: WorkerStream, lease_id: str) -> None:
        lease = self._leases.acknowledge(stream, lease_id)
        if lease is None:
            return
        # Acknowledgements do not wake the tick by themselves: the result of a short handler
        # usually follows within milliseconds and both then go into one transaction. A timer
        # bounds how late a long handler's ack (and its step.started event) is written.
        self._ops.put_nowait(("ack", (lease_id, stream.worker_id, lease.correlation_id), None))
        if self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(
                ACK_COALESCE_SECONDS, self._flush_acks
            )

    async def report(self, outcome: Outcome, *, patient: bool = True) -> Verdict:
        """Queues an outcome and waits until its batch committed. While the database is
        unreachable a patient reporter (a stream: its reports are applied the moment the
        database returns) keeps waiting; an impatient one (a unary call with a deadline) is
        answered UNAVAILABLE, its outcome still queued (a retry then meets a DUPLICATE). Past
        ``max_unrecorded_outcomes`` waiting, UNAVAILABLE at once: the worker keeps the result,
        and its lease, and sends it again."""
        if self._ops.qsize() >= self.settings.max_unrecorded_outcomes:
            return Verdict(outcome.lease_id, False, "UNAVAILABLE", _HOLDING_TOO_MANY)
        holder = self._leases.holder(outcome.lease_id)
        if holder is not None and not held_by(
            holder.worker_id, holder.identity, outcome.worker_id, outcome.identity
        ):
            # Refused here, before the lease is taken from the stream that holds it.
            return Verdict(outcome.lease_id, False, "LEASE_NOT_HELD", NOT_HELD)
        if self._leases.take(outcome.lease_id) is not None:
            self.wake()
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self.enqueue("outcome", outcome, future)
        if patient:
            return await future
        outage: asyncio.Future[Any] = asyncio.ensure_future(self._outage.wait())
        waiting: set[asyncio.Future[Any]] = {future, outage}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            outage.cancel()
        if future.done():
            return future.result()
        return Verdict(outcome.lease_id, False, "UNAVAILABLE", "the database is unavailable")

    def database_lost(self) -> None:
        """A unit of work found the database unreachable (logged once per outage)."""
        self.database_since = time.monotonic()
        if not self.database_down:
            log.warning("database unavailable; holding acknowledgements and outcomes")
            self.database_down = True
            self._outage.set()

    @property
    def _suspect_silence_seconds(self) -> float:
        """Silence after which a stream gets no new assignments: two keepalives unanswered, or
        half the keepalive timeout if that is longer."""
        s = self.settings
        return max(2 * s.keepalive_interval_seconds, s.keepalive_timeout_seconds / 2)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """The tick loop; returns only by cancellation. A failed tick is retried; an exception
        escaping this (a bug) ends the loop, and the supervisor (``App``) stops the server."""
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
            started = time.perf_counter()
            try:
                await self._tick(batch)
                self._observe_tick(time.perf_counter() - started, failed=False)
                if self._hops.enabled:
                    self._mark_hops(batch, started)
                if self._failed_ticks_by_op:
                    for _, payload, _ in batch:
                        self._failed_ticks_by_op.pop(id(payload), None)
                if self.database_down:
                    log.warning("database reachable again; %d operations applied", len(batch))
                    self.database_down = False
                    self._outage.clear()
                pause = _OUTAGE_FIRST_PAUSE
            except asyncio.CancelledError:
                raise
            except Unavailable:
                # An outage is a pause, not a loss: every operation of the batch (reporters keep
                # waiting) goes back to the head of the queue and is applied once the database
                # answers again. Memory stays bounded because report() refuses new outcomes past
                # max_unrecorded_outcomes and no claim (new work) can commit meanwhile.
                self._observe_tick(time.perf_counter() - started, failed=True)
                self.database_lost()
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

    def _observe_tick(self, seconds: float, *, failed: bool) -> None:
        for observer in self.tick_observers:
            with contextlib.suppress(Exception):
                observer(seconds, failed)

    def _mark_hops(self, batch: list[Op], started: float) -> None:
        # perf_counter and monotonic are different clocks: convert the tick's start.
        tick_start = time.monotonic() - (time.perf_counter() - started)
        for kind, payload, _ in batch:
            if kind == "outcome":
                self._hops.mark(payload.lease_id, "tick_start", tick_start)
                for stage, at in self._tick_stages.items():
                    self._hops.mark(payload.lease_id, stage, at)
                self._hops.mark(payload.lease_id, "commit", self._committed_at)

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
        claims: list[tuple[WorkerStream, list[ClaimedStep], int]] = []
        result = None
        stages = self._tick_stages if self._hops.enabled else {}
        async with self.db.session() as s:
            journal = Journal()
            await start_leases(s, journal, acks, correlation_ids=correlation_ids)
            stages["acks_applied"] = time.monotonic()
            if outcomes:
                result = await apply_outcomes(s, journal, outcomes, self._rng, self._factors)
                dispatch = dispatch or result.wake
                admit = admit or bool(result.finished_tasks)
                await self._feed(s, result, outcomes)
            stages["outcomes_applied"] = time.monotonic()
            if admit:
                await admit_tasks(s, journal, self.settings.max_parallel_tasks)
                dispatch = True
            if dispatch:
                claims = await self._claim_all(s, journal)
            stages["claims_made"] = time.monotonic()
            await self._save_breaker_changes(s, journal)
            await journal.flush(s)
            stages["flushed"] = time.monotonic()
        self._committed_at = time.monotonic()
        self._bus.committed(journal)
        for stream, claimed, asked in claims:
            self._hand_out(stream, claimed)
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

    async def _claim_all(
        self, s: AsyncSession, journal: Journal
    ) -> list[tuple[WorkerStream, list[ClaimedStep], int]]:
        """Claims for every stream with free capacity; open breakers' keys are held back, and a
        half-open breaker lets exactly one trial step through (to the group's first worker)."""
        extra = self.settings.ack_timeout_seconds + self.settings.lease_grace_seconds
        blocked, trials = self.breakers.blocked_keys(journal.now)
        # A snapshot: streams may open or close while the claims await the database. A stream
        # that has not answered a keepalive for a while may be blackholed: it gets no new work
        # (its leases are taken back when it times out, and must not land on it again).
        quiet = time.monotonic() - self._suspect_silence_seconds
        streams = [
            stream
            for stream in self._streams.values()
            if self._leases.free(stream) > 0 and stream.last_seen >= quiet
        ]
        free = {stream.worker_id: min(self._leases.free(stream), _BATCH) for stream in streams}
        claimed: dict[str, list[ClaimedStep]] = {stream.worker_id: [] for stream in streams}
        # Workers serving the same namespaces and handlers claim together, in one query.
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[WorkerStream]] = {}
        for stream in streams:
            signature = (tuple(sorted(stream.namespaces)), tuple(sorted(stream.handlers)))
            groups.setdefault(signature, []).append(stream)
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
            (stream, claimed[stream.worker_id], free[stream.worker_id])
            for stream in streams
            if claimed[stream.worker_id]
        ]

    def _hand_out(self, stream: WorkerStream, claimed: list[ClaimedStep]) -> None:
        now = time.monotonic()
        for c in claimed:
            if stream.closed:
                self.submit(Outcome(c.lease_id, OutcomeKind.RELEASE, stream.worker_id))
                continue
            lease = Lease(
                c.lease_id, c.step_id, c.task_id, offered_at=now, correlation_id=c.correlation_id
            )
            self._leases.add(stream, lease)
            stream.outbound.put_nowait(c)
            self._hops.mark(c.lease_id, "claimed", self._committed_at)
            self._hops.mark(c.lease_id, "queued")

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

    async def _feed(self, s: AsyncSession, result: BatchResult, outcomes: list[Outcome]) -> None:
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

    async def _save_breaker_changes(self, s: AsyncSession, journal: Journal) -> None:
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
