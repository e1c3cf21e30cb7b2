"""Dependency-graph helpers, with hypothesis-generated DAGs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasker_server.domain.dag import (
    CycleError,
    children_of,
    find_cycle,
    format_cycle,
    leaves,
    parents_of,
    roots,
    sequence_numbers,
    topological_order,
)

DIAMOND_STEPS = ["a", "b", "c", "d"]
DIAMOND = {"b": ["a"], "c": ["a"], "d": ["b", "c"]}


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]]]:
    """Random DAG: each step may depend only on steps earlier in a hidden order, then the
    template order is shuffled so it need not be topological."""
    n = draw(st.integers(1, 30))
    hidden = [f"s{i}" for i in range(n)]
    deps = {
        s: draw(st.lists(st.sampled_from(hidden[:i]), unique=True)) if i else []
        for i, s in enumerate(hidden)
    }
    return draw(st.permutations(hidden)), deps


def test_diamond() -> None:
    assert topological_order(DIAMOND_STEPS, DIAMOND) == ["a", "b", "c", "d"]
    assert sequence_numbers(DIAMOND_STEPS, DIAMOND) == {"a": 1, "b": 2, "c": 3, "d": 4}
    assert roots(DIAMOND_STEPS, DIAMOND) == ["a"]
    assert leaves(DIAMOND_STEPS, DIAMOND) == ["d"]
    assert parents_of(DIAMOND_STEPS, DIAMOND, "d") == ["b", "c"]
    assert children_of(DIAMOND_STEPS, DIAMOND, "a") == ["b", "c"]
    assert find_cycle(DIAMOND_STEPS, DIAMOND) is None


def test_ties_broken_by_template_order() -> None:
    assert topological_order(["z", "y", "x"], {}) == ["z", "y", "x"]
    assert topological_order(["late", "early"], {"late": ["early"]}) == ["early", "late"]


def test_cycle_named_in_execution_order() -> None:
    steps = ["a", "b", "c", "d"]
    deps = {"b": ["a"], "c": ["b"], "a": ["c"], "d": []}
    assert find_cycle(steps, deps) == ["a", "b", "c"]
    assert format_cycle(["a", "b", "c"]) == "cycle: a -> b -> c -> a"
    with pytest.raises(CycleError) as info:
        topological_order(steps, deps)
    assert info.value.cycle == ["a", "b", "c"]
    assert str(info.value) == "cycle: a -> b -> c -> a"


def test_self_dependency_is_a_cycle() -> None:
    assert find_cycle(["a"], {"a": ["a"]}) == ["a"]


def test_unknown_edges_ignored() -> None:
    assert topological_order(["a"], {"a": ["ghost"]}) == ["a"]


def test_long_chain_does_not_recurse() -> None:
    steps = [f"s{i}" for i in range(5000)]
    deps = {s: [steps[i - 1]] for i, s in enumerate(steps) if i}
    assert topological_order(steps, deps) == steps
    deps["s0"] = ["s4999"]
    cycle = find_cycle(steps, deps)
    assert cycle is not None and len(cycle) == 5000 and cycle[0] == "s0"


@given(dags())
def test_topological_order_respects_edges(graph: tuple[list[str], dict[str, list[str]]]) -> None:
    steps, deps = graph
    order = topological_order(steps, deps)
    assert sorted(order) == sorted(steps)
    pos = {s: i for i, s in enumerate(order)}
    for s, ps in deps.items():
        for p in ps:
            assert pos[p] < pos[s]
    assert find_cycle(steps, deps) is None
    seq = sequence_numbers(steps, deps)
    assert sorted(seq.values()) == list(range(1, len(steps) + 1))
    assert all(not deps[r] for r in roots(steps, deps))
    assert all(not children_of(steps, deps, leaf) for leaf in leaves(steps, deps))


@given(dags(), st.data())
def test_back_edge_creates_reported_cycle(
    graph: tuple[list[str], dict[str, list[str]]], data: st.DataObject
) -> None:
    steps, deps = graph
    edges = [(p, s) for s, ps in deps.items() for p in ps]
    if not edges:
        return
    parent, child = data.draw(st.sampled_from(edges))
    deps = {**deps, parent: [*deps[parent], child]}  # parent now also waits for child
    cycle = find_cycle(steps, deps)
    assert cycle is not None
    # Every consecutive pair in the reported cycle is a real edge (x -> y: y depends on x).
    for x, y in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
        assert x in deps[y]
    with pytest.raises(CycleError):
        topological_order(steps, deps)
