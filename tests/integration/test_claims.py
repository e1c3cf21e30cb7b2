"""The engine's own claim (store.dispatch.claim_steps) under concurrency, on both backends."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy import select

from tasker_server.config import load_settings
from tasker_server.engine.commands import Commands
from tasker_server.engine.orchestrator import Orchestrator
from tasker_server.store.db import Database
from tasker_server.store.dispatch import ClaimedStep, admit_tasks, claim_steps
from tasker_server.store.journal import Journal
from tasker_server.store.models import Step
from tests.support.server import FAST_TIMERS

FANOUT = """
name: fan
namespace: claims
version: 1.0.0
orchestration: {max_parallel_steps: 3}
step_templates:
""" + "".join(f"  - {{name: s{i}, handler_class: h}}\n" for i in range(10))


async def _admitted_fanout_tasks(database: Database, db_url: str, count: int) -> list[int]:
    """``count`` tasks of FANOUT, created and admitted (so their steps are ready)."""
    settings = load_settings(environ={}, overrides={"database_url": db_url, **FAST_TIMERS})
    orchestrator = Orchestrator(database, settings)
    commands = Commands(orchestrator)
    await commands.register_template(FANOUT)
    # Only the task creator runs: admission and claims are driven by hand.
    orchestrator.creator.start()
    try:
        created = await asyncio.gather(
            *(
                commands.create_task(
                    namespace="claims",
                    template_name="fan",
                    template_version="",
                    context={"i": i},
                    idempotency_key="",
                    correlation_id="",
                    priority=0,
                    tags=[],
                    deadline=None,
                    trace_parent=None,
                    trace_state=None,
                )
                for i in range(count)
            )
        )
    finally:
        await orchestrator.creator.stop()
    async with database.session() as s:
        journal = Journal()
        assert await admit_tasks(s, journal, 100) == count
        await journal.flush(s)
    return [detail.task.id for detail, _ in created]


async def _claim(database: Database, workers: list[tuple[str, int]]) -> list[ClaimedStep]:
    """One claim of the FANOUT steps for ``workers``, committed."""
    async with database.session() as s:
        journal = Journal()
        claimed = await claim_steps(
            s,
            journal,
            namespaces=["claims"],
            handlers=["h"],
            workers=workers,
            lease_extra_seconds=5,
        )
        await journal.flush(s)
    return claimed


async def test_concurrent_claimers_share_nothing_and_respect_max_parallel_steps(
    database: Database, db_url: str
) -> None:
    task_ids = await _admitted_fanout_tasks(database, db_url, 6)

    async def claimer(n: int) -> list[tuple[int, int]]:
        got = []
        for _ in range(5):
            claimed = await _claim(database, [(f"w{n}", 4)])
            got += [(c.task_id, c.step_id) for c in claimed]
        return got

    results = await asyncio.gather(*(claimer(n) for n in range(8)))
    claimed = [pair for r in results for pair in r]
    steps = [step for _, step in claimed]
    assert len(steps) == len(set(steps)), "a step was claimed twice"
    per_task = Counter(task for task, _ in claimed)
    # Nothing completes here, so each task holds at most max_parallel_steps leases...
    assert max(per_task.values()) <= 3
    # ...and the claimers, together, filled every task to exactly that limit.
    assert per_task == {task_id: 3 for task_id in task_ids}


async def test_one_claim_for_several_workers_deals_the_steps_in_turn(
    database: Database, db_url: str
) -> None:
    await _admitted_fanout_tasks(database, db_url, 1)  # 3 steps claimable (max_parallel_steps)
    claimed = await _claim(database, [("a", 1), ("b", 5), ("idle", 0)])
    # In turn while each has room: a (its only slot), b, then b again.
    assert [c.worker_id for c in claimed] == ["a", "b", "b"]
    async with database.session(read_only=True) as s:
        rows = await s.execute(
            select(Step.lease_id, Step.worker_id).where(Step.lease_id.is_not(None))
        )
        leased = {lease_id: worker_id for lease_id, worker_id in rows.all()}
    assert leased == {c.lease_id: c.worker_id for c in claimed}


async def test_a_task_out_of_room_does_not_hide_other_tasks_ready_steps(
    database: Database, db_url: str
) -> None:
    # Two tasks of 10 ready steps each, max_parallel_steps 3: the first rows of the ready index
    # belong to one task, which has room for 3 of them; the claim looks past it for the rest.
    task_ids = await _admitted_fanout_tasks(database, db_url, 2)
    claimed = await _claim(database, [("w", 6)])
    assert Counter(c.task_id for c in claimed) == {task_ids[0]: 3, task_ids[1]: 3}
    assert len({c.step_id for c in claimed}) == 6
