"""The SDKs' "finished" and "final" task states are the server's (domain/states.py), by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasker import _models
from tasker_server.domain.states import FINAL_TASK_STATES, FINISHED_TASK_STATES

REPO = Path(__file__).resolve().parents[2]
SERVER = {
    "FINAL_TASK_STATES": {s.value for s in FINAL_TASK_STATES},
    "FINISHED_TASK_STATES": {s.value for s in FINISHED_TASK_STATES},
}


@pytest.mark.parametrize("name", sorted(SERVER))
def test_python_sdk(name: str) -> None:
    assert set(getattr(_models, name)) == SERVER[name]
    # The old name stays, meaning "finished".
    assert _models.TERMINAL_TASK_STATES == _models.FINISHED_TASK_STATES


@pytest.mark.parametrize("name", sorted(SERVER))
def test_node_sdk(name: str) -> None:
    source = (REPO / "sdk-node/src/internal/models.ts").read_text()
    match = re.search(rf"export const {name}\b[^=]*= new Set\(\[([^\]]*)\]\)", source)
    assert match, f"{name} not found in models.ts"
    assert set(re.findall(r'"(\w+)"', match.group(1))) == SERVER[name]
    assert "TERMINAL_TASK_STATES: ReadonlySet<string> = FINISHED_TASK_STATES;" in source


@pytest.mark.parametrize("name", sorted(SERVER))
def test_ruby_sdk(name: str) -> None:
    source = (REPO / "sdk-ruby/lib/tasker/models.rb").read_text()
    match = re.search(rf"{name} = %w\[([^\]]*)\]", source)
    assert match, f"{name} not found in models.rb"
    assert set(match.group(1).split()) == SERVER[name]
    assert "TERMINAL_TASK_STATES = FINISHED_TASK_STATES" in source
