"""Worker sessions: one per open ``Connect`` stream, kept in memory on the replica holding it.

A session knows what its worker can run, how many leases it holds against its capacity, and its
outbound queue. Heartbeats and keepalives touch only this memory; the database sees a worker's
liveness through one batched ``workers.last_seen_time`` update per interval for all sessions.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["Lease", "WorkerSession"]


@dataclass(slots=True)
class Lease:
    lease_id: str
    step_id: int
    task_id: int
    offered_at: float
    acked: bool = False
    last_heartbeat: float = 0.0
    correlation_id: str | None = None


@dataclass(slots=True)
class WorkerSession:
    worker_id: str
    name: str
    namespaces: list[str]
    handlers: list[str]
    capacity: int
    sdk_language: str
    sdk_version: str
    connect_time: datetime
    outbound: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    leases: dict[str, Lease] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)
    draining: bool = False
    closed: bool = False
    # The job-queue pattern: its jobs heartbeat and report by lease id, so its acknowledged
    # leases do not depend on this stream.
    hands_off_leases: bool = False

    @property
    def free(self) -> int:
        if self.draining or self.closed:
            return 0
        return max(0, self.capacity - len(self.leases))

    def touch(self) -> None:
        self.last_seen = time.monotonic()
