"""WorkflowBuilder: write template YAML from code (tests, examples, SDK users).

    yaml_text = (
        WorkflowBuilder("order_fulfillment", "fulfillment")
        .with_linear_steps(["validate", "reserve"], handler="noop")
        .with_diamond_pattern(["charge", "pack"], convergence="ship", after="reserve")
        .build()
    )

The builder only assembles the document; ``parse_template`` remains the one validator, and
``build(validate=True)`` (the default) runs it so a mistake surfaces where the template is built.
Self-contained on purpose (the SDK may vendor a copy): it depends on nothing but PyYAML and,
for validation, ``templates``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

__all__ = ["WorkflowBuilder"]


class WorkflowBuilder:
    """Fluent builder for one template; each method appends steps and returns ``self``."""

    def __init__(self, name: str, namespace: str, version: str = "1.0.0") -> None:
        self._doc: dict[str, Any] = {"name": name, "namespace": namespace, "version": version}
        self._steps: list[dict[str, Any]] = []
        self._environments: dict[str, dict[str, dict[str, Any]]] = {}

    # --- document-level settings -----------------------------------------------------------

    def description(self, text: str) -> WorkflowBuilder:
        self._doc["description"] = text
        return self

    def input_schema(self, schema: Mapping[str, Any]) -> WorkflowBuilder:
        self._doc["input_schema"] = dict(schema)
        return self

    def orchestration(
        self, *, max_parallel_steps: int | None = None, timeout_seconds: float | None = None
    ) -> WorkflowBuilder:
        orch = self._doc.setdefault("orchestration", {})
        if max_parallel_steps is not None:
            orch["max_parallel_steps"] = max_parallel_steps
        if timeout_seconds is not None:
            orch["timeout_seconds"] = timeout_seconds
        return self

    def environment(self, env: str, step: str, **overrides: Any) -> WorkflowBuilder:
        """Override ``step``'s settings (retry, timeout_seconds, handler_config, ...) in ``env``."""
        self._environments.setdefault(env, {}).setdefault(step, {}).update(overrides)
        return self

    # --- steps ----------------------------------------------------------------------------------

    def step(
        self,
        name: str,
        handler: str,
        depends_on: Iterable[str] = (),
        **opts: Any,
    ) -> WorkflowBuilder:
        """Add one step; ``opts`` are any other step fields (retry={...}, optional=True, ...)."""
        step: dict[str, Any] = {
            "name": name,
            "handler_class": handler,
            "depends_on_steps": list(depends_on),
        }
        step.update(opts)
        self._steps.append(step)
        return self

    def with_linear_steps(
        self, names: Iterable[str], handler: str, after: str | None = None, **opts: Any
    ) -> WorkflowBuilder:
        """``after -> names[0] -> names[1] -> ...``."""
        previous = after
        for name in names:
            self.step(name, handler, [previous] if previous else [], **opts)
            previous = name
        return self

    def with_fan_out(
        self, names: Iterable[str], handler: str, after: str | None = None, **opts: Any
    ) -> WorkflowBuilder:
        """Parallel steps that each depend only on ``after`` (roots if None)."""
        for name in names:
            self.step(name, handler, [after] if after else [], **opts)
        return self

    def with_fan_in(
        self, sources: Iterable[str], convergence: str, handler: str, **opts: Any
    ) -> WorkflowBuilder:
        """One step that waits for every step in ``sources``."""
        return self.step(convergence, handler, list(sources), **opts)

    def with_diamond_pattern(
        self,
        branches: Iterable[str],
        convergence: str,
        after: str | None = None,
        handler: str = "noop",
        **opts: Any,
    ) -> WorkflowBuilder:
        """``after -> each branch -> convergence``."""
        branches = list(branches)
        self.with_fan_out(branches, handler, after=after, **opts)
        return self.with_fan_in(branches, convergence, handler, **opts)

    def step_names(self) -> list[str]:
        return [s["name"] for s in self._steps]

    # --- output ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        doc = dict(self._doc)
        doc["step_templates"] = [dict(s) for s in self._steps]
        if self._environments:
            doc["environments"] = {
                env: {"step_templates": steps} for env, steps in self._environments.items()
            }
        return doc

    def build(self, *, validate: bool = True) -> str:
        """YAML text; with ``validate`` raise InvalidArgument if the template is invalid."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if validate:
            # Imported here so the builder stays usable (validate=False) where the server's
            # template module is not installed, e.g. a vendored SDK copy.
            from tasker_server.domain.templates import parse_template

            parse_template(text)
        return text
