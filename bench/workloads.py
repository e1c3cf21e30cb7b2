"""The standard workloads (DAGs), their templates and the expected result of each task.

Definitions follow /work/shared/notes/workloads.md exactly: step → the steps it depends on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasker.testing import WorkflowBuilder

__all__ = ["HANDLER", "NAMESPACE", "WORKLOADS", "Workload"]

NAMESPACE = "bench"
HANDLER = "bench_step"  # one handler name for every step


@dataclass(frozen=True)
class Workload:
    name: str
    dag: dict[str, tuple[str, ...]]  # step → its parents, in a topological order

    @property
    def steps(self) -> int:
        return len(self.dag)

    @property
    def leaves(self) -> list[str]:
        parents = {p for deps in self.dag.values() for p in deps}
        return [s for s in self.dag if s not in parents]

    @property
    def template_name(self) -> str:
        return f"bench_{self.name}"

    def template_yaml(self) -> str:
        builder = WorkflowBuilder(self.template_name, NAMESPACE, version="1.0.0")
        builder.description(f"benchmark workload {self.name}")
        for step, parents in self.dag.items():
            builder.step(step, HANDLER, list(parents))
        return builder.build()

    def step_values(self, index: int) -> dict[str, int]:
        values: dict[str, int] = {}
        for step, parents in self.dag.items():
            if parents:
                values[step] = 1 + sum(values[p] for p in parents)
            else:
                values[step] = index + 1
        return values

    def expected_result(self, index: int) -> int:
        values = self.step_values(index)
        return sum(values[leaf] for leaf in self.leaves)

    def check(self, index: int, state: str, result: dict[str, Any]) -> str | None:
        """None when the task is correct, else what is wrong."""
        if state != "complete":
            return f"state {state}"
        if sorted(result) != sorted(self.leaves):
            return f"result keys {sorted(result)[:5]} are not the leaves"
        try:
            got = sum(result[leaf]["value"] for leaf in self.leaves)
        except (KeyError, TypeError) as exc:
            return f"malformed result: {exc!r}"
        want = self.expected_result(index)
        return None if got == want else f"result {got} != {want}"


def _fan(root: str, branches: list[str], join: str) -> dict[str, tuple[str, ...]]:
    dag: dict[str, tuple[str, ...]] = {root: ()}
    dag.update({b: (root,) for b in branches})
    dag[join] = tuple(branches)
    return dag


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("linear", {"A": (), "B": ("A",), "C": ("B",), "D": ("C",)}),
        Workload("diamond", {"A": (), "B": ("A",), "C": ("A",), "D": ("B", "C")}),
        Workload("fanout", _fan("A", [f"B{i}" for i in range(1, 11)], "E")),
        Workload(
            "tree",
            {"A": (), "B": ("A",), "C": ("A",), "D": ("B",), "E": ("C",), "F": ("C",)},
        ),
        Workload("wide", _fan("A", [f"B{i}" for i in range(1, 201)], "Z")),
    )
}
