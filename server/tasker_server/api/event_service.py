"""tasker.v1.EventService."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from tasker.v1 import event_service_pb2 as pb
from tasker.v1 import event_service_pb2_grpc as pb_grpc
from tasker_server.domain import errors
from tasker_server.engine.orchestrator import Orchestrator
from tasker_server.store.db import Database
from tasker_server.store.events import events_after, last_sequence, pruned_through
from tasker_server.store.models import Event

from . import convert

__all__ = ["EventService", "check_retention", "follow"]


async def check_retention(db: Database, after: int) -> None:
    """OUT_OF_RANGE when events after ``after`` may have been pruned (retention): resuming there
    would silently skip them."""
    if after <= 0:
        return
    async with db.session(read_only=True) as s:
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
    orchestrator: Orchestrator,
    after: int,
    *,
    task_id: int | None = None,
    namespaces: Sequence[str] = (),
    names: Sequence[str] = (),
) -> AsyncIterator[list[Event]]:
    """Pages of the durable event log after ``after``, in sequence order, read at the caller's
    pace (a slow watcher never slows the engine). An empty page means "caught up"; the next page
    then waits for a commit that wrote events (commits of other replicas: at most a second)."""
    while True:
        signal = orchestrator.events_signal()
        async with orchestrator.db.session(read_only=True) as s:
            page = await events_after(s, after, task_id=task_id, namespaces=namespaces, names=names)
        yield page
        if page:
            after = page[-1].seq
            continue
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancellation
        # of a watcher whose client went away, leaving its stream handler running.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await signal.wait()


class EventService(pb_grpc.EventServiceServicer):
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        db = self.orchestrator.db
        after = request.after_sequence
        if after < 0:
            async with db.session(read_only=True) as s:
                after = await last_sequence(s)
        await check_retention(db, after)
        loop, next_check = asyncio.get_running_loop(), 0.0
        pages = follow(
            self.orchestrator,
            after,
            namespaces=list(request.namespaces),
            names=list(request.event_names),
        )
        async for page in pages:
            # A gap may be events pruned underneath a consumer that fell behind the retention
            # window (or just filtered out / a rolled-back sequence): look, at most every 5 s.
            if page and page[0].seq > after + 1 and loop.time() >= next_check:
                next_check = loop.time() + 5.0
                await check_retention(db, after)
            for row in page:
                after = row.seq
                yield pb.WatchEventsResponse(event=convert.event_message(row))
