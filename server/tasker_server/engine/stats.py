"""Recent success rate per handler: one input of the backoff rule (domain/retry.py)."""

from __future__ import annotations

from collections import deque

__all__ = ["HandlerStats"]

WINDOW = 100
MIN_SAMPLES = 10


class HandlerStats:
    """Outcomes of each handler's last ``WINDOW`` attempts, in memory (a per-replica view)."""

    def __init__(self) -> None:
        self._recent: dict[str, deque[bool]] = {}

    def add(self, handler: str, success: bool) -> None:
        self._recent.setdefault(handler, deque(maxlen=WINDOW)).append(success)

    def rate(self, handler: str) -> float | None:
        """Success rate, or None until there are enough samples to mean anything."""
        recent = self._recent.get(handler)
        if recent is None or len(recent) < MIN_SAMPLES:
            return None
        return sum(recent) / len(recent)
