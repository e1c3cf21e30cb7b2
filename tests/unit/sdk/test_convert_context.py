"""Struct/dict conversion, model views and the handler's execution context."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tasker import StepContext, Task
from tasker._convert import (
    dict_to_struct,
    duration_to_seconds,
    seconds_to_duration,
    struct_to_dict,
    timestamp_to_datetime,
    to_timestamp,
)
from tasker._models import task_state_value
from tasker.v1 import resources_pb2, worker_service_pb2


def test_struct_round_trip_keeps_ints_ints() -> None:
    value = {"a": 1, "b": 2.5, "c": [1, {"d": None}], "e": {}, "f": [], "g": True, "h": "x"}
    assert struct_to_dict(dict_to_struct(value)) == value
    assert isinstance(struct_to_dict(dict_to_struct({"n": 3}))["n"], int)


@pytest.mark.parametrize(
    "bad",
    [{"o": object()}, {"n": float("nan")}, {"big": 2**60}, {"nested": {1: "x"}}, {"s": {1, 2}}],
)
def test_non_json_is_rejected_with_a_path(bad: dict[str, object]) -> None:
    with pytest.raises(TypeError, match=r"\$"):
        dict_to_struct(bad)


def test_non_dict_is_rejected() -> None:
    with pytest.raises(TypeError):
        dict_to_struct([1, 2])  # type: ignore[arg-type]


def test_duration_and_timestamp_helpers() -> None:
    assert duration_to_seconds(seconds_to_duration(1.25)) == pytest.approx(1.25)
    now = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert timestamp_to_datetime(to_timestamp(now)) == now
    assert timestamp_to_datetime(to_timestamp(now).__class__()) is None
    with pytest.raises(ValueError):
        to_timestamp(datetime(2024, 5, 1))  # noqa: DTZ001 - naive on purpose


def _assignment() -> worker_service_pb2.Assignment:
    ctx = resources_pb2.ExecutionContext(
        task=resources_pb2.TaskInfo(
            task_id="42", namespace="fulfillment", name="order", version="1.0.0",
            context=dict_to_struct({"order_id": 7}), correlation_id="corr-1", priority=5,
            tags=["a", "b"],
        ),
        sequence=resources_pb2.SequenceInfo(
            dependencies={
                "validate_order": resources_pb2.DependencyResult(
                    step_name="validate_order", state=resources_pb2.STEP_STATE_COMPLETE,
                    result=dict_to_struct({"valid": True}),
                ),
                "gift_wrap": resources_pb2.DependencyResult(
                    step_name="gift_wrap", state=resources_pb2.STEP_STATE_SKIPPED,
                ),
            },
            sequence_number=3, total_steps=4,
        ),
        step=resources_pb2.StepInfo(
            step_id="s-3", name="ship_order", handler="ship",
            config=dict_to_struct({"carrier": "ups"}),
            attempt=2, max_attempts=3, timeout=seconds_to_duration(30), is_fallback=False,
        ),
    )
    return worker_service_pb2.Assignment(
        lease_id="lease-1", context=ctx, traceparent="00-abc-def-01", tracestate="k=v"
    )


def test_step_context_from_assignment() -> None:
    ctx = StepContext.from_assignment(_assignment())
    assert ctx.lease_id == "lease-1"
    assert ctx.traceparent == "00-abc-def-01" and ctx.tracestate == "k=v"
    assert ctx.task.task_id == "42" and ctx.task.context == {"order_id": 7}
    assert ctx.task.tags == ("a", "b") and ctx.task.priority == 5
    assert ctx.task.correlation_id == "corr-1"
    assert ctx.sequence.get("validate_order") == {"valid": True}
    assert ctx.sequence.get("gift_wrap") is None
    assert ctx.sequence.skipped("gift_wrap") and not ctx.sequence.skipped("validate_order")
    assert ctx.sequence.get("not_a_dependency") is None
    assert ctx.sequence.dependencies["validate_order"].state == "complete"
    assert (ctx.sequence.sequence_number, ctx.sequence.total_steps) == (3, 4)
    assert ctx.step.handler == "ship" and ctx.step.config == {"carrier": "ups"}
    assert (ctx.step.attempt, ctx.step.max_attempts, ctx.step.timeout) == (2, 3, 30.0)
    assert not ctx.cancelled.is_set()


def test_task_view_uses_lowercase_states_and_keeps_the_proto() -> None:
    proto = resources_pb2.Task(
        task_id="1", namespace="ns", template_name="t", state=resources_pb2.TASK_STATE_IN_PROGRESS,
        context=dict_to_struct({"x": 1}),
        steps=[resources_pb2.Step(name="a", state=resources_pb2.STEP_STATE_RESOLVED_MANUALLY,
                                  result=dict_to_struct({}))],
    )
    task = Task.from_proto(proto)
    assert task.state == "in_progress" and not task.is_terminal
    assert task.context == {"x": 1}
    assert task.step("a").state == "resolved_manually" and task.step("a").result == {}
    assert task.proto is proto
    assert task.create_time is None
    with pytest.raises(KeyError):
        task.step("zzz")


def test_task_state_names() -> None:
    assert task_state_value("failed") == resources_pb2.TASK_STATE_FAILED
    with pytest.raises(ValueError):
        task_state_value("FAILED")
