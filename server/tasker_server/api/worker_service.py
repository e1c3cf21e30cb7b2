"""tasker.v1.WorkerService: the Connect stream plus unary heartbeat/report for job queues.

The stream handler is an async generator (OpenTelemetry's aio interceptor breaks handlers that use
``context.read``/``context.write``). A reader task consumes the worker's messages; everything the
server sends goes through the stream's outbound queue, so the dispatcher, the sweeper and result
acknowledgements never write to the stream concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from tasker.v1 import worker_service_pb2 as pb
from tasker.v1 import worker_service_pb2_grpc as pb_grpc
from tasker_server.domain import errors
from tasker_server.engine.commands import MAX_PAYLOAD_BYTES
from tasker_server.engine.orchestrator import Orchestrator
from tasker_server.engine.streams import Cancellation, WorkerStream
from tasker_server.store.dispatch import ClaimedStep
from tasker_server.store.outcomes import Outcome, OutcomeKind, Verdict
from tasker_server.store.types import utcnow

from . import convert, validation
from .decoding import Undecodable, undecodable_error
from .errors import MAX_MESSAGE, clip, code_for
from .interceptors import CALLER_IDENTITY
from .strings import check_strings

__all__ = ["WorkerService"]

log = logging.getLogger(__name__)

MAX_CAPACITY = 10_000
HELLO_TIMEOUT_SECONDS = 10.0


def _outcome(
    msg: pb.StepSuccess | pb.StepFailure, worker_id: str, success: bool, identity: str | None
) -> Outcome:
    execution_ms = msg.execution_time.ToMilliseconds() if msg.HasField("execution_time") else None
    if success:
        assert isinstance(msg, pb.StepSuccess)
        if msg.result.ByteSize() > MAX_PAYLOAD_BYTES:
            # Dependents would receive it in every execution context: refuse it as the step's
            # permanent failure rather than store it.
            return Outcome(
                msg.lease_id,
                OutcomeKind.FAILURE,
                worker_id,
            identity=identity,
                error_class="permanent",
                error_type="ResultTooLarge",
                message=f"step result is {msg.result.ByteSize()} bytes; the limit is 1 MiB",
                execution_ms=execution_ms,
            )
        return Outcome(
            msg.lease_id,
            OutcomeKind.SUCCESS,
            worker_id,
            identity=identity,
            result=convert.to_dict(msg.result),
            execution_ms=execution_ms,
        )
    assert isinstance(msg, pb.StepFailure)
    err = msg.error
    retry_after = err.retry_after.ToNanoseconds() / 1e9 if err.HasField("retry_after") else None
    cls = convert.error_class_name(err.error_class)
    return Outcome(
        msg.lease_id,
        OutcomeKind.FAILURE,
        worker_id,
        identity=identity,
        error_class=cls,
        error_type=err.error_type,
        message=err.message,
        backtrace=err.backtrace,
        retry_after=retry_after,
        error_metadata=convert.to_dict(err.metadata),
        execution_ms=execution_ms,
    )


def _rejected(exc: errors.TaskerError, msg: pb.ConnectRequest | Undecodable) -> pb.ConnectResponse:
    """The answer to one refused message (its text bounded as on any status: it may echo input)."""
    lease_id = ""
    if not isinstance(msg, Undecodable):
        kind = msg.WhichOneof("message")
        if kind in ("ack", "result", "failure"):
            lease_id = getattr(msg, kind).lease_id[:128]
    return pb.ConnectResponse(
        rejected=pb.MessageRejected(
            code=code_for(exc).name,
            reason=exc.reason,
            message=clip(str(exc), MAX_MESSAGE),
            lease_id=lease_id,
        )
    )


def _check_hello(hello: pb.WorkerHello) -> None:
    problems = []
    if not hello.namespaces:
        problems.append(errors.FieldViolation("hello.namespaces", "at least one namespace"))
    if not hello.handlers:
        problems.append(errors.FieldViolation("hello.handlers", "at least one handler"))
    if not 1 <= hello.capacity <= MAX_CAPACITY:
        problems.append(
            errors.FieldViolation("hello.capacity", f"must be between 1 and {MAX_CAPACITY}")
        )
    if len(hello.worker_id) > 64:
        problems.append(errors.FieldViolation("hello.worker_id", "at most 64 characters"))
    if len(hello.held_leases) > MAX_CAPACITY:
        problems.append(
            errors.FieldViolation("hello.held_leases", f"at most {MAX_CAPACITY} lease ids")
        )
    if problems:
        raise errors.InvalidArgument("invalid hello", problems)


class WorkerService(pb_grpc.WorkerServiceServicer):
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.settings = orchestrator.settings
        self.limits = orchestrator.settings.limits()
        self._nonce = itertools.count(1)
        self._reports: set[asyncio.Task[None]] = set()

    async def Connect(
        self,
        request_iterator: AsyncIterator[pb.ConnectRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ConnectResponse]:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_SECONDS):
                first = await anext(request_iterator)
        except (StopAsyncIteration, TimeoutError):
            raise errors.InvalidArgument(
                "the first message on Connect must be hello",
                [errors.FieldViolation("hello", "required as the first message")],
            ) from None
        if first.WhichOneof("message") != "hello":
            raise errors.InvalidArgument(
                "the first message on Connect must be hello",
                [errors.FieldViolation("hello", "required as the first message")],
            )
        hello = first.hello
        _check_hello(hello)
        stream = WorkerStream(
            worker_id=hello.worker_id or uuid.uuid4().hex,
            name=hello.name or "worker",
            namespaces=sorted(set(hello.namespaces)),
            handlers=sorted(set(hello.handlers)),
            capacity=hello.capacity,
            sdk_language=hello.sdk_language,
            sdk_version=hello.sdk_version,
            connect_time=utcnow(),
            hands_off_leases=hello.hands_off_leases,
            identity=CALLER_IDENTITY.get(),
        )
        gone = await self.orchestrator.reconcile(stream, list(hello.held_leases))
        unknown = await self.orchestrator.unknown_namespaces(stream.namespaces)
        await self.orchestrator.open_stream(stream)
        log.info(
            "worker connected", extra={"worker_id": stream.worker_id, "capacity": stream.capacity}
        )
        s = self.settings
        yield pb.ConnectResponse(
            welcome=pb.Welcome(
                worker_id=stream.worker_id,
                server_id=s.server_id,
                heartbeat_interval=convert.duration(s.heartbeat_interval_seconds),
                keepalive_interval=convert.duration(s.keepalive_interval_seconds),
                keepalive_timeout=convert.duration(s.keepalive_timeout_seconds),
                ack_timeout=convert.duration(s.ack_timeout_seconds),
                unknown_namespaces=unknown,
            )
        )
        for lease_id in gone:
            stream.outbound.put_nowait(Cancellation(lease_id, "lease_stale"))
        reader = asyncio.create_task(self._read(stream, request_iterator), name="connect-reader")
        pinger = asyncio.create_task(self._keepalive(stream), name="connect-keepalive")
        try:
            while True:
                item = await stream.outbound.get()
                if item is None:
                    break
                if isinstance(item, ClaimedStep):
                    self.orchestrator.hops.mark(item.lease_id, "written")
                    yield pb.ConnectResponse(
                        assignment=pb.Assignment(
                            lease_id=item.lease_id,
                            lease_deadline=convert.ts(item.lease_deadline),
                            context=convert.assignment(item),
                            traceparent=item.trace_parent or "",
                            tracestate=item.trace_state or "",
                        )
                    )
                elif isinstance(item, Cancellation):
                    yield pb.ConnectResponse(
                        cancellation=pb.Cancellation(lease_id=item.lease_id, reason=item.reason)
                    )
                else:
                    yield item
        finally:
            reader.cancel()
            pinger.cancel()
            for task in (reader, pinger):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.orchestrator.close_stream(stream, "stream closed")
            log.info("worker disconnected", extra={"worker_id": stream.worker_id})

    async def _keepalive(self, stream: WorkerStream) -> None:
        while True:
            await asyncio.sleep(self.settings.keepalive_interval_seconds)
            now = timestamp_pb2.Timestamp()
            now.GetCurrentTime()
            stream.outbound.put_nowait(
                pb.ConnectResponse(keepalive=pb.Keepalive(nonce=next(self._nonce), server_time=now))
            )

    async def _read(self, stream: WorkerStream, requests: AsyncIterator[pb.ConnectRequest]) -> None:
        try:
            async for msg in requests:
                stream.touch()
                try:
                    self._handle(stream, msg)
                except errors.TaskerError as exc:
                    # One bad message is answered; the stream and the other leases go on.
                    stream.outbound.put_nowait(_rejected(exc, msg))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info(
                "worker stream ended: %s",
                type(exc).__name__,
                extra={"worker_id": stream.worker_id},
            )
        stream.outbound.put_nowait(None)

    def _handle(self, stream: WorkerStream, msg: pb.ConnectRequest | Undecodable) -> None:
        if isinstance(msg, Undecodable):
            raise undecodable_error(msg)
        kind = msg.WhichOneof("message")
        if kind == "ack":
            self.orchestrator.ack(stream, msg.ack.lease_id)
        elif kind == "heartbeat":
            ids = list(msg.heartbeat.lease_ids)
            active = self.orchestrator.heartbeat(ids)
            stream.outbound.put_nowait(
                pb.ConnectResponse(heartbeat_ack=pb.HeartbeatAck(leases=self._statuses(active)))
            )
        elif kind in ("result", "failure"):
            body = getattr(msg, kind)
            self.orchestrator.hops.mark(body.lease_id, "result_read")
            # The same checks as ReportStepResult's: nothing the database cannot hold (NUL),
            # no NaN, no nesting past the limit, a defined error class.
            check_strings(msg)
            validation.outcome("success" if kind == "result" else kind, body, self.limits)
            outcome = _outcome(body, stream.worker_id, kind == "result", stream.identity)
            # Results are applied in batches; the reader goes on meanwhile.
            task = asyncio.create_task(self._report(stream, outcome))
            self._reports.add(task)
            task.add_done_callback(self._reports.discard)
        elif kind == "drain":
            stream.draining = True
        elif kind == "hello":
            log.warning("duplicate hello ignored", extra={"worker_id": stream.worker_id})

    async def _report(self, stream: WorkerStream, outcome: Outcome) -> None:
        try:
            verdict = await self.orchestrator.report(outcome)
        except errors.Unavailable as exc:
            verdict = Verdict(outcome.lease_id, False, "UNAVAILABLE", str(exc))
        except Exception:
            log.exception("recording an outcome failed", extra={"lease_id": outcome.lease_id})
            verdict = Verdict(outcome.lease_id, False, "INTERNAL", "try again")
        if verdict.accepted and outcome.error_type == "ResultTooLarge":
            verdict = Verdict(
                outcome.lease_id, False, "RESULT_TOO_LARGE", "recorded as a permanent failure"
            )
        stream.outbound.put_nowait(
            pb.ConnectResponse(
                result_ack=pb.ResultAck(
                    lease_id=verdict.lease_id,
                    accepted=verdict.accepted,
                    reason=verdict.reason,
                    message=verdict.message,
                )
            )
        )

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.HeartbeatResponse:
        if not request.lease_ids:
            raise errors.InvalidArgument(
                "lease_ids is required", [errors.FieldViolation("lease_ids", "at least one")]
            )
        ids = list(request.lease_ids)
        active = await self.orchestrator.heartbeat_anywhere(ids)
        return pb.HeartbeatResponse(leases=self._statuses(active))

    def _statuses(self, active: dict[str, bool]) -> list[pb.LeaseStatus]:
        deadline = convert.ts(utcnow() + timedelta(seconds=self.orchestrator.lease_ttl_seconds))
        return [
            pb.LeaseStatus(lease_id=i, active=ok, lease_deadline=deadline if ok else None)
            for i, ok in active.items()
        ]

    async def ReportStepResult(
        self, request: pb.ReportStepResultRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReportStepResultResponse:
        kind = request.WhichOneof("outcome")
        if kind is None:
            raise errors.InvalidArgument(
                "an outcome is required",
                [errors.FieldViolation("outcome", "set success or failure")],
            )
        body = getattr(request, kind)
        if not body.lease_id:
            raise errors.InvalidArgument(
                "lease_id is required", [errors.FieldViolation(f"{kind}.lease_id", "is required")]
            )
        if not request.worker_id:
            raise errors.InvalidArgument(
                "worker_id is required: a lease is valid only from the worker it was issued to",
                [errors.FieldViolation("worker_id", "is required")],
            )
        validation.outcome(kind, body, self.limits)
        # Not held through an outage of unknown length: the caller retries with backoff (the
        # stream, whose reports are applied as soon as the database returns, is the patient path).
        outcome = _outcome(body, request.worker_id, kind == "success", CALLER_IDENTITY.get())
        verdict = await self.orchestrator.report(outcome, patient=False)
        if verdict.accepted:
            return pb.ReportStepResultResponse(accepted=True)
        if verdict.reason == "UNAVAILABLE":
            raise errors.Unavailable(verdict.message, reason="DATABASE_UNAVAILABLE")
        raise errors.FailedPrecondition(
            verdict.message or "lease is no longer valid",
            reason=verdict.reason or "LEASE_STALE",
            metadata={"lease_id": body.lease_id[:128]},
        )
