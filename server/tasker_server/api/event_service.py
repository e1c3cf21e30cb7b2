"""tasker.v1.EventService."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from sqlalchemy import func, or_, select

from tasker.v1 import event_service_pb2 as pb
from tasker.v1 import event_service_pb2_grpc as pb_grpc
from tasker_server.engine.engine import Engine
from tasker_server.store.models import Event

from . import convert

__all__ = ["EventService"]


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
            for row in rows:
                after = row.seq
                yield pb.WatchEventsResponse(event=convert.event_message(row))
            if rows:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), timeout=1.0)
