"""Python SDK for Tasker, a workflow orchestration server.

- :class:`Client` (asyncio) and :class:`SyncClient`: templates, tasks, events, operator actions.
- :class:`Worker`: runs step handlers for leases received over one gRPC stream.
- Errors: everything derives from :class:`TaskerError` (see ``tasker._errors`` for the tree).
- :mod:`tasker.testing`: ``WorkflowBuilder`` for template YAML.

The generated protobuf modules live in :mod:`tasker.v1`.
"""

from tasker._client import Client
from tasker._context import DependencyResult, SequenceInfo, StepContext, StepInfo, TaskInfo
from tasker._errors import (
    AbortedError,
    AlreadyExistsError,
    BusinessLogicError,
    FailedPreconditionError,
    FieldViolation,
    HandlerError,
    InternalError,
    InvalidArgumentError,
    ManualInterventionError,
    NotFoundError,
    PermanentError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RetryableError,
    TaskerError,
    UnauthenticatedError,
    UnavailableError,
    from_rpc_error,
)
from tasker._models import (
    CircuitBreaker,
    Event,
    Namespace,
    Step,
    StepErrorInfo,
    StepTemplate,
    Task,
    Template,
    TemplateProblem,
    WorkerInfo,
)
from tasker._sync import SyncClient
from tasker._version import __version__
from tasker._worker import StepHandler, Worker

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "BusinessLogicError",
    "CircuitBreaker",
    "Client",
    "DependencyResult",
    "Event",
    "FailedPreconditionError",
    "FieldViolation",
    "HandlerError",
    "InternalError",
    "InvalidArgumentError",
    "ManualInterventionError",
    "Namespace",
    "NotFoundError",
    "PermanentError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryableError",
    "SequenceInfo",
    "Step",
    "StepContext",
    "StepErrorInfo",
    "StepHandler",
    "StepInfo",
    "StepTemplate",
    "SyncClient",
    "Task",
    "TaskInfo",
    "TaskerError",
    "Template",
    "TemplateProblem",
    "UnauthenticatedError",
    "UnavailableError",
    "Worker",
    "WorkerInfo",
    "__version__",
    "from_rpc_error",
]
