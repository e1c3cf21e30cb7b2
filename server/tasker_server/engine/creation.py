"""Task creation in batches: concurrent CreateTask calls share one transaction.

Each CreateTask validates on its own (domain rules, input schema) and then hands its task to the
creator, which drains whatever is waiting and writes it with ``store.tasks.insert_tasks`` — four
statements for the whole batch. Under load this turns N transactions into one; an idle server
writes a lone task at once (no timer, no added latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from tasker_server.store.db import Database
from tasker_server.store.journal import Journal
from tasker_server.store.tasks import NewTask, TaskDetail, insert_tasks

__all__ = ["TaskCreator"]

log = logging.getLogger(__name__)

BATCH = 256

Waiting = tuple[NewTask, asyncio.Future[tuple[TaskDetail, bool]]]


class TaskCreator:
    def __init__(self, db: Database, committed: Callable[[Journal, bool], None]) -> None:
        self.db = db
        self._committed = committed
        self._queue: asyncio.Queue[Waiting] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="tasker-creator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.cancel()

    async def create(self, new: NewTask) -> tuple[TaskDetail, bool]:
        future: asyncio.Future[tuple[TaskDetail, bool]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((new, future))
        return await future

    async def run(self) -> None:
        """Creates queued tasks in batches until cancelled (``start`` runs it as its own task;
        the server runs it under its supervised task group instead)."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [(new, future) for new, future in batch if not future.done()]
            if not batch:
                continue
            try:
                async with self.db.session() as s:
                    journal = Journal()
                    results = await insert_tasks(s, journal, [new for new, _ in batch])
                    await journal.flush(s)
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self._committed(journal, any(created for _, created in results))
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
