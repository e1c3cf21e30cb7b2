"""The two measurement modes and the correctness check, all from the client's point of view.

Completions are seen on one ``EventService.WatchEvents`` stream (namespace ``bench``, events
``task.completed``/``task.failed``), opened before the first submit; the latency of a task is the
time from just before its CreateTask call to the arrival of its terminal event at the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from bench.workloads import NAMESPACE, Workload
from tasker import Client, ResourceExhaustedError, UnavailableError

__all__ = ["RunResult", "run_single", "run_throughput"]

log = logging.getLogger("bench")

TERMINAL = ("task.completed", "task.failed")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class RunResult:
    tasks: int
    wall_s: float
    latencies_s: list[float]
    ok: bool
    problems: list[str] = field(default_factory=list)

    def latency_ms(self) -> dict[str, float]:
        values = sorted(self.latencies_s)
        return {
            f"p{int(q * 100)}": round(percentile(values, q) * 1000, 2) for q in (0.5, 0.95, 0.99)
        }


class CompletionTracker:
    """Terminal events of the namespace, with the client-side time each was seen."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seen: dict[str, tuple[float, str]] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch())
        # A fresh database per run: after_sequence=0 replays everything, so nothing is missed
        # even if the stream opens after the first submit; still wait for it to be set up.
        await asyncio.sleep(0)

    async def _watch(self) -> None:
        events = self.client.watch_events([NAMESPACE], list(TERMINAL), after_sequence=0)
        async with contextlib.aclosing(events):
            async for event in events:
                self.record(event.task_id, event.event_name)

    def record(self, task_id: str, event_name: str) -> None:
        """A terminal event seen now (only the first one of a task counts)."""
        now = time.perf_counter()
        if task_id not in self.seen:
            self.seen[task_id] = (now, event_name)
            waiter = self._waiters.pop(task_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(now)
            self._progress.set()

    async def wait_one(self, task_id: str) -> float:
        if task_id in self.seen:
            return self.seen[task_id][0]
        future = self._waiters.setdefault(task_id, asyncio.get_running_loop().create_future())
        return await future

    async def wait_all(self, task_ids: set[str], limit_s: float) -> bool:
        deadline = time.monotonic() + limit_s
        remaining = set(task_ids) - self.seen.keys()
        last_report = time.monotonic()
        while remaining:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(left, 5.0))
            remaining -= self.seen.keys()
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                log.info("  … %d/%d tasks complete", len(task_ids) - len(remaining), len(task_ids))
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def verify(
    client: Client, workload: Workload, submitted: dict[str, tuple[int, float]]
) -> list[str]:
    """GetTask for every task (outside the timed region): complete and result per formula."""
    problems: list[str] = []
    sem = asyncio.Semaphore(16)

    async def check(task_id: str, index: int) -> None:
        async with sem:
            task = await client.get_task(task_id)
        problem = workload.check(index, task.state, task.result)
        if problem:
            problems.append(f"task {task_id} (input {index}): {problem}")

    await asyncio.gather(*(check(t, i) for t, (i, _) in submitted.items()))
    return problems


def _timeout_for(workload: Workload, tasks: int) -> float:
    return 120.0 + tasks * workload.steps / 20.0


class Submitter:
    """CreateTask with the task's index as idempotency key, retried (with backoff) on
    UNAVAILABLE / RESOURCE_EXHAUSTED as a real client would; retries are counted."""

    def __init__(self, client: Client, workload: Workload) -> None:
        self.client = client
        self.workload = workload
        self.retries = 0

    async def create(self, index: int, key_prefix: str) -> str:
        delay = 0.05
        for _ in range(30):
            try:
                task = await self.client.create_task(
                    NAMESPACE,
                    self.workload.template_name,
                    {"input": index},
                    idempotency_key=f"{key_prefix}-{index}",
                )
                return task.task_id
            except (UnavailableError, ResourceExhaustedError) as exc:
                self.retries += 1
                if self.retries <= 3 or self.retries % 100 == 0:
                    log.warning("  CreateTask %d: %s; retrying (%d retries so far)",
                                index, exc, self.retries)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise RuntimeError(f"CreateTask {index} kept failing")


async def run_throughput(
    client: Client, workload: Workload, tasks: int, concurrency: int
) -> RunResult:
    tracker = CompletionTracker(client)
    await tracker.start()
    submitted: dict[str, tuple[int, float]] = {}
    sem = asyncio.Semaphore(concurrency)
    submitter = Submitter(client, workload)

    async def submit(index: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            task_id = await submitter.create(index, "tp")
            submitted[task_id] = (index, t0)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(submit(i) for i in range(tasks)))
        submit_s = time.perf_counter() - start
        log.info("  submitted %d tasks in %.2fs (%.0f/s, %d CreateTask retries)",
                 tasks, submit_s, tasks / submit_s, submitter.retries)
        finished = await tracker.wait_all(set(submitted), _timeout_for(workload, tasks))
        end = max((tracker.seen[t][0] for t in submitted if t in tracker.seen), default=start)
    finally:
        await tracker.stop()
    return await _result(client, workload, tracker, submitted, end - start, finished)


async def run_single(
    client: Client, workload: Workload, repetitions: int, warmup: int = 5
) -> RunResult:
    tracker = CompletionTracker(client)
    await tracker.start()
    submitted: dict[str, tuple[int, float]] = {}
    finished = True
    submitter = Submitter(client, workload)
    try:
        for index in range(warmup):  # warm workers, connections and caches; not measured
            task_id = await submitter.create(index, "warmup")
            await asyncio.wait_for(tracker.wait_one(task_id), 60)
        start = time.perf_counter()
        for index in range(repetitions):
            t0 = time.perf_counter()
            task_id = await submitter.create(index, "single")
            submitted[task_id] = (index, t0)
            try:
                await asyncio.wait_for(tracker.wait_one(task_id), 60)
            except TimeoutError:
                finished = False
                break
        wall = time.perf_counter() - start
    finally:
        await tracker.stop()
    return await _result(client, workload, tracker, submitted, wall, finished)


async def _result(
    client: Client,
    workload: Workload,
    tracker: CompletionTracker,
    submitted: dict[str, tuple[int, float]],
    wall: float,
    finished: bool,
) -> RunResult:
    latencies = [tracker.seen[t][0] - t0 for t, (_, t0) in submitted.items() if t in tracker.seen]
    problems = [] if finished else [f"{len(submitted) - len(latencies)} tasks never completed"]
    problems += await verify(client, workload, submitted)
    for line in problems[:5]:
        log.warning("  problem: %s", line)
    return RunResult(len(submitted), wall, latencies, not problems, problems)


async def wait_for_workers(client: Client, count: int, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        workers: list[Any] = await client.list_workers(NAMESPACE)
        if sum(1 for w in workers if w.state == "connected") >= count:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{count} workers did not connect within {limit_s}s")
