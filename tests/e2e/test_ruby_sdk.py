"""The Ruby SDK end to end, with real Ruby processes against a real server (both backends).

- A Ruby worker killed (SIGKILL) while its handler sleeps loses its lease (keepalive timeout);
  the step is re-leased and completes on another Ruby worker.
- ``gem build`` produces a gem that installs locally (``gem install --local --install-dir``;
  its dependencies come from Debian's packages, hence ``--ignore-dependencies``) and runs the
  gem's own example against the server.

The gem's unit and integration tests (minitest) run with ``make test-ruby``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tasker import Client
from tests.conformance.harness import REPO, WorkerProcess, wait_until, worker_command
from tests.support.server import RunningServer, server_env

SDK = REPO / "sdk-ruby"

pytestmark = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed")


async def test_killed_ruby_worker_step_is_released_and_completes_elsewhere(
    server: RunningServer,
) -> None:
    template = {
        "name": "ruby_kill",
        "namespace": "ruby_kill",
        "version": "1.0.0",
        "step_templates": [
            {
                "name": "a",
                "handler_class": "sleep",
                "handler_config": {"ms": 3000},
                "retry": {"max_attempts": 3, "backoff_base_seconds": 0.1},
            }
        ],
    }
    async with await Client.connect(server.address, timeout=10) as client:
        await client.register_template(yaml.safe_dump(template))
        first = await WorkerProcess(
            server.address,
            env=server_env(),
            namespace="ruby_kill",
            worker_id="ruby-first",
            command=worker_command("ruby"),
        ).start()
        second: WorkerProcess | None = None
        try:
            task = await client.create_task("ruby_kill", "ruby_kill", {"input": 4})
            await wait_until(client, task.task_id, "a", "in_progress", timeout=30)
            first.kill()
            assert first.proc is not None
            await first.proc.wait()
            second = await WorkerProcess(
                server.address,
                env=server_env(),
                namespace="ruby_kill",
                worker_id="ruby-second",
                command=worker_command("ruby"),
            ).start()
            done = await client.wait_for_task(task.task_id, timeout=60)
        finally:
            first.kill()
            code = await second.stop() if second is not None else 0
    assert done.state == "complete"
    step = done.proto.steps[0]
    history = [(a.worker_id, a.outcome) for a in step.attempt_history]
    assert history[0][0] == "ruby-first" and history[0][1] != "complete", history
    assert history[-1] == ("ruby-second", "complete"), history
    assert done.result == {"a": {"value": 5}}
    assert code == 0


async def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command without blocking the event loop (the server under test lives in it)."""
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{out.decode()}{err.decode()}"
    return out.decode()


async def _gem_env(gem_dir: Path) -> dict[str, str]:
    system_path = await _run("ruby", "-e", 'print Gem.path.join(":")', cwd=gem_dir.parent)
    env = dict(os.environ)
    env.pop("RUBYLIB", None)
    env["GEM_PATH"] = f"{gem_dir}:{system_path}"
    return env


async def test_gem_builds_installs_locally_and_runs_the_example(
    server: RunningServer, tmp_path: Path
) -> None:
    gem_file = tmp_path / "tasker.gem"
    gem_dir = tmp_path / "gems"
    await _run("gem", "build", "tasker.gemspec", "-o", str(gem_file), cwd=SDK)
    await _run(
        "gem", "install", "--local", "--ignore-dependencies", "--no-document",
        "--install-dir", str(gem_dir), str(gem_file), cwd=tmp_path,
    )  # fmt: skip
    installed = gem_dir / "gems" / "tasker-0.1.0"
    assert (installed / "bin" / "tasker-worker").exists()
    env = await _gem_env(gem_dir)
    # Activating the gem resolves its dependencies (grpc, google-protobuf, googleapis types)
    # from Debian's gems; the code must come from the installed copy, not the source tree.
    script = 'gem "tasker"; require "tasker"; print $LOADED_FEATURES.grep(%r{tasker/client}).first'
    loaded = await _run("ruby", "-e", script, cwd=tmp_path, env=env)
    assert loaded.startswith(str(installed)), loaded

    example = str(installed / "examples" / "quickstart.rb")
    out = await _run("ruby", example, "--address", server.address, cwd=tmp_path, env=env)
    assert "complete" in out and '"shipped"=>true' in out, out
