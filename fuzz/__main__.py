"""``python -m fuzz``: see the package docstring."""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import tempfile

import grpc

from tasker.v1 import task_service_pb2 as tpb
from tasker.v1 import task_service_pb2_grpc as tgrpc
from tasker.v1 import template_service_pb2 as tmpb
from tasker.v1 import template_service_pb2_grpc as tmgrpc
from tests.support.server import ServerProcess

from .runner import Fuzzer

SEED_TEMPLATE = """\
name: plain
namespace: fuzz
version: "1.0.0"
step_templates:
  - name: only
    handler_class: h
"""


def _seed_data(address: str) -> None:
    """A template and a few tasks, so that generated requests naming them get further."""
    with grpc.insecure_channel(address) as channel:
        tmgrpc.TemplateServiceStub(channel).RegisterTemplate(  # type: ignore[no-untyped-call]
            tmpb.RegisterTemplateRequest(yaml=SEED_TEMPLATE), timeout=10
        )
        tasks = tgrpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
        for _ in range(3):
            tasks.CreateTask(tpb.CreateTaskRequest(namespace="fuzz", template_name="plain"))


def _stop_server(server: ServerProcess) -> str | None:
    """SIGTERM; the problem if the server had to be killed (it ignored SIGTERM for 15 s)."""
    code = server.stop()
    return "the server ignored SIGTERM for 15 s" if code == -signal.SIGKILL else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--case", type=int, default=None, help="replay this one case")
    parser.add_argument("--address", default="", help="fuzz a running server instead")
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--deadline", type=float, default=5.0, help="per call, seconds")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--health-every", type=int, default=50)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    first, cases = (args.case, 1) if args.case is not None else (0, args.cases)

    with tempfile.TemporaryDirectory(prefix="tasker-fuzz-") as workdir:
        server = None
        address = args.address
        if not address:
            url = args.database_url or f"sqlite+aiosqlite:///{workdir}/fuzz.db"
            server = ServerProcess(url, log_level="error").start(timeout=60)
            address = server.address
            try:
                _seed_data(address)
            except BaseException:
                _stop_server(server)
                raise
        fuzzer = Fuzzer(
            address,
            seed,
            deadline=args.deadline,
            concurrency=args.concurrency,
            health_every=args.health_every,
        )
        print(f"fuzzing {address}: seed {seed}, cases {first}..{first + cases - 1}", flush=True)
        try:
            report = asyncio.run(fuzzer.run(cases, first))
        finally:
            stop_problem = _stop_server(server) if server is not None else None
    print(report.summary())
    if stop_problem:
        print(f"FAIL {stop_problem}")
    return 1 if report.failures or report.server_died or stop_problem else 0


if __name__ == "__main__":
    sys.exit(main())
