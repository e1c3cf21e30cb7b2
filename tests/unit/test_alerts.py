"""The shipped alert rules and dashboard: well-formed, and promtool-valid when promtool exists.

That every expression references only metrics the server exports is checked against a real
scrape in tests/e2e/test_observability.py.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.promql import ALERTS, alert_rules, dashboard_exprs, metric_names

SEED_ALERTS = {
    # critical
    "TaskerTaskFailureRateHigh",
    "TaskerStepTimeouts",
    "TaskerDatabasePoolSaturated",
    "TaskerDependencyResolutionFailing",
    # warning
    "TaskerRetryRateHigh",
    "TaskerTaskLatencyHigh",
    "TaskerReadyQueueGrowing",
    "TaskerCircuitBreakerOpened",
}


def test_every_seed_alert_is_there_with_severity_and_summary() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    assert set(names) >= SEED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert metric_names(rule["expr"]), rule["alert"]


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (namespace) (rate(tasker_tasks_finished_total{state="failed"}[10m])) '
        "/ (sum by (namespace) (tasker_worker_capacity) > 0) and deriv(x_y[15m:1m] offset 1d)"
    )
    assert metric_names(expr) == {"tasker_tasks_finished_total", "tasker_worker_capacity", "x_y"}


def test_dashboard_queries_only_tasker_metrics() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    for expr in exprs:
        assert all(n.startswith("tasker_") for n in metric_names(expr)), expr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
