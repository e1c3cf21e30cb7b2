"""The server shell as operators meet it: `tasker serve`, grpcurl, health, config errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.server import ServerProcess, server_env

SERVICES = {
    "tasker.v1.TaskService",
    "tasker.v1.TemplateService",
    "tasker.v1.WorkerService",
    "tasker.v1.AdminService",
    "tasker.v1.EventService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}


def test_serve_lists_services_answers_health_and_stops_on_sigterm(
    tmp_path: Path, grpcurl: str
) -> None:
    proc = ServerProcess(f"sqlite:///{tmp_path / 'shell.db'}").start()
    try:
        listed = subprocess.run(
            [grpcurl, "-plaintext", proc.address, "list"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert set(listed) >= SERVICES

        health = subprocess.run(
            [grpcurl, "-plaintext", proc.address, "grpc.health.v1.Health/Check"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(health.stdout)["status"] == "SERVING"

        missing = subprocess.run(
            [
                grpcurl,
                "-plaintext",
                "-d",
                '{"task_id": "424242"}',
                proc.address,
                "tasker.v1.TaskService/GetTask",
            ],
            capture_output=True,
            text=True,
        )
        assert missing.returncode != 0
        assert "NotFound" in missing.stderr and "TASK_NOT_FOUND" in missing.stderr
    finally:
        code = proc.stop()
    assert code == 0, "SIGTERM must shut the server down cleanly"


def test_broken_config_file_names_file_key_and_problem(tmp_path: Path) -> None:
    config = tmp_path / "tasker.yaml"
    config.write_text("listen: 127.0.0.1:50051\nkeepalive_timeout_seconds: soon\n")
    result = subprocess.run(
        [sys.executable, "-m", "tasker_server", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=30,
    )
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "keepalive_timeout_seconds" in result.stderr
    assert "expected a number" in result.stderr


def test_unknown_config_key_and_bad_yaml_are_reported(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("lisen: 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "tasker_server", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=30,
    )
    assert result.returncode == 2 and "unknown key 'lisen'" in result.stderr

    config.write_text("listen: [unclosed\n")
    result = subprocess.run(
        [sys.executable, "-m", "tasker_server", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=30,
    )
    assert result.returncode == 2 and "invalid YAML at line" in result.stderr
