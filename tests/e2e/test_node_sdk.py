"""The Node SDK end to end: real Node processes against a real server.

- A Node worker killed (SIGKILL) while its handler sleeps: the step's lease is released when the
  stream goes silent, re-leased to a second Node worker, and the task completes there (both
  backends).
- ``npm pack`` produces a package that installs into an empty folder (``npm install <tarball>``,
  dependencies from the npm registry) and runs its quickstart example against a real server.

Both need ``sdk-node/dist`` (``npm run build``, done by ``make test``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tasker import Client
from tests.conformance.harness import WorkerProcess, wait_until, worker_command
from tests.support.server import REPO, RunningServer, ServerProcess, server_env

SDK_NODE = REPO / "sdk-node"
NODE_WORKER = worker_command("node")
NAMESPACE = "node_sdk_e2e"


@pytest.fixture(autouse=True)
def _node_sdk_built() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are required (make install-system)")
    if not (SDK_NODE / "dist" / "index.js").exists():
        pytest.fail("sdk-node is not built: run `cd sdk-node && npm run build`")


TEMPLATE = f"""
name: node_release
namespace: {NAMESPACE}
version: 1.0.0
step_templates:
  - name: nap
    handler_class: sleep
    handler_config: {{ms: 2500}}
  - name: after
    handler_class: sum
    depends_on_steps: [nap]
"""


async def test_killed_node_worker_step_is_released_and_completes_on_another(
    server: RunningServer,
) -> None:
    env = server_env()
    async with await Client.connect(server.address, timeout=10) as client:
        await client.register_template(TEMPLATE)
        first = await WorkerProcess(
            server.address, env=env, namespace=NAMESPACE, capacity=1, command=NODE_WORKER
        ).start()
        try:
            task = await client.create_task(NAMESPACE, "node_release", {"input": 4})
            await wait_until(client, task.task_id, "nap", "in_progress", timeout=30)
            first.kill()  # SIGKILL while the handler sleeps: no drain, no result
            assert first.proc is not None
            await first.proc.wait()
            second = await WorkerProcess(
                server.address, env=env, namespace=NAMESPACE, capacity=1, command=NODE_WORKER
            ).start()
            try:
                done = await client.wait_for_task(task.task_id, timeout=60)
            finally:
                code = await second.stop()
        finally:
            first.kill()
    assert done.state == "complete"
    nap = done.step("nap")
    history = list(nap.proto.attempt_history)
    assert nap.attempts == 2, history
    assert [a.worker_id for a in history] == [first.worker_id, second.worker_id]
    assert history[0].outcome != "complete"
    assert history[-1].outcome == "complete"
    assert nap.result == {"value": 5}
    assert done.step("after").result == {"value": 6}
    assert code == 0


def _run(args: list[str], cwd: Path, timeout: float) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_npm_pack_installs_in_an_empty_folder_and_runs_the_example(tmp_path: Path) -> None:
    packed = _run(
        ["npm", "pack", "--json", "--pack-destination", str(tmp_path)], SDK_NODE, timeout=180
    )
    info = json.loads(packed[packed.index("[") :])[0]
    files = {f["path"] for f in info["files"]}
    assert {"dist/index.js", "dist/index.d.ts", "examples/quickstart.mjs"} <= files
    assert not any(f.startswith(("src/", "test/", "node_modules/")) for f in files)
    tarball = tmp_path / info["filename"]

    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "private": true, "type": "module"}\n')
    _run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefer-offline", str(tarball)],
        app,
        timeout=300,
    )
    example = app / "quickstart.mjs"
    shutil.copy(app / "node_modules" / "@tasker" / "sdk" / "examples" / "quickstart.mjs", example)

    server = ServerProcess(f"sqlite:///{tmp_path / 'tasker.db'}").start()
    try:
        out = _run(["node", str(example), "--address", server.address], app, timeout=60)
    finally:
        server.stop()
    assert json.loads(out.strip().splitlines()[-1]) == {
        "state": "complete",
        "result": {"report": {"text": "doubled: 42"}},
    }
