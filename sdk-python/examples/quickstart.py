"""Quickstart: a diamond workflow run by an in-process worker.

    validate_order -> (check_inventory + process_payment) -> ship_order

Start a Tasker server, then:  python quickstart.py --address 127.0.0.1:50051
Exits 0 when the task completes (so it doubles as an end-to-end test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from typing import Any

from tasker import Client, PermanentError, StepContext, Worker
from tasker.testing import WorkflowBuilder

NAMESPACE = "quickstart"
TEMPLATE = "order_fulfillment"


def build_template() -> str:
    return (
        WorkflowBuilder(TEMPLATE, NAMESPACE, version="1.0.0")
        .description("Validate an order, check stock and charge in parallel, then ship")
        .input_schema(
            {
                "type": "object",
                "required": ["order_id", "items"],
                "properties": {"order_id": {"type": "integer"}, "items": {"type": "array"}},
            }
        )
        .with_linear_steps(["validate_order"])
        .with_diamond_pattern(["check_inventory", "process_payment"], convergence="ship_order")
        .build()
    )


def make_worker(address: str) -> Worker:
    worker = Worker(address, [NAMESPACE], capacity=4)

    @worker.handler("validate_order")
    async def validate_order(ctx: StepContext) -> dict[str, Any]:
        items = ctx.task.context["items"]
        if not items:
            raise PermanentError("an order needs at least one item")
        total = sum(item["price"] * item["quantity"] for item in items)
        return {"valid": True, "total": total}

    @worker.handler("check_inventory")
    async def check_inventory(ctx: StepContext) -> dict[str, Any]:
        skus = [item["sku"] for item in ctx.task.context["items"]]
        return {"reserved": skus}

    @worker.handler("process_payment")
    def process_payment(ctx: StepContext) -> dict[str, Any]:
        # A sync handler: runs in a thread, so blocking client libraries are fine here.
        total = ctx.sequence.get("validate_order")["total"]  # type: ignore[index]
        return {"charged": total, "payment_id": f"pay_{uuid.uuid4().hex[:8]}"}

    @worker.handler("ship_order")
    async def ship_order(ctx: StepContext) -> dict[str, Any]:
        payment = ctx.sequence.get("process_payment") or {}
        inventory = ctx.sequence.get("check_inventory") or {}
        return {
            "shipped": True,
            "order_id": ctx.task.context["order_id"],
            "payment_id": payment.get("payment_id"),
            "items": inventory.get("reserved", []),
        }

    return worker


async def main(address: str, wait_seconds: float) -> int:
    async with await Client.connect(address, timeout=10) as client:
        template = await client.register_template(build_template())
        print(f"template {template.namespace}/{template.name}@{template.version} "
              f"({'registered' if template.created else 'already registered'})")

        worker = make_worker(address)
        worker_task = asyncio.create_task(worker.run())
        try:
            await worker.wait_connected(timeout=10)
            task = await client.create_task(
                NAMESPACE,
                TEMPLATE,
                {"order_id": 1001, "items": [{"sku": "A-1", "price": 12.5, "quantity": 2}]},
                correlation_id=f"quickstart-{uuid.uuid4().hex[:8]}",
            )
            print(f"created task {task.task_id} ({task.state})")
            done = await client.wait_for_task(task.task_id, timeout=wait_seconds)
        finally:
            await worker.shutdown(drain_timeout=5)
            await worker_task

        print(f"task {done.task_id} is {done.state}")
        for step in done.steps:
            print(f"  {step.name:<16} {step.state:<10} {json.dumps(step.result)}")
        print("result:", json.dumps(done.result, indent=2, sort_keys=True))
        return 0 if done.state == "complete" else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.address, args.timeout)))
