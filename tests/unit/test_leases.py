"""The lease registry keeps "lease → stream" and "stream → leases" in step."""

from __future__ import annotations

from datetime import UTC, datetime

from tasker_server.engine.leases import LeaseRegistry
from tasker_server.engine.streams import Cancellation, Lease, WorkerStream


def _stream(worker_id: str = "w1", capacity: int = 3) -> WorkerStream:
    return WorkerStream(
        worker_id=worker_id,
        name="worker",
        namespaces=["ns"],
        handlers=["h"],
        capacity=capacity,
        sdk_language="python",
        sdk_version="0",
        connect_time=datetime.now(UTC),
    )


def _lease(lease_id: str) -> Lease:
    return Lease(lease_id, step_id=1, task_id=1, offered_at=0.0)


def test_a_lease_moves_between_streams_without_a_trace_in_the_first() -> None:
    registry, old, new = LeaseRegistry(), _stream(), _stream()
    registry.add(old, _lease("a"))
    registry.add(new, _lease("a"))  # adopted on reconnect
    assert registry.count(old) == 0 and registry.count(new) == 1
    taken = registry.take("a")
    assert taken is not None and taken[0] is new
    assert registry.take("a") is None
    assert registry.heartbeat(["a"]) == {"a": False}


def test_free_counts_held_leases_and_is_zero_while_draining() -> None:
    registry, stream = LeaseRegistry(), _stream(capacity=3)
    registry.add(stream, _lease("a"))
    registry.add(stream, _lease("b"))
    assert registry.free(stream) == 1
    stream.draining = True
    assert registry.free(stream) == 0


def test_acknowledge_only_once_and_only_by_the_holder() -> None:
    registry, holder, other = LeaseRegistry(), _stream("w1"), _stream("w2")
    registry.add(holder, _lease("a"))
    assert registry.acknowledge(other, "a") is None
    lease = registry.acknowledge(holder, "a")
    assert lease is not None and lease.acked and lease.last_heartbeat > 0
    assert registry.acknowledge(holder, "a") is None


def test_cancel_tells_the_holder_and_take_all_empties_both_maps() -> None:
    registry, stream = LeaseRegistry(), _stream()
    registry.add(stream, _lease("a"))
    registry.add(stream, _lease("b"))
    assert registry.cancel("a", "task_cancelled") is stream
    assert stream.outbound.get_nowait() == Cancellation("a", "task_cancelled")
    assert registry.cancel("a", "task_cancelled") is None
    assert [lease.lease_id for lease in registry.take_all(stream)] == ["b"]
    assert registry.heartbeat(["b"]) == {"b": False}
    assert registry.held(stream) == [] and registry.count(stream) == 0
