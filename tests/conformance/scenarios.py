"""Conformance scenarios as data: load them, compute what is computable, check a finished task.

The scenario format and the behaviours are the contract in ``README.md`` (beside this file);
this module is the Python runner's reading of it. Expected step results are derived from the
DAG and the behaviours (see :func:`expected_step_results`) rather than typed into the files, so
a scenario states only what cannot be computed: states, attempts, attempt outcomes.

:func:`check` compares a task as returned by ``TaskService.GetTask`` (the ``tasker.v1.Task``
message, or an SDK ``tasker.Task`` whose ``.proto`` is one) with the scenario's expectation and
returns a list of human-readable mismatches (empty when the task conforms).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from tasker.v1 import resources_pb2

__all__ = [
    "SCENARIO_DIR",
    "Scenario",
    "check",
    "expected_step_results",
    "load",
    "load_all",
    "step_state",
    "task_state",
]

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
_TOP_KEYS = {"name", "description", "template", "tasks", "expect", "until"}
_EXPECT_KEYS = {"state", "blocked", "result", "all_steps", "steps", "ordering"}
_STEP_KEYS = {"state", "attempts", "outcomes", "error_type", "result"}
_SUM_LIKE = {"sum", "sleep", "fail_then_succeed"}
_SATISFIED = {"complete", "skipped", "resolved_manually"}

Json = dict[str, Any]


def task_state(value: int) -> str:
    """``TASK_STATE_IN_PROGRESS`` -> ``"in_progress"``."""
    return resources_pb2.TaskState.Name(value).removeprefix("TASK_STATE_").lower()


def step_state(value: int) -> str:
    """``STEP_STATE_COMPLETE`` -> ``"complete"``."""
    return resources_pb2.StepState.Name(value).removeprefix("STEP_STATE_").lower()


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    template: Json
    tasks: list[Json]
    expect: Json
    until: Json | None = None
    path: Path | None = field(default=None, compare=False)

    @property
    def namespace(self) -> str:
        return str(self.template["namespace"])

    @property
    def template_name(self) -> str:
        return str(self.template["name"])

    @property
    def steps(self) -> list[Json]:
        return list(self.template["step_templates"])

    def template_yaml(self) -> str:
        """The template as YAML text for ``TemplateService.RegisterTemplate``."""
        return yaml.safe_dump(self.template, sort_keys=False)

    def contexts(self) -> list[Json]:
        """The task contexts (``{"input": i}``), one per task, in order."""
        return [{"input": t["input"]} for t in self.tasks]

    def expectation(self, context: Mapping[str, Any]) -> Json:
        """The full expectation for the task created with ``context``: ``expect`` overlaid with
        that task's own ``expect`` (if any), every step filled in, and ``result`` computed when
        not given."""
        spec = next((t for t in self.tasks if t["input"] == context.get("input")), None)
        if spec is None:
            raise KeyError(f"scenario {self.name}: no task with input {context.get('input')!r}")
        exp = copy.deepcopy(self.expect)
        exp.update(copy.deepcopy(spec.get("expect", {})))
        computed = expected_step_results(self, spec["input"])
        default = exp.get("all_steps", {})
        steps: dict[str, Json] = {}
        for step in self.steps:
            one = {**default, **exp.get("steps", {}).get(step["name"], {})}
            if "result" not in one and one.get("state") == "complete":
                one["result"] = computed[step["name"]]
            steps[step["name"]] = one
        exp["steps"] = steps
        if "result" not in exp:
            if exp.get("state") == "complete":
                exp["result"] = {leaf: steps[leaf].get("result") for leaf in leaves(self)}
            else:
                exp["result"] = {}
        return exp


def leaves(scenario: Scenario) -> list[str]:
    """Steps no other step depends on."""
    parents = {p for s in scenario.steps for p in s.get("depends_on_steps") or []}
    return [s["name"] for s in scenario.steps if s["name"] not in parents]


def _run_state(step: Json) -> str:
    """What a step's behaviour does to it (assuming its parents were satisfied)."""
    behaviour = step["handler_class"]
    if behaviour == "fail_permanent":
        return "skipped" if step.get("optional") else "failed"
    if behaviour == "fail_business":
        return "blocked"
    return "complete"


def expected_step_results(scenario: Scenario, task_input: int) -> dict[str, Json | None]:
    """Each step's result for ``input``, following the behaviours through the DAG: None for a
    step that fails, is skipped or blocks, and for every step after one that failed or blocked.
    """
    by_name = {s["name"]: s for s in scenario.steps}
    results: dict[str, Json | None] = {}
    states: dict[str, str] = {}

    def visit(name: str) -> None:
        if name in states:
            return
        step = by_name[name]
        parents = list(step.get("depends_on_steps") or [])
        for p in parents:
            visit(p)
        if any(states[p] not in _SATISFIED for p in parents):
            states[name], results[name] = "pending", None
            return
        states[name] = _run_state(step)
        behaviour = step["handler_class"]
        if states[name] != "complete":
            results[name] = None
        elif behaviour == "echo_config":
            results[name] = copy.deepcopy(step.get("handler_config") or {})
        elif behaviour in _SUM_LIKE:
            if not parents:
                results[name] = {"value": task_input + 1}
            else:
                value = 1 + sum(
                    _number((results[p] or {}).get("value"))
                    for p in parents
                    if states[p] != "skipped"
                )
                out: Json = {"value": value}
                skipped = sorted(p for p in parents if states[p] == "skipped")
                if skipped:
                    out["skipped"] = skipped
                results[name] = out
        else:
            raise ValueError(f"unknown behaviour {behaviour!r} in scenario {scenario.name}")

    for name in by_name:
        visit(name)
    return results


def _number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def _validate(raw: Any, path: Path) -> Scenario:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a scenario is a mapping")
    unknown = set(raw) - _TOP_KEYS
    missing = {"name", "template", "tasks", "expect"} - set(raw)
    if unknown or missing:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
    if raw["name"] != path.stem:
        raise ValueError(f"{path}: name {raw['name']!r} must equal the file name")
    expect = raw["expect"]
    if set(expect) - _EXPECT_KEYS:
        raise ValueError(f"{path}: unknown expect keys {sorted(set(expect) - _EXPECT_KEYS)}")
    names = [s["name"] for s in raw["template"]["step_templates"]]
    per_step = {**expect.get("steps", {}), "<all_steps>": expect.get("all_steps", {})}
    for step_name, one in per_step.items():
        if step_name != "<all_steps>" and step_name not in names:
            raise ValueError(f"{path}: expect.steps names unknown step {step_name!r}")
        extra = sorted(set(one) - _STEP_KEYS)
        if extra:
            raise ValueError(f"{path}: unknown step expectation keys {extra}")
    inputs = [t["input"] for t in raw["tasks"]]
    if len(set(inputs)) != len(inputs):
        raise ValueError(f"{path}: task inputs must be distinct (results are matched by input)")
    return Scenario(
        name=raw["name"],
        description=str(raw.get("description", "")).strip(),
        template=raw["template"],
        tasks=list(raw["tasks"]),
        expect=expect,
        until=raw.get("until"),
        path=path,
    )


def load(path: Path | str) -> Scenario:
    path = Path(path)
    return _validate(yaml.safe_load(path.read_text()), path)


def load_all(directory: Path = SCENARIO_DIR) -> list[Scenario]:
    """Every ``*.yaml`` scenario in ``directory``, sorted by name."""
    return [load(p) for p in sorted(directory.glob("*.yaml"))]


# --- checking a task ----------------------------------------------------------------------------


def _struct(message: Any) -> Json:
    return json_format.MessageToDict(message) if message is not None else {}


def _same(a: Any, b: Any) -> bool:
    """JSON equality where 3 == 3.0 (Struct numbers are doubles) but True != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _time(ts: Any) -> datetime | None:
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime()


def check(scenario: Scenario, task: Any, *, timestamps: bool = True) -> list[str]:
    """Mismatches between ``task`` (a ``tasker.v1.Task`` from GetTask, or an SDK ``Task``) and
    what ``scenario`` expects of it. Empty when the task conforms.

    The ordering rule is checked on the transition log's commit order and on the attempt
    history; ``timestamps=True`` also compares transition ``create_time`` values (the server
    stamps them at flush, after the transaction took its locks, so they follow causality)."""
    proto = getattr(task, "proto", None) or task
    context = _struct(proto.context)
    try:
        exp = scenario.expectation(context)
    except KeyError as exc:
        return [str(exc)]
    shown = context.get("input")
    if isinstance(shown, float) and shown.is_integer():
        shown = int(shown)
    where = f"{scenario.name} task {proto.task_id} (input {shown})"
    problems: list[str] = []

    def bad(text: str) -> None:
        problems.append(f"{where}: {text}")

    state = task_state(proto.state)
    if "state" in exp and state != exp["state"]:
        bad(f"task state {state!r}, expected {exp['state']!r}")
    if "blocked" in exp and proto.blocked != exp["blocked"]:
        bad(f"task blocked={proto.blocked}, expected {exp['blocked']}")
    result = _struct(proto.result)
    if not _same(result, exp["result"]):
        bad(f"task result {result!r}, expected {exp['result']!r}")

    steps = {s.name: s for s in proto.steps}
    if set(steps) != set(exp["steps"]):
        bad(f"steps {sorted(steps)}, expected {sorted(exp['steps'])}")
    if proto.total_steps != len(exp["steps"]):
        bad(f"total_steps {proto.total_steps}, expected {len(exp['steps'])}")
    for name, want in exp["steps"].items():
        step = steps.get(name)
        if step is None:
            continue
        got_state = step_state(step.state)
        if "state" in want and got_state != want["state"]:
            bad(f"step {name} state {got_state!r}, expected {want['state']!r}")
        if "attempts" in want and step.attempts != want["attempts"]:
            bad(f"step {name} attempts {step.attempts}, expected {want['attempts']}")
        if "outcomes" in want:
            outcomes = [a.outcome for a in step.attempt_history]
            if outcomes != want["outcomes"]:
                bad(f"step {name} attempt outcomes {outcomes}, expected {want['outcomes']}")
        if "error_type" in want and step.last_error.error_type != want["error_type"]:
            bad(
                f"step {name} last_error.error_type {step.last_error.error_type!r}, "
                f"expected {want['error_type']!r}"
            )
        if "result" in want:
            got = _struct(step.result) if step.HasField("result") else None
            if not _same(got, want["result"]):
                bad(f"step {name} result {got!r}, expected {want['result']!r}")
    if exp.get("ordering") == "dependencies":
        problems.extend(f"{where}: {p}" for p in ordering_problems(proto, timestamps=timestamps))
    return problems


def ordering_problems(task: Any, *, timestamps: bool = True) -> list[str]:
    """The DAG's ordering rule, read from the transition log (oldest first) and the attempt
    history: no step is enqueued before every parent has reached a satisfied state (complete,
    skipped, resolved_manually) by position in the log (commit order: a child's enqueue is
    inserted only after its parent's completion committed) and, with ``timestamps``, by
    transition ``create_time``; and no attempt starts before every parent's last attempt ended.
    """
    deps = {s.name: list(s.depends_on) for s in task.steps}
    satisfied_at: dict[str, tuple[int, datetime | None]] = {}
    first_enqueued: dict[str, tuple[int, datetime | None]] = {}
    for i, t in enumerate(task.transitions):
        if not t.step_name:
            continue
        if t.to_state in _SATISFIED and t.step_name not in satisfied_at:
            satisfied_at[t.step_name] = (i, _time(t.create_time))
        if t.to_state == "enqueued" and t.step_name not in first_enqueued:
            first_enqueued[t.step_name] = (i, _time(t.create_time))
    problems = []
    for name, (index, when) in first_enqueued.items():
        for parent in deps.get(name, []):
            if parent not in satisfied_at:
                problems.append(f"step {name} was enqueued but its parent {parent} never finished")
                continue
            p_index, p_when = satisfied_at[parent]
            if index < p_index:
                problems.append(
                    f"step {name} enqueued (transition #{index}) before parent {parent} "
                    f"finished (transition #{p_index})"
                )
            if timestamps and when is not None and p_when is not None and when < p_when:
                problems.append(
                    f"step {name} enqueued at {when.isoformat()} before parent {parent} "
                    f"finished at {p_when.isoformat()}"
                )
    ends = {
        s.name: max((_time(a.end_time) for a in s.attempt_history if _time(a.end_time)),
                    default=None)
        for s in task.steps
    }
    for s in task.steps:
        for a in s.attempt_history:
            start = _time(a.start_time)
            for parent in deps.get(s.name, []):
                end = ends.get(parent)
                if start is not None and end is not None and start < end:
                    problems.append(
                        f"step {s.name} attempt {a.attempt} started at {start.isoformat()} "
                        f"before parent {parent} ended at {end.isoformat()}"
                    )
    return problems
