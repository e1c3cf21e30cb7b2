"""The worker registry (``workers``) and the small lookups the worker protocol needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from tasker_server.domain.states import ACTIVE_STEP_STATES, StepState

from .models import Namespace, Step, Task, Worker
from .types import dialect_name, in_literals

__all__ = [
    "HeldLease",
    "connected_workers",
    "known_namespaces",
    "live_leases",
    "touch_workers",
    "upsert_worker",
    "worker_identity",
    "worker_leases",
]


@dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease the database gives a worker (a step ENQUEUED or IN_PROGRESS under it)."""

    lease_id: str
    step_id: int
    task_id: int
    started: bool  # IN_PROGRESS: acknowledged, its attempt counted
    correlation_id: str | None


async def upsert_worker(session: AsyncSession, values: dict[str, Any]) -> None:
    """Records a stream of a worker. A row written by a newer stream of the same worker (it
    reconnected to another replica while this one still held the old stream) is left alone: the
    old stream's "disconnected" must not overwrite where the worker is now."""
    ins = (pg_insert if dialect_name(session) == "postgresql" else sqlite_insert)(Worker)
    row = ins.values(**values)
    changes = {k: v for k, v in values.items() if k != "id"}
    await session.execute(
        row.on_conflict_do_update(
            index_elements=[Worker.id],
            set_=changes,
            where=Worker.connect_time <= row.excluded.connect_time,
        )
    )


async def connected_workers(session: AsyncSession, after_id: str) -> list[Worker]:
    query = (
        select(Worker)
        .where(Worker.state != "disconnected", Worker.id > after_id)
        .order_by(Worker.id)
    )
    return list((await session.execute(query)).scalars().all())


async def touch_workers(session: AsyncSession, worker_ids: list[str], now: datetime) -> None:
    """One UPDATE for every live stream of this replica (liveness for other replicas)."""
    await session.execute(
        update(Worker)
        .where(Worker.id.in_(worker_ids))
        .values(last_seen_time=now)
        .execution_options(synchronize_session=False)
    )


async def known_namespaces(session: AsyncSession, names: list[str]) -> set[str]:
    rows = await session.execute(select(Namespace.name).where(Namespace.name.in_(names)))
    return set(rows.scalars().all())


async def live_leases(
    session: AsyncSession, lease_ids: list[str], seen_at: datetime | None = None
) -> set[str]:
    """Those of ``lease_ids`` still held by an enqueued or in-progress step. With ``seen_at``
    (a heartbeat for them arrived), their workers count as seen then: a worker whose leases are
    heartbeated by its job queue has not vanished even when its stream is on no replica."""
    rows = await session.execute(
        select(Step.lease_id, Step.worker_id).where(
            Step.lease_id.in_(lease_ids),
            Step.state.in_([s.value for s in ACTIVE_STEP_STATES]),
        )
    )
    held = [(lease_id, worker_id) for lease_id, worker_id in rows.all() if lease_id]
    workers = sorted({worker_id for _, worker_id in held if worker_id})
    if seen_at is not None and workers:
        await touch_workers(session, workers, seen_at)
    return {lease_id for lease_id, _ in held}


async def worker_leases(session: AsyncSession, worker_id: str) -> list[HeldLease]:
    """Every current lease of ``worker_id`` (what a reconnecting worker is reconciled against).
    The state predicate is the lease-expiry index's, so only leased rows are read."""
    leased = in_literals(Step.state, sorted(s.value for s in ACTIVE_STEP_STATES))
    rows = await session.execute(
        select(Step.lease_id, Step.id, Step.task_id, Step.state, Task.correlation_id)
        .join(Task, Task.id == Step.task_id)
        .where(leased, Step.worker_id == worker_id)
    )
    return [
        HeldLease(lease_id, step_id, task_id, state == StepState.IN_PROGRESS, correlation_id)
        for lease_id, step_id, task_id, state, correlation_id in rows.all()
        if lease_id
    ]


async def worker_identity(session: AsyncSession, worker_id: str) -> str | None:
    """The authenticated identity that connected ``worker_id`` (None: unknown, or no auth)."""
    row = await session.execute(select(Worker.identity).where(Worker.id == worker_id))
    return row.scalar_one_or_none()
