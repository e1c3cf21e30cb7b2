"""Per-lease hop timestamps, for finding where a hop's time goes (``bench --hops``).

Off unless ``trace_hops_file`` is set. Each point a lease passes on this server appends one JSON
line ``{"lease": ..., "point": ..., "t": ...}`` to that file. ``t`` is ``time.monotonic()``: on
Linux that is CLOCK_MONOTONIC, one clock for every process of the machine, so the stamps that the
bench worker writes from its own process line up with these. Points, in a hop's order:

- ``claimed``: the commit of the tick that claimed the step (stamped at hand-out);
- ``queued``: the assignment put on the stream's outbound queue;
- ``written``: the assignment handed to gRPC by the stream handler;
- ``result_read``: the worker's result read from the stream;
- ``tick_start``: the start of the tick whose batch holds that result;
- ``acks_applied``, ``outcomes_applied``, ``claims_made``, ``flushed``: that tick's stages (the
  first includes checking out a connection and BEGIN; ``flushed`` is the last statement before
  COMMIT);
- ``commit``: that tick's commit.

A debug aid, not a metric: lines are buffered and flushed when the server stops.
"""

from __future__ import annotations

import json
import time
from typing import IO

__all__ = ["HopTrace"]


class HopTrace:
    def __init__(self, path: str) -> None:
        self._file: IO[str] | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def mark(self, lease_id: str, point: str, at: float | None = None) -> None:
        if self._file is None:
            return
        t = time.monotonic() if at is None else at
        self._file.write(json.dumps({"lease": lease_id, "point": point, "t": t}) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
