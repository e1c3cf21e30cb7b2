"""A throwaway PostgreSQL cluster at DEFAULT durability (fsync, full_page_writes and
synchronous_commit left on), for benchmarks whose results claim durability.

tests/support/postgres.py hard-codes ``fsync=off`` for speed, so this is a small copy without
those flags. PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` OS
user through ``runuser``, in a temp dir chowned to it.
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

__all__ = ["DurablePostgres", "find_bin_dir"]


def find_bin_dir() -> Path | None:
    """The directory holding initdb/postgres/pg_ctl, or ``None`` if PostgreSQL is absent."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DurablePostgres:
    """``start()`` → ``create_database(name)`` / ``url(name)`` … → ``stop()``."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tasker-bench-pg-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_postgres, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> DurablePostgres:
        data = self.dir / "data"
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            str(self.bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8",
        )
        self._log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - lives with the server
        self._proc = subprocess.Popen(
            [
                *self._as_postgres,
                str(self.bin_dir / "postgres"),
                "-D", str(data),
                "-p", str(self.port),
                "-k", str(self.dir),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "max_connections=200",
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
                return self
            time.sleep(0.05)
        raise RuntimeError("postgres did not become ready within 30 s")

    def create_database(self, name: str) -> str:
        self._run(
            str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
            "-U", "postgres", name,
        )
        return self.url(name)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def settings_summary(self) -> str:
        """``fsync``/``synchronous_commit``/``full_page_writes`` as the running server has them."""
        psql = str(self.bin_dir / "psql")
        query = (
            "select string_agg(name || '=' || setting, ' ' order by name) from pg_settings where "
            "name in ('fsync', 'synchronous_commit', 'full_page_writes', 'server_version')"
        )
        out = subprocess.run(
            [*self._as_postgres, psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-Atc", query],
            check=True, capture_output=True, text=True, timeout=30,
        )
        return out.stdout.strip()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.dir / "data"), "stop",
                          "-m", "fast", "-w")
            except (subprocess.SubprocessError, OSError):
                self._proc.kill()
            self._proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
