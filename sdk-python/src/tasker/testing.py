"""Test helpers: build template YAML from code.

::

    yaml_text = (
        WorkflowBuilder("order_fulfillment", "fulfillment")
        .with_linear_steps(["validate_order"])
        .with_diamond_pattern(
            ["check_inventory", "process_payment"], convergence="ship_order", after="validate_order"
        )
        .build()
    )

A step's handler defaults to its name. ``build()`` only assembles the document; the server is the
validator (``client.validate_template(yaml_text)`` lists every problem). The YAML is written by a
small emitter (strings are always double-quoted), so the SDK needs no YAML library.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Self

__all__ = ["WorkflowBuilder", "to_yaml"]

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class WorkflowBuilder:
    """Fluent builder of one template; every method returns ``self``."""

    def __init__(self, name: str, namespace: str, version: str = "1.0.0") -> None:
        self.name = name
        self.namespace = namespace
        self.version = version
        self._description: str | None = None
        self._input_schema: dict[str, Any] | None = None
        self._max_parallel_steps: int | None = None
        self._timeout_seconds: float | None = None
        self._steps: list[dict[str, Any]] = []

    # --- document settings ---------------------------------------------------------------------

    def description(self, text: str) -> Self:
        self._description = text
        return self

    def input_schema(self, schema: Mapping[str, Any]) -> Self:
        """JSON Schema that a task's context must match."""
        self._input_schema = dict(schema)
        return self

    def orchestration(
        self, *, max_parallel_steps: int | None = None, timeout_seconds: float | None = None
    ) -> Self:
        self._max_parallel_steps = max_parallel_steps
        self._timeout_seconds = timeout_seconds
        return self

    # --- steps ---------------------------------------------------------------------------------

    def step(
        self,
        name: str,
        handler: str | None = None,
        depends_on: Iterable[str] = (),
        **settings: Any,
    ) -> Self:
        """Add one step. ``settings`` are other step fields: ``retry={"max_attempts": 3}``,
        ``timeout_seconds=30``, ``handler_config={...}``, ``optional=True``,
        ``fallback_handler="x"``, ``circuit_breaker={...}``."""
        if any(s["name"] == name for s in self._steps):
            raise ValueError(f"duplicate step {name!r}")
        if isinstance(depends_on, str):
            depends_on = [depends_on]
        step: dict[str, Any] = {
            "name": name,
            "handler_class": handler or name,
            "depends_on_steps": list(depends_on),
        }
        step.update(settings)
        self._steps.append(step)
        return self

    def with_linear_steps(
        self,
        names: Iterable[str],
        handler: str | None = None,
        *,
        after: str | None = None,
        **settings: Any,
    ) -> Self:
        """``after -> names[0] -> names[1] -> ...`` (``after`` defaults to the last step added,
        so chained patterns connect; pass ``after=""`` for a new root)."""
        previous = self._default_after(after)
        for name in names:
            self.step(name, handler, [previous] if previous else [], **settings)
            previous = name
        return self

    def with_diamond_pattern(
        self,
        branches: Iterable[str],
        convergence: str,
        *,
        after: str | None = None,
        handler: str | None = None,
        **settings: Any,
    ) -> Self:
        """``after -> each branch (in parallel) -> convergence``."""
        root = self._default_after(after)
        branch_names = list(branches)
        for name in branch_names:
            self.step(name, handler, [root] if root else [], **settings)
        return self.step(convergence, handler, branch_names, **settings)

    def with_fan_out(
        self,
        root: str,
        branches: Iterable[str],
        *,
        join: str | None = None,
        handler: str | None = None,
        **settings: Any,
    ) -> Self:
        """``root -> each branch``, and ``-> join`` when given. ``root`` is added as a step
        unless it already exists."""
        if not any(s["name"] == root for s in self._steps):
            self.step(root, handler, **settings)
        branch_names = list(branches)
        for name in branch_names:
            self.step(name, handler, [root], **settings)
        if join is not None:
            self.step(join, handler, branch_names, **settings)
        return self

    def step_names(self) -> list[str]:
        return [s["name"] for s in self._steps]

    def _default_after(self, after: str | None) -> str | None:
        if after is None:
            return self._steps[-1]["name"] if self._steps else None
        return after or None

    # --- output --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "version": self.version,
        }
        if self._description:
            doc["description"] = self._description
        if self._input_schema is not None:
            doc["input_schema"] = self._input_schema
        orchestration: dict[str, Any] = {}
        if self._max_parallel_steps is not None:
            orchestration["max_parallel_steps"] = self._max_parallel_steps
        if self._timeout_seconds is not None:
            orchestration["timeout_seconds"] = self._timeout_seconds
        if orchestration:
            doc["orchestration"] = orchestration
        doc["step_templates"] = [dict(s) for s in self._steps]
        return doc

    def build(self) -> str:
        """The template as YAML text."""
        if not self._steps:
            raise ValueError("a template needs at least one step")
        return to_yaml(self.to_dict())


# --- a minimal YAML emitter (block style; scalars in JSON syntax, which YAML accepts) ---------


def _scalar(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} cannot be written to a template")
    if value is None or isinstance(value, bool | int | float | str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {type(value).__name__} to YAML")


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"mapping keys must be strings, got {key!r}")
    if _PLAIN_KEY.fullmatch(key) and key.lower() not in {"true", "false", "null", "yes", "no",
                                                         "on", "off", "y", "n"}:
        return key
    return json.dumps(key, ensure_ascii=False)


def _emit(value: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(v, Mapping | list | tuple) and v:
                out.append(f"{pad}{_key(k)}:")
                _emit(v, indent + 2, out)
            else:
                out.append(f"{pad}{_key(k)}: {_inline(v)}")
    else:  # non-empty list
        for item in value:
            if isinstance(item, Mapping) and item:
                lines: list[str] = []
                _emit(item, indent + 2, lines)
                out.append(f"{pad}- {lines[0].lstrip()}")
                out.extend(lines[1:])
            elif isinstance(item, list | tuple) and item:
                out.append(f"{pad}-")
                _emit(item, indent + 2, out)
            else:
                out.append(f"{pad}- {_inline(item)}")


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list | tuple):
        return "[]"
    return _scalar(value)


def to_yaml(document: Mapping[str, Any]) -> str:
    """Block-style YAML for a JSON-like mapping (strings double-quoted)."""
    out: list[str] = []
    _emit(document, 0, out)
    return "\n".join(out) + "\n"
