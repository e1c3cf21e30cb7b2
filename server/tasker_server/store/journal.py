"""Transitions and events, collected during a unit of work and written with it.

Every state change goes through a ``Journal``: the transition row and the lifecycle event are
inserted in the same transaction as the change itself (two bulk INSERTs per unit of work, however
many steps changed), so an event exists if and only if its change committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Event, Transition
from .types import dialect_name, utcnow

__all__ = ["NOTIFY_CHANNEL", "Journal"]

NOTIFY_CHANNEL = "tasker_changes"

_EVENT_LOCK = 0x7A5C3E2


@dataclass(slots=True)
class Journal:
    """Pending transitions and events of one transaction."""

    now: datetime = field(default_factory=utcnow)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    # Events written by flush(); handed to commit subscribers (watchers, metrics) after COMMIT.
    written: list[dict[str, Any]] = field(default_factory=list)

    def transition(
        self,
        *,
        task_id: int,
        to_state: str,
        from_state: str | None,
        event: str,
        step_id: int | None = None,
        actor: str = "system",
        reason: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.transitions.append(
            {
                "task_id": task_id,
                "step_id": step_id,
                "entity": "step" if step_id is not None else "task",
                "from_state": from_state,
                "to_state": to_state,
                "event": event,
                "reason": reason,
                "actor": actor,
                "metadata_": metadata or {},
                "create_time": self.now,
            }
        )

    def event(
        self,
        name: str,
        *,
        task_id: int | None = None,
        namespace: str | None = None,
        correlation_id: str | None = None,
        step_name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        payload: dict[str, Any] = {"metadata": metadata or {}}
        if step_name:
            payload["step_name"] = step_name
        self.events.append(
            {
                "task_id": task_id,
                "namespace": namespace,
                "name": name,
                "correlation_id": correlation_id,
                "payload": payload,
                "create_time": self.now,
            }
        )

    async def flush(self, session: AsyncSession) -> None:
        # Stamp at flush, i.e. after this transaction's statements took their locks: a unit of
        # work that waited for another's commit is then stamped after it, so transition times
        # follow causality (a child is never enqueued "before" its parent completed).
        stamp = utcnow()
        for row in self.transitions:
            row["create_time"] = stamp
        for row in self.events:
            row["create_time"] = stamp
        postgres = dialect_name(session) == "postgresql"
        # Other replicas LISTEN on this channel (engine/listener.py); NOTIFY is delivered at
        # COMMIT only, so a woken replica always sees the change.
        notice = {"channel": NOTIFY_CHANNEL, "origin": session.info.get("origin", "")}
        notified = False
        changed = bool(self.transitions)
        if self.transitions:
            await session.execute(insert(Transition), self.transitions)
            self.transitions = []
        if self.events:
            if postgres:
                # Sequence numbers are taken at INSERT but become visible at COMMIT; two writers
                # could commit out of order and a reader resuming "after N" would skip the late
                # one. Holding this lock from the event INSERT to COMMIT makes sequence order equal
                # commit order: streams are gap-free. (SQLite's single writer already is.)
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(:k), pg_notify(:channel, :origin)"),
                    {"k": _EVENT_LOCK, **notice},
                )
                notified = True
            await session.execute(insert(Event), self.events)
            self.written += self.events
            self.events = []
        if postgres and changed and not notified:
            await session.execute(text("SELECT pg_notify(:channel, :origin)"), notice)
