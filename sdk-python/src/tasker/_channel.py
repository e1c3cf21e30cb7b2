"""Channel creation, call metadata and reconnect backoff shared by Client and Worker."""

from __future__ import annotations

import random
from collections.abc import Sequence

import grpc

__all__ = ["Backoff", "call_metadata", "open_channel"]

Metadata = tuple[tuple[str, str], ...]

# Keep TCP connections alive through idle proxies; the worker stream also has its own
# application-level keepalive (see worker_service.proto).
_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
    # After a server restart, connect again within ~2 s (gRPC's default backoff grows to 120 s
    # and fails calls meanwhile); the same values as the Node and Ruby SDKs.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


def open_channel(
    address: str,
    tls: grpc.ChannelCredentials | None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel; TLS when credentials are given."""
    if not address:
        raise ValueError("address must not be empty")
    if tls is not None:
        return grpc.aio.secure_channel(
            address, tls, options=_CHANNEL_OPTIONS, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS, interceptors=interceptors)


def call_metadata(token: str | None) -> Metadata:
    """Per-call metadata: the bearer token when one is configured."""
    if token:
        return (("authorization", f"Bearer {token}"),)
    return ()


class Backoff:
    """Exponential backoff with full jitter: 0.1 s doubling to ``cap`` seconds."""

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.failures))
        self.failures += 1
        # Full jitter, but never below base so a tight loop cannot spin.
        return max(self.base, random.uniform(0, ceiling))

    def reset(self) -> None:
        self.failures = 0
