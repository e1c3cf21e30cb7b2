"""tasker.v1.EventService."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from sqlalchemy import func, or_, select

from tasker.v1 import event_service_pb2 as pb
from tasker.v1 import event_service_pb2_grpc as pb_grpc
from tasker_server.engine.engine import Engine
from tasker_server.store.db import Database
from tasker_server.store.events import pruned_through
from tasker_server.store.models import Event

from . import convert
from .errors import ERROR_DOMAIN

__all__ = ["EventService", "check_retention"]


# -- observability (issue 5): event retention --
async def check_retention(
    db: Database, after: int, context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    """Aborts with OUT_OF_RANGE when events after ``after`` may have been pruned (retention):
    resuming there would silently skip them."""
    if after <= 0:
        return
    async with db.session(read_only=True) as s:
        through = await pruned_through(s)
    if after >= through:
        return
    message = (
        f"events after sequence {after} are no longer retained (pruned through {through}); "
        "replay from 0 or start at the live end"
    )
    info = error_details_pb2.ErrorInfo(
        reason="EVENTS_PRUNED",
        domain=ERROR_DOMAIN,
        metadata={"after_sequence": str(after), "pruned_through": str(through)},
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    status = status_pb2.Status(code=code_pb2.OUT_OF_RANGE, message=message, details=[packed])
    await context.abort(
        grpc.StatusCode.OUT_OF_RANGE,
        message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )


# -- end observability --


class EventService(pb_grpc.EventServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        db = self.engine.db
        after = request.after_sequence
        if after < 0:
            async with db.session(read_only=True) as s:
                after = int(
                    (await s.execute(select(func.coalesce(func.max(Event.seq), 0)))).scalar_one()
                )
        await check_retention(db, after, context)  # observability (issue 5)
        loop, next_check = asyncio.get_running_loop(), 0.0
        exact = [n for n in request.event_names if not n.endswith(".*")]
        prefixes = [n[:-1] for n in request.event_names if n.endswith(".*")]
        while True:
            signal = self.engine.events_signal()
            query = select(Event).where(Event.seq > after)
            if request.namespaces:
                query = query.where(Event.namespace.in_(list(request.namespaces)))
            if request.event_names:
                query = query.where(
                    or_(Event.name.in_(exact), *[Event.name.startswith(p) for p in prefixes])
                )
            async with db.session(read_only=True) as s:
                rows = (await s.execute(query.order_by(Event.seq).limit(500))).scalars().all()
            # A gap may be events pruned underneath a consumer that fell behind the retention
            # window (or just filtered out / a rolled-back sequence): look, at most every 5 s.
            if rows and rows[0].seq > after + 1 and loop.time() >= next_check:  # issue 5
                next_check = loop.time() + 5.0
                await check_retention(db, after, context)
            for row in rows:
                after = row.seq
                yield pb.WatchEventsResponse(event=convert.event_message(row))
            if rows:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), timeout=1.0)
