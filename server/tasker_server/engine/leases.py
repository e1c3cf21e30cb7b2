"""The lease registry: which stream of this replica holds which lease, in one place.

Every lease a stream holds here is in both maps below, and only the registry changes them, so
"lease → stream" and "stream → leases" cannot disagree. The database stays the authority on
whether a lease is current (see ``Orchestrator.reconcile``); this is the replica's memory of
what it handed to which stream, for heartbeats, acknowledgements and cancellations.
"""

from __future__ import annotations

import time

from .streams import Cancellation, Lease, WorkerStream

__all__ = ["LeaseRegistry"]


class LeaseRegistry:
    def __init__(self) -> None:
        self._owner: dict[str, WorkerStream] = {}
        self._held: dict[WorkerStream, dict[str, Lease]] = {}

    def add(self, stream: WorkerStream, lease: Lease) -> None:
        """``stream`` holds ``lease`` now (offered, or adopted on reconnect)."""
        self.take(lease.lease_id)
        self._owner[lease.lease_id] = stream
        self._held.setdefault(stream, {})[lease.lease_id] = lease

    def holder(self, lease_id: str) -> WorkerStream | None:
        """The stream here holding ``lease_id``, if any."""
        return self._owner.get(lease_id)

    def take(self, lease_id: str) -> tuple[WorkerStream, Lease] | None:
        """Removes the lease; returns who held it, or None when no stream here does."""
        owner = self._owner.pop(lease_id, None)
        if owner is None:
            return None
        held = self._held[owner]
        lease = held.pop(lease_id)
        if not held:
            del self._held[owner]
        return owner, lease

    def take_all(self, stream: WorkerStream) -> list[Lease]:
        """Removes and returns every lease ``stream`` holds (it closed or was replaced)."""
        leases = list(self._held.pop(stream, {}).values())
        for lease in leases:
            del self._owner[lease.lease_id]
        return leases

    def held(self, stream: WorkerStream) -> list[Lease]:
        """A snapshot of ``stream``'s leases."""
        return list(self._held.get(stream, {}).values())

    def count(self, stream: WorkerStream) -> int:
        return len(self._held.get(stream, ()))

    def free(self, stream: WorkerStream) -> int:
        """How many more leases ``stream`` may take now."""
        if stream.draining or stream.closed:
            return 0
        return max(0, stream.capacity - self.count(stream))

    def acknowledge(self, stream: WorkerStream, lease_id: str) -> Lease | None:
        """Marks ``stream``'s lease acknowledged; None if it holds no such lease or already
        acknowledged it (nothing more to record)."""
        lease = self._held.get(stream, {}).get(lease_id)
        if lease is None or lease.acked:
            return None
        lease.acked = True
        lease.last_heartbeat = time.monotonic()
        return lease

    def heartbeat(self, lease_ids: list[str]) -> dict[str, bool]:
        """Renews the leases held here; False for the others."""
        now = time.monotonic()
        out = {}
        for lease_id in lease_ids:
            owner = self._owner.get(lease_id)
            lease = self._held[owner].get(lease_id) if owner is not None else None
            if lease is not None:
                lease.last_heartbeat = now
            out[lease_id] = lease is not None
        return out

    def cancel(self, lease_id: str, reason: str) -> WorkerStream | None:
        """Removes the lease and tells its stream to stop it; returns that stream, if any."""
        taken = self.take(lease_id)
        if taken is None:
            return None
        owner, _ = taken
        owner.outbound.put_nowait(Cancellation(lease_id, reason))
        return owner
