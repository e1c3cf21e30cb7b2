"""Conversions between plain Python values and the protobuf well-known types.

JSON payloads (task context, step results, handler config, metadata) travel as
``google.protobuf.Struct``. Struct numbers are doubles, so integral numbers come back as ``int``
(``3`` stays ``3``, not ``3.0``); integers beyond 2**53 cannot round-trip and are rejected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import (  # type: ignore[import-untyped,unused-ignore]
    duration_pb2,
    struct_pb2,
    timestamp_pb2,
)

__all__ = [
    "dict_to_struct",
    "duration_to_seconds",
    "enum_name",
    "json_problem",
    "seconds_to_duration",
    "struct_to_dict",
    "timestamp_to_datetime",
    "to_timestamp",
]

_MAX_SAFE_INT = 2**53


def _kind(value: Any) -> str:
    return type(value).__name__


def json_problem(value: Any, path: str = "$") -> str | None:
    """Describe the first part of ``value`` that is not plain JSON, or None if it all is."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        p, v = stack.pop()
        if v is None or isinstance(v, str | bool):
            continue
        if isinstance(v, int):
            if abs(v) > _MAX_SAFE_INT:
                return f"{p}: integer {v} is too large for a JSON number (max 2**53)"
            continue
        if isinstance(v, float):
            if not math.isfinite(v):
                return f"{p}: {v} is not a finite number"
            continue
        if isinstance(v, list | tuple):
            stack.extend((f"{p}[{i}]", item) for i, item in enumerate(v))
            continue
        if isinstance(v, Mapping):
            for k, item in v.items():
                if not isinstance(k, str):
                    return f"{p}: keys must be strings, got {k!r}"
                stack.append((f"{p}.{k}", item))
            continue
        return f"{p}: {_kind(v)} is not JSON (use str, int, float, bool, None, list or dict)"
    return None


def _to_value(v: Any, out: struct_pb2.Value) -> None:
    if v is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, int | float):
        out.number_value = float(v)
    elif isinstance(v, str):
        out.string_value = v
    elif isinstance(v, Mapping):
        _fill_struct(v, out.struct_value)
    else:  # list or tuple (json_problem has checked)
        lst = out.list_value
        lst.SetInParent()
        for item in v:
            _to_value(item, lst.values.add())


def _fill_struct(d: Mapping[str, Any], out: struct_pb2.Struct) -> None:
    out.SetInParent()  # so an empty dict nested in a Value is {} rather than null
    for k, item in d.items():
        _to_value(item, out.fields[k])


def dict_to_struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    """A JSON object as a Struct. Raises TypeError (with the offending path) for non-JSON."""
    struct = struct_pb2.Struct()
    if value is None:
        return struct
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a dict (JSON object), got {_kind(value)}")
    problem = json_problem(value)
    if problem is not None:
        raise TypeError(problem)
    _fill_struct(value, struct)
    return struct


def _from_value(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        n = v.number_value
        if n.is_integer() and abs(n) <= _MAX_SAFE_INT:
            return int(n)
        return n
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return struct_to_dict(v.struct_value)
    if kind == "list_value":
        return [_from_value(item) for item in v.list_value.values]
    return None


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a plain dict (integral numbers as int)."""
    return {k: _from_value(v) for k, v in struct.fields.items()}


def seconds_to_duration(seconds: float | timedelta) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    if isinstance(seconds, timedelta):
        d.FromTimedelta(seconds)
    else:
        d.FromTimedelta(timedelta(seconds=seconds))
    return d


def duration_to_seconds(d: duration_pb2.Duration) -> float:
    return float(d.seconds) + float(d.nanos) / 1e9


def to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a Timestamp; naive datetimes are rejected (ambiguous)."""
    if value.tzinfo is None:
        raise ValueError("datetime must be timezone-aware (e.g. datetime.now(UTC))")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def timestamp_to_datetime(ts: timestamp_pb2.Timestamp) -> datetime | None:
    """An aware UTC datetime, or None for an unset (zero) timestamp."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return datetime.fromtimestamp(ts.seconds, tz=UTC) + timedelta(microseconds=ts.nanos // 1000)


def enum_name(enum_type: Any, value: int, prefix: str) -> str:
    """``TASK_STATE_IN_PROGRESS`` -> ``in_progress`` (unknown numbers -> ``unknown_<n>``)."""
    try:
        name: str = enum_type.Name(value)
    except ValueError:
        return f"unknown_{value}"
    return name.removeprefix(prefix).lower()
