"""Processes of one benchmark run: the server (``python -m tasker_server serve``) and W workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["REPO", "ServerProcess", "WorkerProcesses", "child_env", "free_port"]

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(REPO / "server"), str(REPO / "sdk-python" / "src"), str(REPO)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    return env


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class ServerProcess:
    """``tasker serve`` on a free loopback port, log level warning; optionally under cProfile,
    optionally stamping hops into ``hops_file`` (``trace_hops_file``)."""

    def __init__(
        self, db_url: str, profile_out: Path | None = None, hops_file: Path | None = None
    ) -> None:
        self.db_url = db_url
        self.hops_file = hops_file
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.profile_out = profile_out
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        prefix = [sys.executable]
        if self.profile_out is not None:
            prefix += ["-m", "cProfile", "-o", str(self.profile_out)]
        args = [
            *prefix, "-m", "tasker_server", "serve",
            "--listen", self.address,
            "--database-url", self.db_url,
            "--log-level", "warning",
            "--log-format", "text",
        ]
        if self.hops_file is not None:
            args += ["--trace-hops-file", str(self.hops_file)]
        self.proc = subprocess.Popen(args, env=child_env(), cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                with grpc.insecure_channel(self.address) as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return self
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server on {self.address} not serving after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, 30)


class WorkerProcesses:
    """W ``python -m bench.worker`` processes; with ``hops_dir``, each stamps its hops there."""

    def __init__(
        self, address: str, count: int, capacity: int, hops_dir: Path | None = None
    ) -> None:
        self.address = address
        self.hops_dir = hops_dir
        self.count = count
        self.capacity = capacity
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> WorkerProcesses:
        env = child_env()
        if self.hops_dir is not None:
            env["BENCH_HOPS_DIR"] = str(self.hops_dir)
        for _ in range(self.count):
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.worker", self.address, str(self.capacity)],
                    env=env,
                    cwd=REPO,
                )
            )
        return self

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            _stop(proc, 15)
