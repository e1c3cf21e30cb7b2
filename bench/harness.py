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
    optionally stamping hops into ``hops_file`` (``trace_hops_file``).

    ``start()`` may be called again after ``kill()``: the same port and database (chaos runs).
    ``log`` appends the server's output to a file instead of inheriting stdout/stderr.
    """

    def __init__(
        self,
        db_url: str,
        profile_out: Path | None = None,
        hops_file: Path | None = None,
        *,
        log: Path | None = None,
    ) -> None:
        self.db_url = db_url
        self.hops_file = hops_file
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.profile_out = profile_out
        self.log = log
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
        self.proc = _spawn(args, self.log)
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

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL (no shutdown of any kind), then reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, 30)


def _spawn(
    args: list[str], log: Path | None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    if log is None:
        return subprocess.Popen(args, env=env or child_env(), cwd=REPO)
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            args, env=env or child_env(), cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )


class WorkerProcesses:
    """W ``python -m bench.worker`` processes; with ``hops_dir``, each stamps its hops there.

    Optional, for chaos runs: ``addresses`` gives worker i its own server address (e.g. through
    a proxy), ``log_dir`` collects worker i's output in ``worker-i.log`` and its execution log
    (one line per handler execution, see bench/worker.py) in ``worker-i.exec``.
    """

    def __init__(
        self,
        address: str,
        count: int,
        capacity: int,
        hops_dir: Path | None = None,
        *,
        addresses: list[str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.address = address
        self.hops_dir = hops_dir
        self.count = count
        self.capacity = capacity
        self.addresses = addresses or [address] * count
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def exec_log(self, index: int) -> Path | None:
        return None if self.log_dir is None else self.log_dir / f"worker-{index}.exec"

    def start(self) -> WorkerProcesses:
        for index in range(self.count):
            env = child_env()
            if self.hops_dir is not None:
                env["BENCH_HOPS_DIR"] = str(self.hops_dir)
            exec_log = self.exec_log(index)
            if exec_log is not None:
                env["BENCH_EXEC_LOG"] = str(exec_log)
            log = None if self.log_dir is None else self.log_dir / f"worker-{index}.log"
            args = [sys.executable, "-m", "bench.worker", self.addresses[index],
                    str(self.capacity)]
            self.procs.append(_spawn(args, log, env))
        return self

    def kill(self, index: int) -> None:
        """SIGKILL worker ``index`` (it is not restarted)."""
        proc = self.procs[index]
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def check_alive(self, skip: tuple[int, ...] = ()) -> None:
        for index, proc in enumerate(self.procs):
            if index in skip:
                continue
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            _stop(proc, 15)
