"""Bearer-token authentication (``auth_tokens_file``) on a plaintext server.

Operators' tools keep working without a token where they must (health checks, reflection for
``grpcurl list``); every Tasker call needs ``authorization: Bearer <token>``; a worker without
one stops with UNAUTHENTICATED instead of reconnecting for ever. TLS plus tokens from every SDK:
test_tls.py.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tasker import Client, NotFoundError, UnauthenticatedError, Worker
from tasker_server.config import ConfigError, load_settings
from tests.support.server import ServerProcess

TOKENS = ("first-token-0123456789", "second-token-0123456789")  # two: rotation


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("auth")
    tokens = directory / "tokens"
    tokens.write_text("\n".join(["# one token per line", *TOKENS, ""]))
    server = ServerProcess(
        f"sqlite+aiosqlite:///{directory / 'tasker.db'}", auth_tokens_file=str(tokens)
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("token", TOKENS, ids=["first", "second"])
async def test_every_listed_token_is_accepted(auth_server: ServerProcess, token: str) -> None:
    async with Client(auth_server.address, token=token) as client:
        with pytest.raises(NotFoundError):  # authorized: the call reached the service
            await client.get_task("424242")


@pytest.mark.parametrize("token", [None, "unknown-token-0123456789"], ids=["none", "unknown"])
async def test_calls_without_an_accepted_token_are_unauthenticated(
    auth_server: ServerProcess, token: str | None
) -> None:
    async with Client(auth_server.address, token=token) as client:
        with pytest.raises(UnauthenticatedError) as info:
            await client.get_task("424242")
        assert info.value.reason == "UNAUTHENTICATED"
        # Streams too: the refusal comes before any event is read.
        with pytest.raises(UnauthenticatedError):
            async for _ in client.watch_task("424242"):
                pass


async def test_health_checks_need_no_token(auth_server: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(auth_server.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_worker_without_a_token_stops_with_unauthenticated(
    auth_server: ServerProcess,
) -> None:
    worker = Worker(auth_server.address, ["auth"], capacity=1)
    worker.register("noop", lambda ctx: {})
    with pytest.raises(UnauthenticatedError):
        await asyncio.wait_for(worker.run(), 20)


async def test_grpcurl_lists_without_a_token_and_calls_with_one(
    auth_server: ServerProcess, grpcurl: str
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [grpcurl, "-plaintext", *args], capture_output=True, text=True, timeout=15, check=False
        )

    listed = await asyncio.to_thread(run, auth_server.address, "list")
    assert listed.returncode == 0, listed.stderr
    assert "tasker.v1.TaskService" in listed.stdout

    method = "tasker.v1.TaskService/GetTask"
    data = ["-d", '{"task_id": "424242"}']
    refused = await asyncio.to_thread(run, *data, auth_server.address, method)
    assert "Code: Unauthenticated" in refused.stderr, refused.stderr
    header = ["-H", f"authorization: Bearer {TOKENS[0]}"]
    allowed = await asyncio.to_thread(run, *header, *data, auth_server.address, method)
    assert "Code: NotFound" in allowed.stderr, allowed.stderr


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot be read"), ("# nothing\n\n", "holds no token"), ("short\n", "16 characters")],
)
def test_unusable_tokens_file_stops_the_server_at_start(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "tokens"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"TASKER_AUTH_TOKENS_FILE": str(path)})
    assert str(path) in str(info.value) and problem in str(info.value)
