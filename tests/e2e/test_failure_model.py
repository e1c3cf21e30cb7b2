"""The failure model end to end: every error class, retries and backoff within the formula's
bounds, graceful degradation (optional steps, fallbacks, timeouts) and manual intervention,
driven by a real in-process SDK worker on both backends.

Gaps between attempts are measured on the server's own clock: the attempt's ``end_time`` (when
the failure was recorded and ``ready_at`` computed) to the step's next ``claim`` transition (when
the dispatcher handed it out again; it cannot be earlier than ``ready_at``). ``SLACK`` covers the
sweep interval and dispatch latency on a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import grpc
import pytest

from tasker import (
    Client,
    FailedPreconditionError,
    ManualInterventionError,
    NotFoundError,
    PermanentError,
    RetryableError,
    StepContext,
    Task,
)
from tasker.testing import WorkflowBuilder
from tasker_server.domain.retry import BackoffFactors, RetryPolicy, backoff_bound
from tests.support.server import RunningServer, running_worker

NS = "failure_model"
SLACK = 1.0
EPS = 0.005  # timestamp rounding between the two records compared
ACTOR = "ops-alice"


async def wait_step(client: Client, task_id: str, step: str, state: str) -> Task:
    async with asyncio.timeout(10):
        while True:
            task = await client.get_task(task_id)
            if task.step(step).state == state:
                return task
            await asyncio.sleep(0.05)


def ts(value: Any) -> datetime:
    dt: datetime = value.ToDatetime()
    return dt


def history(task: Task, step: str) -> list[Any]:
    return list(task.step(step).proto.attempt_history)


def transitions(task: Task, step: str | None = None) -> list[Any]:
    """Transitions of one step (or of the task itself with ``step=""``)."""
    return [t for t in task.proto.transitions if step is None or t.step_name == step]


def claim_times(task: Task, step: str) -> list[datetime]:
    return [ts(t.create_time) for t in transitions(task, step) if t.event == "claim"]


def retry_gaps(task: Task, step: str) -> list[float]:
    """Seconds from each failed attempt's recorded end to the step's next claim."""
    attempts = history(task, step)
    claims = claim_times(task, step)
    assert len(claims) == len(attempts), (claims, [a.outcome for a in attempts])
    return [
        (claims[i + 1] - ts(attempts[i].end_time)).total_seconds() for i in range(len(attempts) - 1)
    ]


def admin_transition(task: Task, step: str, to_state: str) -> Any:
    found = [t for t in transitions(task, step) if t.to_state == to_state and t.actor == ACTOR]
    assert found, [(t.step_name, t.from_state, t.to_state, t.actor) for t in task.proto.transitions]
    return found[-1]


async def step_events(client: Client, task_id: str, name: str) -> list[Any]:
    out = []
    async with asyncio.timeout(5):
        async for event in client.watch_task(task_id):
            if event.event_name == name:
                out.append(event)
            if event.event_name in {"task.completed", "task.failed"}:
                break
    return out


# --- the four error classes -------------------------------------------------------------------


async def test_transient_error_is_retried_at_once(server: RunningServer, client: Client) -> None:
    calls: list[int] = []

    async def flaky(ctx: StepContext) -> dict[str, Any]:
        calls.append(ctx.step.attempt)
        if len(calls) < 3:
            raise RetryableError("connection reset", immediate=True)
        return {"ok": True}

    # A large backoff base: a transient retry that waited for backoff would take >= 9 s.
    retry = {"max_attempts": 3, "backoff_base_seconds": 10, "max_delay_seconds": 30}
    yaml = WorkflowBuilder("transient", NS).step("a", "flaky", retry=retry).build()
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"flaky": flaky}):
        task = await client.create_task(NS, "transient", {})
        final = await client.wait_for_task(task.task_id, timeout=15)

    assert final.state == "complete"
    step = final.step("a")
    assert (step.state, step.attempts, calls) == ("complete", 3, [1, 2, 3])
    attempts = history(final, "a")
    assert [a.outcome for a in attempts] == ["failed", "failed", "complete"]
    assert [a.error.error_class for a in attempts[:2]] == [1, 1]  # ERROR_CLASS_TRANSIENT
    for gap in retry_gaps(final, "a"):
        assert -EPS <= gap < SLACK
    events = await step_events(client, task.task_id, "step.retrying")
    assert [e.metadata["delay_ms"] for e in events] == [0, 0]


async def test_delayed_error_honours_the_retry_after_hint(
    server: RunningServer, client: Client
) -> None:
    async def rate_limited(ctx: StepContext) -> dict[str, Any]:
        if ctx.step.attempt == 1:
            raise RetryableError("429 slow down", retry_after=0.4)
        return {"ok": True}

    # The hint replaces the computed delay (which would be ~5 s here).
    retry = {"max_attempts": 2, "backoff_base_seconds": 5, "max_delay_seconds": 30}
    yaml = WorkflowBuilder("hinted", NS).step("a", "rate_limited", retry=retry).build()
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"rate_limited": rate_limited}):
        task = await client.create_task(NS, "hinted", {})
        final = await client.wait_for_task(task.task_id, timeout=15)

    assert (final.state, final.step("a").attempts) == ("complete", 2)
    first = history(final, "a")[0]
    assert first.error.error_class == 2  # ERROR_CLASS_DELAYED
    [gap] = retry_gaps(final, "a")
    assert 0.4 - EPS <= gap < 0.4 + SLACK
    [event] = await step_events(client, task.task_id, "step.retrying")
    assert event.metadata["delay_ms"] == 400


async def test_delayed_error_without_hint_waits_within_the_formula_bounds(
    server: RunningServer, client: Client
) -> None:
    async def overloaded(ctx: StepContext) -> dict[str, Any]:
        if ctx.step.attempt < 3:
            raise RetryableError("dependency overloaded")
        return {"ok": True}

    retry = {
        "max_attempts": 3,
        "backoff_base_seconds": 0.3,
        "max_delay_seconds": 5,
        "multiplier": 2,
        "jitter": 0.1,
    }
    policy = RetryPolicy(
        max_attempts=3, backoff_base_seconds=0.3, max_delay_seconds=5, multiplier=2, jitter=0.1
    )
    yaml = WorkflowBuilder("backoff", NS).step("a", "overloaded", retry=retry).build()
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"overloaded": overloaded}):
        task = await client.create_task(NS, "backoff", {})
        final = await client.wait_for_task(task.task_id, timeout=15)

    assert (final.state, final.step("a").attempts) == ("complete", 3)
    # The only factor in play is a ready queue of at most a step or two (x1.002 at most).
    loaded = BackoffFactors(queue_depth=2)
    events = await step_events(client, task.task_id, "step.retrying")
    gaps = retry_gaps(final, "a")
    assert len(events) == len(gaps) == 2
    for attempt, (gap, event) in enumerate(zip(gaps, events, strict=True), start=1):
        lo, _ = backoff_bound(policy, attempt, BackoffFactors())
        _, hi = backoff_bound(policy, attempt, loaded)
        assert lo - 0.001 <= event.metadata["delay_ms"] / 1000 <= hi + 0.001, (attempt, event)
        assert lo - EPS <= gap <= hi + SLACK, (attempt, gap, lo, hi)


async def test_unclassified_exception_is_retried_as_delayed(
    server: RunningServer, client: Client
) -> None:
    async def buggy(ctx: StepContext) -> dict[str, Any]:
        if ctx.step.attempt == 1:
            raise KeyError("missing")
        return {"ok": True}

    retry = {"max_attempts": 2, "backoff_base_seconds": 0.2, "max_delay_seconds": 5}
    policy = RetryPolicy(max_attempts=2, backoff_base_seconds=0.2, max_delay_seconds=5)
    yaml = WorkflowBuilder("unclassified", NS).step("a", "buggy", retry=retry).build()
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"buggy": buggy}):
        task = await client.create_task(NS, "unclassified", {})
        final = await client.wait_for_task(task.task_id, timeout=15)

    assert (final.state, final.step("a").attempts) == ("complete", 2)
    error = history(final, "a")[0].error
    assert (error.error_class, error.error_type) == (2, "KeyError")  # DELAYED
    assert "missing" in error.message and "buggy" in error.backtrace
    lo, hi = backoff_bound(policy, 1, BackoffFactors(queue_depth=2))
    [gap] = retry_gaps(final, "a")
    assert lo * 0.99 - EPS <= gap <= hi + SLACK


async def test_business_logic_error_blocks_then_manual_resolution_feeds_dependents(
    server: RunningServer, client: Client
) -> None:
    received: list[Any] = []

    async def check(ctx: StepContext) -> dict[str, Any]:
        raise ManualInterventionError("credit limit exceeded", metadata={"limit": 100})

    async def ship(ctx: StepContext) -> dict[str, Any]:
        received.append((ctx.sequence.get("check"), ctx.sequence.dependencies["check"].state))
        return {"shipped": True}

    yaml = (
        WorkflowBuilder("blocking", NS)
        .step("check", "check", retry={"max_attempts": 5})
        .step("ship", "ship", depends_on=["check"])
        .build()
    )
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"check": check, "ship": ship}):
        task = await client.create_task(NS, "blocking", {})
        blocked = await wait_step(client, task.task_id, "check", "blocked")
        await asyncio.sleep(0.5)  # a blocked step is not retried
        blocked = await client.get_task(task.task_id)
        assert (blocked.state, blocked.blocked) == ("in_progress", True)
        assert (blocked.step("check").state, blocked.step("check").attempts) == ("blocked", 1)
        assert blocked.step("ship").state == "pending"
        error = blocked.step("check").last_error
        assert error is not None
        assert error.error_class == "business_logic"
        assert error.error_type == "ManualInterventionError"
        assert error.metadata == {"limit": 100}

        step = await client.resolve_step_manually(
            task.task_id, "check", {"approved_by": "bob"}, actor=ACTOR, reason="approved by hand"
        )
        assert step.state == "resolved_manually"
        final = await client.wait_for_task(task.task_id, timeout=10)

    assert (final.state, final.blocked) == ("complete", False)
    assert received == [({"approved_by": "bob"}, "resolved_manually")]
    assert final.step("check").result == {"approved_by": "bob"}
    t = admin_transition(final, "check", "resolved_manually")
    assert (t.from_state, t.reason) == ("blocked", "approved by hand")


async def test_permanent_error_fails_task_then_retry_step_completes_it(
    server: RunningServer, client: Client
) -> None:
    fixed = asyncio.Event()
    ran: list[str] = []

    class PaymentDeclined(PermanentError):
        pass

    async def pay(ctx: StepContext) -> dict[str, Any]:
        ran.append("pay")
        if not fixed.is_set():
            raise PaymentDeclined("card expired", metadata={"card": "visa", "code": 54})
        return {"paid": 12.5}

    async def ship(ctx: StepContext) -> dict[str, Any]:
        ran.append("ship")
        return {"from": ctx.sequence.get("pay")}

    yaml = (
        WorkflowBuilder("permanent", NS)
        .step("pay", "pay", retry={"max_attempts": 3, "backoff_base_seconds": 0.05})
        .step("ship", "ship", depends_on=["pay"])
        .build()
    )
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"pay": pay, "ship": ship}):
        task = await client.create_task(NS, "permanent", {})
        failed = await client.wait_for_task(task.task_id, timeout=10)
        assert failed.state == "failed"
        step = failed.step("pay")
        assert (step.state, step.attempts) == ("failed", 1)  # no retry despite 3 allowed
        assert failed.step("ship").state == "pending"
        assert ran == ["pay"]

        # Per-attempt details as GetTask shows them.
        [attempt] = history(failed, "pay")
        assert attempt.attempt == 1 and attempt.outcome == "failed"
        assert attempt.error.error_class == 4  # ERROR_CLASS_PERMANENT
        assert attempt.error.error_type == "PaymentDeclined"
        assert attempt.error.message == "card expired"
        assert "Traceback" in attempt.error.backtrace and "in pay" in attempt.error.backtrace
        assert dict(attempt.error.metadata) == {"card": "visa", "code": 54}
        assert attempt.worker_id

        fixed.set()
        retried = await client.retry_step(task.task_id, "pay", actor=ACTOR, reason="card renewed")
        assert retried.state == "retrying"
        reopened = await client.get_task(task.task_id)
        assert reopened.state in {"in_progress", "complete"}
        final = await client.wait_for_task(task.task_id, timeout=10)

    assert final.state == "complete"
    assert final.result == {"ship": {"from": {"paid": 12.5}}}
    assert ran == ["pay", "pay", "ship"]
    assert [a.outcome for a in history(final, "pay")] == ["failed", "complete"]
    task_moves = [(t.from_state, t.to_state, t.actor) for t in transitions(final, "")]
    assert ("failed", "in_progress", ACTOR) in task_moves
    assert task_moves[-1][:2] == ("in_progress", "complete")
    t = admin_transition(final, "pay", "retrying")
    assert (t.from_state, t.reason) == ("failed", "card renewed")


async def test_negative_and_absurd_retry_after_hints_are_clamped(
    server: RunningServer, client: Client
) -> None:
    async def negative(ctx: StepContext) -> dict[str, Any]:
        if ctx.step.attempt == 1:
            error = RetryableError("bad hint")
            error.retry_after = -30.0  # the SDK refuses it; a foreign worker could send it
            raise error
        return {"ok": True}

    async def absurd(ctx: StepContext) -> dict[str, Any]:
        if ctx.step.attempt == 1:
            raise RetryableError("come back next week", retry_after=7 * 86400)
        return {"ok": True}

    # base 10 s: a negative hint must not fall back to the computed delay either.
    yaml = (
        WorkflowBuilder("hints", NS)
        .step("neg", "negative", retry={"max_attempts": 2, "backoff_base_seconds": 10})
        .step(
            "huge",
            "absurd",
            retry={"max_attempts": 2, "backoff_base_seconds": 0.1, "max_delay_seconds": 0.5},
        )
        .build()
    )
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"negative": negative, "absurd": absurd}):
        task = await client.create_task(NS, "hints", {})
        final = await client.wait_for_task(task.task_id, timeout=15)

    assert final.state == "complete"
    assert [final.step(n).attempts for n in ("neg", "huge")] == [2, 2]
    [neg_gap] = retry_gaps(final, "neg")
    assert -EPS <= neg_gap < SLACK
    [huge_gap] = retry_gaps(final, "huge")
    assert 0.5 - EPS <= huge_gap < 0.5 + SLACK
    delays = {
        e.step_name: e.metadata["delay_ms"]
        for e in await step_events(client, task.task_id, "step.retrying")
    }
    assert delays == {"neg": 0, "huge": 500}


# --- graceful degradation ----------------------------------------------------------------------


async def test_optional_step_exhausted_is_skipped_and_dependents_are_told(
    server: RunningServer, client: Client
) -> None:
    seen: list[Any] = []

    async def enrich(ctx: StepContext) -> dict[str, Any]:
        raise RetryableError("enrichment service down", immediate=True)

    async def report(ctx: StepContext) -> dict[str, Any]:
        seen.append((ctx.sequence.skipped("enrich"), ctx.sequence.get("enrich")))
        return {"enriched": not ctx.sequence.skipped("enrich")}

    yaml = (
        WorkflowBuilder("optional", NS)
        .step("enrich", "enrich", retry={"max_attempts": 2}, optional=True)
        .step("report", "report", depends_on=["enrich"])
        .build()
    )
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"enrich": enrich, "report": report}):
        task = await client.create_task(NS, "optional", {})
        final = await client.wait_for_task(task.task_id, timeout=10)

    assert final.state == "complete"
    enrich_step = final.step("enrich")
    assert (enrich_step.state, enrich_step.attempts, enrich_step.optional) == ("skipped", 2, True)
    assert seen == [(True, None)]
    assert final.result == {"report": {"enriched": False}}
    assert final.completed_steps == 2


async def test_fallback_handler_runs_after_the_last_failed_attempt(
    server: RunningServer, client: Client
) -> None:
    runs: list[tuple[str, bool, str]] = []

    async def primary(ctx: StepContext) -> dict[str, Any]:
        runs.append(("primary", ctx.step.is_fallback, ctx.step.handler))
        raise PermanentError("primary gateway rejected the request")

    async def backup(ctx: StepContext) -> dict[str, Any]:
        runs.append(("backup", ctx.step.is_fallback, ctx.step.handler))
        return {"via": "backup"}

    async def notify(ctx: StepContext) -> dict[str, Any]:
        return {"notified": ctx.sequence.get("charge")}

    yaml = (
        WorkflowBuilder("fallback", NS)
        .step("charge", "primary", retry={"max_attempts": 3}, fallback_handler="backup")
        .step("notify", "notify", depends_on=["charge"])
        .build()
    )
    await client.register_template(yaml)
    async with running_worker(
        server.address, NS, {"primary": primary, "backup": backup, "notify": notify}
    ):
        task = await client.create_task(NS, "fallback", {})
        final = await client.wait_for_task(task.task_id, timeout=10)

    assert final.state == "complete"
    assert runs == [("primary", False, "primary"), ("backup", True, "backup")]
    step = final.step("charge")
    assert (step.state, step.result) == ("complete", {"via": "backup"})
    assert [a.outcome for a in history(final, "charge")] == ["failed", "complete"]
    assert final.result == {"notify": {"notified": {"via": "backup"}}}


async def test_handler_past_its_timeout_is_cancelled_and_retried(
    server: RunningServer, client: Client
) -> None:
    cancelled = asyncio.Event()

    async def slow_once(ctx: StepContext) -> dict[str, Any]:
        if ctx.step.attempt == 1:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return {"attempt": ctx.step.attempt}

    yaml = (
        WorkflowBuilder("timeout", NS)
        .step("a", "slow_once", timeout_seconds=1, retry={"max_attempts": 2})
        .build()
    )
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"slow_once": slow_once}):
        task = await client.create_task(NS, "timeout", {})
        final = await client.wait_for_task(task.task_id, timeout=10)

    assert cancelled.is_set()
    assert final.state == "complete"
    assert (final.step("a").attempts, final.step("a").result) == (2, {"attempt": 2})
    first, second = history(final, "a")
    assert first.outcome in {"failed", "timed_out"}
    assert first.error.error_type == "StepTimeout"
    assert first.error.error_class == 1  # a timeout counts as a transient failure
    assert second.outcome == "complete"
    ran_for = (ts(first.end_time) - claim_times(final, "a")[0]).total_seconds()
    assert 1.0 - EPS <= ran_for < 1.0 + SLACK


# --- manual intervention -----------------------------------------------------------------------


async def test_complete_step_manually_on_a_failed_step_lets_dependents_proceed(
    server: RunningServer, client: Client
) -> None:
    async def export(ctx: StepContext) -> dict[str, Any]:
        raise PermanentError("export API removed")

    async def archive(ctx: StepContext) -> dict[str, Any]:
        return {
            "archived": ctx.sequence.get("export"),
            "state": ctx.sequence.dependencies["export"].state,
        }

    yaml = (
        WorkflowBuilder("complete_by_hand", NS)
        .step("export", "export")
        .step("archive", "archive", depends_on=["export"])
        .build()
    )
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"export": export, "archive": archive}):
        task = await client.create_task(NS, "complete_by_hand", {})
        failed = await client.wait_for_task(task.task_id, timeout=10)
        assert (failed.state, failed.step("export").state) == ("failed", "failed")

        step = await client.complete_step_manually(
            task.task_id, "export", {"rows": 7}, actor=ACTOR, reason="exported by hand"
        )
        assert (step.state, step.result) == ("complete", {"rows": 7})
        final = await client.wait_for_task(task.task_id, timeout=10)

    assert final.state == "complete"
    assert final.result == {"archive": {"archived": {"rows": 7}, "state": "complete"}}
    t = admin_transition(final, "export", "complete")
    assert (t.from_state, t.reason) == ("failed", "exported by hand")
    task_moves = [(t.from_state, t.to_state, t.actor) for t in transitions(final, "")]
    assert ("failed", "in_progress", ACTOR) in task_moves


async def test_resolve_task_manually_cancels_the_remaining_steps(
    server: RunningServer, client: Client
) -> None:
    async def verify(ctx: StepContext) -> dict[str, Any]:
        raise ManualInterventionError("identity documents unreadable")

    async def never(ctx: StepContext) -> dict[str, Any]:
        raise AssertionError("must not run")

    yaml = (
        WorkflowBuilder("resolve_task", NS)
        .step("verify", "verify")
        .step("open_account", "never", depends_on=["verify"])
        .step("welcome", "never", depends_on=["open_account"])
        .build()
    )
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"verify": verify, "never": never}):
        task = await client.create_task(NS, "resolve_task", {})
        await wait_step(client, task.task_id, "verify", "blocked")
        resolved = await client.resolve_task_manually(
            task.task_id, actor=ACTOR, reason="customer withdrew"
        )
        assert resolved.state == "resolved_manually"
        final = await client.get_task(task.task_id)

    assert (final.state, final.blocked) == ("resolved_manually", False)
    assert [s.state for s in final.steps] == ["cancelled"] * 3
    t = admin_transition(final, "", "resolved_manually")
    assert (t.from_state, t.reason) == ("in_progress", "customer withdrew")
    assert {t.step_name for t in transitions(final) if t.to_state == "cancelled"} == {
        "verify",
        "open_account",
        "welcome",
    }


async def test_illegal_and_unknown_admin_actions_are_refused(
    server: RunningServer, client: Client
) -> None:
    async def ok(ctx: StepContext) -> dict[str, Any]:
        return {"ok": True}

    yaml = WorkflowBuilder("illegal", NS).step("a", "ok").step("b", "ok", depends_on=["a"]).build()
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"ok": ok}):
        done = await client.create_task(NS, "illegal", {})
        done = await client.wait_for_task(done.task_id, timeout=10)
    assert done.state == "complete"

    with pytest.raises(FailedPreconditionError) as exc:
        await client.retry_step(done.task_id, "a", actor=ACTOR, reason="again")
    assert exc.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "complete" in exc.value.message

    # No worker now: the task is cancelled while its steps are still pending.
    cancelled = await client.create_task(NS, "illegal", {})
    await client.cancel_task(cancelled.task_id, actor=ACTOR, reason="not needed")
    with pytest.raises(FailedPreconditionError) as exc:
        await client.resolve_step_manually(cancelled.task_id, "a", {}, actor=ACTOR)
    assert "cancelled" in exc.value.message
    with pytest.raises(FailedPreconditionError) as exc:
        await client.resolve_task_manually(cancelled.task_id, actor=ACTOR)
    assert "cancelled" in exc.value.message

    unknown_calls = [
        lambda: client.retry_step("987654321", "a", actor=ACTOR),
        lambda: client.resolve_step_manually("987654321", "a", actor=ACTOR),
        lambda: client.complete_step_manually("987654321", "a", {}, actor=ACTOR),
        lambda: client.resolve_task_manually("987654321", actor=ACTOR),
        lambda: client.retry_step(done.task_id, "no_such_step", actor=ACTOR),
        lambda: client.resolve_step_manually(done.task_id, "no_such_step", actor=ACTOR),
        lambda: client.complete_step_manually(done.task_id, "no_such_step", {}, actor=ACTOR),
    ]
    for call in unknown_calls:
        with pytest.raises(NotFoundError) as nf:
            await call()
        assert nf.value.code == grpc.StatusCode.NOT_FOUND

    # Refused actions leave no trace in the transition log.
    after = await client.get_task(done.task_id)
    assert not [t for t in after.proto.transitions if t.actor == ACTOR]


async def test_attempt_history_start_time_is_per_attempt(
    server: RunningServer, client: Client
) -> None:
    async def rate_limited(ctx: StepContext) -> dict[str, Any]:
        if ctx.step.attempt == 1:
            raise RetryableError("429 slow down", retry_after=0.4)
        return {"ok": True}

    yaml = WorkflowBuilder("starts", NS).step("a", "rate_limited", retry={"max_attempts": 2})
    yaml = yaml.build()
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"rate_limited": rate_limited}):
        task = await client.create_task(NS, "starts", {})
        final = await client.wait_for_task(task.task_id, timeout=15)

    first, second = history(final, "a")
    # Observed: second.start_time == first.start_time (the step's first acknowledgement).
    assert ts(second.start_time) > ts(first.start_time)
    gap = (ts(second.start_time) - ts(first.end_time)).total_seconds()
    assert gap >= 0.4 - EPS


async def test_priority_shortens_the_backoff_by_the_formula(
    server: RunningServer, client: Client
) -> None:
    async def overloaded(ctx: StepContext) -> dict[str, Any]:
        if ctx.step.attempt == 1:
            raise RetryableError("dependency overloaded")
        return {"ok": True}

    retry = {"max_attempts": 2, "backoff_base_seconds": 3, "max_delay_seconds": 10}
    policy = RetryPolicy(max_attempts=2, backoff_base_seconds=3, max_delay_seconds=10)
    yaml = WorkflowBuilder("urgent", NS).step("a", "overloaded", retry=retry).build()
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"overloaded": overloaded}):
        task = await client.create_task(NS, "urgent", {}, priority=90)  # 3 s / 10 = 0.3 s
        final = await client.wait_for_task(task.task_id, timeout=15)

    assert final.state == "complete"
    lo, _ = backoff_bound(policy, 1, BackoffFactors(priority=90))
    _, hi = backoff_bound(policy, 1, BackoffFactors(priority=90, queue_depth=2))
    [event] = await step_events(client, task.task_id, "step.retrying")
    assert lo - 0.001 <= event.metadata["delay_ms"] / 1000 <= hi + 0.001
    [gap] = retry_gaps(final, "a")
    assert lo - EPS <= gap <= hi + SLACK


async def test_retry_step_on_a_blocked_step_runs_it_again(
    server: RunningServer, client: Client
) -> None:
    approved = asyncio.Event()

    async def check(ctx: StepContext) -> dict[str, Any]:
        if not approved.is_set():
            raise ManualInterventionError("limit exceeded")
        return {"checked": ctx.step.attempt}

    yaml = WorkflowBuilder("retry_blocked", NS).step("check", "check").build()
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"check": check}):
        task = await client.create_task(NS, "retry_blocked", {})
        await wait_step(client, task.task_id, "check", "blocked")
        approved.set()
        step = await client.retry_step(task.task_id, "check", actor=ACTOR, reason="limit raised")
        assert step.state == "retrying"
        final = await client.wait_for_task(task.task_id, timeout=10)

    assert (final.state, final.blocked) == ("complete", False)
    assert final.step("check").result == {"checked": 2}
    t = admin_transition(final, "check", "retrying")
    assert (t.from_state, t.reason) == ("blocked", "limit raised")


async def test_resolving_a_running_step_cancels_its_handler(
    server: RunningServer, client: Client
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hang(ctx: StepContext) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    async def then(ctx: StepContext) -> dict[str, Any]:
        return {"saw": ctx.sequence.get("hang")}

    yaml = (
        WorkflowBuilder("resolve_running", NS)
        .step("hang", "hang")
        .step("then", "then", depends_on=["hang"])
        .build()
    )
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"hang": hang, "then": then}):
        task = await client.create_task(NS, "resolve_running", {})
        await asyncio.wait_for(started.wait(), 10)
        await wait_step(client, task.task_id, "hang", "in_progress")
        step = await client.resolve_step_manually(
            task.task_id, "hang", {"manual": 1}, actor=ACTOR, reason="stuck"
        )
        assert step.state == "resolved_manually"
        await asyncio.wait_for(cancelled.wait(), 10)
        final = await client.wait_for_task(task.task_id, timeout=10)

    assert final.state == "complete"
    assert final.result == {"then": {"saw": {"manual": 1}}}
    assert admin_transition(final, "hang", "resolved_manually").from_state == "in_progress"


async def test_failing_fallback_handler_fails_the_step_and_retry_step_runs_the_primary_again(
    server: RunningServer, client: Client
) -> None:
    runs: list[str] = []
    primary_fixed = False

    async def primary(ctx: StepContext) -> dict[str, Any]:
        runs.append("primary")
        if primary_fixed:
            return {"charged": True}
        raise RetryableError("primary down", immediate=True)

    async def backup(ctx: StepContext) -> dict[str, Any]:
        runs.append("backup")
        raise PermanentError("backup down too")

    yaml = (
        WorkflowBuilder("fallback_fails", NS)
        .step("charge", "primary", retry={"max_attempts": 2}, fallback_handler="backup")
        .build()
    )
    await client.register_template(yaml)
    async with running_worker(server.address, NS, {"primary": primary, "backup": backup}):
        task = await client.create_task(NS, "fallback_fails", {})
        final = await client.wait_for_task(task.task_id, timeout=10)

        assert runs == ["primary", "primary", "backup"]  # every attempt, then the fallback once
        assert (final.state, final.step("charge").state) == ("failed", "failed")
        errors = [a.error.error_type for a in history(final, "charge")]
        assert errors == ["RetryableError", "RetryableError", "PermanentError"]

        # The operator fixes the primary's dependency and retries: the primary handler runs
        # again (not the fallback that replaced it), with the fallback still behind it.
        primary_fixed = True
        await client.retry_step(task.task_id, "charge", actor=ACTOR, reason="gateway back")
        retried = await client.wait_for_task(task.task_id, timeout=10)

    assert runs == ["primary", "primary", "backup", "primary"]
    assert (retried.state, retried.step("charge").state) == ("complete", "complete")
    step = retried.step("charge")
    assert (step.handler, step.result) == ("primary", {"charged": True})
