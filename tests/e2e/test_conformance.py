"""Every conformance scenario (tests/conformance/scenarios/*.yaml) against the real server on
both backends, run by the Python SDK's conformance worker as a real child process.

Per scenario: register its template, start one worker process, create its tasks, wait for each
to reach the end the scenario expects (a terminal state, or its ``until`` step state), then
``check()`` must find no mismatch (states, attempts, attempt outcomes, step and task results
computed from the DAG, ordering from the transition log). SIGTERM must stop the worker with
exit code 0.
"""

from __future__ import annotations

import asyncio

import pytest

from tasker import Client
from tests.conformance.harness import (
    LANGUAGES,
    WorkerProcess,
    wait_for_scenario_task,
    worker_command,
)
from tests.conformance.scenarios import Scenario, check, load_all
from tests.support.server import RunningServer, server_env

SCENARIOS = load_all()


def test_scenario_files_load_and_cover_every_behaviour() -> None:
    names = {s.name for s in SCENARIOS}
    assert {
        "linear", "diamond", "fanout", "wide", "tree", "handler_config", "retry_then_succeed",
        "permanent_failure", "optional_skipped", "business_error",
    } <= names  # fmt: skip
    used = {step["handler_class"] for s in SCENARIOS for step in s.steps}
    assert used == {
        "sum",
        "echo_config",
        "sleep",
        "fail_permanent",
        "fail_then_succeed",
        "fail_business",
    } - {"sleep"}  # sleep is exercised by tests/e2e/test_patterns.py


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_scenario(server: RunningServer, scenario: Scenario, language: str) -> None:
    async with await Client.connect(server.address, timeout=10) as client:
        await client.register_template(scenario.template_yaml())
        worker = await WorkerProcess(
            server.address,
            env=server_env(),
            namespace=scenario.namespace,
            command=worker_command(language),
        ).start()
        try:
            tasks = [
                await client.create_task(scenario.namespace, scenario.template_name, context)
                for context in scenario.contexts()
            ]
            finished = await asyncio.gather(
                *(wait_for_scenario_task(client, scenario, t.task_id, timeout=90) for t in tasks)
            )
        finally:
            code = await worker.stop()
        problems = [p for task in finished for p in check(scenario, task)]
    assert problems == []
    assert code == 0, f"the worker must exit 0 on SIGTERM, got {code}"
