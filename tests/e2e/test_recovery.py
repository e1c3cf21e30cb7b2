"""Recovery in seconds: a server process SIGKILLed while a handler runs, restarted on the same
port and database, with every SDK's conformance worker (a real child process).

The handler (conformance ``sleep``) takes 2 s; the step's timeout is 300 s, so a step that had to
wait for its lease's hard deadline would blow the bound of 20 s. The result must be recorded
exactly once: one lease handed out (one ``enqueued`` transition: the handler ran once), one
attempt, outcome ``complete``. The second variant keeps the server down for 20 s, longer than
the eight ReportStepResult retries after which the SDKs used to give a result up (their backoff,
0.2 s doubling to 5 s with full jitter, made those last ~11 s on average and 21 s at most; the
step then waited for its hard deadline).

In both the handler finishes while the server is down or starting. The third variant has the
worker reconnect while its handler still runs (6 s handler, 0.2 s down): the worker's hello
lists the lease in ``held_leases``, which the server must adopt; a server that ignores it answers
the worker's heartbeat for the lease with ``active=false`` (it only knows leases handed out by
itself), the worker stops the handler, and the step waits for its hard deadline. Expected to
fail until the server adopts held leases.
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
RECOVERY_BOUND = 20.0  # seconds from the restart to the finished task; the lease lives ~300 s


def _template(handler_ms: int) -> str:
    builder = WorkflowBuilder("recover_one", NS)
    builder.step("a", "sleep", timeout_seconds=300, handler_config={"ms": handler_ms})
    return builder.build()


async def _wait_step_leased(client: Client, task_id: str) -> None:
    async with asyncio.timeout(20):
        while True:
            if (await client.get_task(task_id)).step("a").state in ("enqueued", "in_progress"):
                return
            await asyncio.sleep(0.02)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("down_for", "handler_ms"),
    [
        pytest.param(1.0, 2000, id="down_1s"),
        pytest.param(20.0, 2000, id="down_20s"),
        pytest.param(0.2, 6000, id="handler_outlives_the_outage"),
    ],
)
@pytest.mark.parametrize("language", LANGUAGES)
async def test_server_killed_while_a_handler_runs_records_its_result_once(
    db_url: str, language: str, down_for: float, handler_ms: int
) -> None:
    # The silence window after which a server takes back the leases of a worker it has not
    # seen (keepalive timeout + lease TTL; 35 s by default) is 5.5 s with the fast test timers:
    # shorter than a worker's reconnect backoff may last. 10 s makes it 12.5 s.
    settings = {"keepalive_timeout_seconds": 10.0}
    proc = ServerProcess(db_url, **settings).start()
    worker: WorkerProcess | None = None
    try:
        async with await Client.connect(proc.address, timeout=10) as client:
            await client.register_template(_template(handler_ms))
            worker = await WorkerProcess(
                proc.address, env=server_env(), namespace=NS, command=worker_command(language),
                worker_id=f"recovery-{language}",
            ).start()
            task = await client.create_task(NS, "recover_one", {"input": 4})
            await _wait_step_leased(client, task.task_id)
        await asyncio.sleep(0.3)  # the handler is running
        proc.kill()
        await asyncio.sleep(down_for)
        proc = ServerProcess(db_url, port=proc.port, **settings).start()
        restarted = time.monotonic()
        async with await Client.connect(proc.address, timeout=10) as client:
            done = await client.wait_for_task(task.task_id, timeout=RECOVERY_BOUND)
        took = time.monotonic() - restarted
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
