"""WorkflowBuilder writes template YAML in the server's format."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tasker.testing import WorkflowBuilder, to_yaml


def _load(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _deps(doc: dict[str, Any]) -> dict[str, list[str]]:
    return {s["name"]: s["depends_on_steps"] for s in doc["step_templates"]}


def test_linear_steps_chain_and_default_handler_is_the_step_name() -> None:
    doc = _load(WorkflowBuilder("order", "fulfillment").with_linear_steps(["a", "b", "c"]).build())
    assert doc["name"] == "order" and doc["namespace"] == "fulfillment"
    assert doc["version"] == "1.0.0"  # a string, not a float
    assert _deps(doc) == {"a": [], "b": ["a"], "c": ["b"]}
    assert [s["handler_class"] for s in doc["step_templates"]] == ["a", "b", "c"]


def test_linear_steps_with_one_handler() -> None:
    doc = _load(WorkflowBuilder("t", "ns").with_linear_steps(["a", "b"], handler="noop").build())
    assert {s["handler_class"] for s in doc["step_templates"]} == {"noop"}


def test_diamond_after_linear_connects_to_the_last_step() -> None:
    text = (
        WorkflowBuilder("order", "fulfillment")
        .with_linear_steps(["validate_order"])
        .with_diamond_pattern(["check_inventory", "process_payment"], convergence="ship_order")
        .build()
    )
    assert _deps(_load(text)) == {
        "validate_order": [],
        "check_inventory": ["validate_order"],
        "process_payment": ["validate_order"],
        "ship_order": ["check_inventory", "process_payment"],
    }


def test_diamond_with_explicit_after() -> None:
    b = WorkflowBuilder("t", "ns").step("root").step("other", depends_on=["root"])
    b.with_diamond_pattern(["x", "y"], convergence="z", after="root")
    assert _deps(_load(b.build()))["x"] == ["root"]


def test_fan_out_with_join() -> None:
    doc = _load(WorkflowBuilder("t", "ns").with_fan_out("a", ["b", "c", "d"], join="e").build())
    assert _deps(doc) == {"a": [], "b": ["a"], "c": ["a"], "d": ["a"], "e": ["b", "c", "d"]}


def test_step_settings_and_document_settings() -> None:
    text = (
        WorkflowBuilder("t", "ns", version="2.1.0")
        .description("Ships: orders \"fast\"")
        .input_schema({"type": "object", "required": ["order_id"]})
        .orchestration(max_parallel_steps=4)
        .step(
            "charge",
            "PaymentHandler",
            retry={"max_attempts": 5, "backoff_base_seconds": 0.5},
            timeout_seconds=30,
            handler_config={"currency": "EUR", "limits": [1, 2.5, None], "empty": {}},
            optional=True,
            fallback_handler="ManualPayment",
            circuit_breaker={"key": "stripe", "failure_threshold": 3},
        )
        .build()
    )
    doc = _load(text)
    assert doc["version"] == "2.1.0"
    assert doc["description"] == 'Ships: orders "fast"'
    assert doc["input_schema"] == {"type": "object", "required": ["order_id"]}
    assert doc["orchestration"] == {"max_parallel_steps": 4}
    step = doc["step_templates"][0]
    assert step["handler_class"] == "PaymentHandler"
    assert step["retry"] == {"max_attempts": 5, "backoff_base_seconds": 0.5}
    assert step["timeout_seconds"] == 30 and step["optional"] is True
    assert step["handler_config"] == {"currency": "EUR", "limits": [1, 2.5, None], "empty": {}}
    assert step["fallback_handler"] == "ManualPayment"
    assert step["circuit_breaker"] == {"key": "stripe", "failure_threshold": 3}


def test_duplicate_steps_and_empty_templates_are_rejected() -> None:
    with pytest.raises(ValueError):
        WorkflowBuilder("t", "ns").step("a").step("a")
    with pytest.raises(ValueError):
        WorkflowBuilder("t", "ns").build()


def test_yaml_emitter_quotes_tricky_strings_and_keys() -> None:
    doc = {"yes": "no", "a key": "1.0", "unicode": "héllo ✓", "multi": "line1\nline2: x",
           "nested": [[1, 2], {"k": []}]}
    assert yaml.safe_load(to_yaml(doc)) == doc
