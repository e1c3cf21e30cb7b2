"""Conversions between stored rows / engine records and tasker.v1 messages (one place)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.json_format import ParseDict

from tasker.v1 import resources_pb2 as pb
from tasker_server.domain import errors
from tasker_server.domain.limits import DEFAULT_LIMITS
from tasker_server.domain.templates import TemplateDefinition
from tasker_server.store.dispatch import ClaimedStep
from tasker_server.store.models import Event, Namespace, Step, Task, Worker
from tasker_server.store.tasks import TaskDetail
from tasker_server.store.templates import StoredTemplate

__all__ = [
    "assignment",
    "error_class_name",
    "event_message",
    "namespace_message",
    "struct",
    "task_message",
    "task_state_name",
    "template_message",
    "to_dict",
    "worker_message",
]


def struct(value: Any) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if value:
        ParseDict(value, out)
    return out


def to_dict(
    value: struct_pb2.Struct, field: str = "", max_depth: int = DEFAULT_LIMITS.nesting_depth
) -> dict[str, Any]:
    """A client's Struct as plain JSON data; INVALID_ARGUMENT naming ``field`` (and the path
    inside it) for NaN or infinite numbers, which JSON cannot hold, and for lists and objects
    nested more than ``max_depth`` levels (the Struct itself is level 1)."""
    out: dict[str, Any] = {}
    # Iterative, so that no nesting the decoder let through can exhaust the stack here.
    stack: list[tuple[Any, Any, str, int]] = [(value, out, field, 1)]
    while stack:
        message, into, path, depth = stack.pop()
        if depth > max_depth:
            raise _invalid(path, f"nests more than {max_depth} levels of lists and objects")
        if isinstance(message, struct_pb2.Struct):
            items: Any = ((k, v, join_field(path, k)) for k, v in message.fields.items())
        else:
            items = ((i, v, f"{path}[{i}]") for i, v in enumerate(message.values))
        for key, item, item_path in items:
            kind = item.WhichOneof("kind")
            if kind == "struct_value":
                child: Any = {}
                stack.append((item.struct_value, child, item_path, depth + 1))
            elif kind == "list_value":
                child = [None] * len(item.list_value.values)
                stack.append((item.list_value, child, item_path, depth + 1))
            elif kind == "number_value":
                child = item.number_value
                if not math.isfinite(child):
                    raise _invalid(
                        item_path, "must be a finite number (JSON has no NaN or Infinity)"
                    )
            elif kind == "string_value":
                child = item.string_value
            elif kind == "bool_value":
                child = item.bool_value
            else:  # null_value, or no kind set (JSON has no "undefined": null)
                child = None
            into[key] = child
    return out


def join_field(path: str, key: str) -> str:
    """``context`` + ``a`` -> ``context.a``; keys that are not identifiers are quoted, clipped."""
    shown = key if key.isidentifier() else repr(key[:40] + ("..." if len(key) > 40 else ""))
    return f"{path}.{shown}" if path else shown


def _invalid(path: str, problem: str) -> errors.InvalidArgument:
    return errors.InvalidArgument("invalid JSON value", [errors.FieldViolation(path, problem)])


def ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def task_state(value: str) -> int:
    return int(pb.TaskState.Value(f"TASK_STATE_{value.upper()}"))


def step_state(value: str) -> int:
    return int(pb.StepState.Value(f"STEP_STATE_{value.upper()}"))


def error_class(value: str | None) -> Any:
    if not value:
        return int(pb.ERROR_CLASS_UNSPECIFIED)
    return int(pb.ErrorClass.Value(f"ERROR_CLASS_{value.upper()}"))


def error_class_name(value: int) -> str:
    """Proto enum -> domain name; UNSPECIFIED is treated as delayed (documented in the proto)."""
    name = str(pb.ErrorClass.Name(value)).removeprefix("ERROR_CLASS_").lower()
    return "delayed" if name == "unspecified" else name


def breaker_state(value: str) -> Any:
    return pb.CircuitBreakerState.Value(f"CIRCUIT_BREAKER_STATE_{value.upper()}")


def task_state_name(value: int) -> str:
    return str(pb.TaskState.Name(value)).removeprefix("TASK_STATE_").lower()


def _error(data: dict[str, Any] | None) -> pb.StepError | None:
    if not data:
        return None
    err = pb.StepError(
        error_class=error_class(data.get("error_class")),
        error_type=data.get("error_type") or "",
        message=data.get("message") or "",
        backtrace=data.get("backtrace") or "",
        metadata=struct(data.get("metadata") or {}),
    )
    if data.get("retry_after") is not None:
        err.retry_after.CopyFrom(duration(float(data["retry_after"])))
    return err


def task_message(task: Task, detail: TaskDetail | None = None) -> pb.Task:
    msg = pb.Task(
        task_id=str(task.id),
        namespace=task.namespace,
        template_name=task.template_name,
        template_version=task.template_version,
        state=task_state(task.state),  # type: ignore[arg-type]
        context=struct(task.context),
        correlation_id=task.correlation_id or "",
        priority=task.priority,
        tags=list(task.tags or []),
        idempotency_key=task.idempotency_key or "",
        blocked=task.blocked,
        total_steps=task.total_steps,
        completed_steps=task.satisfied_steps,
        create_time=ts(task.create_time),
        update_time=ts(task.update_time),
        start_time=ts(task.start_time),
        end_time=ts(task.end_time),
        deadline=ts(task.deadline),
    )
    if task.result is not None:
        msg.result.CopyFrom(struct(task.result))
    if detail is not None:
        names = {s.id: s.name for s in detail.steps}
        for step in detail.steps:
            msg.steps.append(_step_message(step, detail))
        for t in detail.transitions:
            msg.transitions.append(
                pb.Transition(
                    step_name=names.get(t.step_id, "") if t.step_id else "",
                    from_state=t.from_state or "",
                    to_state=t.to_state,
                    event=t.event,
                    reason=t.reason or "",
                    actor=t.actor,
                    metadata=struct(t.metadata_ or {}),
                    create_time=ts(t.create_time),
                )
            )
    return msg


def _step_message(step: Step, detail: TaskDetail) -> pb.Step:
    msg = pb.Step(
        step_id=str(step.id),
        name=step.name,
        handler=step.handler,
        state=step_state(step.state),  # type: ignore[arg-type]
        depends_on=detail.parents.get(step.id, []),
        sequence_number=step.position,
        attempts=step.attempts,
        max_attempts=step.max_attempts,
        optional=step.optional,
        worker_id=step.worker_id or "",
        circuit_breaker_key=step.breaker_key,
        create_time=ts(step.create_time),
        update_time=ts(step.update_time),
        start_time=ts(step.start_time),
        end_time=ts(step.end_time),
    )
    if step.state == "retrying" and step.ready_at is not None:
        msg.ready_time.FromDatetime(step.ready_at)
    if step.result is not None:
        msg.result.CopyFrom(struct(step.result))
    err = _error(step.last_error)
    if err is not None:
        msg.last_error.CopyFrom(err)
    for a in detail.attempts.get(step.id, []):
        attempt = pb.StepAttempt(
            attempt=a.attempt,
            worker_id=a.worker_id or "",
            outcome=a.outcome,
            start_time=ts(a.start_time),
            end_time=ts(a.end_time),
        )
        error = _error(
            {
                "error_class": a.error_class,
                "error_type": a.error_type,
                "message": a.message,
                "backtrace": a.backtrace,
                "metadata": a.metadata_,
            }
            if a.error_class
            else None
        )
        if error is not None:
            attempt.error.CopyFrom(error)
        msg.attempt_history.append(attempt)
    return msg


def template_message(
    stored: StoredTemplate, defn: TemplateDefinition, *, yaml: bool
) -> pb.Template:
    seq = defn.sequence_numbers()
    msg = pb.Template(
        namespace=stored.namespace,
        name=stored.name,
        version=stored.version,
        description=stored.description,
        content_hash=stored.content_hash,
        yaml=stored.yaml_text if yaml else "",
        max_parallel_steps=defn.max_parallel_steps or 0,
        create_time=ts(stored.create_time),
    )
    if defn.input_schema is not None:
        msg.input_schema.CopyFrom(struct(defn.input_schema))
    for st in sorted(defn.steps, key=lambda s: seq[s.name]):
        msg.steps.append(
            pb.StepTemplate(
                name=st.name,
                handler=st.handler_class,
                depends_on=list(st.depends_on_steps),
                retry=pb.RetryPolicy(
                    max_attempts=st.retry.max_attempts,
                    backoff_base=duration(st.retry.backoff_base_seconds),
                    max_delay=duration(st.retry.max_delay_seconds),
                    multiplier=st.retry.multiplier,
                    jitter=st.retry.jitter,
                ),
                timeout=duration(st.timeout_seconds),
                handler_config=struct(st.handler_config),
                optional=st.optional,
                fallback_handler=st.fallback_handler or "",
                circuit_breaker_key=st.breaker_key or st.handler_class,
            )
        )
    return msg


def assignment(c: ClaimedStep) -> pb.ExecutionContext:
    ctx = pb.ExecutionContext(
        task=pb.TaskInfo(
            task_id=str(c.task_id),
            namespace=c.namespace,
            name=c.template_name,
            version=c.template_version,
            context=struct(c.context),
            correlation_id=c.correlation_id or "",
            priority=c.priority,
            tags=list(c.tags or []),
        ),
        sequence=pb.SequenceInfo(sequence_number=c.position, total_steps=c.total_steps),
        step=pb.StepInfo(
            step_id=str(c.step_id),
            name=c.name,
            handler=c.handler,
            config=struct(c.config),
            attempt=c.attempt,
            max_attempts=c.max_attempts,
            timeout=duration(c.timeout_seconds),
            is_fallback=c.is_fallback,
        ),
    )
    for dep in c.dependencies:
        entry = ctx.sequence.dependencies[dep.name]
        entry.step_name = dep.name
        entry.state = step_state(dep.state)  # type: ignore[assignment]
        if dep.result is not None:
            entry.result.CopyFrom(struct(dep.result))
    return ctx


def event_message(row: Event) -> pb.Event:
    payload = row.payload or {}
    return pb.Event(
        sequence=row.seq,
        event_name=row.name,
        task_id=str(row.task_id) if row.task_id is not None else "",
        namespace=row.namespace or "",
        step_name=payload.get("step_name", ""),
        correlation_id=row.correlation_id or "",
        timestamp=ts(row.create_time),
        metadata=struct(payload.get("metadata") or {}),
    )


def worker_message(row: Worker) -> pb.Worker:
    return pb.Worker(
        worker_id=row.id,
        name=row.name,
        namespaces=list(row.namespaces or []),
        handlers=list(row.handlers or []),
        capacity=row.capacity,
        in_flight=row.in_flight,
        sdk_language=row.sdk_language,
        sdk_version=row.sdk_version,
        server_id=row.server_id,
        connect_time=ts(row.connect_time),
        last_seen_time=ts(row.last_seen_time),
        state=row.state,
    )


def namespace_message(row: Namespace) -> pb.Namespace:
    return pb.Namespace(
        name=row.name,
        paused=row.paused,
        max_parallel_tasks=row.max_parallel_tasks or 0,
        update_time=ts(row.update_time),
    )
