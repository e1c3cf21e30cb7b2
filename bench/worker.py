"""One benchmark worker process: ``python -m bench.worker ADDRESS CAPACITY``.

The workloads.md handler for every step: a root returns ``{"value": input + 1}``, any other step
``{"value": 1 + sum of its parents' "value"}``.

With ``BENCH_EXEC_LOG=FILE`` every handler execution first appends one line
``<unix time> <task id> <step name> <attempt> <lease id>`` to FILE (one unbuffered O_APPEND write,
so the line survives a SIGKILL of the worker): chaos runs count repeated executions from it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from typing import Any

from bench.workloads import HANDLER, NAMESPACE
from tasker import StepContext, Worker

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
        return {"value": ctx.task.context["input"] + 1}
    return {"value": 1 + sum(d.result["value"] for d in deps.values() if d.result)}


async def main(address: str, capacity: int) -> None:
    worker = Worker(address, [NAMESPACE], capacity=capacity)
    worker.register(HANDLER, handle)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.shutdown(5)))
    await worker.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
