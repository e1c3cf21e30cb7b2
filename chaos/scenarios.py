"""The fault scenarios and what each run measures (definitions: docs/reliability.md).

A scenario submits its ``tasks`` diamond tasks in one wave per fault (waves ``interval_s`` apart,
each submitted at ``burst_rate`` tasks a second, so that a backlog is in flight at every fault),
injects each fault ``fault_after_s`` into its wave, then waits (bounded by ``settle_s`` after the
last fault's end) for every task to complete. Then it stops the workers and reads the database,
the workers' execution logs and the client's completion times.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.runner import verify
from bench.workloads import WORKLOADS
from chaos.cluster import Backends, Stack, postgres_outage
from chaos.load import PacedLoad, ResumingTracker
from tasker import Client
from tasker_server.store.db import Database

__all__ = ["FULL", "SHORT", "Scenario", "run_scenario"]

log = logging.getLogger("chaos")

WORKLOAD = WORKLOADS["diamond"]
KEEPALIVE_TIMEOUT_S = 15.0  # the server's default keepalive_timeout_seconds
STALL_TARGET_S = 10.0  # server kill, database back: every stalled task done within this
MOVE_TARGET_S = 5.0  # worker kill: its steps run elsewhere within this
PAUSE_TARGET_S = 2.0  # worker kill / blackhole: the longest pause of the other worker
STUCK_SNAPSHOT_S = 20.0  # when still-leased steps are listed if tasks are still stalled


@dataclass(frozen=True)
class Scenario:
    name: str
    backend: str
    kind: str  # server_kill | worker_kill | pg_stop | blackhole
    faults: int
    tasks: int
    burst_rate: float = 100.0
    fault_after_s: float = 1.5
    interval_s: float = 8.0
    outage_s: float = 0.0
    settle_s: float = 330.0

    def offsets(self) -> list[float]:
        """Submit time of each task, seconds from the start: one wave per fault."""
        per_wave = -(-self.tasks // self.faults)
        return [
            (i // per_wave) * self.interval_s + (i % per_wave) / self.burst_rate
            for i in range(self.tasks)
        ]

    def fault_times(self) -> list[float]:
        return [n * self.interval_s + self.fault_after_s for n in range(self.faults)]


def _full() -> list[Scenario]:
    return [
        Scenario("server-kill", "postgres", "server_kill", 5, 1000),
        Scenario("server-kill", "sqlite", "server_kill", 3, 1000, interval_s=10),
        Scenario("worker-kill", "postgres", "worker_kill", 1, 1000, fault_after_s=3),
        Scenario("pg-stop-5s", "postgres", "pg_stop", 1, 500, fault_after_s=2, outage_s=5),
        Scenario("pg-stop-60s", "postgres", "pg_stop", 1, 500, fault_after_s=2, outage_s=60),
        Scenario("blackhole", "postgres", "blackhole", 1, 500, fault_after_s=2),
    ]


def _short() -> list[Scenario]:
    def one(name: str, backend: str, kind: str, outage_s: float = 0.0) -> Scenario:
        return Scenario(name, backend, kind, 1, 50, burst_rate=50, fault_after_s=0.7,
                        outage_s=outage_s, settle_s=45)

    return [
        one("server-kill", "postgres", "server_kill"),
        one("server-kill", "sqlite", "server_kill"),
        one("worker-kill", "postgres", "worker_kill"),
        one("pg-stop-5s", "postgres", "pg_stop", outage_s=5),
        one("blackhole", "postgres", "blackhole"),
    ]


FULL = _full()
SHORT = _short()


@dataclass
class Fault:
    kind: str
    start: float  # perf_counter
    end: float  # perf_counter: when the fault was lifted (== start for instant faults)
    in_flight: set[str] = field(default_factory=set)
    wall_start: float = 0.0  # time.time() of start, to compare with the workers' logs


async def _inject(scenario: Scenario, stack: Stack, backends: Backends, tracker: ResumingTracker,
                  load: PacedLoad, t0: float) -> list[Fault]:
    faults: list[Fault] = []
    for n, offset in enumerate(scenario.fault_times()):
        at = t0 + offset
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        in_flight = set(load.submitted) - tracker.seen.keys()
        wall = time.time()
        if scenario.kind == "server_kill":
            start, end = await stack.kill_server_and_restart()
        elif scenario.kind == "worker_kill":
            start = end = stack.kill_worker(0)
        elif scenario.kind == "blackhole":
            start = end = stack.blackhole_worker0()
        else:
            assert backends.postgres is not None
            start, end = await postgres_outage(backends.postgres, scenario.outage_s)
        log.info("  fault %d (%s) at %.1fs, %d tasks in flight, lifted after %.1fs",
                 n + 1, scenario.kind, start - t0, len(in_flight), end - start)
        faults.append(Fault(scenario.kind, start, end, in_flight, wall))
    return faults


def _read_exec_logs(paths: list[Path]) -> tuple[list[tuple[float, str, str, int]], set[str]]:
    """(time, task id, step, worker index) per handler execution, and the leases executed."""
    rows = []
    leases: set[str] = set()
    for index, path in enumerate(paths):
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5:
                rows.append((float(parts[0]), parts[1], parts[2], index))
                leases.add(parts[4])
    return sorted(rows), leases


_LEASED = ("enqueued", "in_progress")


async def _stuck_steps(db_url: str) -> list[tuple[str, str | None, Any]]:
    """(state, lease id, lease expiry) of the steps leased, or ready and not leased, now."""
    db = Database.from_url(db_url)
    try:
        async with db.session(read_only=True) as session:
            rows = await session.execute(text(
                "select state, lease_id, lease_expires_at from steps "
                "where state in ('enqueued', 'in_progress') "
                "or (state in ('pending', 'retrying') and pending_parents = 0)"
            ))
            return [(r[0], r[1], r[2]) for r in rows.all()]
    finally:
        await db.dispose()


def _stuck_summary(stuck: list[tuple[str, str | None, Any]], executed: set[str]) -> dict[str, Any]:
    """Why work is stranded. Of the leased steps: one whose lease a worker executed lost its
    result on the way; one never executed lost its assignment. Ready steps (pending/retrying)
    are waiting for a claim. ``lease_expires_in_s``: the latest lease expiry, from now."""
    now = datetime.now(UTC)
    leased = [(lease, e) for state, lease, e in stuck if state in _LEASED]
    expiries = [
        (e if e.tzinfo else e.replace(tzinfo=UTC)) - now for _, e in leased
        if isinstance(e, datetime)
    ]
    return {
        "steps": len(stuck),
        "by_state": dict(Counter(state for state, _, _ in stuck)),
        "executed_result_lost": sum(1 for lease, _ in leased if lease in executed),
        "never_executed": sum(1 for lease, _ in leased if lease not in executed),
        "lease_expires_in_s": round(max(expiries).total_seconds(), 1) if expiries else None,
    }


async def _recorded_twice(db_url: str) -> dict[str, int]:
    """Steps/tasks whose completion the database holds more than once."""
    queries = {
        "step_attempts_complete": "select step_id from step_attempts where outcome = 'complete'"
                                  " group by step_id having count(*) > 1",
        "step_transitions_complete": "select step_id from transitions where entity = 'step' and "
                                     "to_state = 'complete' group by step_id having count(*) > 1",
        "task_transitions_complete": "select task_id from transitions where entity = 'task' and "
                                     "to_state = 'complete' group by task_id having count(*) > 1",
    }
    db = Database.from_url(db_url)
    try:
        async with db.session(read_only=True) as session:
            return {
                name: len((await session.execute(text(sql))).all())
                for name, sql in queries.items()
            }
    finally:
        await db.dispose()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _worker_metrics(fault: Fault, execs: list[tuple[float, str, str, int]],
                    window_end_wall: float) -> dict[str, Any]:
    """Worker 0 was killed/blackholed: when the steps it had started ran again elsewhere, and the
    longest pause of the other worker(s) while there was work for them: from the fault until the
    last task submitted after the fault completed (those tasks were never leased to worker 0)."""
    wall = fault.wall_start
    victim_steps = {(task, step) for t, task, step, w in execs if w == 0 and t <= wall}
    first_move: dict[tuple[str, str], float] = {}
    for t, task, step, w in execs:
        if w != 0 and t > wall and (task, step) in victim_steps:
            first_move.setdefault((task, step), t - wall)
    others = [t for t, _, _, w in execs if w != 0 and wall <= t <= window_end_wall]
    points = [wall, *others, window_end_wall] if window_end_wall > wall else []
    gaps = [b - a for a, b in itertools.pairwise(points)]
    return {
        "steps_rerun_elsewhere": len(first_move),
        "rerun_elsewhere_within_s": _round(max(first_move.values(), default=None)),
        "other_worker_longest_pause_s": _round(max(gaps, default=0.0)),
    }


async def run_scenario(scenario: Scenario, backends: Backends, log_root: Path) -> dict[str, Any]:
    name = f"{scenario.name}-{scenario.backend}"
    log_dir = log_root / name
    db_url = backends.database(scenario.backend, f"chaos_{name.replace('-', '_')}")
    stack = Stack(db_url, log_dir, proxy_worker0=scenario.kind == "blackhole")
    log.info("%s: %d diamond tasks in %d wave(s) at %.0f/s, %d %s fault(s)", name,
             scenario.tasks, scenario.faults, scenario.burst_rate, scenario.faults, scenario.kind)
    await stack.start()
    try:
        async with await Client.connect(stack.server.address, timeout=30) as client:
            await stack.ready(client, WORKLOAD)
            stuck_early: dict[str, Any] | None = None
            tracker = ResumingTracker(client)
            await tracker.start()
            load = PacedLoad(client, WORKLOAD, scenario.offsets())
            t0 = time.perf_counter()
            submitting = asyncio.create_task(load.run())
            try:
                faults = await _inject(scenario, stack, backends, tracker, load, t0)
                await submitting
                settle_from = max([f.end for f in faults] + [time.perf_counter()])
                # Past the 10 s target: which leases hold the stalled tasks, and why.
                early = settle_from + STUCK_SNAPSHOT_S - time.perf_counter()
                finished = await tracker.wait_all(set(load.submitted), max(early, 0.1))
                if not finished:
                    stuck_early = _stuck_summary(await _stuck_steps(db_url),
                                                 _read_exec_logs(stack.exec_logs())[1])
                    log.info("  %.0fs after the last fault: stuck %s", STUCK_SNAPSHOT_S,
                             stuck_early)
                bound = settle_from + scenario.settle_s - time.perf_counter()
                finished = await tracker.wait_all(set(load.submitted), max(bound, 1.0))
                await asyncio.sleep(1.0)  # late duplicates of terminal events
            finally:
                if not submitting.done():
                    submitting.cancel()
                await tracker.stop()
            if stack.workers is not None:  # no more executions: the logs are final
                await asyncio.to_thread(stack.workers.stop)
            problems = await verify(client, WORKLOAD, load.submitted)
        twice = await _recorded_twice(db_url)
        stuck = await _stuck_steps(db_url)
    finally:
        await stack.stop()

    seen = tracker.seen
    offset = time.time() - time.perf_counter()
    done_times = [seen[t][0] for t in load.submitted if t in seen]
    all_done = max(done_times, default=t0)
    not_complete = [p for p in problems if "): state " in p]
    wrong = [p for p in problems if "): state " not in p]
    execs, executed_leases = _read_exec_logs(stack.exec_logs())
    per_step: dict[tuple[str, str], int] = defaultdict(int)
    for _, task, step, _ in execs:
        per_step[(task, step)] += 1
    fault_rows = []
    for f in faults:
        first = tracker.first_after(f.end)
        stalled_done = [seen[t][0] for t in f.in_flight if t in seen]
        unfinished = len(f.in_flight) - len(stalled_done)
        last = max(stalled_done, default=f.end) - f.end if not unfinished else None
        fault_rows.append({
            "kind": f.kind,
            "at": round(f.start - t0, 2),
            "duration_s": round(f.end - f.start, 2),
            "in_flight": len(f.in_flight),
            "recovered_first_completion_s": _round(None if first is None else first - f.end),
            "last_stalled_finished_s": _round(None if last is None else max(last, 0.0)),
            "stalled_unfinished": unfinished,
        })
    result: dict[str, Any] = {
        "scenario": scenario.name,
        "backend": scenario.backend,
        "tasks": scenario.tasks,
        "submitted": len(load.submitted),
        "lost": len(not_complete) + len(load.failed),
        "wrong_results": len(wrong),
        "recorded_twice": sum(twice.values()),
        "recorded_twice_detail": twice,
        "duplicate_terminal_events": sum(n - 1 for n in tracker.events_per_task.values() if n > 1),
        "executions": len(execs),
        "repeated_executions": sum(n - 1 for n in per_step.values() if n > 1),
        "create_retries": load.creates_retried,
        "all_finished_within_bound": finished,
        "wall_s": round(all_done - t0, 2),
        "faults": fault_rows,
        f"stuck_steps_{STUCK_SNAPSHOT_S:g}s_after_last_fault": stuck_early,
        "stuck_steps_at_end": _stuck_summary(stuck, executed_leases),
    }
    if scenario.kind in ("worker_kill", "blackhole") and faults:
        after = [t for t, (_, t_sub) in load.submitted.items() if t_sub > faults[0].start]
        end = time.perf_counter() if any(t not in seen for t in after) else max(
            (seen[t][0] for t in after), default=faults[0].start)
        result["worker"] = _worker_metrics(faults[0], execs, end + offset)
    result["targets_met"] = targets(scenario, result)
    result["ok"] = all(result["targets_met"].values())
    result["logs"] = str(log_dir)
    for line in problems[:5]:
        log.warning("  problem: %s", line)
    return result


def _within(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit


def targets(scenario: Scenario, r: dict[str, Any]) -> dict[str, bool]:
    met = {
        "no_task_lost": r["lost"] == 0,
        "no_result_recorded_twice": r["recorded_twice"] == 0,
        "results_correct": r["wrong_results"] == 0,
    }
    faults = r["faults"]
    if scenario.kind in ("server_kill", "pg_stop"):
        met[f"stalled_done_within_{STALL_TARGET_S:g}s"] = all(
            _within(f["last_stalled_finished_s"], STALL_TARGET_S) for f in faults
        )
    if scenario.kind == "worker_kill":
        w = r.get("worker", {})
        met[f"rerun_elsewhere_within_{MOVE_TARGET_S:g}s"] = (
            w.get("steps_rerun_elsewhere", 0) == 0
            or _within(w.get("rerun_elsewhere_within_s"), MOVE_TARGET_S)
        ) and all(_within(f["last_stalled_finished_s"], MOVE_TARGET_S) for f in faults)
        met[f"other_worker_never_paused_{PAUSE_TARGET_S:g}s"] = _within(
            w.get("other_worker_longest_pause_s"), PAUSE_TARGET_S
        )
    if scenario.kind == "blackhole":
        limit = KEEPALIVE_TIMEOUT_S + 5
        met[f"recovered_within_{limit:g}s"] = all(
            _within(f["last_stalled_finished_s"], limit) for f in faults
        )
    return met
