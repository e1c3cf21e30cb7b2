"""Low-level pieces of template validation: YAML loading and a violation collector.

Template parsing reports *every* problem at once, so instead of raising on the first bad field the
parser reads the YAML tree through a ``Collector`` that records a ``FieldViolation`` (with a path
such as ``step_templates[1].retry.max_attempts``) and returns ``None`` for the bad value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from tasker_server.domain.errors import FieldViolation
from tasker_server.domain.limits import DEFAULT_LIMITS, Limits

__all__ = [
    "YAML_FIELD",
    "Collector",
    "join",
    "json_problem",
    "load_yaml",
]

# Field name used for problems in the YAML text itself (syntax, duplicate keys): they have no
# path inside the document. The API layer may rename it to the request field carrying the YAML.
YAML_FIELD = "yaml"


def join(path: str, key: str | int) -> str:
    """``join('a', 'b') == 'a.b'``, ``join('a', 2) == 'a[2]'``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _where(mark: yaml.Mark | None) -> str:
    # PyYAML marks are 0-based; editors and humans count from 1.
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader for untrusted text: expansion, depth and node count bounded while composing,
    recursive aliases refused, and duplicate mapping keys recorded instead of silently keeping the
    last one.

    Aliases are legitimate (PyYAML's own dumper writes them for repeated values), but a few
    hundred bytes of nested aliases stand for billions of nodes ("billion laughs"): whatever
    walks the result later -- validation, JSON encoding -- expands them. So every node counts
    with its expanded size: an alias adds the size of the node it repeats, and the document is
    refused at the first alias or node that takes the total past ``template_nodes``, or the
    expanded depth past ``nesting_depth``, before anything was expanded or recursed into. A
    duplicated ``retry:`` would otherwise drop half of a step's settings without a word.
    """

    def __init__(self, stream: str, limits: Limits) -> None:
        super().__init__(stream)
        self.duplicates: list[FieldViolation] = []
        self._limits = limits
        self._depth = 0  # collections open around the current node
        self._nodes = 0  # nodes so far, aliases counted expanded
        # id(node) -> (expanded size, expanded height) of every node composed so far.
        self._shapes: dict[int, tuple[int, int]] = {}

    def _refuse(self, problem: str, mark: Any) -> None:
        raise yaml.composer.ComposerError(None, None, problem, mark)

    def _count(self, size: int, height: int, mark: Any) -> None:
        self._nodes += size
        if self._nodes > self._limits.template_nodes:
            self._refuse(
                f"the template has more than {self._limits.template_nodes} YAML nodes "
                "(aliases counted expanded)",
                mark,
            )
        if self._depth + height > self._limits.nesting_depth:
            self._refuse(
                f"lists and mappings nest more than {self._limits.nesting_depth} levels", mark
            )

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            shape = self._shapes.get(id(node))
            if shape is None:  # the alias is inside the node it names: a cycle
                self._refuse("recursive alias: a node cannot contain itself", mark)
            assert shape is not None
            self._count(*shape, mark)
            return node
        collection = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        self._count(1, int(collection), mark)
        if not collection:
            node = super().compose_node(parent, index)
            self._shapes[id(node)] = (1, 0)
            return node
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        assert node is not None
        children: list[Any] = (
            [n for pair in node.value for n in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        shapes = [self._shapes[id(child)] for child in children]
        self._shapes[id(node)] = (
            1 + sum(size for size, _ in shapes),
            1 + max((height for _, height in shapes), default=0),
        )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key; the base constructor reports it
                continue
            if duplicate:
                self.duplicates.append(
                    FieldViolation(
                        YAML_FIELD, f"{_where(key_node.start_mark)}duplicate key {_short(key)}"
                    )
                )
        return super().construct_mapping(node, deep=deep)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _short(value: Any, limit: int = 80) -> str:
    return _clip(repr(value), limit)


def _reader_problem(text: str, exc: yaml.reader.ReaderError) -> FieldViolation:
    # The reader rejects NUL and other control characters before any mark exists: locate the
    # character from its offset.
    pos = max(0, min(exc.position, len(text)))
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return FieldViolation(
        YAML_FIELD,
        f"line {line}, column {column}: character U+{exc.character:04X} is not allowed "
        "(control characters other than tab and newline)",
    )


def load_yaml(text: str, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, list[FieldViolation]]:
    """Parse one YAML document. Returns (data, violations); data is None if unparseable.

    Never raises for bad input: syntax errors, control characters, recursive aliases and
    documents past ``limits`` become violations naming ``yaml`` with a line and column.
    """
    try:
        loader = _StrictLoader(text, limits)
    except yaml.reader.ReaderError as exc:
        return None, [_reader_problem(text, exc)]
    try:
        data = loader.get_single_data()
    except yaml.reader.ReaderError as exc:
        return None, [_reader_problem(text, exc)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        return None, [FieldViolation(YAML_FIELD, f"{_where(mark)}{_clip(problem, 200)}")]
    except yaml.YAMLError as exc:
        return None, [FieldViolation(YAML_FIELD, f"invalid YAML: {_clip(str(exc), 200)}")]
    except RecursionError:  # pragma: no cover - the depth limit comes first
        return None, [FieldViolation(YAML_FIELD, "the document nests too deeply")]
    finally:
        loader.dispose()
    return data, loader.duplicates


def json_problem(value: Any, path: str = "") -> tuple[str, str] | None:
    """First (path, problem) making ``value`` not plain JSON, or None.

    YAML can express dates, sets and non-string keys; stored templates and handler_config must
    survive a JSON round trip unchanged.
    """
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        p, v = stack.pop()
        if v is None or isinstance(v, str | bool | int):
            continue
        if isinstance(v, float):
            if not math.isfinite(v):
                return p, "must be a finite number"
            continue
        if isinstance(v, list):
            stack.extend((join(p, i), item) for i, item in enumerate(v))
            continue
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    return p, f"keys must be strings, got {k!r}"
                stack.append((join(p, k), item))
            continue
        return p, f"must be JSON (string, number, boolean, null, list, object), got {_kind(v)}"
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


class Collector:
    """Typed getters over a parsed YAML tree that record violations instead of raising."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def unknown_keys(self, obj: Mapping[Any, Any], allowed: Iterable[str], path: str) -> None:
        allowed_set = set(allowed)
        for key in obj:
            if key not in allowed_set:
                self.add(
                    join(path, str(key)),
                    f"unknown field; expected one of: {', '.join(sorted(allowed_set))}",
                )

    def mapping(self, value: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.add(path, f"must be a mapping, got {_kind(value)}")
            return None
        bad = [k for k in value if not isinstance(k, str)]
        for k in bad:
            self.add(join(path, str(k)), "keys must be strings")
        return {k: v for k, v in value.items() if isinstance(k, str)}

    def string(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        max_len: int | None = None,
        hint: str = "",
    ) -> str | None:
        p = join(path, key)
        value = obj.get(key)
        if value is None:
            if required:
                self.add(p, "is required")
            return None
        if not isinstance(value, str):
            self.add(p, f"must be a string, got {_kind(value)}{hint}")
            return None
        if not value:
            self.add(p, "must not be empty")
            return None
        if max_len is not None and len(value) > max_len:
            self.add(p, f"must be at most {max_len} characters")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.add(p, f"{value!r} must match {pattern.pattern}{hint}")
            return None
        return value

    def integer(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        lo: int | None = None,
        hi: int | None = None,
    ) -> int | None:
        p = join(path, key)
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(p, f"must be an integer, got {_kind(value)}")
            return None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            lo_s = f">= {lo}" if lo is not None else ""
            hi_s = f"<= {hi}" if hi is not None else ""
            self.add(p, f"must be {' and '.join(x for x in (lo_s, hi_s) if x)}, got {value}")
            return None
        return value

    def number(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        gt: float | None = None,
        le: float | None = None,
    ) -> float | None:
        """A finite number, optionally with ``gt < value <= le``; returned as float."""
        p = join(path, key)
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(p, f"must be a number, got {_kind(value)}")
            return None
        if not math.isfinite(value):
            self.add(p, "must be a finite number")
            return None
        if (gt is not None and value <= gt) or (le is not None and value > le):
            lo = f"> {gt:g}" if gt is not None else ""
            hi = f"<= {le:g}" if le is not None else ""
            self.add(p, f"must be {' and '.join(x for x in (lo, hi) if x)}, got {value}")
            return None
        return float(value)

    def boolean(self, obj: Mapping[str, Any], key: str, path: str) -> bool | None:
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.add(join(path, key), f"must be true or false, got {_kind(value)}")
            return None
        return value

    def json_object(self, obj: Mapping[str, Any], key: str, path: str) -> dict[str, Any] | None:
        p = join(path, key)
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.add(p, f"must be a mapping, got {_kind(value)}")
            return None
        problem = json_problem(value, p)
        if problem is not None:
            self.add(*problem)
            return None
        return value
