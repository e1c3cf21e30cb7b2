"""Admission of watch streams (WatchTask, WatchEvents): a cap per server and per client.

An idle watch stream costs little (see docs/security.md for the measured figure), but nothing
else bounds how many a client may open. Each stream takes a slot for its lifetime; past either
cap the call ends RESOURCE_EXHAUSTED before it reads anything.

A client is its authenticated identity when there is one: the TLS peer's certificate identity
with client certificates, or -- when the server checks bearer tokens, so that a token reaching a
handler was accepted -- a digest of its bearer token. Otherwise it is its peer's address without
the port (one host opening streams over many connections is one client).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc

from tasker_server.domain import errors

__all__ = ["Watchers", "client_identity"]


def client_identity(context: grpc.aio.ServicerContext[Any, Any], *, tokens: bool = False) -> str:
    """Who is calling, for per-client limits: ``identity:<name>``, ``token:<digest>`` (only with
    ``tokens``: the server authenticates bearer tokens) or ``peer:<host>``."""
    with contextlib.suppress(Exception):
        key = context.peer_identity_key()
        names = (context.auth_context() or {}).get(key) if key else None
        if names:
            return "identity:" + bytes(names[0]).decode(errors="replace")[:256]
    if tokens:
        for name, value in context.invocation_metadata() or ():
            if name == "authorization":
                token = str(value).partition(" ")[2].strip()
                return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    peer = context.peer() or "unknown"
    # "ipv4:127.0.0.1:5555", "ipv6:[::1]:5555", "unix:/path": drop the port of IP peers.
    if peer.startswith(("ipv4:", "ipv6:")):
        peer = peer.rsplit(":", 1)[0]
    return "peer:" + peer[:256]


class Watchers:
    """Counts open watch streams; ``slot()`` holds one for the duration of a stream."""

    def __init__(self, max_streams: int, max_per_client: int, *, tokens: bool = False) -> None:
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self.tokens = tokens
        self.open = 0
        self._by_client: Counter[str] = Counter()

    @contextlib.contextmanager
    def slot(self, context: grpc.aio.ServicerContext[Any, Any]) -> Iterator[None]:
        client = client_identity(context, tokens=self.tokens)
        if self.open >= self.max_streams:
            raise errors.ResourceExhausted(
                f"this server already serves {self.max_streams} watch streams; retry later",
                reason="TOO_MANY_WATCH_STREAMS",
                metadata={"limit": str(self.max_streams), "scope": "server"},
            )
        if self._by_client[client] >= self.max_per_client:
            raise errors.ResourceExhausted(
                f"this client already has {self.max_per_client} watch streams open; close one "
                "or watch several tasks with one WatchEvents stream",
                reason="TOO_MANY_WATCH_STREAMS",
                metadata={"limit": str(self.max_per_client), "scope": "client"},
            )
        self.open += 1
        self._by_client[client] += 1
        try:
            yield
        finally:
            self.open -= 1
            self._by_client[client] -= 1
            if not self._by_client[client]:
                del self._by_client[client]
