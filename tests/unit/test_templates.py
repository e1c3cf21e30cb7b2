"""Template parsing: every problem kind, all at once, environments, hashing, the builder."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from tasker_server.domain.builder import WorkflowBuilder
from tasker_server.domain.errors import FieldViolation, InvalidArgument
from tasker_server.domain.retry import RetryPolicy
from tasker_server.domain.templates import (
    DEFAULT_STEP_TIMEOUT_SECONDS,
    TemplateDefinition,
    content_hash,
    parse_template,
    validate_input,
    validate_template,
    version_key,
)

VALID = textwrap.dedent(
    """\
    name: order_fulfillment
    namespace: fulfillment
    version: 1.0.0
    description: Fulfil an order
    input_schema:
      type: object
      required: [order_id]
      properties: {order_id: {type: integer}}
    orchestration: {max_parallel_steps: 10, timeout_seconds: 3600}
    step_templates:
      - name: validate_order
        handler_class: OrderValidationHandler
        retry: {max_attempts: 5}
        timeout_seconds: 30
        handler_config: {strict: true, region: eu}
      - name: process_payment
        handler_class: PaymentHandler
        depends_on_steps: [validate_order]
        circuit_breaker: {key: payments, failure_threshold: 3, reset_timeout_seconds: 30}
      - name: ship_order
        handler_class: ShippingHandler
        depends_on_steps: [process_payment]
        optional: true
        fallback_handler: ManualShippingHandler
        circuit_breaker: shipping
    environments:
      production:
        step_templates:
          validate_order:
            retry: {jitter: 0}
            timeout_seconds: 60
            handler_config: {region: us}
      staging: {}
    """
)

MINIMAL = """\
name: t
namespace: ns
version: 0.1.0
step_templates:
  - {name: a, handler_class: A}
"""


def fields(text: str) -> list[str]:
    return [v.field for v in validate_template(text)]


def descriptions(text: str) -> list[str]:
    return [str(v) for v in validate_template(text)]


def test_valid_template() -> None:
    d = parse_template(VALID)
    assert (d.name, d.namespace, d.version) == ("order_fulfillment", "fulfillment", "1.0.0")
    assert d.max_parallel_steps == 10 and d.timeout_seconds == 3600.0
    assert d.step_names == ["validate_order", "process_payment", "ship_order"]
    v = d.step("validate_order")
    assert v.retry == RetryPolicy(max_attempts=5)
    assert v.timeout_seconds == 30.0
    assert v.breaker_key == "OrderValidationHandler"
    p = d.step("process_payment")
    assert p.timeout_seconds == DEFAULT_STEP_TIMEOUT_SECONDS
    assert (p.breaker_key, p.breaker_failure_threshold, p.breaker_reset_timeout_seconds) == (
        "payments", 3, 30.0,
    )  # fmt: skip
    s = d.step("ship_order")
    assert s.optional and s.fallback_handler == "ManualShippingHandler"
    assert s.breaker_key == "shipping" and s.breaker_failure_threshold is None
    assert d.sequence_numbers() == {"validate_order": 1, "process_payment": 2, "ship_order": 3}


def test_minimal_defaults() -> None:
    d = parse_template(MINIMAL)
    assert d.description == "" and d.input_schema is None and d.max_parallel_steps is None
    assert d.steps[0].retry == RetryPolicy()
    assert d.steps[0].depends_on_steps == ()


@pytest.mark.parametrize(
    ("mutation", "field", "needle"),
    [
        ({"name": "Bad Name"}, "name", "must match"),
        ({"name": "x" * 129}, "name", "at most 128"),
        ({"namespace": None}, "namespace", "is required"),
        ({"version": 1.0}, "version", "must be a string"),
        ({"version": "1.0"}, "version", "must match"),
        ({"extra": 1}, "extra", "unknown field"),
        ({"description": 5}, "description", "must be a string"),
        ({"input_schema": {"type": "bogus"}}, "input_schema.type", "invalid JSON Schema"),
        ({"input_schema": []}, "input_schema", "must be a mapping"),
        ({"orchestration": {"max_parallel_steps": 0}}, "orchestration.max_parallel_steps", ">= 1"),
        ({"orchestration": {"timeout_seconds": 0}}, "orchestration.timeout_seconds", "> 0"),
        ({"orchestration": {"parallel": 2}}, "orchestration.parallel", "unknown field"),
        ({"step_templates": []}, "step_templates", "at least one step"),
        ({"step_templates": None}, "step_templates", "is required"),
        ({"step_templates": {"a": 1}}, "step_templates", "must be a list"),
        ({"environments": []}, "environments", "must be a mapping"),
    ],
)
def test_document_problems(mutation: dict[str, object], field: str, needle: str) -> None:
    doc = yaml.safe_load(MINIMAL)
    doc.update(mutation)
    violations = validate_template(yaml.safe_dump(doc))
    assert [v.field for v in violations] == [field], violations
    assert needle in violations[0].description


@pytest.mark.parametrize(
    ("step", "field", "needle"),
    [
        ({"handler": "A"}, "step_templates[1].handler", "unknown field"),
        ({"handler_class": None}, "step_templates[1].handler_class", "is required"),
        ({"handler_class": 3}, "step_templates[1].handler_class", "must be a string"),
        ({"depends_on_steps": "a"}, "step_templates[1].depends_on_steps", "must be a list"),
        ({"depends_on_steps": [1]}, "step_templates[1].depends_on_steps[0]", "step name"),
        ({"depends_on_steps": ["a", "a"]}, "step_templates[1].depends_on_steps[1]", "duplicate"),
        ({"depends_on_steps": ["b"]}, "step_templates[1].depends_on_steps[0]", "itself"),
        ({"depends_on_steps": ["zz"]}, "step_templates[1].depends_on_steps[0]", "unknown step"),
        ({"name": "a"}, "step_templates[1].name", "duplicate step name 'a'"),
        ({"retry": {"max_attempts": 0}}, "step_templates[1].retry.max_attempts", "between 1"),
        ({"retry": {"max_attempts": "3"}}, "step_templates[1].retry.max_attempts", "integer"),
        ({"retry": {"jitter": 1.5}}, "step_templates[1].retry.jitter", "between 0 and 1"),
        ({"retry": {"tries": 1}}, "step_templates[1].retry.tries", "unknown field"),
        ({"retry": 3}, "step_templates[1].retry", "must be a mapping"),
        (
            {"retry": {"backoff_base_seconds": 500}},
            "step_templates[1].retry.backoff_base_seconds",
            "max_delay_seconds",
        ),
        ({"timeout_seconds": 0}, "step_templates[1].timeout_seconds", "> 0"),
        ({"timeout_seconds": 86401}, "step_templates[1].timeout_seconds", "<= 86400"),
        ({"timeout_seconds": "30s"}, "step_templates[1].timeout_seconds", "number"),
        ({"handler_config": [1]}, "step_templates[1].handler_config", "mapping"),
        ({"optional": "yes please"}, "step_templates[1].optional", "true or false"),
        ({"fallback_handler": ""}, "step_templates[1].fallback_handler", "empty"),
        ({"circuit_breaker": {"failure_threshold": 0}},
         "step_templates[1].circuit_breaker.failure_threshold", ">= 1"),
        ({"circuit_breaker": {"reset_timeout_seconds": -1}},
         "step_templates[1].circuit_breaker.reset_timeout_seconds", "> 0"),
        ({"circuit_breaker": {"name": "x"}}, "step_templates[1].circuit_breaker.name", "unknown"),
    ],
)  # fmt: skip
def test_step_problems(step: dict[str, object], field: str, needle: str) -> None:
    doc = yaml.safe_load(MINIMAL)
    second: dict[str, object] = {"name": "b", "handler_class": "B"}
    second.update(step)
    doc["step_templates"].append({k: v for k, v in second.items() if v is not None})
    violations = validate_template(yaml.safe_dump(doc))
    assert [v.field for v in violations] == [field], violations
    assert needle in violations[0].description


def test_handler_config_must_be_json() -> None:
    text = MINIMAL + "    handler_config: {when: 2024-01-01}\n"
    text = text.replace(
        "  - {name: a, handler_class: A}\n    ", "  - name: a\n    handler_class: A\n    "
    )
    assert fields(text) == ["step_templates[0].handler_config.when"]


def test_cycle_names_steps() -> None:
    doc = yaml.safe_load(MINIMAL)
    doc["step_templates"] = [
        {"name": "a", "handler_class": "H", "depends_on_steps": ["c"]},
        {"name": "b", "handler_class": "H", "depends_on_steps": ["a"]},
        {"name": "c", "handler_class": "H", "depends_on_steps": ["b"]},
    ]
    assert validate_template(yaml.safe_dump(doc)) == [
        FieldViolation("step_templates[0].depends_on_steps", "cycle: a -> b -> c -> a")
    ]


def test_all_problems_reported_at_once() -> None:
    text = textwrap.dedent(
        """\
        name: Bad Name
        version: 1
        colour: blue
        step_templates:
          - name: a
            handler: A
            depends_on_steps: [a, ghost]
            retry: {max_attempts: 0, jitter: 2}
          - {name: b, handler_class: B, depends_on_steps: [c]}
          - {name: c, handler_class: C, depends_on_steps: [b]}
        environments:
          prod:
            step_templates:
              nope: {timeout_seconds: 1}
        """
    )
    with pytest.raises(InvalidArgument) as info:
        parse_template(text)
    got = {v.field for v in info.value.violations}
    assert got == {
        "name", "namespace", "version", "colour",
        "step_templates[0].handler", "step_templates[0].handler_class",
        "step_templates[0].retry.max_attempts", "step_templates[0].retry.jitter",
        "step_templates[0].depends_on_steps[0]", "step_templates[0].depends_on_steps[1]",
        "step_templates[1].depends_on_steps", "environments.prod.step_templates.nope",
    }  # fmt: skip
    assert info.value.reason == "INVALID_TEMPLATE"


def test_yaml_syntax_error_has_line_and_column() -> None:
    text = "name: t\nnamespace: ns\nstep_templates: [a, b\nversion: 1.0.0\n"
    [v] = validate_template(text)
    assert v.field == "yaml"
    assert v.description.startswith("line 4, column 8:"), v.description


def test_yaml_duplicate_key_reported_with_line() -> None:
    text = MINIMAL + "name: again\n"
    assert descriptions(text) == ["yaml: line 6, column 1: duplicate key 'name'"]


@pytest.mark.parametrize(("text", "needle"), [("", "empty"), ("- 1\n", "mapping")])
def test_not_a_mapping(text: str, needle: str) -> None:
    [v] = validate_template(text)
    assert v.field == "yaml" and needle in v.description


def test_environment_overrides() -> None:
    base = parse_template(VALID)
    prod = parse_template(VALID, environment="production")
    assert prod.environment == "production"
    v = prod.step("validate_order")
    assert v.retry == RetryPolicy(max_attempts=5, jitter=0.0)  # merged field by field
    assert v.timeout_seconds == 60.0
    assert v.handler_config == {"strict": True, "region": "us"}  # shallow merge
    assert prod.step("process_payment") == base.step("process_payment")
    staging = parse_template(VALID, environment="staging")
    assert staging.steps == base.steps
    assert parse_template(VALID, environment="unknown-env").steps == base.steps


def test_environment_override_problems() -> None:
    doc = yaml.safe_load(VALID)
    doc["environments"]["production"]["step_templates"] = {
        "ghost": {"timeout_seconds": 1},
        "validate_order": {"retry": {"max_attempts": 1000}, "handler_class": "X"},
    }
    p = "environments.production.step_templates"
    assert fields(yaml.safe_dump(doc)) == [
        f"{p}.ghost",
        f"{p}.validate_order.handler_class",
        f"{p}.validate_order.retry.max_attempts",
    ]


def test_content_hash_ignores_formatting_not_content() -> None:
    d = parse_template(VALID)
    reformatted = "# a comment\n" + yaml.safe_dump(yaml.safe_load(VALID), sort_keys=True, indent=4)
    assert content_hash(parse_template(reformatted)) == content_hash(d)
    # 30 and 30.0 are the same number; spelling out a default is the same content.
    explicit = VALID.replace("timeout_seconds: 30", "timeout_seconds: 30.0").replace(
        "handler_class: PaymentHandler", "handler_class: PaymentHandler\n    optional: false"
    )
    assert content_hash(parse_template(explicit)) == content_hash(d)
    changed = VALID.replace("max_attempts: 5", "max_attempts: 4")
    assert content_hash(parse_template(changed)) != content_hash(d)
    env_changed = VALID.replace("region: us", "region: ap")
    assert content_hash(parse_template(env_changed)) != content_hash(d)
    assert len(content_hash(d)) == 64


def test_dict_round_trip() -> None:
    for env in (None, "production"):
        d = parse_template(VALID, environment=env)
        again = TemplateDefinition.from_dict(d.to_dict())
        assert again == d
        assert content_hash(again) == content_hash(d)
    # The stored form is itself valid template YAML.
    base = parse_template(VALID)
    assert parse_template(yaml.safe_dump(base.to_dict())) == base


def test_validate_input() -> None:
    d = parse_template(VALID)
    assert validate_input(d, {"order_id": 1}) == []
    assert [v.field for v in validate_input(d, {"order_id": "x"})] == ["input.order_id"]
    # A missing required property is named by its own path, not its parent object.
    assert [v.field for v in validate_input(d, {})] == ["input.order_id"]
    assert validate_input(parse_template(MINIMAL), "anything") == []


def test_version_key() -> None:
    assert version_key("1.10.0") > version_key("1.9.0")
    assert version_key("2.0.0") > version_key("1.99.99")
    with pytest.raises(ValueError):
        version_key("1.0")


def test_builder_shapes() -> None:
    text = (
        WorkflowBuilder("wf", "ns")
        .with_linear_steps(["a"], handler="noop")
        .with_diamond_pattern(["b", "c"], convergence="d", after="a")
        .with_fan_out(["e", "f"], handler="noop", after="d")
        .step("g", "Final", depends_on=["e", "f"], retry={"max_attempts": 1}, optional=True)
        .orchestration(max_parallel_steps=2)
        .environment("production", "g", timeout_seconds=10)
        .build()
    )
    d = parse_template(text)
    assert d.dependencies == {
        "a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "e": ("d",), "f": ("d",),
        "g": ("e", "f"),
    }  # fmt: skip
    assert d.step("g").retry.max_attempts == 1 and d.step("g").optional
    assert parse_template(text, "production").step("g").timeout_seconds == 10


def test_builder_validates() -> None:
    with pytest.raises(InvalidArgument):
        WorkflowBuilder("wf", "ns").step("a", "H", depends_on=["zz"]).build()
    assert "zz" in WorkflowBuilder("wf", "ns").step("a", "H", ["zz"]).build(validate=False)
