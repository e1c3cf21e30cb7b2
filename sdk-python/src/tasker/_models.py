"""Lightweight, read-only views of the API's resources.

States are lowercase names (``"in_progress"``), JSON payloads are dicts, times are aware UTC
datetimes (None when unset), durations are seconds. The raw message is kept as ``.proto``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tasker._convert import (
    duration_to_seconds,
    enum_name,
    struct_to_dict,
    timestamp_to_datetime,
)
from tasker.v1 import resources_pb2

__all__ = [
    "FINAL_TASK_STATES",
    "FINISHED_TASK_STATES",
    "TASK_STATES",
    "TERMINAL_TASK_STATES",
    "CircuitBreaker",
    "Event",
    "Namespace",
    "Step",
    "StepErrorInfo",
    "StepTemplate",
    "Task",
    "Template",
    "TemplateProblem",
    "WorkerInfo",
    "task_state_value",
]

TASK_STATES = (
    "pending",
    "in_progress",
    "complete",
    "failed",
    "cancelled",
    "resolved_manually",
)
# The server's two words for "done" (server/tasker_server/domain/states.py; a test keeps the three
# SDKs equal to it). Final: nothing, not even an operator, changes the task again.
FINAL_TASK_STATES = frozenset({"complete", "cancelled", "resolved_manually"})
# Finished: nothing runs. ``failed`` is included: nothing further runs unless an operator retries a
# step. Waiting for a task stops here.
FINISHED_TASK_STATES = FINAL_TASK_STATES | {"failed"}
# The name earlier releases used for FINISHED_TASK_STATES.
TERMINAL_TASK_STATES = FINISHED_TASK_STATES


def task_state_value(state: str) -> Any:
    """``"in_progress"`` -> ``TASK_STATE_IN_PROGRESS``; ValueError for unknown names."""
    if state not in TASK_STATES:
        raise ValueError(f"unknown task state {state!r}; expected one of {', '.join(TASK_STATES)}")
    return resources_pb2.TaskState.Value("TASK_STATE_" + state.upper())


@dataclass(frozen=True)
class StepErrorInfo:
    """A classified failure: ``error_class`` is ``transient``, ``delayed``, ``business_logic``,
    ``permanent`` or ``unspecified``."""

    error_class: str
    error_type: str
    message: str
    backtrace: str = ""
    retry_after: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, p: Any) -> StepErrorInfo:
        return cls(
            error_class=enum_name(resources_pb2.ErrorClass, p.error_class, "ERROR_CLASS_"),
            error_type=p.error_type,
            message=p.message,
            backtrace=p.backtrace,
            retry_after=duration_to_seconds(p.retry_after) if p.HasField("retry_after") else None,
            metadata=struct_to_dict(p.metadata),
        )


@dataclass(frozen=True)
class Step:
    """A step of a task (from GetTask/CreateTask)."""

    step_id: str
    name: str
    handler: str
    state: str
    depends_on: tuple[str, ...]
    sequence_number: int
    attempts: int
    max_attempts: int
    result: dict[str, Any] | None
    last_error: StepErrorInfo | None
    optional: bool
    worker_id: str
    proto: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: Any) -> Step:
        return cls(
            step_id=p.step_id,
            name=p.name,
            handler=p.handler,
            state=enum_name(resources_pb2.StepState, p.state, "STEP_STATE_"),
            depends_on=tuple(p.depends_on),
            sequence_number=p.sequence_number,
            attempts=p.attempts,
            max_attempts=p.max_attempts,
            result=struct_to_dict(p.result) if p.HasField("result") else None,
            last_error=StepErrorInfo.from_proto(p.last_error) if p.HasField("last_error") else None,
            optional=p.optional,
            worker_id=p.worker_id,
            proto=p,
        )


@dataclass(frozen=True)
class Task:
    """A task. ``steps`` is filled by get_task/create_task, empty in list_tasks."""

    task_id: str
    namespace: str
    template_name: str
    template_version: str
    state: str
    context: dict[str, Any]
    result: dict[str, Any]
    correlation_id: str
    priority: int
    tags: tuple[str, ...]
    idempotency_key: str
    blocked: bool
    total_steps: int
    completed_steps: int
    steps: tuple[Step, ...]
    create_time: datetime | None
    update_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    deadline: datetime | None
    created: bool = True
    proto: Any = field(default=None, repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        """True for complete, failed, cancelled and resolved_manually."""
        return self.state in FINISHED_TASK_STATES

    def step(self, name: str) -> Step:
        """The step named ``name`` (KeyError if absent)."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    @classmethod
    def from_proto(cls, p: Any, *, created: bool = True) -> Task:
        return cls(
            task_id=p.task_id,
            namespace=p.namespace,
            template_name=p.template_name,
            template_version=p.template_version,
            state=enum_name(resources_pb2.TaskState, p.state, "TASK_STATE_"),
            context=struct_to_dict(p.context),
            result=struct_to_dict(p.result),
            correlation_id=p.correlation_id,
            priority=p.priority,
            tags=tuple(p.tags),
            idempotency_key=p.idempotency_key,
            blocked=p.blocked,
            total_steps=p.total_steps,
            completed_steps=p.completed_steps,
            steps=tuple(Step.from_proto(s) for s in p.steps),
            create_time=timestamp_to_datetime(p.create_time),
            update_time=timestamp_to_datetime(p.update_time),
            start_time=timestamp_to_datetime(p.start_time),
            end_time=timestamp_to_datetime(p.end_time),
            deadline=timestamp_to_datetime(p.deadline),
            created=created,
            proto=p,
        )


@dataclass(frozen=True)
class StepTemplate:
    """A step of a registered template (retry settings are on ``.proto.retry``)."""

    name: str
    handler: str
    depends_on: tuple[str, ...]
    timeout: float
    optional: bool
    fallback_handler: str
    circuit_breaker_key: str
    handler_config: dict[str, Any]
    proto: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: Any) -> StepTemplate:
        return cls(
            name=p.name,
            handler=p.handler,
            depends_on=tuple(p.depends_on),
            timeout=duration_to_seconds(p.timeout),
            optional=p.optional,
            fallback_handler=p.fallback_handler,
            circuit_breaker_key=p.circuit_breaker_key,
            handler_config=struct_to_dict(p.handler_config),
            proto=p,
        )


@dataclass(frozen=True)
class Template:
    """A registered template version. ``created`` is False when registering was a no-op."""

    namespace: str
    name: str
    version: str
    description: str
    content_hash: str
    yaml: str
    steps: tuple[StepTemplate, ...]
    input_schema: dict[str, Any] | None
    max_parallel_steps: int
    create_time: datetime | None
    created: bool = True
    proto: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: Any, *, created: bool = True) -> Template:
        return cls(
            namespace=p.namespace,
            name=p.name,
            version=p.version,
            description=p.description,
            content_hash=p.content_hash,
            yaml=p.yaml,
            steps=tuple(StepTemplate.from_proto(s) for s in p.steps),
            input_schema=struct_to_dict(p.input_schema) if p.HasField("input_schema") else None,
            max_parallel_steps=p.max_parallel_steps,
            create_time=timestamp_to_datetime(p.create_time),
            created=created,
            proto=p,
        )


@dataclass(frozen=True)
class TemplateProblem:
    """One problem found by validate_template, e.g. ``step_templates[2].depends_on_steps[0]``."""

    field: str
    description: str


@dataclass(frozen=True)
class Event:
    """A lifecycle event (``task.completed``, ``step.failed``, ...)."""

    sequence: int
    event_name: str
    task_id: str
    namespace: str
    step_name: str
    correlation_id: str
    timestamp: datetime | None
    metadata: dict[str, Any]
    proto: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: Any) -> Event:
        return cls(
            sequence=p.sequence,
            event_name=p.event_name,
            task_id=p.task_id,
            namespace=p.namespace,
            step_name=p.step_name,
            correlation_id=p.correlation_id,
            timestamp=timestamp_to_datetime(p.timestamp),
            metadata=struct_to_dict(p.metadata),
            proto=p,
        )


@dataclass(frozen=True)
class WorkerInfo:
    """A connected worker as listed by the server; ``state`` is connected/draining/
    disconnected."""

    worker_id: str
    name: str
    namespaces: tuple[str, ...]
    handlers: tuple[str, ...]
    capacity: int
    in_flight: int
    sdk_language: str
    sdk_version: str
    state: str
    proto: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: Any) -> WorkerInfo:
        return cls(
            worker_id=p.worker_id,
            name=p.name,
            namespaces=tuple(p.namespaces),
            handlers=tuple(p.handlers),
            capacity=p.capacity,
            in_flight=p.in_flight,
            sdk_language=p.sdk_language,
            sdk_version=p.sdk_version,
            state=p.state,
            proto=p,
        )


@dataclass(frozen=True)
class CircuitBreaker:
    """A circuit breaker; ``state`` is closed/open/half_open."""

    key: str
    state: str
    failure_count: int
    failure_threshold: int
    reset_timeout: float
    opened_time: datetime | None
    proto: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: Any) -> CircuitBreaker:
        return cls(
            key=p.key,
            state=enum_name(resources_pb2.CircuitBreakerState, p.state, "CIRCUIT_BREAKER_STATE_"),
            failure_count=p.failure_count,
            failure_threshold=p.failure_threshold,
            reset_timeout=duration_to_seconds(p.reset_timeout),
            opened_time=timestamp_to_datetime(p.opened_time),
            proto=p,
        )


@dataclass(frozen=True)
class Namespace:
    """A namespace and its dispatch settings."""

    name: str
    paused: bool
    max_parallel_tasks: int
    proto: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, p: Any) -> Namespace:
        return cls(
            name=p.name, paused=p.paused, max_parallel_tasks=p.max_parallel_tasks, proto=p
        )
