"""The reads authorization needs: which namespace a task or a lease belongs to."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Step, Task

__all__ = ["lease_namespaces", "task_namespace"]


async def task_namespace(session: AsyncSession, task_id: int) -> str | None:
    """The task's namespace (None if there is no such task)."""
    query = select(Task.namespace).where(Task.id == task_id)
    return (await session.execute(query)).scalar_one_or_none()


async def lease_namespaces(session: AsyncSession, lease_ids: list[str]) -> dict[str, str]:
    """lease id -> namespace of the step holding it. Leases no step holds (ended, expired,
    unknown) are absent: nothing can be done with them, and the handlers say so."""
    rows = await session.execute(
        select(Step.lease_id, Step.namespace).where(Step.lease_id.in_(lease_ids))
    )
    return {lease_id: namespace for lease_id, namespace in rows.all() if lease_id}
