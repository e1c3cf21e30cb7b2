"""tasker.v1.EventService."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from tasker.v1 import event_service_pb2 as pb
from tasker.v1 import event_service_pb2_grpc as pb_grpc
from tasker_server.engine.orchestrator import Orchestrator

from . import convert
from .watchers import Watchers

__all__ = ["EventService"]


class EventService(pb_grpc.EventServiceServicer):
    def __init__(self, orchestrator: Orchestrator, watchers: Watchers) -> None:
        self.orchestrator = orchestrator
        self.watchers = watchers

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        with self.watchers.slot(context):
            events = self.orchestrator.events
            after = request.after_sequence
            if after < 0:
                after = await events.live_end()
            after = await events.resume_point(after)
            await events.check_retention(after)
            loop, next_check = asyncio.get_running_loop(), 0.0
            pages = events.follow(
                after,
                namespaces=list(request.namespaces),
                names=list(request.event_names),
            )
            async for page in pages:
                # A gap may be events pruned underneath a consumer that fell behind the retention
                # window (or just filtered out / a rolled-back sequence): look, at most every 5 s.
                if page and page[0].seq > after + 1 and loop.time() >= next_check:
                    next_check = loop.time() + 5.0
                    await events.check_retention(after)
                for row in page:
                    after = row.seq
                    yield pb.WatchEventsResponse(event=convert.event_message(row))
