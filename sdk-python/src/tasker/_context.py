"""The execution context a step handler receives.

Built from ``tasker.v1.ExecutionContext`` (plus the lease and trace fields of the assignment)::

    async def ship_order(ctx: StepContext) -> dict:
        order_id = ctx.task.context["order_id"]
        payment = ctx.sequence.get("process_payment")      # the dependency's result, or None
        if ctx.sequence.skipped("check_inventory"):
            ...
        return {"shipped": True, "attempt": ctx.step.attempt}
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from tasker._convert import duration_to_seconds, enum_name, struct_to_dict
from tasker.v1 import resources_pb2

__all__ = ["DependencyResult", "SequenceInfo", "StepContext", "StepInfo", "TaskInfo"]


@dataclass(frozen=True)
class TaskInfo:
    """The task this step belongs to."""

    task_id: str
    namespace: str
    name: str
    version: str
    context: dict[str, Any]
    correlation_id: str = ""
    priority: int = 0
    tags: tuple[str, ...] = ()

    @classmethod
    def from_proto(cls, p: Any) -> TaskInfo:
        return cls(
            task_id=p.task_id,
            namespace=p.namespace,
            name=p.name,
            version=p.version,
            context=struct_to_dict(p.context),
            correlation_id=p.correlation_id,
            priority=p.priority,
            tags=tuple(p.tags),
        )


@dataclass(frozen=True)
class DependencyResult:
    """Outcome of a direct dependency: state ``complete``, ``skipped`` or
    ``resolved_manually``; ``result`` is None when it was skipped."""

    step_name: str
    state: str
    result: dict[str, Any] | None

    @classmethod
    def from_proto(cls, p: Any) -> DependencyResult:
        state = enum_name(resources_pb2.StepState, p.state, "STEP_STATE_")
        result = None if state == "skipped" else struct_to_dict(p.result)
        return cls(step_name=p.step_name, state=state, result=result)


@dataclass(frozen=True)
class SequenceInfo:
    """This step's place in the task and the results of its direct dependencies."""

    dependencies: dict[str, DependencyResult]
    sequence_number: int = 0
    total_steps: int = 0

    def get(self, step_name: str) -> dict[str, Any] | None:
        """The result of dependency ``step_name``; None if it was skipped or is not a
        dependency of this step."""
        dep = self.dependencies.get(step_name)
        return dep.result if dep is not None else None

    def skipped(self, step_name: str) -> bool:
        """True when dependency ``step_name`` was an optional step that was skipped."""
        dep = self.dependencies.get(step_name)
        return dep is not None and dep.state == "skipped"

    @classmethod
    def from_proto(cls, p: Any) -> SequenceInfo:
        return cls(
            dependencies={
                name: DependencyResult.from_proto(dep) for name, dep in p.dependencies.items()
            },
            sequence_number=p.sequence_number,
            total_steps=p.total_steps,
        )


@dataclass(frozen=True)
class StepInfo:
    """The step being run. ``timeout`` is in seconds (0 means none); ``attempt`` is 1-based."""

    step_id: str
    name: str
    handler: str
    config: dict[str, Any]
    attempt: int = 1
    max_attempts: int = 1
    timeout: float = 0.0
    is_fallback: bool = False

    @classmethod
    def from_proto(cls, p: Any) -> StepInfo:
        return cls(
            step_id=p.step_id,
            name=p.name,
            handler=p.handler,
            config=struct_to_dict(p.config),
            attempt=p.attempt,
            max_attempts=p.max_attempts,
            timeout=duration_to_seconds(p.timeout),
            is_fallback=p.is_fallback,
        )


@dataclass(frozen=True)
class StepContext:
    """Everything a handler receives.

    ``cancelled`` is set when the server cancels the lease (task cancelled, lease expired) just
    before the handler's asyncio task is cancelled; sync handlers running in a thread cannot be
    interrupted and should poll ``ctx.cancelled.is_set()`` in long loops.
    """

    task: TaskInfo
    sequence: SequenceInfo
    step: StepInfo
    lease_id: str = ""
    traceparent: str = ""
    tracestate: str = ""
    cancelled: asyncio.Event = field(default_factory=asyncio.Event, compare=False, repr=False)

    @classmethod
    def from_proto(
        cls,
        context: Any,
        *,
        lease_id: str = "",
        traceparent: str = "",
        tracestate: str = "",
    ) -> StepContext:
        """From a ``tasker.v1.ExecutionContext``."""
        return cls(
            task=TaskInfo.from_proto(context.task),
            sequence=SequenceInfo.from_proto(context.sequence),
            step=StepInfo.from_proto(context.step),
            lease_id=lease_id,
            traceparent=traceparent,
            tracestate=tracestate,
        )

    @classmethod
    def from_assignment(cls, assignment: Any) -> StepContext:
        """From a ``tasker.v1.Assignment``."""
        return cls.from_proto(
            assignment.context,
            lease_id=assignment.lease_id,
            traceparent=assignment.traceparent,
            tracestate=assignment.tracestate,
        )
