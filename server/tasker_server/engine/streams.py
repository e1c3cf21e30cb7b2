"""Worker streams: one per open ``Connect`` stream, kept in memory on the replica holding it.

A stream knows what its worker can run, its capacity and its outbound queue; which leases it
holds is the lease registry's business (``leases.py``). Heartbeats and keepalives touch only this
memory; the database sees a worker's liveness through one batched ``workers.last_seen_time``
update per interval for all streams.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["Cancellation", "Lease", "WorkerStream"]


@dataclass(slots=True)
class Lease:
    lease_id: str
    step_id: int
    task_id: int
    offered_at: float
    acked: bool = False
    last_heartbeat: float = 0.0
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Cancellation:
    """Outbound: tells the worker to stop the handler of ``lease_id``."""

    lease_id: str
    reason: str


# eq=False: a stream is identified by the object (the registry keys its leases by it); two
# streams of one worker id, an old and its replacement, are different streams.
@dataclass(slots=True, eq=False)
class WorkerStream:
    worker_id: str
    name: str
    namespaces: list[str]
    handlers: list[str]
    capacity: int
    sdk_language: str
    sdk_version: str
    connect_time: datetime
    outbound: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    last_seen: float = field(default_factory=time.monotonic)
    draining: bool = False
    closed: bool = False
    # The job-queue pattern: its jobs heartbeat and report by lease id, so its acknowledged
    # leases do not depend on this stream.
    hands_off_leases: bool = False
    # The authenticated identity that opened the stream (None with authentication off): its
    # leases are valid only from that identity.
    identity: str | None = None

    def touch(self) -> None:
        self.last_seen = time.monotonic()
