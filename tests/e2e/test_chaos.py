"""The short form of the chaos suite (``python -m chaos --short``): one fault of each kind, 50
diamond tasks, real server/worker/PostgreSQL processes on loopback (see docs/reliability.md).

Each test asserts what must hold whatever the timing: no task lost, no result recorded twice,
every result per the workload formula, and every task complete within a generous bound (45 s after
the fault is lifted). The timing targets (10 s, 5 s, keepalive + 5 s) are reported by
``make chaos``, not asserted here. A server that strands work for minutes fails these tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.cluster import Backends
from chaos.scenarios import SHORT, Scenario, run_scenario
from tests.support.databases import _backends, require_pg_bin_dir


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    with Backends.opened() as opened:
        yield opened


@pytest.mark.timeout(150)
@pytest.mark.parametrize("scenario", SHORT, ids=lambda s: f"{s.name}-{s.backend}")
async def test_fault_strands_no_work(
    scenario: Scenario, backends: Backends, tmp_path: Path
) -> None:
    if scenario.backend not in _backends():
        pytest.skip(f"TASKER_TEST_BACKENDS excludes {scenario.backend}")
    if scenario.backend == "postgres":
        require_pg_bin_dir()
    result = await run_scenario(scenario, backends, tmp_path)
    summary = json.dumps({k: v for k, v in result.items() if k != "recorded_twice_detail"})
    assert result["submitted"] == scenario.tasks, summary
    assert result["lost"] == 0, summary
    assert result["recorded_twice"] == 0, summary
    assert result["wrong_results"] == 0, summary
    assert result["all_finished_within_bound"], summary
