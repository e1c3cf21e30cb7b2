"""The README's quickstart, run for real: a server process, the example script, its worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc

from tasker.v1 import template_service_pb2 as pb
from tasker.v1 import template_service_pb2_grpc as pb_grpc
from tests.support.server import REPO, ServerProcess, server_env

EXAMPLES = REPO / "sdk-python" / "examples"


def test_quickstart_runs_a_diamond_to_completion(tmp_path: Path) -> None:
    proc = ServerProcess(f"sqlite:///{tmp_path / 'qs.db'}").start()
    try:
        run = subprocess.run(
            [sys.executable, str(EXAMPLES / "quickstart.py"), "--address", proc.address],
            capture_output=True,
            text=True,
            env=server_env(),
            timeout=120,
        )
    finally:
        proc.stop()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "is complete" in run.stdout
    for step in ("validate_order", "check_inventory", "process_payment", "ship_order"):
        assert step in run.stdout


def test_templates_dir_is_registered_at_startup(tmp_path: Path) -> None:
    proc = ServerProcess(f"sqlite:///{tmp_path / 'dir.db'}", templates_dir=str(EXAMPLES)).start()
    try:
        with grpc.insecure_channel(proc.address) as channel:
            reply = pb_grpc.TemplateServiceStub(channel).GetTemplate(
                pb.GetTemplateRequest(namespace="quickstart", name="order_fulfillment"),
                timeout=10,
            )
    finally:
        proc.stop()
    assert reply.template.version == "1.0.0"
    assert reply.template.steps[0].name == "validate_order"
