"""A throwaway PostgreSQL cluster at DEFAULT durability (fsync, full_page_writes and
synchronous_commit left on), for benchmarks whose results claim durability: the tests' cluster
(tests/support/postgres.py) started with ``durable=True``, plus what the bench needs on top."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.postgres import PostgresCluster, find_bin_dir

__all__ = ["DurablePostgres", "find_bin_dir"]


class DurablePostgres(PostgresCluster):
    """``start()`` → ``create_database(name)`` / ``url(name)`` … → ``stop()``."""

    def __init__(self, bin_dir: Path) -> None:
        super().__init__(bin_dir, durable=True)

    def start(self) -> DurablePostgres:  # type: ignore[override]
        super().start()
        return self

    def create_database(self, name: str) -> str:
        self._run(
            str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
            "-U", "postgres", name,
        )
        return self.url(name)

    def settings_summary(self) -> str:
        """``fsync``/``synchronous_commit``/``full_page_writes`` as the running server has them."""
        query = (
            "select string_agg(name || '=' || setting, ' ' order by name) from pg_settings where "
            "name in ('fsync', 'synchronous_commit', 'full_page_writes', 'server_version')"
        )
        out = subprocess.run(
            [*self._as_postgres, str(self.bin_dir / "psql"), "-h", "127.0.0.1",
             "-p", str(self.port), "-U", "postgres", "-Atc", query],
            check=True, capture_output=True, text=True, timeout=30,
        )
        return out.stdout.strip()
