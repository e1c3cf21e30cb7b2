"""Raw-protocol helpers for fencing and bad-input tests: a hand-driven Connect stream and a
decoder of AIP-193 error details (no SDK logic involved)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from tasker.v1 import worker_service_pb2 as wpb
from tasker.v1 import worker_service_pb2_grpc as wgrpc

_END = object()


@dataclass
class Details:
    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)


def decode(error: grpc.aio.AioRpcError) -> Details:
    """Code, message, ErrorInfo reason/metadata and BadRequest field violations of an error."""
    out = Details(error.code(), error.details() or "")
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        out.message = status.message or out.message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                out.reason = info.reason
                out.metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                out.fields += [v.field for v in bad.field_violations]
                out.descriptions += [v.description for v in bad.field_violations]
    return out


class RawWorker:
    """One Connect stream driven by hand. Keepalives are answered only when ``pong`` is True;
    every other server message is queued for :meth:`next`."""

    def __init__(self, channel: grpc.aio.Channel, *, pong: bool = True) -> None:
        self.stub = wgrpc.WorkerServiceStub(channel)  # type: ignore[no-untyped-call]
        self.pong = pong
        self._out: asyncio.Queue[Any] = asyncio.Queue()
        self._in: asyncio.Queue[Any] = asyncio.Queue()
        self.call: Any = None
        self.ended = asyncio.Event()
        self.end_error: grpc.aio.AioRpcError | None = None
        self.last_sent = 0.0
        self.keepalives = 0
        self.received: list[wpb.ConnectResponse] = []
        self._reader: asyncio.Task[None] | None = None

    async def _requests(self) -> AsyncIterator[wpb.ConnectRequest]:
        while True:
            item = await self._out.get()
            if item is _END:
                return
            yield item

    def send(self, **kind: Any) -> None:
        self.last_sent = asyncio.get_running_loop().time()
        self._out.put_nowait(wpb.ConnectRequest(**kind))

    async def connect(
        self,
        worker_id: str,
        namespaces: list[str],
        handlers: list[str],
        capacity: int = 1,
        *,
        hands_off_leases: bool = False,
        held_leases: tuple[str, ...] = (),
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> wpb.Welcome:
        self.call = self.stub.Connect(self._requests(), metadata=metadata)
        self.send(
            hello=wpb.WorkerHello(
                worker_id=worker_id,
                namespaces=namespaces,
                handlers=handlers,
                capacity=capacity,
                hands_off_leases=hands_off_leases,
                held_leases=held_leases,
            )
        )
        self._reader = asyncio.create_task(self._read())
        welcome = await self.next("welcome", 10)
        return welcome.welcome

    async def _read(self) -> None:
        try:
            async for msg in self.call:
                self.received.append(msg)
                if msg.WhichOneof("message") == "keepalive":
                    self.keepalives += 1
                    if self.pong:
                        self.send(pong=wpb.KeepalivePong(nonce=msg.keepalive.nonce))
                    continue
                self._in.put_nowait(msg)
        except grpc.aio.AioRpcError as exc:
            self.end_error = exc
        finally:
            self.ended.set()
            self._in.put_nowait(_END)

    async def next(self, kind: str, timeout: float = 10.0) -> wpb.ConnectResponse:  # noqa: ASYNC109
        """The next server message of ``kind`` (others of other kinds are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self._in.get()
                if msg is _END:
                    raise AssertionError(f"stream ended while waiting for {kind}: {self.end_error}")
                if msg.WhichOneof("message") == kind:
                    return msg

    async def close(self) -> None:
        self._out.put_nowait(_END)
        if self.call is not None:
            self.call.cancel()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
