"""Event retention: pruning old events and the watermark that tells readers what is gone.

Pruning deletes the oldest events in sequence order, a bounded range per transaction, and writes
an ``events.pruned`` event (``through_sequence``: the highest sequence deleted so far) in the same
transaction. That event is the durable watermark: a reader resuming after a sequence below it
would silently miss events, so the API answers OUT_OF_RANGE instead (``pruned_through``). No
extra table is needed, and the watermark survives restarts and is shared by every replica.

Only the primary key is scanned (``events.create_time`` has no index): the oldest row tells
whether anything is due at all, then at most ``batch`` sequence numbers are examined per delete.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from .journal import Journal
from .models import Event

__all__ = ["PRUNED_EVENT", "events_after", "last_sequence", "prune_events", "pruned_through"]

PRUNED_EVENT = "events.pruned"


async def prune_events(
    session: AsyncSession, journal: Journal, cutoff: datetime, batch: int = 5000
) -> int:
    """Deletes up to ``batch`` sequence numbers' worth of events created before ``cutoff``.

    Returns the number of rows deleted (0: nothing was due). The caller commits; call again
    while it returns a positive number to work through a backlog.
    """
    oldest = (await session.execute(select(func.min(Event.seq)))).scalar_one_or_none()
    if oldest is None:
        return 0
    through = (
        await session.execute(
            select(func.max(Event.seq)).where(
                Event.seq >= oldest, Event.seq < oldest + batch, Event.create_time < cutoff
            )
        )
    ).scalar_one_or_none()
    if through is None:
        return 0
    # Sequence order is commit order and create_time is stamped at flush, so everything up to
    # ``through`` is (within milliseconds) older than the cutoff: delete the whole prefix.
    result: Any = await session.execute(
        delete(Event).where(Event.seq <= through).execution_options(synchronize_session=False)
    )
    deleted = int(result.rowcount or 0)
    if deleted:
        journal.event(PRUNED_EVENT, metadata={"through_sequence": int(through), "deleted": deleted})
    return deleted


async def pruned_through(session: AsyncSession) -> int:
    """The highest sequence number pruned so far (0 if nothing was ever pruned)."""
    payload = (
        await session.execute(
            select(Event.payload)
            .where(Event.namespace.is_(None), Event.name == PRUNED_EVENT)
            .order_by(Event.seq.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if not payload:
        return 0
    return int((payload.get("metadata") or {}).get("through_sequence") or 0)


async def events_after(
    session: AsyncSession,
    after: int,
    *,
    task_id: int | None = None,
    namespaces: Sequence[str] = (),
    names: Sequence[str] = (),
    limit: int = 500,
) -> list[Event]:
    """Events with a sequence above ``after``, oldest first. ``names`` are exact event names, or
    prefixes written ``"step.*"``; each filter is an OR of its values, filters combine with AND."""
    query = select(Event).where(Event.seq > after)
    if task_id is not None:
        query = query.where(Event.task_id == task_id)
    if namespaces:
        query = query.where(Event.namespace.in_(list(namespaces)))
    if names:
        exact = [n for n in names if not n.endswith(".*")]
        prefixes = [n[:-1] for n in names if n.endswith(".*")]
        query = query.where(
            or_(Event.name.in_(exact), *[Event.name.startswith(p) for p in prefixes])
        )
    rows = await session.execute(query.order_by(Event.seq).limit(limit))
    return list(rows.scalars().all())


async def last_sequence(session: AsyncSession) -> int:
    """The newest event's sequence (0 when there is none)."""
    return int((await session.execute(select(func.coalesce(func.max(Event.seq), 0)))).scalar_one())
