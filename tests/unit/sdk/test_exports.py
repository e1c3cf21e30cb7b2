"""The public surface of the ``tasker`` package is deliberate: this test pins it."""

from __future__ import annotations

import tasker
import tasker.testing

EXPECTED = {
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
}


def test_all_is_pinned() -> None:
    assert set(tasker.__all__) == EXPECTED
    assert len(tasker.__all__) == len(EXPECTED)  # no duplicates


def test_every_export_resolves() -> None:
    for name in tasker.__all__:
        assert getattr(tasker, name) is not None


def test_public_objects_come_from_private_modules() -> None:
    for name in tasker.__all__:
        obj = getattr(tasker, name)
        module = getattr(obj, "__module__", "tasker")
        assert module == "tasker" or module.startswith("tasker._"), (name, module)


def test_version() -> None:
    assert tasker.__version__ == "0.1.0"


def test_testing_module_exports() -> None:
    assert set(tasker.testing.__all__) == {"WorkflowBuilder", "to_yaml"}


def test_every_exception_derives_from_the_root() -> None:
    for name in tasker.__all__:
        obj = getattr(tasker, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, tasker.TaskerError), name
