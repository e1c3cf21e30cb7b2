"""A blocking facade over :class:`tasker.Client` for scripts and REPLs.

It runs one private event loop in a daemon thread (grpc.aio channels belong to the loop that
created them) and forwards each call to it. Do not call it from inside a running event loop's
thread with the expectation of concurrency: each call blocks until done.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from tasker._client import DEFAULT_ACTOR, Client
from tasker._models import (
    CircuitBreaker,
    Namespace,
    Step,
    Task,
    Template,
    TemplateProblem,
    WorkerInfo,
)

__all__ = ["SyncClient"]

T = TypeVar("T")


class SyncClient:
    """Blocking client with the methods of :class:`tasker.Client` except the event streams
    (``list_tasks``/``list_templates`` return lazy iterators that fetch page by page)."""

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        tls: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tasker-sync-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def make() -> Client:
            return Client(address, tls=tls, token=token)

        self._client = self._run(make())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("SyncClient is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Close the channel and stop the private loop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- templates -----------------------------------------------------------------------------

    def register_template(self, yaml_text: str) -> Template:
        return self._run(self._client.register_template(yaml_text))

    def validate_template(self, yaml_text: str) -> list[TemplateProblem]:
        return self._run(self._client.validate_template(yaml_text))

    def get_template(self, namespace: str, name: str, version: str | None = None) -> Template:
        return self._run(self._client.get_template(namespace, name, version))

    def list_templates(
        self, namespace: str | None = None, name: str | None = None, *, page_size: int = 50
    ) -> Iterator[Template]:
        agen = self._client.list_templates(namespace, name, page_size=page_size)
        return self._iterate(agen)

    # --- tasks ---------------------------------------------------------------------------------

    def create_task(
        self,
        namespace: str,
        template_name: str,
        context: Mapping[str, Any] | None = None,
        *,
        version: str | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        priority: int = 0,
        tags: Iterable[str] = (),
        deadline: datetime | timedelta | None = None,
    ) -> Task:
        return self._run(
            self._client.create_task(
                namespace,
                template_name,
                context,
                version=version,
                idempotency_key=idempotency_key,
                correlation_id=correlation_id,
                priority=priority,
                tags=tags,
                deadline=deadline,
            )
        )

    def get_task(self, task_id: str) -> Task:
        return self._run(self._client.get_task(task_id))

    def list_tasks(
        self,
        namespace: str | None = None,
        state: str | None = None,
        template_name: str | None = None,
        page_size: int = 50,
    ) -> Iterator[Task]:
        return self._iterate(self._client.list_tasks(namespace, state, template_name, page_size))

    def cancel_task(self, task_id: str, *, actor: str = DEFAULT_ACTOR, reason: str = "") -> Task:
        return self._run(self._client.cancel_task(task_id, actor=actor, reason=reason))

    def wait_for_task(self, task_id: str, timeout: float | None = None) -> Task:
        return self._run(self._client.wait_for_task(task_id, timeout))

    # --- operator actions ----------------------------------------------------------------------

    def retry_step(
        self, task_id: str, step_name: str, *, actor: str = DEFAULT_ACTOR, reason: str = ""
    ) -> Step:
        return self._run(self._client.retry_step(task_id, step_name, actor=actor, reason=reason))

    def resolve_step_manually(
        self,
        task_id: str,
        step_name: str,
        result: Mapping[str, Any] | None = None,
        *,
        actor: str = DEFAULT_ACTOR,
        reason: str = "",
    ) -> Step:
        return self._run(
            self._client.resolve_step_manually(
                task_id, step_name, result, actor=actor, reason=reason
            )
        )

    def complete_step_manually(
        self,
        task_id: str,
        step_name: str,
        result: Mapping[str, Any],
        *,
        actor: str = DEFAULT_ACTOR,
        reason: str = "",
    ) -> Step:
        return self._run(
            self._client.complete_step_manually(
                task_id, step_name, result, actor=actor, reason=reason
            )
        )

    def resolve_task_manually(
        self, task_id: str, *, actor: str = DEFAULT_ACTOR, reason: str = ""
    ) -> Task:
        return self._run(self._client.resolve_task_manually(task_id, actor=actor, reason=reason))

    def pause_namespace(
        self, namespace: str, *, actor: str = DEFAULT_ACTOR, reason: str = ""
    ) -> Namespace:
        return self._run(self._client.pause_namespace(namespace, actor=actor, reason=reason))

    def resume_namespace(
        self, namespace: str, *, actor: str = DEFAULT_ACTOR, reason: str = ""
    ) -> Namespace:
        return self._run(self._client.resume_namespace(namespace, actor=actor, reason=reason))

    def list_namespaces(self) -> list[Namespace]:
        return self._run(self._client.list_namespaces())

    def list_workers(self, namespace: str | None = None) -> list[WorkerInfo]:
        return self._run(self._client.list_workers(namespace))

    def get_circuit_breakers(self, keys: Iterable[str] = ()) -> list[CircuitBreaker]:
        return self._run(self._client.get_circuit_breakers(keys))

    def reset_circuit_breaker(
        self, key: str, *, actor: str = DEFAULT_ACTOR, reason: str = ""
    ) -> CircuitBreaker:
        return self._run(self._client.reset_circuit_breaker(key, actor=actor, reason=reason))

    # --- helpers -------------------------------------------------------------------------------

    def _iterate(self, agen: Any) -> Iterator[Any]:
        async def next_item() -> tuple[bool, Any]:
            try:
                return True, await agen.__anext__()
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                ok, item = self._run(next_item())
                if not ok:
                    return
                yield item
        finally:
            if not self._loop.is_closed():
                self._run(agen.aclose())
