from google.protobuf import struct_pb2 as _struct_pb2
from tasker.v1 import resources_pb2 as _resources_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetryStepRequest(_message.Message):
    __slots__ = ("task_id", "step_name", "actor", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    step_name: str
    actor: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., step_name: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RetryStepResponse(_message.Message):
    __slots__ = ("step",)
    STEP_FIELD_NUMBER: _ClassVar[int]
    step: _resources_pb2.Step
    def __init__(self, step: _Optional[_Union[_resources_pb2.Step, _Mapping]] = ...) -> None: ...

class ResolveStepManuallyRequest(_message.Message):
    __slots__ = ("task_id", "step_name", "result", "actor", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    step_name: str
    result: _struct_pb2.Struct
    actor: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., step_name: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResolveStepManuallyResponse(_message.Message):
    __slots__ = ("step",)
    STEP_FIELD_NUMBER: _ClassVar[int]
    step: _resources_pb2.Step
    def __init__(self, step: _Optional[_Union[_resources_pb2.Step, _Mapping]] = ...) -> None: ...

class CompleteStepManuallyRequest(_message.Message):
    __slots__ = ("task_id", "step_name", "result", "actor", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    step_name: str
    result: _struct_pb2.Struct
    actor: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., step_name: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CompleteStepManuallyResponse(_message.Message):
    __slots__ = ("step",)
    STEP_FIELD_NUMBER: _ClassVar[int]
    step: _resources_pb2.Step
    def __init__(self, step: _Optional[_Union[_resources_pb2.Step, _Mapping]] = ...) -> None: ...

class ResolveTaskManuallyRequest(_message.Message):
    __slots__ = ("task_id", "actor", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    actor: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResolveTaskManuallyResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _resources_pb2.Task
    def __init__(self, task: _Optional[_Union[_resources_pb2.Task, _Mapping]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ("namespace", "page_size", "page_token")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    page_size: int
    page_token: str
    def __init__(self, namespace: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers", "next_page_token")
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Worker]
    next_page_token: str
    def __init__(self, workers: _Optional[_Iterable[_Union[_resources_pb2.Worker, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetCircuitBreakersRequest(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class GetCircuitBreakersResponse(_message.Message):
    __slots__ = ("circuit_breakers",)
    CIRCUIT_BREAKERS_FIELD_NUMBER: _ClassVar[int]
    circuit_breakers: _containers.RepeatedCompositeFieldContainer[_resources_pb2.CircuitBreaker]
    def __init__(self, circuit_breakers: _Optional[_Iterable[_Union[_resources_pb2.CircuitBreaker, _Mapping]]] = ...) -> None: ...

class ResetCircuitBreakerRequest(_message.Message):
    __slots__ = ("key", "actor", "reason")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    key: str
    actor: str
    reason: str
    def __init__(self, key: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResetCircuitBreakerResponse(_message.Message):
    __slots__ = ("circuit_breaker",)
    CIRCUIT_BREAKER_FIELD_NUMBER: _ClassVar[int]
    circuit_breaker: _resources_pb2.CircuitBreaker
    def __init__(self, circuit_breaker: _Optional[_Union[_resources_pb2.CircuitBreaker, _Mapping]] = ...) -> None: ...

class PauseNamespaceRequest(_message.Message):
    __slots__ = ("namespace", "actor", "reason")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    actor: str
    reason: str
    def __init__(self, namespace: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PauseNamespaceResponse(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: _resources_pb2.Namespace
    def __init__(self, namespace: _Optional[_Union[_resources_pb2.Namespace, _Mapping]] = ...) -> None: ...

class ResumeNamespaceRequest(_message.Message):
    __slots__ = ("namespace", "actor", "reason")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    actor: str
    reason: str
    def __init__(self, namespace: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResumeNamespaceResponse(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: _resources_pb2.Namespace
    def __init__(self, namespace: _Optional[_Union[_resources_pb2.Namespace, _Mapping]] = ...) -> None: ...

class UpdateNamespaceRequest(_message.Message):
    __slots__ = ("namespace", "max_parallel_tasks", "actor", "reason")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_TASKS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    max_parallel_tasks: int
    actor: str
    reason: str
    def __init__(self, namespace: _Optional[str] = ..., max_parallel_tasks: _Optional[int] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UpdateNamespaceResponse(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: _resources_pb2.Namespace
    def __init__(self, namespace: _Optional[_Union[_resources_pb2.Namespace, _Mapping]] = ...) -> None: ...

class ListNamespacesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListNamespacesResponse(_message.Message):
    __slots__ = ("namespaces", "next_page_token")
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Namespace]
    next_page_token: str
    def __init__(self, namespaces: _Optional[_Iterable[_Union[_resources_pb2.Namespace, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
