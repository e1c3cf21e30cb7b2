"""One benchmark worker process: ``python -m bench.worker ADDRESS CAPACITY``.

The workloads.md handler for every step: a root returns ``{"value": input + 1}``, any other step
``{"value": 1 + sum of its parents' "value"}``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from bench.workloads import HANDLER, NAMESPACE
from tasker import StepContext, Worker


async def handle(ctx: StepContext) -> dict[str, Any]:
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
