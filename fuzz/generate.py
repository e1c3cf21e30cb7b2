"""Hostile requests generated from the proto descriptors.

:func:`hostile_message` fills a request message of any type, field by field from its descriptor,
with values chosen to break handlers: empty, huge, NaN and infinite, negative, out of range,
undefined enum numbers, Unicode digits, deeply nested Structs, Timestamps and Durations outside
their documented ranges. :func:`mutate` then works on the encoded bytes (flips, truncation,
insertion, invalid UTF-8 spliced into length-delimited fields) so the server also meets requests
that do not decode. Everything is drawn from one ``random.Random``: a case is replayed from its
seed alone.
"""

from __future__ import annotations

import math
import random
from typing import Any

from google.protobuf import descriptor, duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

__all__ = ["hostile_message", "mutate"]

FD = descriptor.FieldDescriptor

# Known-good values mixed in, so that generated requests also get past the first checks.
FRIENDLY = ["fuzz", "plain", "only", "h", "1", "2", "1.0.0", "fuzzer", "t"]
STRINGS = [
    "",
    " ",
    "²",
    "١٢٣",
    "-1",
    "0",
    "9" * 19,
    "9" * 400,
    "x" * 10_000,
    "%%%",
    "W10",
    "\x00",
    "\x1b[31m",
    "../../etc/passwd",
    "' OR 1=1 --",
    "a.*",
    "%",
    "_",
    "\u202e\u0645\u0631\u062d\u0628\u0627",
    "\U0001f600" * 50,
    "é" * 300,
    "name: x\nnamespace: fuzz\nversion: '1.0.0'\nstep_templates: [{name: a, handler_class: h}]",
    "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b]",
    "[" * 2000,
]
INTS = [0, 1, -1, 2, 100, 101, 500, 501, 2**31 - 1, -(2**31), 2**53, 2**63 - 1, -(2**63)]
FLOATS = [0.0, -0.0, 1.5, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324]
SECONDS = [0, -1, 1_800_000_000, 253_402_300_799, 253_402_300_800, -62_135_596_801, 2**62]
NANOS = [0, 999_999_999, 1_000_000_000, 2_000_000_000, -1, -(2**31)]

_INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}


def _string(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(FRIENDLY)
    if roll < 0.85:
        return rng.choice(STRINGS)
    return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(1, 40)))


def _int(rng: random.Random, kind: int) -> int:
    lo, hi = _INT_RANGES.get(kind, (-(2**31), 2**31 - 1))
    value = rng.choice(INTS) if rng.random() < 0.8 else rng.randint(lo, hi)
    return min(max(value, lo), hi)


def _json_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth > 0 and roll < 0.3:
        return {_string(rng)[:20]: _json_value(rng, depth - 1) for _ in range(rng.randrange(3))}
    if depth > 0 and roll < 0.45:
        return [_json_value(rng, depth - 1) for _ in range(rng.randrange(3))]
    if roll < 0.65:
        return rng.choice([*FLOATS, 1.0, 42.0])
    if roll < 0.85:
        return _string(rng)[:200]
    return rng.choice([None, True, False])


def _deep_struct(rng: random.Random) -> struct_pb2.Struct:
    """Nested past the server's limit (32) and sometimes past protobuf's (about 33 levels)."""
    depth = rng.choice([20, 31, 32, 33, 34, 40])
    inner: dict[str, Any] = {"leaf": rng.choice(FLOATS)}
    for _ in range(depth - 1):
        inner = {"a": inner} if rng.random() < 0.5 else {"a": [inner]}
    out = struct_pb2.Struct()
    out.update(inner)
    return out


def _struct(rng: random.Random, target: struct_pb2.Struct) -> None:
    roll = rng.random()
    if roll < 0.25:
        target.CopyFrom(_deep_struct(rng))
        return
    if roll < 0.3:
        target.update({"blob": "x" * rng.choice([1000, 1_100_000])})
        return
    for _ in range(rng.randrange(4)):
        key = _string(rng)[:30]
        value = _json_value(rng, 3)
        target.update({key: value})


def _well_known(rng: random.Random, message: Message) -> bool:
    """Fills the well-known types the server reads specially; False for any other message."""
    if isinstance(message, struct_pb2.Struct):
        _struct(rng, message)
    elif isinstance(message, timestamp_pb2.Timestamp | duration_pb2.Duration):
        message.seconds = rng.choice(SECONDS) * (1 if rng.random() < 0.8 else -1)
        message.nanos = rng.choice(NANOS)
    else:
        return False
    return True


def _scalar(rng: random.Random, field: Any) -> Any:
    kind = field.type
    if kind == FD.TYPE_STRING:
        return _string(rng)
    if kind == FD.TYPE_BYTES:
        return rng.randbytes(rng.choice([0, 1, 16, 1000]))
    if kind == FD.TYPE_BOOL:
        return rng.random() < 0.5
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return rng.choice(FLOATS)
    if kind == FD.TYPE_ENUM:
        defined = [v.number for v in field.enum_type.values]
        return rng.choice([*defined, *defined, 12345, 999, -1, 2**31 - 1])
    return _int(rng, kind)


def _fill(rng: random.Random, message: Message, depth: int) -> None:
    if _well_known(rng, message):
        return
    fields = message.DESCRIPTOR.fields
    oneofs_done: set[str] = set()
    for field in fields:
        oneof = field.containing_oneof
        if oneof is not None:
            if oneof.name in oneofs_done or rng.random() < 0.4:
                continue
            oneofs_done.add(oneof.name)
        elif rng.random() < 0.25:
            continue  # left at its default
        _set(rng, message, field, depth)


def _set(rng: random.Random, message: Message, field: Any, depth: int) -> None:
    target: Any = getattr(message, field.name)
    is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
    if is_map:
        key_field, value_field = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        for _ in range(rng.randrange(3)):
            key = _scalar(rng, key_field)
            if value_field.type == FD.TYPE_MESSAGE:
                if depth > 0:
                    _fill(rng, target[key], depth - 1)
            else:
                target[key] = _scalar(rng, value_field)
        return
    if field.is_repeated:
        count = rng.choice([0, 1, 2, 3, 3, 200]) if depth > 0 else 0
        for _ in range(count):
            if field.type == FD.TYPE_MESSAGE:
                _fill(rng, target.add(), depth - 1)
            else:
                target.append(_scalar(rng, field))
        return
    if field.type == FD.TYPE_MESSAGE:
        if depth > 0:
            _fill(rng, target, depth - 1)
            if not target.ByteSize():
                target.SetInParent()
        return
    setattr(message, field.name, _scalar(rng, field))


def hostile_message(rng: random.Random, message_class: type[Message], depth: int = 4) -> Message:
    """A ``message_class`` whose fields hold hostile (and some friendly) values."""
    message = message_class()
    _fill(rng, message, depth)
    return message


INVALID_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """``data`` after one to three byte-level mutations."""
    out = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        roll = rng.random()
        if roll < 0.25 and out:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif roll < 0.4 and out:
            del out[rng.randrange(len(out)) :]
        elif roll < 0.6:
            i = rng.randrange(len(out) + 1)
            out[i:i] = rng.randbytes(rng.randrange(1, 16))
        elif roll < 0.8:
            # A string field (wire type 2) of invalid UTF-8, with a random field number.
            bad = rng.choice(INVALID_UTF8) * rng.randrange(1, 4)
            number = rng.randrange(1, 16)
            out += bytes([number << 3 | 2, len(bad)]) + bad
        elif out:
            i = rng.randrange(len(out))
            out[i] = rng.choice([0x00, 0x7F, 0x80, 0xFF])
    return bytes(out)
