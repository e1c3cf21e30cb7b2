"""Use cases behind the unary RPCs: templates, task creation and cancellation, namespaces.

Each function is one unit of work: validate (domain), read/write (store) in one transaction,
then wake the orchestrator. Limits are defined here once and documented in the proto.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any

from tasker_server.domain import errors
from tasker_server.domain.limits import DEFAULT_LIMITS
from tasker_server.domain.states import StepState, TaskState
from tasker_server.domain.templates import (
    TemplateDefinition,
    content_hash,
    parse_template,
    validate_input,
    version_key,
)
from tasker_server.store import admin as admin_store
from tasker_server.store import breakers as breaker_store
from tasker_server.store import tasks as task_store
from tasker_server.store import templates as template_store
from tasker_server.store.db import AsyncSession
from tasker_server.store.journal import Journal
from tasker_server.store.models import Namespace

from .orchestrator import Orchestrator

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Commands",
]

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = DEFAULT_LIMITS.payload_bytes  # the default; Commands.limits is configured
MAX_TAGS = 32
LATEST_TEMPLATE_TTL_SECONDS = 2.0
MAX_TAG_LENGTH = 64


def payload_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


class Commands:
    def __init__(self, orchestrator: Orchestrator, environment: str = "") -> None:
        self.orchestrator = orchestrator
        self.db = orchestrator.db
        self.environment = environment or None
        self.limits = orchestrator.settings.limits()
        self._definitions: dict[int, TemplateDefinition] = {}
        self._templates: dict[
            tuple[str, str, str], tuple[template_store.StoredTemplate, float]
        ] = {}

    # -- templates ------------------------------------------------------------------------------

    async def register_template(self, yaml_text: str) -> tuple[template_store.StoredTemplate, bool]:
        if not yaml_text.strip():
            raise errors.InvalidArgument(
                "yaml is required", [errors.FieldViolation("yaml", "must not be empty")]
            )
        self.check_template_size(yaml_text)
        defn = parse_template(yaml_text, limits=self.limits)
        digest = content_hash(defn)
        key = f"{defn.namespace}/{defn.name}@{defn.version}"
        async with self.db.session() as s:
            await template_store.ensure_namespace(s, defn.namespace)
            stored = await template_store.insert_template(
                s,
                namespace=defn.namespace,
                name=defn.name,
                version=(defn.version, version_key(defn.version)),
                content_hash=digest,
                yaml_text=yaml_text,
                definition=defn.to_dict(),
                description=defn.description,
            )
            if stored is not None:
                self._templates.pop((defn.namespace, defn.name, ""), None)
                await self._configure_breakers(s, defn)
                return stored, True
            existing = await template_store.find_template(
                s, defn.namespace, defn.name, defn.version
            )
        if existing is None:  # pragma: no cover - deleted in between; templates are never deleted
            raise errors.Aborted("template registration raced; retry")
        if existing.content_hash != digest:
            raise errors.AlreadyExists(
                "template",
                key,
                f"template {key} is already registered with different content; "
                "register a new version instead",
                reason="TEMPLATE_VERSION_EXISTS",
            )
        return existing, False

    def check_template_size(self, yaml_text: str) -> None:
        limit = self.limits.template_bytes
        if len(yaml_text) > limit or len(yaml_text.encode()) > limit:
            raise errors.ResourceExhausted(
                f"template YAML is over {limit} bytes", reason="TEMPLATE_TOO_LARGE"
            )

    async def _configure_breakers(self, s: AsyncSession, defn: TemplateDefinition) -> None:
        """Thresholds named in a template apply to its breaker keys (shared by replicas)."""
        journal = Journal()
        for step in defn.steps:
            if (
                step.breaker_failure_threshold is None
                and step.breaker_reset_timeout_seconds is None
            ):
                continue
            key = step.breaker_key or step.handler_class
            current = self.orchestrator.breakers.settings(key)
            threshold = step.breaker_failure_threshold or current.failure_threshold
            reset = step.breaker_reset_timeout_seconds or current.reset_timeout_seconds
            self.orchestrator.breakers.configure(key, threshold, reset)
            await breaker_store.save_breaker(
                s,
                journal,
                key=key,
                state="closed",
                failure_count=0,
                failure_threshold=threshold,
                reset_timeout_seconds=reset,
                opened_time=None,
                settings_only=True,
            )

    async def get_template(
        self, namespace: str, name: str, version: str | None
    ) -> template_store.StoredTemplate:
        # Versions are immutable: cache them. "Latest" is cached briefly (and dropped when this
        # replica registers a version), since another replica may register a newer one.
        key = (namespace, name, version or "")
        hit = self._templates.get(key)
        if hit is not None and (version or hit[1] > time.monotonic()):
            return hit[0]
        async with self.db.session(read_only=True) as s:
            stored = await template_store.find_template(s, namespace, name, version or None)
        if stored is not None:
            self._templates[key] = (stored, time.monotonic() + LATEST_TEMPLATE_TTL_SECONDS)
        if stored is None:
            ident = f"{namespace}/{name}" + (f"@{version}" if version else "")
            raise errors.NotFound("template", ident, reason="TEMPLATE_NOT_FOUND")
        return stored

    def definition(self, stored: template_store.StoredTemplate) -> TemplateDefinition:
        defn = self._definitions.get(stored.id)
        if defn is None:
            defn = TemplateDefinition.from_dict(stored.definition).for_environment(self.environment)
            self._definitions[stored.id] = defn
        return defn

    # -- tasks ----------------------------------------------------------------------------------

    async def create_task(
        self,
        *,
        namespace: str,
        template_name: str,
        template_version: str,
        context: dict[str, Any],
        idempotency_key: str,
        correlation_id: str,
        priority: int,
        tags: list[str],
        deadline: datetime | None,
        trace_parent: str | None,
        trace_state: str | None,
    ) -> tuple[task_store.TaskDetail, bool]:
        """Creates a task (or finds the one with the same idempotency key); returns it in full."""
        violations = []
        if not namespace:
            violations.append(errors.FieldViolation("namespace", "is required"))
        if not template_name:
            violations.append(errors.FieldViolation("template_name", "is required"))
        if not 0 <= priority <= 100:
            violations.append(errors.FieldViolation("priority", "must be between 0 and 100"))
        if len(tags) > MAX_TAGS:
            violations.append(errors.FieldViolation("tags", f"at most {MAX_TAGS} tags"))
        for i, tag in enumerate(tags):
            if not tag or len(tag) > MAX_TAG_LENGTH:
                violations.append(
                    errors.FieldViolation(f"tags[{i}]", f"must be 1..{MAX_TAG_LENGTH} characters")
                )
        if len(idempotency_key) > 255:
            violations.append(errors.FieldViolation("idempotency_key", "at most 255 characters"))
        if len(correlation_id) > 255:
            violations.append(errors.FieldViolation("correlation_id", "at most 255 characters"))
        if violations:
            raise errors.InvalidArgument("invalid CreateTask request", violations)
        if payload_size(context) > self.limits.payload_bytes:
            raise errors.ResourceExhausted(
                f"context is over {self.limits.payload_bytes} bytes serialized",
                reason="PAYLOAD_TOO_LARGE",
            )

        stored = await self.get_template(namespace, template_name, template_version)
        defn = self.definition(stored)
        problems = validate_input(defn, context)
        if problems:
            raise errors.InvalidArgument(
                "context does not match the template's input_schema",
                [
                    errors.FieldViolation("context" + p.field.removeprefix("input"), p.description)
                    for p in problems
                ],
                reason="INVALID_CONTEXT",
            )
        sequence = defn.sequence_numbers()
        steps = [
            task_store.NewStep(
                name=st.name,
                handler=st.handler_class,
                position=sequence[st.name],
                depends_on=st.depends_on_steps,
                max_attempts=st.retry.max_attempts,
                retry=st.retry.to_dict(),
                timeout_seconds=st.timeout_seconds,
                config=st.handler_config,
                optional=st.optional,
                fallback_handler=st.fallback_handler,
                breaker_key=st.breaker_key or st.handler_class,
            )
            for st in sorted(defn.steps, key=lambda st: sequence[st.name])
        ]
        if deadline is None and defn.timeout_seconds:
            from datetime import timedelta

            from tasker_server.store.types import utcnow

            deadline = utcnow() + timedelta(seconds=defn.timeout_seconds)
        new = task_store.NewTask(
            namespace=namespace,
            template_name=defn.name,
            template_version=defn.version,
            template_id=stored.id,
            context=context,
            correlation_id=correlation_id or None,
            priority=priority,
            tags=tags,
            idempotency_key=idempotency_key or None,
            max_parallel_steps=defn.max_parallel_steps,
            deadline=deadline,
            trace_parent=trace_parent,
            trace_state=trace_state,
            steps=steps,
        )
        detail, created = await self.orchestrator.creator.create(new)
        if not created:
            self._check_same_request(detail.task, new, template_version)
        return detail, created

    @staticmethod
    def _check_same_request(existing: Any, new: task_store.NewTask, requested_version: str) -> None:
        """An idempotency key names one request: a retry gets the task it created, a different
        request under the same key is refused (ALREADY_EXISTS with the task's id in ErrorInfo
        metadata, like Temporal's WorkflowExecutionAlreadyStarted) rather than silently given a
        task that is not what it asked for."""
        differs = [
            name
            for name, same in (
                ("template_name", existing.template_name == new.template_name),
                (
                    "template_version",
                    not requested_version or existing.template_version == new.template_version,
                ),
                ("context", (existing.context or {}) == new.context),
            )
            if not same
        ]
        if differs:
            raise errors.AlreadyExists(
                "task",
                str(existing.id),
                f"idempotency key already used by task {existing.id} with a different "
                f"{' and '.join(differs)}; use a new key for a new request",
                reason="IDEMPOTENCY_KEY_REUSED",
                metadata={"task_id": str(existing.id), "differs": ",".join(differs)},
            )

    async def get_task(self, task_id: int) -> task_store.TaskDetail:
        async with self.db.session(read_only=True) as s:
            detail = await task_store.load_task_detail(s, task_id)
        if detail is None:
            raise errors.NotFound("task", str(task_id), reason="TASK_NOT_FOUND")
        return detail

    async def cancel_task(self, task_id: int, actor: str, reason: str) -> None:
        async with self.db.session() as s:
            journal = Journal()
            task = await task_store.locked_task(s, task_id)
            leases = await task_store.close_task(
                s,
                journal,
                task,
                TaskState.CANCELLED,
                event="cancel",
                event_name="task.cancelled",
                actor=actor,
                reason=reason,
            )
            await journal.flush(s)
        self.orchestrator.committed(journal)
        self.orchestrator.cancel_leases(leases, "task_cancelled")
        self.orchestrator.wake(admit=True)

    # -- operator actions on steps and tasks -------------------------------------------------------

    async def retry_step(self, task_id: int, step_name: str, actor: str, reason: str) -> None:
        async with self.db.session() as s:
            journal = Journal()
            await admin_store.retry_step(s, journal, task_id, step_name, actor, reason)
            await journal.flush(s)
        self.orchestrator.committed(journal)
        self.orchestrator.wake(admit=True)

    async def satisfy_step(
        self,
        task_id: int,
        step_name: str,
        *,
        complete: bool,
        result: dict[str, Any],
        actor: str,
        reason: str,
    ) -> None:
        if payload_size(result) > self.limits.payload_bytes:
            raise errors.ResourceExhausted(
                f"result is over {self.limits.payload_bytes} bytes serialized",
                reason="PAYLOAD_TOO_LARGE",
            )
        to_state = StepState.COMPLETE if complete else StepState.RESOLVED_MANUALLY
        async with self.db.session() as s:
            journal = Journal()
            _, _, lease = await admin_store.complete_or_resolve_step(
                s, journal, task_id, step_name, to_state, result, actor, reason
            )
            await journal.flush(s)
        self.orchestrator.committed(journal)
        if lease:
            self.orchestrator.cancel_leases([lease], "resolved_manually")
        self.orchestrator.wake(admit=True)

    async def resolve_task(self, task_id: int, actor: str, reason: str) -> None:
        async with self.db.session() as s:
            journal = Journal()
            _, leases = await admin_store.resolve_task(s, journal, task_id, actor, reason)
            await journal.flush(s)
        self.orchestrator.committed(journal)
        self.orchestrator.cancel_leases(leases, "task_resolved_manually")
        self.orchestrator.wake(admit=True)

    # -- namespaces -----------------------------------------------------------------------------

    async def set_namespace_limit(
        self, namespace: str, max_parallel_tasks: int, actor: str, reason: str
    ) -> Namespace:
        async with self.db.session() as s:
            row = await template_store.load_namespace(s, namespace)
            row.max_parallel_tasks = max_parallel_tasks or None
            journal = Journal()
            journal.event(
                "namespace.updated",
                namespace=namespace,
                metadata={
                    "actor": actor,
                    "reason": reason,
                    "max_parallel_tasks": max_parallel_tasks,
                },
            )
            await journal.flush(s)
            await s.flush()
        self.orchestrator.committed(journal)
        self.orchestrator.wake(admit=True)
        return row

    async def set_paused(self, namespace: str, paused: bool, actor: str, reason: str) -> Namespace:
        async with self.db.session() as s:
            row = await template_store.load_namespace(s, namespace)
            journal = Journal()
            if row.paused != paused:
                row.paused = paused
                journal.event(
                    "namespace.paused" if paused else "namespace.resumed",
                    namespace=namespace,
                    metadata={"actor": actor, "reason": reason},
                )
                await journal.flush(s)
            await s.flush()
        self.orchestrator.committed(journal)
        self.orchestrator.wake()
        return row
