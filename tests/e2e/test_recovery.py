"""Recovery in seconds: a server process SIGKILLed while a handler runs, restarted on the same
port and database, with every SDK's conformance worker (a real child process).

The handler (conformance ``sleep``) takes 2 s; the step's timeout is 300 s, so a step that had to
wait for its lease's hard deadline would blow the bound of 20 s. The result must be recorded
exactly once: one lease handed out (one ``enqueued`` transition: the handler ran once), one
attempt, outcome ``complete``. The second variant keeps the server down for 12 s, longer than
the eight quick ReportStepResult retries after which the SDKs used to give a result up.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tasker import Client
from tasker.testing import WorkflowBuilder
from tests.conformance.harness import LANGUAGES, WorkerProcess, worker_command
from tests.support.server import ServerProcess, server_env

NS = "recovery"
HANDLER_MS = 2000
RECOVERY_BOUND = 20.0  # seconds from the restart to the finished task; the lease lives ~300 s


def _template() -> str:
    builder = WorkflowBuilder("recover_one", NS)
    builder.step("a", "sleep", timeout_seconds=300, handler_config={"ms": HANDLER_MS})
    return builder.build()


async def _wait_step_leased(client: Client, task_id: str) -> None:
    async with asyncio.timeout(20):
        while True:
            if (await client.get_task(task_id)).step("a").state in ("enqueued", "in_progress"):
                return
            await asyncio.sleep(0.02)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("down_for", [1.0, 12.0], ids=["down_1s", "down_12s"])
@pytest.mark.parametrize("language", LANGUAGES)
async def test_server_killed_while_a_handler_runs_records_its_result_once(
    db_url: str, language: str, down_for: float
) -> None:
    proc = ServerProcess(db_url).start()
    worker: WorkerProcess | None = None
    try:
        async with await Client.connect(proc.address, timeout=10) as client:
            await client.register_template(_template())
            worker = await WorkerProcess(
                proc.address, env=server_env(), namespace=NS, command=worker_command(language),
                worker_id=f"recovery-{language}",
            ).start()
            task = await client.create_task(NS, "recover_one", {"input": 4})
            await _wait_step_leased(client, task.task_id)
        await asyncio.sleep(0.3)  # the handler is running (2 s)
        proc.kill()
        await asyncio.sleep(down_for)
        proc = ServerProcess(db_url, port=proc.port).start()
        restarted = time.monotonic()
        async with await Client.connect(proc.address, timeout=10) as client:
            done = await client.wait_for_task(task.task_id, timeout=RECOVERY_BOUND)
        took = time.monotonic() - restarted
        print(f"{language}: finished {took:.1f}s after the restart")
        assert worker.proc is not None and worker.proc.returncode is None, "worker died"
        code = await worker.stop()
    finally:
        if worker is not None:
            worker.kill()
        proc.kill()

    assert done.state == "complete", done.state
    assert took < RECOVERY_BOUND
    step = done.step("a")
    assert step.result == {"value": 5}
    assert step.attempts == 1
    assert [a.outcome for a in step.proto.attempt_history] == ["complete"]
    transitions = [t.to_state for t in done.proto.transitions if t.step_name == "a"]
    assert transitions.count("enqueued") == 1, transitions  # leased once: the handler ran once
    assert transitions.count("complete") == 1, transitions
    assert code == 0
