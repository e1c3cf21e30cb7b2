"""The processes of a chaos run and the faults injected into them.

A :class:`Backends` context gives a fresh database per scenario: PostgreSQL in one throwaway
cluster at default durability (bench/postgres.py) that can be stopped with ``pg_ctl stop -m
immediate`` and started again on the same data dir and port; SQLite a temp file. A :class:`Stack`
is one scenario's server (fixed port, restarted after a SIGKILL on the same port and database),
two bench workers (execution logs on) and, optionally, a blackhole proxy in front of worker 0.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness import ServerProcess, WorkerProcesses
from bench.postgres import DurablePostgres, find_bin_dir
from bench.runner import wait_for_workers
from bench.workloads import Workload
from chaos.proxy import BlackholeProxy
from tasker import Client

__all__ = ["Backends", "OutagePostgres", "Stack", "postgres_outage", "server_rss_kb"]

log = logging.getLogger("chaos")


class OutagePostgres(DurablePostgres):
    """DurablePostgres that can be taken down hard and brought back."""

    def stop_immediately(self) -> None:
        """``pg_ctl stop -m immediate``: no checkpoint, clients cut off (like a crash)."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.dir / "data"), "stop",
                  "-m", "immediate", "-w")
        if self._proc is not None:
            self._proc.wait(30)

    def restart(self) -> None:
        """Same data dir and port; returns once it accepts connections (after crash recovery)."""
        self.launch()


class Backends:
    """``database(backend, name)`` → URL of a fresh database; PostgreSQL started on first use."""

    def __init__(self) -> None:
        self.postgres: OutagePostgres | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="tasker-chaos-"))

    def database(self, backend: str, name: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self._tmp / (name + '.db')}"
        if self.postgres is None:
            bin_dir = find_bin_dir()
            if bin_dir is None:
                raise RuntimeError("PostgreSQL not found (initdb); install it or use sqlite")
            self.postgres = OutagePostgres(bin_dir)
            self.postgres.start()
            log.info("postgres on port %d: %s", self.postgres.port,
                     self.postgres.settings_summary())
        return self.postgres.create_database(name)

    def close(self) -> None:
        if self.postgres is not None:
            self.postgres.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    @classmethod
    @contextmanager
    def opened(cls) -> Iterator[Backends]:
        backends = cls()
        try:
            yield backends
        finally:
            backends.close()


class Stack:
    """Server + 2 workers of one scenario, all logs in ``log_dir``."""

    def __init__(self, db_url: str, log_dir: Path, *, workers: int = 2, capacity: int = 64,
                 proxy_worker0: bool = False) -> None:
        self.log_dir = log_dir
        self.server = ServerProcess(db_url, log=log_dir / "server.log")
        self.worker_count = workers
        self.capacity = capacity
        self.proxy: BlackholeProxy | None = None
        self.use_proxy = proxy_worker0
        self.workers: WorkerProcesses | None = None
        self.killed_workers: tuple[int, ...] = ()

    async def start(self, client_timeout: float = 60.0) -> Stack:
        shutil.rmtree(self.log_dir, ignore_errors=True)  # execution logs are appended to
        self.log_dir.mkdir(parents=True)
        await asyncio.to_thread(self.server.start, client_timeout)
        addresses = [self.server.address] * self.worker_count
        if self.use_proxy:
            self.proxy = await BlackholeProxy("127.0.0.1", self.server.port).start()
            addresses[0] = self.proxy.address
        self.workers = WorkerProcesses(
            self.server.address, self.worker_count, self.capacity,
            addresses=addresses, log_dir=self.log_dir,
        ).start()
        return self

    async def ready(self, client: Client, workload: Workload) -> None:
        await client.register_template(workload.template_yaml())
        await wait_for_workers(client, self.worker_count)

    async def kill_server_and_restart(self) -> tuple[float, float]:
        """SIGKILL the server, start it again on the same port and database; returns the
        perf_counter times of the kill and of the new process serving."""
        start = time.perf_counter()
        self.server.kill()
        await asyncio.to_thread(self.server.start, 120.0)
        return start, time.perf_counter()

    def kill_worker(self, index: int) -> float:
        assert self.workers is not None
        start = time.perf_counter()
        self.workers.kill(index)
        self.killed_workers += (index,)
        return start

    def blackhole_worker0(self) -> float:
        assert self.proxy is not None
        start = time.perf_counter()
        frozen = self.proxy.blackhole()
        log.info("  blackholed %d connection(s) of worker 0", frozen)
        return start

    async def stop(self) -> None:
        if self.workers is not None:
            await asyncio.to_thread(self.workers.stop)
        if self.proxy is not None:
            await self.proxy.close()
        await asyncio.to_thread(self.server.stop)

    def exec_logs(self) -> list[Path]:
        assert self.workers is not None
        return [p for i in range(self.worker_count) if (p := self.workers.exec_log(i))]


async def postgres_outage(postgres: OutagePostgres, seconds: float) -> tuple[float, float]:
    """Stop PostgreSQL immediately, wait ``seconds``, start it again; perf_counter times of the
    stop and of PostgreSQL accepting connections again."""
    start = time.perf_counter()
    await asyncio.to_thread(postgres.stop_immediately)
    await asyncio.sleep(max(0.0, start + seconds - time.perf_counter()))
    await asyncio.to_thread(postgres.restart)
    return start, time.perf_counter()


def server_rss_kb(pid: int) -> int | None:
    """VmRSS of a process from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None

