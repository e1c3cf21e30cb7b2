"""Runs hostile cases against a server and judges its answers.

Every RPC of the tasker.v1 services is found in the generated descriptor pool: unary and
server-streaming RPCs get one request, the Connect stream a first frame and up to three more.
Requests go out as raw bytes (a generic bytes serializer), so byte-level mutations reach the
server exactly as generated. A case fails when the answer is INTERNAL or UNKNOWN, when a unary
call hangs past its deadline, or when the server stops answering its health check (asked every
``health_every`` cases). Case ``i`` of seed ``s`` draws everything from ``Random(f"{s}:{i}")``,
so ``--seed s --case i`` replays it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tasker.v1 import (
    admin_service_pb2,
    event_service_pb2,
    task_service_pb2,
    template_service_pb2,
    worker_service_pb2,
)

from .generate import hostile_message, mutate

__all__ = ["Failure", "Fuzzer", "Report", "Rpc", "rpcs"]

_MODULES = (
    task_service_pb2,
    template_service_pb2,
    worker_service_pb2,
    admin_service_pb2,
    event_service_pb2,
)
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


@dataclass(frozen=True)
class Rpc:
    path: str
    request: type[Message]
    client_streaming: bool
    server_streaming: bool


def rpcs() -> list[Rpc]:
    """Every RPC of the tasker.v1 services, from the generated descriptors."""
    out = []
    for module in _MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                out.append(
                    Rpc(
                        f"/{service.full_name}/{method.name}",
                        message_factory.GetMessageClass(method.input_type),
                        method.client_streaming,
                        method.server_streaming,
                    )
                )
    return sorted(out, key=lambda r: r.path)


@dataclass
class Failure:
    case: int
    rpc: str
    mutated: bool
    problem: str
    request: bytes

    def __str__(self) -> str:
        shown = self.request[:64].hex() + ("..." if len(self.request) > 64 else "")
        kind = "bytes-mutated" if self.mutated else "structured"
        return (
            f"case {self.case} {self.rpc} ({kind}, {len(self.request)} B {shown}): {self.problem}"
        )


@dataclass
class Report:
    seed: int
    cases: int = 0
    seconds: float = 0.0
    codes: Counter[str] = field(default_factory=Counter)
    per_rpc: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    server_died: bool = False

    def summary(self) -> str:
        codes = ", ".join(f"{k} {v}" for k, v in self.codes.most_common())
        lines = [
            f"seed {self.seed}: {self.cases} cases over {len(self.per_rpc)} RPCs in "
            f"{self.seconds:.1f} s; {len(self.failures)} failures"
            + ("; THE SERVER STOPPED ANSWERING" if self.server_died else ""),
            f"answers: {codes}",
        ]
        lines += [f"  FAIL {f}" for f in self.failures[:50]]
        lines += [
            f"  replay: python -m fuzz --seed {self.seed} --case {f.case}"
            for f in self.failures[:5]
        ]
        return "\n".join(lines)


def _write_race(error: grpc.aio.AioRpcError, writer: asyncio.Task[None]) -> bool:
    """The client library's own INTERNAL when the server ended a stream (with its real status)
    while this client was still writing frames: the status the client library reports is then
    "Internal error from Core", whatever the server sent. Counted as WRITE_RACE, not a failure;
    the server's own INTERNAL always says "internal error; the server log has the details"."""
    write_failed = writer.done() and not writer.cancelled() and writer.exception() is not None
    return (
        write_failed
        and error.code() == grpc.StatusCode.INTERNAL
        and (error.details() or "") == "Internal error from Core"
    )


class Fuzzer:
    """Sends seeded hostile cases to the server at ``address``."""

    def __init__(
        self,
        address: str,
        seed: int,
        *,
        deadline: float = 5.0,
        stream_seconds: float = 0.3,
        health_every: int = 50,
        concurrency: int = 4,
        mutate_share: float = 0.35,
    ) -> None:
        self.address = address
        self.seed = seed
        self.deadline = deadline
        self.stream_seconds = stream_seconds
        self.health_every = health_every
        self.concurrency = concurrency
        self.mutate_share = mutate_share
        self.rpcs = rpcs()
        self.last_details = ""

    def request(self, case: int) -> tuple[Rpc, list[bytes], bool]:
        """Case ``case``: its RPC, its request frames (one unless client-streaming), mutated?"""
        rng = random.Random(f"{self.seed}:{case}")
        rpc = rng.choice(self.rpcs)
        mutated = rng.random() < self.mutate_share
        frames: list[bytes] = []
        for _ in range(1 + (rng.randrange(4) if rpc.client_streaming else 0)):
            data = hostile_message(rng, rpc.request).SerializeToString()
            if mutated and (not frames or rng.random() < 0.5):
                data = mutate(rng, data)
            frames.append(data)
        return rpc, frames, mutated

    async def _call(self, channel: grpc.aio.Channel, rpc: Rpc, frames: list[bytes]) -> str:
        """The status code name of the answer ('OK', 'OPEN' for a stream still open)."""
        writer: asyncio.Task[None] | None = None
        try:
            if not rpc.client_streaming and not rpc.server_streaming:
                await channel.unary_unary(rpc.path)(frames[0], timeout=self.deadline)
                return "OK"
            if rpc.client_streaming:
                # Frames are written by a task of our own, so that a write that failed because
                # the server had already ended the stream is known (see _write_race).
                stream: Any = channel.stream_stream(rpc.path)(timeout=self.deadline)
                writer = asyncio.create_task(self._write(stream, frames))
            else:
                stream = channel.unary_stream(rpc.path)(frames[0], timeout=self.deadline)
            try:
                async with asyncio.timeout(self.stream_seconds):
                    for _ in range(3):
                        if await stream.read() is grpc.aio.EOF:
                            return "OK"
                    return "OPEN"
            except TimeoutError:
                return "OPEN"
            finally:
                stream.cancel()
                if writer is not None:
                    writer.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await writer
        except grpc.aio.AioRpcError as exc:
            if writer is not None and _write_race(exc, writer):
                return "WRITE_RACE"
            if exc.code() in FORBIDDEN:
                self.last_details = (exc.details() or "")[:200]
            return str(exc.code().name)

    @staticmethod
    async def _write(stream: Any, frames: list[bytes]) -> None:
        for frame in frames:
            await stream.write(frame)

    async def run_case(self, channel: grpc.aio.Channel, case: int, report: Report) -> None:
        rpc, frames, mutated = self.request(case)
        try:
            async with asyncio.timeout(self.deadline + 5):
                code = await self._call(channel, rpc, frames)
        except TimeoutError:
            code = "CLIENT_HANG"
        report.codes[code] += 1
        report.per_rpc[rpc.path] += 1
        unary = not rpc.client_streaming and not rpc.server_streaming
        hung = code == "CLIENT_HANG" or (unary and code == "DEADLINE_EXCEEDED")
        if code in {c.name for c in FORBIDDEN} or hung:
            problem = "hang past the deadline" if hung else f"{code} {self.last_details!r}"
            report.failures.append(Failure(case, rpc.path, mutated, problem, b"".join(frames)))

    async def healthy(self, channel: grpc.aio.Channel) -> bool:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def run(self, cases: int, first: int = 0) -> Report:
        """Runs cases ``first`` .. ``first + cases - 1``."""
        report = Report(self.seed)
        started = time.monotonic()
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        async with grpc.aio.insecure_channel(self.address, options=options) as channel:
            batch = max(1, min(self.concurrency, self.health_every))
            done = 0
            for start in range(first, first + cases, batch):
                stop = min(start + batch, first + cases)
                await asyncio.gather(
                    *(self.run_case(channel, i, report) for i in range(start, stop))
                )
                before, done = done, done + stop - start
                due = done // self.health_every != before // self.health_every or done == cases
                if due and not await self.healthy(channel):
                    report.server_died = True
                    break
            report.cases = sum(report.codes.values())
        report.seconds = time.monotonic() - started
        return report
