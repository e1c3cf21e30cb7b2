"""Running conformance workers and waiting for tasks, for the end-to-end tests.

:class:`WorkerProcess` starts ``python_worker.py`` (or any SDK's worker with the same command
line, via ``command``) as a real child process and stops it with SIGTERM. Everything here is
asyncio because the server under test usually runs in the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasker import Client, Task

from .scenarios import Scenario, step_state

__all__ = [
    "LANGUAGES",
    "PYTHON_WORKER",
    "WorkerProcess",
    "wait_for_scenario_task",
    "wait_until",
    "worker_command",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PYTHON_WORKER = HERE / "python_worker.py"

# Every SDK ships a conformance worker with the same command line (tests/conformance/README.md).
# The Node worker imports the built package (sdk-node/dist: `npm run build`, done by make test).
WORKER_COMMANDS: dict[str, list[str]] = {
    "python": [sys.executable, str(PYTHON_WORKER)],
    "node": ["node", str(HERE / "node_worker.mjs")],
    "ruby": ["ruby", f"-I{REPO / 'sdk-ruby' / 'lib'}", str(HERE / "ruby_worker.rb")],
}
LANGUAGES = tuple(WORKER_COMMANDS)


def worker_command(language: str) -> list[str]:
    return list(WORKER_COMMANDS[language])


class WorkerProcess:
    """One conformance worker process: ``await start()`` returns once it printed ``READY``."""

    def __init__(
        self,
        address: str,
        *,
        env: Mapping[str, str],
        namespace: str = "conformance",
        capacity: int = 10,
        worker_id: str | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.args = [*(command or [sys.executable, str(PYTHON_WORKER)]), "--address", address,
                     "--namespace", namespace, "--capacity", str(capacity)]
        if worker_id:
            self.args += ["--worker-id", worker_id]
        self.env = dict(env)
        self.worker_id = worker_id or ""
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 30.0) -> WorkerProcess:  # noqa: ASYNC109
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, env=self.env, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = (await self.proc.stdout.readline()).decode()
                    if not line:
                        code = await self.proc.wait()
                        raise RuntimeError(f"worker exited with {code} before it was ready")
                    if line.startswith("READY "):
                        self.worker_id = line.split()[1]
                        return self
        except BaseException:
            self.kill()
            raise

    async def stop(self, timeout: float = 20.0) -> int:  # noqa: ASYNC109
        """SIGTERM, then wait for the exit code (SIGKILL after ``timeout``: the code is then
        negative, which fails any ``== 0`` assertion)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.kill()
                await self.proc.wait()
        assert self.proc.returncode is not None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


async def wait_until(
    client: Client, task_id: str, step: str, state: str, timeout: float = 60.0  # noqa: ASYNC109
) -> Task:
    """Poll GetTask until ``step`` is in ``state``; TimeoutError with the last state seen."""
    deadline = time.monotonic() + timeout
    while True:
        task = await client.get_task(task_id)
        current = {s.name: step_state(s.state) for s in task.proto.steps}
        if current.get(step) == state:
            # GetTask reads one snapshot (REPEATABLE READ on PostgreSQL), so this view is
            # consistent: the task row matches its steps.
            return task
        if task.is_terminal or time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id}: step {step} is {current.get(step)!r}, "
                               f"task {task.state!r}; waited for {state!r}")
        await asyncio.sleep(0.05)


async def wait_for_scenario_task(
    client: Client, scenario: Scenario, task_id: str, timeout: float = 60.0  # noqa: ASYNC109
) -> Any:
    """Wait for the end the scenario expects (terminal state, or its ``until`` step state) and
    return the task from GetTask."""
    if scenario.until:
        return await wait_until(
            client, task_id, scenario.until["step"], scenario.until["state"], timeout
        )
    return await client.wait_for_task(task_id, timeout=timeout)
