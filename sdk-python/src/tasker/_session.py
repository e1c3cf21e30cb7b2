"""One ``WorkerService.Connect`` stream: hello/welcome, reads with a silence timeout, writes.

The worker owns everything that outlives a stream (leases, handlers, unacknowledged results);
a session only moves messages, so reconnecting is "drop the session, open a new one".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from tasker.v1 import worker_service_pb2

__all__ = ["DeadStreamError", "ProtocolError", "Session"]

log = logging.getLogger("tasker.worker")


class DeadStreamError(Exception):
    """The server was silent for longer than keepalive_timeout."""


class ProtocolError(Exception):
    """The server broke the Connect protocol (e.g. no welcome first)."""


class Session:
    """A Connect stream whose request iterator is fed from an asyncio.Queue."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._call: Any = None
        self.closed = False

    async def _requests(self) -> AsyncIterator[Any]:
        while True:
            message = await self._outbox.get()
            if message is None:  # half-close: the server sees the end of our stream
                return
            yield message

    def send(self, message: Any) -> bool:
        """Queue a ConnectRequest; False when the session is closed (use the unary fallback)."""
        if self.closed:
            return False
        self._outbox.put_nowait(message)
        return True

    async def open(self, hello: Any, welcome_within: float) -> Any:
        """Send hello and return the Welcome."""
        self._call = self._stub.Connect(self._requests(), metadata=self._metadata)
        self.send(worker_service_pb2.ConnectRequest(hello=hello))
        first = await self.read(welcome_within)
        if first is None:
            raise ProtocolError("the server closed the stream before sending welcome")
        if first.WhichOneof("message") != "welcome":
            raise ProtocolError(f"expected welcome, got {first.WhichOneof('message')}")
        return first.welcome

    async def read(self, silence_limit: float | None) -> Any:
        """The next ConnectResponse, or None when the server ended the stream normally."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
        # arrives as the read completes, and the worker's shutdown then waits on a session that
        # goes on reading keepalives for ever.
        try:
            async with asyncio.timeout(silence_limit):
                message = await self._call.read()
        except TimeoutError:
            raise DeadStreamError(
                f"no message from the server for {silence_limit or 0:.1f}s"
            ) from None
        if message is grpc.aio.EOF:
            return None
        return message

    def close(self) -> None:
        """Half-close, then cancel the call (idempotent)."""
        if not self.closed:
            self.closed = True
            self._outbox.put_nowait(None)
        if self._call is not None:
            self._call.cancel()
