"""Task templates: parse and validate YAML into frozen definitions.

Format (every field below is the complete set; anything else is an "unknown field")::

    name: order_fulfillment            # required, [a-z0-9_.-]{1,128}
    namespace: fulfillment             # required, [a-z0-9_.-]{1,64}
    version: 1.0.0                     # required, MAJOR.MINOR.PATCH
    description: Fulfil an order       # optional
    input_schema: {type: object}       # optional JSON Schema (draft 2020-12)
    orchestration:
      max_parallel_steps: 10           # optional, 1..1000; absent = unlimited
      timeout_seconds: 3600            # optional task deadline
    step_templates:                    # required, 1..1000 steps
      - name: validate_order           # required, unique, [A-Za-z0-9_.-]{1,128}
        handler_class: OrderValidationHandler
        depends_on_steps: []
        retry: {max_attempts: 3}       # any subset; the rest from RetryPolicy defaults
        timeout_seconds: 30            # lease / execution timeout, 0 < t <= 86400, default 300
        handler_config: {}             # any JSON object
        optional: false                # if true, exhausting retries skips instead of failing
        fallback_handler: null
        circuit_breaker: null          # key, or {key, failure_threshold, reset_timeout_seconds}
    environments:
      production:
        step_templates:
          validate_order: {retry: {...}, timeout_seconds: 60, handler_config: {...}}

Environment overrides may set ``retry`` (merged field by field over the step's policy),
``timeout_seconds``, ``handler_config`` (merged shallowly), ``fallback_handler`` and
``circuit_breaker``. They never change the graph.

``parse_template`` reports every problem at once as one ``InvalidArgument``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from tasker_server.domain import dag
from tasker_server.domain.errors import FieldViolation, InvalidArgument
from tasker_server.domain.limits import DEFAULT_LIMITS, Limits
from tasker_server.domain.retry import RetryPolicy, validate_retry_policy
from tasker_server.domain.template_schema import YAML_FIELD, Collector, join, load_yaml

__all__ = [
    "DEFAULT_STEP_TIMEOUT_SECONDS",
    "MAX_STEPS",
    "StepDefinition",
    "TemplateDefinition",
    "content_hash",
    "parse_template",
    "validate_input",
    "validate_template",
    "version_key",
]

DEFAULT_STEP_TIMEOUT_SECONDS = 300.0
MAX_STEP_TIMEOUT_SECONDS = 86_400.0
MAX_STEPS = DEFAULT_LIMITS.steps_per_template
MAX_PARALLEL_STEPS_LIMIT = 1000

_NAME = re.compile(r"[a-z0-9_.-]+")
_STEP_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_HANDLER = re.compile(r"\S+")
_SEMVER = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")

_TOP_KEYS = (
    "name", "namespace", "version", "description", "input_schema", "orchestration",
    "step_templates", "environments",
)  # fmt: skip
_ORCH_KEYS = ("max_parallel_steps", "timeout_seconds")
_STEP_KEYS = (
    "name", "handler_class", "depends_on_steps", "retry", "timeout_seconds", "handler_config",
    "optional", "fallback_handler", "circuit_breaker",
)  # fmt: skip
_OVERRIDE_KEYS = (
    "retry", "timeout_seconds", "handler_config", "fallback_handler", "circuit_breaker",
)  # fmt: skip
_RETRY_KEYS = tuple(RetryPolicy().to_dict())
_BREAKER_KEYS = ("key", "failure_threshold", "reset_timeout_seconds")

Json = dict[str, Any]


def version_key(version: str) -> tuple[int, int, int]:
    """Sort key for MAJOR.MINOR.PATCH: ``version_key('1.10.0') > version_key('1.9.0')``."""
    m = _SEMVER.fullmatch(version)
    if m is None:
        raise ValueError(f"not a MAJOR.MINOR.PATCH version: {version!r}")
    return int(m[1]), int(m[2]), int(m[3])


@dataclass(frozen=True, slots=True)
class StepDefinition:
    name: str
    handler_class: str
    depends_on_steps: tuple[str, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_seconds: float = DEFAULT_STEP_TIMEOUT_SECONDS
    handler_config: Json = field(default_factory=dict)
    optional: bool = False
    fallback_handler: str | None = None
    # Steps share a breaker by key; by default one breaker per handler class.
    breaker_key: str = ""
    # None = the server's configured breaker defaults.
    breaker_failure_threshold: int | None = None
    breaker_reset_timeout_seconds: float | None = None

    def to_dict(self) -> Json:
        return {
            "name": self.name,
            "handler_class": self.handler_class,
            "depends_on_steps": list(self.depends_on_steps),
            "retry": self.retry.to_dict(),
            "timeout_seconds": self.timeout_seconds,
            "handler_config": self.handler_config,
            "optional": self.optional,
            "fallback_handler": self.fallback_handler,
            "circuit_breaker": {
                "key": self.breaker_key or self.handler_class,
                "failure_threshold": self.breaker_failure_threshold,
                "reset_timeout_seconds": self.breaker_reset_timeout_seconds,
            },
        }


@dataclass(frozen=True, slots=True)
class TemplateDefinition:
    name: str
    namespace: str
    version: str
    steps: tuple[StepDefinition, ...]
    description: str = ""
    input_schema: Json | None = None
    max_parallel_steps: int | None = None
    timeout_seconds: float | None = None
    # Validated raw overrides: environment -> step name -> override mapping.
    environments: dict[str, dict[str, Json]] = field(default_factory=dict)
    # The environment whose overrides were applied to ``steps``; None for the stored base.
    environment: str | None = None

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    @property
    def dependencies(self) -> dict[str, tuple[str, ...]]:
        return {s.name: s.depends_on_steps for s in self.steps}

    def step(self, name: str) -> StepDefinition:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def sequence_numbers(self) -> dict[str, int]:
        return dag.sequence_numbers(self.step_names, self.dependencies)

    def for_environment(self, environment: str | None) -> TemplateDefinition:
        """This (base) definition with ``environment``'s overrides applied.

        An environment without overrides is valid and changes nothing but ``environment``.
        """
        if environment is None or environment == self.environment:
            return self
        if self.environment is not None:
            raise ValueError("overrides are applied to the base definition only")
        overrides = self.environments.get(environment, {})
        steps = tuple(
            _apply_override(s, overrides[s.name]) if s.name in overrides else s for s in self.steps
        )
        return replace(self, steps=steps, environment=environment)

    def to_dict(self) -> Json:
        """Plain-JSON form for storage; ``from_dict(to_dict())`` round-trips, and it is valid YAML
        template input too."""
        out: Json = {
            "name": self.name,
            "namespace": self.namespace,
            "version": self.version,
            # None rather than "": an empty description is not valid template input.
            "description": self.description or None,
            "input_schema": self.input_schema,
            "orchestration": {
                "max_parallel_steps": self.max_parallel_steps,
                "timeout_seconds": self.timeout_seconds,
            },
            "step_templates": [s.to_dict() for s in self.steps],
            "environments": {
                env: {"step_templates": steps} for env, steps in self.environments.items()
            },
        }
        if self.environment is not None:
            out["environment"] = self.environment
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TemplateDefinition:
        data = dict(data)
        environment = data.pop("environment", None)
        return _parse_document(data).for_environment(environment)


def content_hash(defn: TemplateDefinition) -> str:
    """sha256 hex of the canonical JSON of the definition.

    Hash the base (``parse_template(text)`` without an environment): formatting, comments, key
    order and spelling out defaults do not change it; any semantic change does.
    """
    canonical = json.dumps(defn.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_template(yaml_text: str, limits: Limits = DEFAULT_LIMITS) -> list[FieldViolation]:
    """Every problem with the template (empty list if valid); never raises for bad input."""
    try:
        parse_template(yaml_text, limits=limits)
    except InvalidArgument as exc:
        return exc.violations
    return []


def parse_template(
    yaml_text: str, environment: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> TemplateDefinition:
    """Parse and validate; raise InvalidArgument listing every problem found."""
    data, violations = load_yaml(yaml_text, limits)
    if data is None and violations:
        raise InvalidArgument("invalid template YAML", violations, reason="INVALID_TEMPLATE")
    try:
        defn = _parse_document(data, limits.steps_per_template)
    except InvalidArgument as exc:
        exc.violations[:0] = violations
        raise
    if violations:
        raise InvalidArgument("invalid template", violations, reason="INVALID_TEMPLATE")
    return defn.for_environment(environment)


def validate_input(defn: TemplateDefinition, value: Any) -> list[FieldViolation]:
    """Check a task's input against the template's ``input_schema`` (no schema: anything goes)."""
    if defn.input_schema is None:
        return []
    validator = Draft202012Validator(defn.input_schema)
    out = []
    for err in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.path))):
        path = "input"
        for part in err.absolute_path:
            path = join(path, part if isinstance(part, int) else str(part))
        if err.validator == "required":
            # jsonschema reports a missing property on its parent object; name the property.
            missing = [
                p
                for p in err.validator_value
                if isinstance(err.instance, dict) and p not in err.instance
            ]
            for prop in missing:
                if f"'{prop}'" in err.message:
                    path = join(path, str(prop))
                    break
        out.append(FieldViolation(path, err.message))
    return out


# --- parsing -------------------------------------------------------------------------------------


def _parse_document(data: Any, max_steps: int | None = None) -> TemplateDefinition:
    c = Collector()
    if not isinstance(data, dict):
        problem = "is empty" if data is None else "must be a mapping at the top level"
        c.add(YAML_FIELD, f"template {problem}")
        raise InvalidArgument("invalid template", c.violations, reason="INVALID_TEMPLATE")
    doc = c.mapping(data, "")
    assert doc is not None
    c.unknown_keys(doc, _TOP_KEYS, "")

    name = c.string(doc, "name", "", required=True, pattern=_NAME, max_len=128)
    namespace = c.string(doc, "namespace", "", required=True, pattern=_NAME, max_len=64)
    version = c.string(
        doc, "version", "", required=True, pattern=_SEMVER, hint=" (MAJOR.MINOR.PATCH, quoted)"
    )
    description = c.string(doc, "description", "") or ""
    input_schema = c.json_object(doc, "input_schema", "")
    if input_schema is not None:
        try:
            Draft202012Validator.check_schema(input_schema)
        except SchemaError as exc:
            where = join("input_schema", ".".join(str(p) for p in exc.path)) if exc.path else ""
            c.add(where or "input_schema", f"invalid JSON Schema: {exc.message}")
            input_schema = None

    max_parallel = timeout = None
    if doc.get("orchestration") is not None:
        orch = c.mapping(doc["orchestration"], "orchestration")
        if orch is not None:
            c.unknown_keys(orch, _ORCH_KEYS, "orchestration")
            max_parallel = c.integer(
                orch, "max_parallel_steps", "orchestration", lo=1, hi=MAX_PARALLEL_STEPS_LIMIT
            )
            timeout = c.number(orch, "timeout_seconds", "orchestration", gt=0)

    steps = _parse_steps(c, doc.get("step_templates"), max_steps)
    environments = _parse_environments(c, doc.get("environments"), steps)

    if c.violations:
        raise InvalidArgument("invalid template", c.violations, reason="INVALID_TEMPLATE")
    assert name is not None and namespace is not None and version is not None
    return TemplateDefinition(
        name=name,
        namespace=namespace,
        version=version,
        steps=tuple(steps.values()),
        description=description,
        input_schema=input_schema,
        max_parallel_steps=max_parallel,
        timeout_seconds=timeout,
        environments=environments,
    )


def _parse_steps(c: Collector, raw: Any, max_steps: int | None) -> dict[str, StepDefinition]:
    """Valid steps by name, in template order; problems go to ``c``."""
    if raw is None:
        c.add("step_templates", "is required")
        return {}
    if not isinstance(raw, list):
        c.add("step_templates", "must be a list of steps")
        return {}
    if not raw:
        c.add("step_templates", "must contain at least one step")
        return {}
    if max_steps is not None and len(raw) > max_steps:
        c.add("step_templates", f"must contain at most {max_steps} steps, got {len(raw)}")
        return {}

    steps: dict[str, StepDefinition] = {}
    index_of: dict[str, int] = {}
    for i, item in enumerate(raw):
        path = join("step_templates", i)
        step_name = item.get("name") if isinstance(item, dict) else None
        if isinstance(step_name, str) and step_name in index_of:
            c.add(
                join(path, "name"),
                f"duplicate step name {step_name!r} (first at "
                f"step_templates[{index_of[step_name]}])",
            )
            continue
        step = _parse_step(c, item, path, known_keys=_STEP_KEYS)
        if isinstance(step_name, str):
            index_of[step_name] = i
        if step is not None:
            steps[step.name] = step

    # Graph checks need every name first (a dependency may be declared later in the list).
    names = list(index_of)
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("depends_on_steps"), list):
            continue
        for j, dep in enumerate(item["depends_on_steps"]):
            p = join(join(join("step_templates", i), "depends_on_steps"), j)
            if not isinstance(dep, str):
                continue  # reported by _parse_step
            if dep == item.get("name"):
                c.add(p, f"step {dep!r} cannot depend on itself")
            elif dep not in index_of:
                c.add(p, f"unknown step {dep!r}")
    deps = {
        n: [d for d in (steps[n].depends_on_steps if n in steps else ()) if d != n] for n in names
    }
    cycle = dag.find_cycle(names, deps)
    if cycle is not None:
        c.add(join(join("step_templates", index_of[cycle[0]]), "depends_on_steps"),
              dag.format_cycle(cycle))  # fmt: skip
    return steps


def _parse_step(
    c: Collector, item: Any, path: str, *, known_keys: tuple[str, ...]
) -> StepDefinition | None:
    before = len(c.violations)
    raw = c.mapping(item, path)
    if raw is None:
        return None
    c.unknown_keys(raw, known_keys, path)
    name = c.string(raw, "name", path, required=True, pattern=_STEP_NAME, max_len=128)
    handler = c.string(raw, "handler_class", path, required=True, pattern=_HANDLER, max_len=256)

    depends: list[str] = []
    raw_deps = raw.get("depends_on_steps")
    if raw_deps is not None and not isinstance(raw_deps, list):
        c.add(join(path, "depends_on_steps"), "must be a list of step names")
    for j, dep in enumerate(raw_deps if isinstance(raw_deps, list) else []):
        p = join(join(path, "depends_on_steps"), j)
        if not isinstance(dep, str):
            c.add(p, "must be a step name (string)")
        elif dep in depends:
            c.add(p, f"duplicate dependency {dep!r}")
        else:
            depends.append(dep)

    retry = _parse_retry(c, raw.get("retry"), join(path, "retry"), RetryPolicy())
    timeout = c.number(raw, "timeout_seconds", path, gt=0, le=MAX_STEP_TIMEOUT_SECONDS)
    config = c.json_object(raw, "handler_config", path) or {}
    optional = c.boolean(raw, "optional", path) or False
    fallback = c.string(raw, "fallback_handler", path, pattern=_HANDLER, max_len=256)
    breaker = _parse_breaker(c, raw.get("circuit_breaker"), join(path, "circuit_breaker"))

    if len(c.violations) > before or name is None or handler is None or retry is None:
        return None
    key, threshold, reset = breaker
    return StepDefinition(
        name=name,
        handler_class=handler,
        depends_on_steps=tuple(depends),
        retry=retry,
        timeout_seconds=timeout if timeout is not None else DEFAULT_STEP_TIMEOUT_SECONDS,
        handler_config=config,
        optional=optional,
        fallback_handler=fallback,
        breaker_key=key or handler,
        breaker_failure_threshold=threshold,
        breaker_reset_timeout_seconds=reset,
    )


def _parse_retry(c: Collector, raw: Any, path: str, base: RetryPolicy) -> RetryPolicy | None:
    """``base`` with the fields in ``raw`` replaced; None (and violations) if invalid."""
    if raw is None:
        return base
    m = c.mapping(raw, path)
    if m is None:
        return None
    before = len(c.violations)
    c.unknown_keys(m, _RETRY_KEYS, path)
    fields: dict[str, Any] = {}
    for key in _RETRY_KEYS:
        # Type-check here; ranges are checked once, by validate_retry_policy, below.
        value = c.integer(m, key, path) if key == "max_attempts" else c.number(m, key, path)
        if value is not None:
            fields[key] = value
    reported = {v.field for v in c.violations[before:]}
    problems = [
        v for v in validate_retry_policy(replace(base, **fields), path) if v.field not in reported
    ]
    c.violations.extend(problems)
    if len(c.violations) > before:
        return None
    return replace(base, **fields)


def _parse_breaker(
    c: Collector, raw: Any, path: str
) -> tuple[str | None, int | None, float | None]:
    if raw is None:
        return None, None, None
    if isinstance(raw, str):
        if not raw:
            c.add(path, "must not be empty")
        return raw or None, None, None
    m = c.mapping(raw, path)
    if m is None:
        return None, None, None
    c.unknown_keys(m, _BREAKER_KEYS, path)
    return (
        c.string(m, "key", path, max_len=256),
        c.integer(m, "failure_threshold", path, lo=1),
        c.number(m, "reset_timeout_seconds", path, gt=0),
    )


def _parse_environments(
    c: Collector, raw: Any, steps: Mapping[str, StepDefinition]
) -> dict[str, dict[str, Json]]:
    if raw is None:
        return {}
    envs = c.mapping(raw, "environments")
    out: dict[str, dict[str, Json]] = {}
    for env, body in (envs or {}).items():
        env_path = join("environments", env)
        m = c.mapping(body, env_path)
        if m is None:
            continue
        c.unknown_keys(m, ("step_templates",), env_path)
        overrides_path = join(env_path, "step_templates")
        overrides = c.mapping(m.get("step_templates") or {}, overrides_path) or {}
        valid: dict[str, Json] = {}
        for step_name, override in overrides.items():
            p = join(overrides_path, step_name)
            o = c.mapping(override, p)
            if o is None:
                continue
            if step_name not in steps:
                c.add(p, f"unknown step {step_name!r}")
                continue
            before = len(c.violations)
            c.unknown_keys(o, _OVERRIDE_KEYS, p)
            # Validate by building the overridden step, with paths pointing at the override.
            merged = _merge(steps[step_name].to_dict(), o)
            merged_step = _parse_step(c, merged, p, known_keys=_STEP_KEYS)
            if merged_step is not None and len(c.violations) == before:
                valid[step_name] = o
        out[env] = valid
    return out


def _merge(step: Json, override: Mapping[str, Any]) -> Json:
    merged = dict(step)
    for key, value in override.items():
        if key == "retry" and isinstance(value, dict):
            merged["retry"] = {**step["retry"], **value}
        elif key == "handler_config" and isinstance(value, dict):
            merged["handler_config"] = {**step["handler_config"], **value}
        elif key == "circuit_breaker":
            merged["circuit_breaker"] = value
        elif key in _OVERRIDE_KEYS:
            merged[key] = value
    return merged


def _apply_override(step: StepDefinition, override: Mapping[str, Any]) -> StepDefinition:
    c = Collector()
    built = _parse_step(c, _merge(step.to_dict(), override), step.name, known_keys=_STEP_KEYS)
    if built is None:  # overrides were validated at parse time; reaching here is a bug
        raise InvalidArgument("invalid environment override", c.violations)
    return built
