"""Step dependency graphs.

Every function takes the same two arguments:

- ``steps``: step names in template order (the order breaks ties, so results are deterministic);
- ``dependencies``: step name -> names of the steps it depends on (its parents).

Edges to names not in ``steps`` are ignored here; template validation reports them. Arrows in
messages point in execution order: ``a -> b`` means b depends on a.

Traversals are iterative: a 1,000-step chain would come close to Python's recursion limit.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

__all__ = [
    "CycleError",
    "children_of",
    "find_cycle",
    "format_cycle",
    "leaves",
    "parents_of",
    "roots",
    "sequence_numbers",
    "topological_order",
]

Dependencies = Mapping[str, Sequence[str]]


class CycleError(ValueError):
    """The graph has a cycle; ``cycle`` names its steps in execution order."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__(format_cycle(cycle))
        self.cycle = cycle


def format_cycle(cycle: Sequence[str]) -> str:
    """``['a', 'b', 'c']`` -> ``'cycle: a -> b -> c -> a'``."""
    return "cycle: " + " -> ".join([*cycle, cycle[0]])


def _parents(steps: Sequence[str], dependencies: Dependencies) -> dict[str, list[str]]:
    known = set(steps)
    out: dict[str, list[str]] = {}
    for s in steps:
        seen: set[str] = set()
        ps: list[str] = []
        for p in dependencies.get(s, ()):
            if p in known and p not in seen:
                seen.add(p)
                ps.append(p)
        out[s] = ps
    return out


def _children(steps: Sequence[str], dependencies: Dependencies) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {s: [] for s in steps}
    for s, ps in _parents(steps, dependencies).items():
        for p in ps:
            out[p].append(s)
    return out


def parents_of(steps: Sequence[str], dependencies: Dependencies, step: str) -> list[str]:
    """Known, de-duplicated dependencies of ``step``, in declaration order."""
    return _parents(steps, dependencies).get(step, [])


def children_of(steps: Sequence[str], dependencies: Dependencies, step: str) -> list[str]:
    """Steps that depend directly on ``step``, in template order."""
    return _children(steps, dependencies).get(step, [])


def roots(steps: Sequence[str], dependencies: Dependencies) -> list[str]:
    """Steps with no dependencies: the ones a new task can start with."""
    parents = _parents(steps, dependencies)
    return [s for s in steps if not parents[s]]


def leaves(steps: Sequence[str], dependencies: Dependencies) -> list[str]:
    """Steps nothing depends on."""
    children = _children(steps, dependencies)
    return [s for s in steps if not children[s]]


def find_cycle(steps: Sequence[str], dependencies: Dependencies) -> list[str] | None:
    """One cycle as step names in execution order, starting at its earliest step; else None.

    A self-dependency is a one-step cycle.
    """
    index = {s: i for i, s in enumerate(steps)}
    children = _children(steps, dependencies)
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(steps, white)
    for start in steps:
        if color[start] != white:
            continue
        # Stack of (node, iterator position); `path` mirrors the grey nodes in order.
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = [start]
        color[start] = grey
        while stack:
            node, pos = stack[-1]
            kids = children[node]
            if pos == len(kids):
                stack.pop()
                path.pop()
                color[node] = black
                continue
            stack[-1] = (node, pos + 1)
            child = kids[pos]
            if color[child] == grey:
                cycle = path[path.index(child) :]
                first = min(range(len(cycle)), key=lambda i: index[cycle[i]])
                return cycle[first:] + cycle[:first]
            if color[child] == white:
                color[child] = grey
                stack.append((child, 0))
                path.append(child)
    return None


def topological_order(steps: Sequence[str], dependencies: Dependencies) -> list[str]:
    """Steps with every step after all its dependencies; ties broken by template order.

    Raises CycleError if there is none.
    """
    index = {s: i for i, s in enumerate(steps)}
    parents = _parents(steps, dependencies)
    children = _children(steps, dependencies)
    remaining = {s: len(ps) for s, ps in parents.items()}
    ready = [index[s] for s in steps if remaining[s] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        s = steps[heapq.heappop(ready)]
        order.append(s)
        for c in children[s]:
            remaining[c] -= 1
            if remaining[c] == 0:
                heapq.heappush(ready, index[c])
    if len(order) != len(steps):
        cycle = find_cycle(steps, dependencies)
        done = set(order)
        raise CycleError(cycle or [s for s in steps if s not in done])
    return order


def sequence_numbers(steps: Sequence[str], dependencies: Dependencies) -> dict[str, int]:
    """1-based position of each step in ``topological_order``."""
    return {s: i for i, s in enumerate(topological_order(steps, dependencies), start=1)}
