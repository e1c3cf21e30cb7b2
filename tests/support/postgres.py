"""A throwaway PostgreSQL cluster for tests (initdb in a temp dir, one server on loopback).

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
``postgres`` OS user through ``runuser``, in a temp dir chowned to it. Tuned for speed
(``fsync=off``): never use it to measure anything durable.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

__all__ = ["PostgresCluster", "find_bin_dir"]


def find_bin_dir() -> Path | None:
    """The directory holding initdb/postgres/pg_isready, or ``None`` if PostgreSQL is absent."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent  # Debian links /usr/local/bin into the versioned dir
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """``start()`` → ``url(dbname)`` … → ``stop()``. Superuser ``postgres``, trust auth."""

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        # durable=False trades crash safety for speed (tests); benchmarks that claim durability
        # keep PostgreSQL's defaults (fsync, full_page_writes, synchronous_commit on).
        self.durable = durable
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tasker-pg-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_postgres, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        data = self.dir / "data"
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            *([] if self.durable else ["--no-sync"]),
        )
        self.launch()

    def launch(self) -> None:
        """Start the postmaster on the initialised data dir and wait until it accepts
        connections (also after a stop: same data dir, same port)."""
        if self._log is None:
            self._log = open(self.dir / "server.log", "ab")  # noqa: SIM115 - kept while it runs
        self._proc = subprocess.Popen(
            [
                *self._as_postgres,
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.dir / "data"),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
                *(
                    []
                    if self.durable
                    else [
                        "-c",
                        "fsync=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "synchronous_commit=off",
                    ]
                ),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        isready = shutil.which("pg_isready") or str(self.bin_dir / "pg_isready")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited; see {self.dir / 'server.log'}")
            probe = [isready, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q"]
            if subprocess.run(probe, check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("postgres did not become ready within 30 s")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            # Fast mode disconnects clients; a signal to runuser might not reach the postmaster.
            try:
                self._run(
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.dir / "data"),
                    "stop",
                    "-m",
                    "fast",
                    "-w",
                )
            except (subprocess.SubprocessError, OSError):
                self._proc.kill()
            self._proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
