"""The one page-token codec of every List RPC (AIP-158).

A token is opaque to clients: URL-safe base64 (no padding) of a JSON array whose first element
names the List RPC that issued it, followed by the position to resume after. Decoding is strict:
anything that is not exactly such a token from the same RPC -- wrong alphabet, wrong shape, wrong
types, a token from another List RPC, longer than any token this server issues -- is
INVALID_ARGUMENT naming ``page_token`` rather than silently the first page.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from tasker_server.domain import errors

__all__ = ["MAX_TOKEN_LENGTH", "decode", "encode", "invalid_token"]

# Positions hold ids and names of at most a few hundred characters.
MAX_TOKEN_LENGTH = 2048

Position = tuple[str | int, ...]


def encode(kind: str, *position: str | int) -> str:
    """The token resuming ``kind``'s listing after ``position``."""
    raw = json.dumps([kind, *position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def invalid_token() -> errors.InvalidArgument:
    """The error for a token that decodes but names no position (e.g. a malformed version)."""
    return errors.InvalidArgument(
        "invalid page_token",
        [errors.FieldViolation("page_token", "not a token from a previous response of this RPC")],
        reason="INVALID_PAGE_TOKEN",
    )


def decode(token: str, kind: str, *types: type[str] | type[int]) -> Position | None:
    """The position in ``token`` (None for the empty token: the first page).

    ``types`` are the expected types of the position's elements, in order.
    """
    if not token:
        return None
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise invalid_token()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        if base64.urlsafe_b64encode(raw).decode().rstrip("=") != token.rstrip("="):
            raise ValueError("not canonical base64url")
        data: Any = json.loads(raw)
    except (binascii.Error, ValueError):
        raise invalid_token() from None
    if not isinstance(data, list) or len(data) != len(types) + 1 or data[0] != kind:
        raise invalid_token()
    position = tuple(data[1:])
    for value, expected in zip(position, types, strict=True):
        # bool is an int subclass; JSON true is never a valid position.
        if isinstance(value, bool) or not isinstance(value, expected):
            raise invalid_token()
    return position
