"""Transitions and events, collected during a unit of work and written with it.

Every state change goes through a ``Journal``: the transition row and the lifecycle event are
inserted in the same transaction as the change itself (two bulk INSERTs per unit of work, however
many steps changed), so an event exists if and only if its change committed.

It is also the one place where the transition table is enforced: ``transition()`` checks every
(from, to, event) against ``domain.states``. An edge missing from the table is a bug in the
caller, not bad input (requests are checked before they reach the store), so production logs it
and counts it in ``ILLEGAL_TRANSITIONS`` (exported as ``tasker_illegal_transitions_total``) rather
than failing a tick that already changed rows; with ``TASKER_STRICT_TRANSITIONS=1`` (set by the
test suite, inherited by the servers it starts) it raises ``IllegalTransition`` so a test fails.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from tasker_server.domain.errors import FailedPrecondition
from tasker_server.domain.states import check_step_transition, check_task_transition

from .models import Event, Transition
from .types import dialect_name, utcnow

__all__ = ["ILLEGAL_TRANSITIONS", "NOTIFY_CHANNEL", "IllegalTransition", "Journal"]

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "tasker_changes"

_EVENT_LOCK = 0x7A5C3E2

# Read once: the test suite sets it before anything imports the store.
STRICT_TRANSITIONS = os.environ.get("TASKER_STRICT_TRANSITIONS", "") == "1"

ILLEGAL_TRANSITIONS: Counter[tuple[str, str, str, str]] = Counter()
"""Transitions written that are not edges of the table, by (entity, from, to, event). Process-wide
(the store has no metrics registry): a server exports it; it should stay empty."""


class IllegalTransition(AssertionError):
    """A code path wrote a transition that is not in the table (strict mode only)."""


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
        """Records a state change of a step (``step_id``) or of a task; see the module docstring
        for what happens when it is not an edge of the table."""
        _check("step" if step_id is not None else "task", from_state, to_state, event)
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


def _check(entity: str, from_state: str | None, to_state: str, event: str) -> None:
    try:
        if entity == "step":
            check_step_transition(from_state or "", to_state, event)
        else:
            check_task_transition(from_state, to_state, event)
    except (FailedPrecondition, ValueError) as exc:
        if STRICT_TRANSITIONS:
            raise IllegalTransition(f"{entity} {from_state} -> {to_state} by {event}") from exc
        ILLEGAL_TRANSITIONS[(entity, str(from_state), str(to_state), event)] += 1
        log.error(
            "illegal transition written",
            extra={
                "entity": entity,
                "from_state": from_state,
                "to_state": to_state,
                "event": event,
            },
        )
