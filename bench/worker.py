"""One benchmark worker process: ``python -m bench.worker ADDRESS CAPACITY``.

The workloads.md handler for every step: a root returns ``{"value": input + 1}``, any other step
``{"value": 1 + sum of its parents' "value"}``.

With ``BENCH_EXEC_LOG=FILE`` every handler execution first appends one line
``<unix time> <task id> <step name> <attempt> <lease id>`` to FILE (one unbuffered O_APPEND write,
so the line survives a SIGKILL of the worker): chaos runs count repeated executions from it.

With ``BENCH_HOPS_DIR`` set (``python -m bench --hops``) the worker also stamps three points of
each lease into ``DIR/worker-<pid>.jsonl``, on the machine-wide monotonic clock the server's
``trace_hops_file`` uses: ``received`` (the assignment read from the stream), ``handler_done``
and ``result_sent`` (the result queued on the stream). The SDK has no hook for the first and the
last, so this process wraps two of its private methods: a bench-only shim, not an SDK feature.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from bench.workloads import HANDLER, NAMESPACE
from tasker import StepContext, Worker, _session

_hops: IO[str] | None = None


def _mark(lease_id: str, point: str) -> None:
    if _hops is not None:
        _hops.write(json.dumps({"lease": lease_id, "point": point, "t": time.monotonic()}) + "\n")


_EXEC_LOG = os.environ.get("BENCH_EXEC_LOG")
_exec_fd = (
    os.open(_EXEC_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if _EXEC_LOG else None
)


async def handle(ctx: StepContext) -> dict[str, Any]:
    if _exec_fd is not None:
        line = f"{time.time():.6f} {ctx.task.task_id} {ctx.step.name} {ctx.step.attempt} "
        os.write(_exec_fd, f"{line}{ctx.lease_id}\n".encode())
    deps = ctx.sequence.dependencies
    if not deps:
        value = ctx.task.context["input"] + 1
    else:
        value = 1 + sum(d.result["value"] for d in deps.values() if d.result)
    _mark(ctx.lease_id, "handler_done")
    return {"value": value}


class _TracedWorker(Worker):
    def _dispatch(self, session: Any, message: Any) -> None:
        if message.WhichOneof("message") == "assignment":
            _mark(message.assignment.lease_id, "received")
        super()._dispatch(session, message)


def _trace_sends() -> None:
    send = _session.Session.send

    def traced(self: _session.Session, message: Any) -> bool:
        kind = message.WhichOneof("message")
        if kind in ("result", "failure"):
            _mark(getattr(message, kind).lease_id, "result_sent")
        return send(self, message)

    _session.Session.send = traced  # type: ignore[method-assign]


async def main(address: str, capacity: int) -> None:
    global _hops
    hops_dir = os.environ.get("BENCH_HOPS_DIR")
    if hops_dir:
        _hops = (Path(hops_dir) / f"worker-{os.getpid()}.jsonl").open("a", encoding="utf-8")
        _trace_sends()
    worker = (_TracedWorker if hops_dir else Worker)(address, [NAMESPACE], capacity=capacity)
    worker.register(HANDLER, handle)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.shutdown(5)))
    try:
        await worker.run()
    finally:
        if _hops is not None:
            _hops.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
