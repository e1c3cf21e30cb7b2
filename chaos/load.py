"""Client side of a chaos or soak run: paced submission and completion tracking that outlive
server restarts and database outages.

- :class:`ResumingTracker` is bench's CompletionTracker whose WatchEvents stream is reopened
  (after the last sequence received) however long the server or database is away; it also counts
  terminal events per task (a task completed twice shows up here too).
- :class:`PacedLoad` submits task i at ``start + offsets[i]`` (CreateTask with an idempotency
  key, bench's Submitter), retrying any error until a bound, as a real client would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

from bench.runner import TERMINAL, CompletionTracker, Submitter
from bench.workloads import NAMESPACE, Workload
from tasker import Client, TaskerError

__all__ = ["PacedLoad", "ResumingTracker"]

log = logging.getLogger("chaos")


class ResumingTracker(CompletionTracker):
    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.last_sequence = 0
        self.events_per_task: Counter[str] = Counter()
        self.reconnects = 0

    async def _watch(self) -> None:
        while True:
            events = self.client.watch_events(
                [NAMESPACE], list(TERMINAL), after_sequence=self.last_sequence
            )
            try:
                async with contextlib.aclosing(events):
                    async for event in events:
                        self.last_sequence = event.sequence
                        self.events_per_task[event.task_id] += 1
                        self.record(event.task_id, event.event_name)
            except Exception as exc:  # any break: reopen (the run bounds the time)
                self.reconnects += 1
                log.debug("event stream broke (%s); reopening", exc)
            await asyncio.sleep(0.5)

    def first_after(self, instant: float) -> float | None:
        """perf_counter time of the first terminal event seen after ``instant``."""
        return min((t for t, _ in self.seen.values() if t > instant), default=None)


class PacedLoad:
    """Task i submitted ``offsets[i]`` seconds after ``run()`` starts (``steady(n, rate)`` for an
    even pace); ``submitted`` maps task id → (index, perf_counter time of its CreateTask)."""

    def __init__(
        self, client: Client, workload: Workload, offsets: list[float], *, key: str = "chaos"
    ) -> None:
        self.submitter = Submitter(client, workload)
        self.offsets = offsets
        self.key = key
        self.submitted: dict[str, tuple[int, float]] = {}
        self.failed: list[int] = []  # indexes whose CreateTask never succeeded within the bound
        self.errors = 0
        self.done = asyncio.Event()

    async def run(self, give_up_s: float = 180.0) -> None:
        start = time.perf_counter()
        sem = asyncio.Semaphore(64)

        async def one(index: int) -> None:
            await asyncio.sleep(max(0.0, start + self.offsets[index] - time.perf_counter()))
            async with sem:
                t0 = time.perf_counter()
                deadline = time.monotonic() + give_up_s
                while True:
                    try:
                        task_id = await self.submitter.create(index, self.key)
                    except (TaskerError, RuntimeError) as exc:
                        self.errors += 1
                        if time.monotonic() > deadline:
                            log.warning("  CreateTask %d given up: %s", index, exc)
                            self.failed.append(index)
                            return
                        await asyncio.sleep(1.0)
                        continue
                    self.submitted[task_id] = (index, t0)
                    return

        try:
            await asyncio.gather(*(one(i) for i in range(len(self.offsets))))
        finally:
            self.done.set()

    @staticmethod
    def steady(tasks: int, rate: float) -> list[float]:
        return [i / rate for i in range(tasks)]

    @property
    def creates_retried(self) -> int:
        return self.submitter.retries + self.errors
