"""The Python SDK's conformance worker: every behaviour of tests/conformance/README.md.

    python tests/conformance/python_worker.py --address 127.0.0.1:50051 --namespace conformance \
        [--capacity 10] [--worker-id ID]

Registers the handlers ``sum``, ``echo_config``, ``sleep``, ``fail_permanent``,
``fail_then_succeed`` and ``fail_business``, prints ``READY <worker_id>`` on stdout once the
server has welcomed it, and on SIGTERM (or SIGINT) shuts down through ``Worker.shutdown`` and
exits 0. The Node and Ruby SDKs ship a worker with the same command line and behaviours.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from tasker import (
    ManualInterventionError,
    PermanentError,
    RetryableError,
    StepContext,
    Worker,
)

BEHAVIOURS = (
    "sum",
    "echo_config",
    "sleep",
    "fail_permanent",
    "fail_then_succeed",
    "fail_business",
)


def sum_value(ctx: StepContext) -> dict[str, Any]:
    """Root: ``{"value": input + 1}``; otherwise ``{"value": 1 + sum of the parents' values}``
    (a skipped parent, or one without a numeric "value", adds 0). Skipped parents are listed
    under ``"skipped"`` (sorted) when there are any."""
    deps = ctx.sequence.dependencies
    if not deps:
        return {"value": int(ctx.task.context["input"]) + 1}
    total = 1
    skipped = []
    for name in sorted(deps):
        if ctx.sequence.skipped(name):
            skipped.append(name)
            continue
        value = (ctx.sequence.get(name) or {}).get("value", 0)
        if isinstance(value, int | float) and not isinstance(value, bool):
            total += int(value)
    out: dict[str, Any] = {"value": total}
    if skipped:
        out["skipped"] = skipped
    return out


async def sum_handler(ctx: StepContext) -> dict[str, Any]:
    return sum_value(ctx)


async def echo_config(ctx: StepContext) -> dict[str, Any]:
    return dict(ctx.step.config)


async def sleep_handler(ctx: StepContext) -> dict[str, Any]:
    await asyncio.sleep(float(ctx.step.config.get("ms", 0)) / 1000.0)
    return sum_value(ctx)


async def fail_permanent(ctx: StepContext) -> dict[str, Any]:
    raise PermanentError(
        f"step {ctx.step.name} fails permanently", error_type="ConformancePermanent"
    )


async def fail_then_succeed(ctx: StepContext) -> dict[str, Any]:
    succeed_on = int(ctx.step.config.get("succeed_on_attempt", 1))
    if ctx.step.attempt < succeed_on:
        raise RetryableError(
            f"attempt {ctx.step.attempt} of {ctx.step.name} fails (succeeds on {succeed_on})",
            error_type="ConformanceRetryable",
        )
    return sum_value(ctx)


async def fail_business(ctx: StepContext) -> dict[str, Any]:
    raise ManualInterventionError(
        f"step {ctx.step.name} needs an operator", error_type="ConformanceBusinessRule"
    )


HANDLERS = {
    "sum": sum_handler,
    "echo_config": echo_config,
    "sleep": sleep_handler,
    "fail_permanent": fail_permanent,
    "fail_then_succeed": fail_then_succeed,
    "fail_business": fail_business,
}


def make_worker(
    address: str, namespace: str, *, capacity: int = 10, worker_id: str | None = None
) -> Worker:
    worker = Worker(address, [namespace], capacity=capacity, worker_id=worker_id)
    for name in BEHAVIOURS:
        worker.register(name, HANDLERS[name])
    return worker


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tasker conformance worker (Python SDK)")
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="conformance")
    parser.add_argument("--capacity", type=int, default=10)
    parser.add_argument("--worker-id", default=None)
    args = parser.parse_args(argv)

    worker = make_worker(
        args.address, args.namespace, capacity=args.capacity, worker_id=args.worker_id
    )
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def stop() -> None:
        if not stopping:
            stopping.append(asyncio.create_task(worker.shutdown(drain_timeout=10)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)

    run = asyncio.create_task(worker.run())

    async def announce() -> None:
        await worker.wait_connected()
        print(f"READY {worker.worker_id}", flush=True)

    announcer = asyncio.create_task(announce())
    try:
        await run
    finally:
        announcer.cancel()
    if stopping:
        await stopping[0]
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
