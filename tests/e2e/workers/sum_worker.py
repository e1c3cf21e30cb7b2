"""A worker process running the ``sum`` rule of /work/shared/notes/workloads.md.

    python -m tests.e2e.workers.sum_worker --address HOST:PORT --namespace NS [--handler sum]
        [--sleep SECONDS] [--capacity N] [--worker-id ID]

Every handler named by ``--handler`` returns ``{"value": input + 1}`` for a root step and
``{"value": 1 + sum of the parents' values}`` otherwise, after sleeping ``--sleep`` seconds. It
records nothing else. Prints ``connected <worker_id>`` once welcomed; exits on SIGTERM after a
drain.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from tasker import StepContext, Worker


def sum_rule(ctx: StepContext) -> dict[str, Any]:
    deps = ctx.sequence.dependencies
    if not deps:
        return {"value": int(ctx.task.context["input"]) + 1}
    return {"value": 1 + sum(int((d.result or {})["value"]) for d in deps.values())}


async def main(args: argparse.Namespace) -> int:
    worker = Worker(
        args.address, [args.namespace], capacity=args.capacity, worker_id=args.worker_id
    )
    for name in args.handler:

        async def handle(ctx: StepContext) -> dict[str, Any]:
            if args.sleep > 0:
                await asyncio.sleep(args.sleep)
            return sum_rule(ctx)

        worker.register(name, handle)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(
        signal.SIGTERM, lambda: asyncio.ensure_future(worker.shutdown(drain_timeout=5))
    )
    run = asyncio.create_task(worker.run())
    await worker.wait_connected(30)
    print(f"connected {worker.worker_id}", flush=True)
    await run
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--handler", action="append", default=None)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=4)
    parser.add_argument("--worker-id", default=None)
    parsed = parser.parse_args()
    parsed.handler = parsed.handler or ["sum"]
    sys.exit(asyncio.run(main(parsed)))
