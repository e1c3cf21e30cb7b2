"""The authorization rule of every RPC: the permission it needs and where its namespaces come from.

``RULES`` is the one table (the role → permission table is ``domain/access.py``); the
``AuthInterceptor`` enforces it before any handler runs. A method without a rule is refused
(fail closed), ``missing_rules()`` lists such methods, and the server does not start while any
exists.

Namespace sources (``Source``):

- ``FIELD``: the request's ``namespace``; empty → the roles alone decide (the handler then answers
  INVALID_ARGUMENT for the missing field).
- ``FILTER``: the request's ``namespace`` / ``namespaces`` filter; empty means *every* namespace,
  so a principal limited to some namespaces must name them.
- ``TASK``: the namespace of the task ``task_id`` names (a store read, cached: it never changes).
  An unknown task: the roles alone decide, then the handler answers NOT_FOUND.
- ``LEASES``: the namespaces of the steps holding the leases (``lease_ids``, or the outcome's
  ``lease_id``); unknown leases: the roles alone, the handler reports them stale.
- ``HELLO``: Connect's first message, ``hello.namespaces``: every one must be allowed.
- ``TEMPLATE``: the namespace inside the template YAML (parsed as registration will parse it);
  unparsable YAML: the roles alone, the handler answers INVALID_ARGUMENT.
- ``EVERY``: the call spans every namespace (``*``): circuit breakers, the namespace list.
- ``NONE``: no namespace (template validation reads nothing stored).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tasker.v1 import (
    admin_service_pb2,
    event_service_pb2,
    task_service_pb2,
    template_service_pb2,
    worker_service_pb2,
)
from tasker_server.domain.access import ALL_NAMESPACES, Permission
from tasker_server.domain.errors import TaskerError
from tasker_server.domain.limits import DEFAULT_LIMITS, Limits
from tasker_server.domain.templates import parse_template
from tasker_server.store.access import lease_namespaces, task_namespace
from tasker_server.store.db import Database

__all__ = [
    "RULES",
    "NamespaceResolver",
    "Rule",
    "Source",
    "hello_namespaces",
    "missing_rules",
    "tasker_methods",
]

P = Permission


class Source(Enum):
    FIELD = "field"
    FILTER = "filter"
    TASK = "task"
    LEASES = "leases"
    HELLO = "hello"
    TEMPLATE = "template"
    EVERY = "every"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Rule:
    permission: Permission
    source: Source


RULES: Mapping[str, Rule] = {
    "/tasker.v1.TaskService/CreateTask": Rule(P.TASKS_CREATE, Source.FIELD),
    "/tasker.v1.TaskService/GetTask": Rule(P.TASKS_READ, Source.TASK),
    "/tasker.v1.TaskService/ListTasks": Rule(P.TASKS_READ, Source.FILTER),
    "/tasker.v1.TaskService/CancelTask": Rule(P.TASKS_CANCEL, Source.TASK),
    "/tasker.v1.TaskService/WatchTask": Rule(P.TASKS_READ, Source.TASK),
    "/tasker.v1.TemplateService/RegisterTemplate": Rule(P.TEMPLATES_WRITE, Source.TEMPLATE),
    "/tasker.v1.TemplateService/GetTemplate": Rule(P.TEMPLATES_READ, Source.FIELD),
    "/tasker.v1.TemplateService/ListTemplates": Rule(P.TEMPLATES_READ, Source.FILTER),
    "/tasker.v1.TemplateService/ValidateTemplate": Rule(P.TEMPLATES_READ, Source.NONE),
    "/tasker.v1.WorkerService/Connect": Rule(P.STEPS_WORK, Source.HELLO),
    "/tasker.v1.WorkerService/Heartbeat": Rule(P.STEPS_WORK, Source.LEASES),
    "/tasker.v1.WorkerService/ReportStepResult": Rule(P.STEPS_WORK, Source.LEASES),
    "/tasker.v1.AdminService/RetryStep": Rule(P.STEPS_RETRY, Source.TASK),
    "/tasker.v1.AdminService/ResolveStepManually": Rule(P.STEPS_RESOLVE, Source.TASK),
    "/tasker.v1.AdminService/CompleteStepManually": Rule(P.STEPS_COMPLETE, Source.TASK),
    "/tasker.v1.AdminService/ResolveTaskManually": Rule(P.TASKS_RESOLVE, Source.TASK),
    "/tasker.v1.AdminService/ListWorkers": Rule(P.WORKERS_READ, Source.FILTER),
    "/tasker.v1.AdminService/GetCircuitBreakers": Rule(P.BREAKERS_READ, Source.EVERY),
    "/tasker.v1.AdminService/ResetCircuitBreaker": Rule(P.BREAKERS_RESET, Source.EVERY),
    "/tasker.v1.AdminService/PauseNamespace": Rule(P.NAMESPACES_PAUSE, Source.FIELD),
    "/tasker.v1.AdminService/ResumeNamespace": Rule(P.NAMESPACES_PAUSE, Source.FIELD),
    "/tasker.v1.AdminService/UpdateNamespace": Rule(P.NAMESPACES_WRITE, Source.FIELD),
    "/tasker.v1.AdminService/ListNamespaces": Rule(P.NAMESPACES_READ, Source.EVERY),
    "/tasker.v1.EventService/WatchEvents": Rule(P.EVENTS_READ, Source.FILTER),
}

_MODULES = (
    task_service_pb2,
    template_service_pb2,
    worker_service_pb2,
    admin_service_pb2,
    event_service_pb2,
)


def tasker_methods() -> list[str]:
    """Every Tasker RPC as ``/package.Service/Method``, from the generated descriptors."""
    return [
        f"/{service.full_name}/{method.name}"
        for module in _MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


def missing_rules() -> list[str]:
    """Tasker RPCs that have no rule (the server refuses them, and does not start)."""
    return [m for m in tasker_methods() if m not in RULES]


def hello_namespaces(message: Any) -> tuple[str, ...]:
    """The namespaces a Connect stream's first message asks for (none if it is not a hello)."""
    if message.WhichOneof("message") != "hello":
        return ()
    return tuple(message.hello.namespaces)


def _lease_ids(request: Any) -> list[str]:
    if "lease_ids" in request.DESCRIPTOR.fields_by_name:
        return [i for i in request.lease_ids if i]
    kind = request.WhichOneof("outcome")
    lease_id = getattr(request, kind).lease_id if kind else ""
    return [lease_id] if lease_id else []


def _template_namespace(text: str, limits: Limits) -> str | None:
    # Parsed under the same limits as the handler's: what it would refuse (too large, malformed)
    # names no namespace, and the handler refuses it anyway.
    try:
        return parse_template(text, limits=limits).namespace
    except TaskerError:
        return None


class _Lru:
    """A bounded map of facts that never change (a task's or a lease's namespace)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.items: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        if key in self.items:
            self.items.move_to_end(key)
        return self.items.get(key)

    def put(self, key: str, value: str) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


class NamespaceResolver:
    """The namespaces a request touches, per its rule's source (``*`` = every namespace; none:
    the roles alone decide)."""

    def __init__(self, db: Database, limits: Limits = DEFAULT_LIMITS) -> None:
        self.db = db
        self.limits = limits
        self._tasks = _Lru()
        self._leases = _Lru()

    async def namespaces(self, source: Source, request: Any) -> tuple[str, ...]:
        if source is Source.FIELD:
            return (request.namespace,) if request.namespace else ()
        if source is Source.FILTER:
            fields = request.DESCRIPTOR.fields_by_name
            names = list(request.namespaces) if "namespaces" in fields else [request.namespace]
            names = [n for n in names if n]
            return tuple(names) if names else (ALL_NAMESPACES,)
        if source is Source.TASK:
            found = await self._task(str(request.task_id))
            return (found,) if found else ()
        if source is Source.LEASES:
            return await self._lease_namespaces(_lease_ids(request))
        if source is Source.TEMPLATE:
            found = _template_namespace(request.yaml, self.limits)
            return (found,) if found else ()
        if source is Source.EVERY:
            return (ALL_NAMESPACES,)
        return ()  # NONE; HELLO is checked on the stream's first message

    async def _task(self, task_id: str) -> str | None:
        cached = self._tasks.get(task_id)
        if cached is not None or not task_id.isdigit() or len(task_id) > 19:
            return cached
        async with self.db.session(read_only=True) as s:
            found = await task_namespace(s, int(task_id))
        if found is not None:
            self._tasks.put(task_id, found)
        return found

    async def _lease_namespaces(self, lease_ids: list[str]) -> tuple[str, ...]:
        missing = [i for i in lease_ids if self._leases.get(i) is None]
        if missing:
            async with self.db.session(read_only=True) as s:
                for lease_id, namespace in (await lease_namespaces(s, missing)).items():
                    self._leases.put(lease_id, namespace)
        found = {self._leases.get(i) for i in lease_ids}
        return tuple(sorted(n for n in found if n))
