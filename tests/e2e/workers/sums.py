"""The ``sum`` data-flow rule of workloads.md, computed in the test (independently of the worker),
plus template builders and a helper that starts ``sum_worker`` processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tasker.testing import WorkflowBuilder
from tests.support.server import REPO, server_env

# step -> the steps it depends on (workloads.md)
LINEAR: dict[str, list[str]] = {"A": [], "B": ["A"], "C": ["B"], "D": ["C"]}
DIAMOND: dict[str, list[str]] = {"A": [], "B": ["A"], "C": ["A"], "D": ["B", "C"]}

WORKER_SCRIPT = Path(__file__).with_name("sum_worker.py")


def expected_values(dag: Mapping[str, Sequence[str]], task_input: int) -> dict[str, int]:
    """Each step's ``value`` under the sum rule (``dag`` lists steps in a topological order)."""
    values: dict[str, int] = {}
    for name, parents in dag.items():
        if parents:
            values[name] = 1 + sum(values[p] for p in parents)
        else:
            values[name] = task_input + 1
    return values


def leaves(dag: Mapping[str, Sequence[str]]) -> list[str]:
    used = {p for parents in dag.values() for p in parents}
    return [name for name in dag if name not in used]


def expected_result(dag: Mapping[str, Sequence[str]], task_input: int) -> int:
    values = expected_values(dag, task_input)
    return sum(values[leaf] for leaf in leaves(dag))


def result_sum(task_result: Mapping[str, object]) -> int:
    """The task's result under the rule: the sum of its leaf steps' values (the server's task
    result maps each leaf step's name to that step's result)."""
    total = 0
    for value in task_result.values():
        assert isinstance(value, Mapping), task_result
        total += int(value["value"])
    return total


def sum_template(
    name: str,
    namespace: str,
    dag: Mapping[str, Sequence[str]],
    *,
    handler: str = "sum",
    **step_settings: object,
) -> str:
    builder = WorkflowBuilder(name, namespace)
    for step, parents in dag.items():
        builder.step(step, handler, depends_on=list(parents), **step_settings)
    return builder.build()


def start_sum_worker(
    address: str,
    namespace: str,
    *,
    sleep: float = 0.0,
    capacity: int = 4,
    worker_id: str | None = None,
    timeout: float = 30.0,
) -> subprocess.Popen[str]:
    """Starts a ``sum_worker`` process and returns once it reports its first welcome."""
    args = [
        sys.executable,
        str(WORKER_SCRIPT),
        "--address",
        address,
        "--namespace",
        namespace,
        "--sleep",
        str(sleep),
        "--capacity",
        str(capacity),
    ]
    if worker_id:
        args += ["--worker-id", worker_id]
    env = server_env()
    env["PYTHONPATH"] = f"{REPO}:{env['PYTHONPATH']}"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the worker is welcomed (or exits)
    if not line.startswith("connected") or time.monotonic() > deadline:
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"sum worker did not connect (exit {proc.returncode}): {line!r}")
    return proc


async def spawn_sum_worker(
    address: str,
    namespace: str,
    *,
    sleep: float = 0.0,
    capacity: int = 4,
    worker_id: str | None = None,
) -> subprocess.Popen[str]:
    """:func:`start_sum_worker` off the event loop (an in-process server must keep serving)."""
    return await asyncio.to_thread(
        start_sum_worker,
        address,
        namespace,
        sleep=sleep,
        capacity=capacity,
        worker_id=worker_id,
    )


def stop_process(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
