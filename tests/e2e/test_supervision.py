"""The orchestrator's loops run under one supervised task group: a loop that dies stops the server
(with the error logged and kept for the exit status) instead of leaving it up without that loop."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tasker_server.app import App
from tasker_server.config import load_settings
from tasker_server.engine.sweeper import Sweeper
from tests.support.server import FAST_TIMERS, REPO, server_env


@pytest.mark.parametrize("how", ["raises", "returns"])
async def test_a_loop_that_dies_stops_the_server(
    db_url: str, how: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def dies(self: Sweeper) -> None:
        # Not a failed sweep (the loop logs those and goes on): the loop itself ends, with an
        # error it does not handle as a bug in it would, or by returning.
        await asyncio.sleep(0.3)
        if how == "raises":
            raise RuntimeError("injected sweeper crash")

    monkeypatch.setattr(Sweeper, "run", dies)
    settings = load_settings(
        environ={}, overrides={"listen": "127.0.0.1:0", "database_url": db_url, **FAST_TIMERS}
    )
    app = await App.start(settings)
    address = f"127.0.0.1:{app.port}"
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with caplog.at_level(logging.CRITICAL, logger="tasker_server.app"):
        try:
            await asyncio.wait_for(app.wait(), 15)  # the server stops by itself
        finally:
            await app.stop(grace=0.5)
    assert isinstance(app.failure, ExceptionGroup)
    assert app.failure.subgroup(RuntimeError) is not None
    assert "a server loop died" in caplog.text
    # The other loops were cancelled with it, and the port no longer answers.
    assert app._loops is not None and app._loops.done()
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )


async def test_a_stopped_server_has_no_failure(db_url: str) -> None:
    settings = load_settings(
        environ={}, overrides={"listen": "127.0.0.1:0", "database_url": db_url, **FAST_TIMERS}
    )
    app = await App.start(settings)
    await app.stop(grace=0.5)
    assert app.failure is None
    assert app._loops is not None and app._loops.done()


def test_the_server_process_exits_with_1_when_a_loop_dies(tmp_path: Path) -> None:
    # ``tasker serve`` as a real process (through ``cli.main``), with the sweeper's loop made to
    # die: the process must end by itself, non-zero, with the error in its log.
    script = textwrap.dedent(
        """
        import asyncio, sys
        from tasker_server import cli
        from tasker_server.engine.sweeper import Sweeper

        async def dies(self):
            await asyncio.sleep(0.3)
            raise RuntimeError("injected sweeper crash")

        Sweeper.run = dies
        sys.exit(cli.main(sys.argv[1:]))
        """
    )
    db = f"sqlite:///{tmp_path / 'tasker.db'}"
    proc = subprocess.run(
        [sys.executable, "-c", script, "serve", "--listen", "127.0.0.1:0", "--database-url", db],
        env=server_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "a server loop died" in proc.stderr
    assert "injected sweeper crash" in proc.stderr
