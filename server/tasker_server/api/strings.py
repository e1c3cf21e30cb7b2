"""Rules every string in every request obeys, checked once for all RPCs (by DecodingInterceptor).

- No NUL character anywhere, Struct keys and values included: PostgreSQL's text and jsonb cannot
  hold U+0000, so a NUL would fail in the database (an INTERNAL) instead of at the door.
- Fields named in ``MAX_LENGTHS`` are at most that many characters: they end up in columns of
  that size (``store/models.py``), whatever message carries them. A field of the same name in
  several messages has the smallest of their bounds.

- Repeated fields named in ``MAX_ITEMS`` hold at most that many entries: each entry becomes a
  bound parameter of one query (SQLite allows 32,766 per statement).

Problems name the field by its path in the request (``hello.sdk_version``, ``context.a[2]``) and,
for multi-line text such as template YAML, the line and column.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.message import Message

from tasker_server.domain import errors

__all__ = ["MAX_ITEMS", "MAX_LENGTHS", "check_strings"]

MAX_LENGTHS = {
    "namespace": 64,
    "namespaces": 64,
    "template_name": 128,
    "name": 128,
    "template_version": 32,
    "version": 32,
    "step_name": 128,
    "actor": 255,
    "worker_id": 64,
    "sdk_language": 32,
    "sdk_version": 64,
    "error_type": 256,
    "key": 256,
    "keys": 256,
    "handlers": 256,
    "event_names": 64,
    "idempotency_key": 255,
    "correlation_id": 255,
}

MAX_ITEMS = {
    "namespaces": 100,
    "event_names": 100,
    "handlers": 1000,
    "keys": 1000,
    "lease_ids": 10_000,
    "held_leases": 10_000,
}


def _nul(path: str, text: str) -> errors.FieldViolation:
    at = text.index("\x00")
    where = ""
    if "\n" in text:
        line = text.count("\n", 0, at) + 1
        where = f" at line {line}, column {at - (text.rfind(chr(10), 0, at) + 1) + 1}"
    return errors.FieldViolation(path, f"contains a NUL character{where}")


def _string(path: str, name: str, text: str, out: list[errors.FieldViolation]) -> None:
    if "\x00" in text:
        out.append(_nul(path, text))
    limit = MAX_LENGTHS.get(name)
    if limit is not None and len(text) > limit:
        out.append(errors.FieldViolation(path, f"must be at most {limit} characters"))


def _json(path: str, value: Any, out: list[errors.FieldViolation]) -> None:
    # Struct / ListValue / Value contents: NUL only (their keys and values have no column).
    stack = [(path, value)]
    while stack and len(out) < 10:
        p, v = stack.pop()
        if isinstance(v, struct_pb2.Struct):
            for key, item in v.fields.items():
                child = f"{p}.{key[:40]}"
                if "\x00" in key:
                    out.append(errors.FieldViolation(child, "key contains a NUL character"))
                stack.append((child, item))
        elif isinstance(v, struct_pb2.ListValue):
            stack.extend((f"{p}[{i}]", item) for i, item in enumerate(v.values))
        elif isinstance(v, struct_pb2.Value):
            kind = v.WhichOneof("kind")
            if kind == "string_value" and "\x00" in v.string_value:
                out.append(_nul(p, v.string_value))
            elif kind in ("struct_value", "list_value"):
                stack.append((p, getattr(v, kind)))


def _message(path: str, message: Message, out: list[errors.FieldViolation]) -> None:
    if isinstance(message, struct_pb2.Struct | struct_pb2.ListValue | struct_pb2.Value):
        _json(path, message, out)
        return
    for field, value in message.ListFields():
        p = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(key, str):
                    _string(f"{p}[{key[:40]!r}]", field.name, key, out)
                if isinstance(item, Message):
                    _message(f"{p}[{str(key)[:40]!r}]", item, out)
                elif isinstance(item, str):
                    _string(f"{p}[{str(key)[:40]!r}]", field.name, item, out)
        elif field.is_repeated:
            most = MAX_ITEMS.get(field.name)
            if most is not None and len(value) > most:
                out.append(errors.FieldViolation(p, f"must have at most {most} entries"))
                continue
            for i, item in enumerate(value):
                if isinstance(item, Message):
                    _message(f"{p}[{i}]", item, out)
                elif isinstance(item, str):
                    _string(f"{p}[{i}]", field.name, item, out)
        elif isinstance(value, Message):
            _message(p, value, out)
        elif isinstance(value, str):
            _string(p, field.name, value, out)


def check_strings(request: Message) -> None:
    """INVALID_ARGUMENT naming each string of ``request`` that breaks the rules above."""
    problems: list[errors.FieldViolation] = []
    _message("", request, problems)
    if problems:
        raise errors.InvalidArgument("invalid strings in the request", problems)
