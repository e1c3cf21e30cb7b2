"""Retry policy, error classes and the one backoff formula.

Defaults (the server-wide defaults; defined only here, in ``RetryPolicy``)::

    max_attempts=3  backoff_base_seconds=1.0  max_delay_seconds=300.0  multiplier=2.0  jitter=0.1

Decision, for a step whose attempt number ``attempt`` (1-based, the attempt that just failed)
raised an error of class ``error_class``:

1. ``permanent``       -> **fail** (no retry, whatever the attempts left).
2. ``business_logic``  -> **block** (waits for an operator: RetryStep / ResolveStepManually).
3. ``attempt >= max_attempts`` -> **fail** (the caller turns this into ``skipped`` for an
   optional step).
4. ``transient``       -> **retry** with delay 0 (network blip: try again straight away).
5. ``delayed``         -> **retry** after::

       d = min(max_delay, backoff_base * multiplier ** (attempt - 1))
       d *= 1 + min(queue_depth / 1000, 1)          # system load: up to x2
       d *= 2            if the breaker is open      # downstream is known to be down
       d *= 1.5          if handler_success_rate < 0.5
       d /= 1 + priority / 10                        # priority 0..100: up to 11x sooner
       d = min(d, max_delay)
       d = min(d, seconds_to_deadline / 2)           # leave room for one more attempt
       d = d * uniform(1 - jitter, 1 + jitter)       # spread retries apart
       d = clamp(d, 0, min(max_delay, deadline cap))

6. A ``retry_after`` hint from the handler (cases 4 and 5) replaces the computed delay. It is
   clamped into ``[0, max_delay]`` (``clamped_hint=True`` when that changed it) and is not
   jittered: the handler asked for that wait, retrying earlier would defeat it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum

from tasker_server.domain.errors import FieldViolation, InvalidArgument

__all__ = [
    "BackoffFactors",
    "ErrorClass",
    "RetryAction",
    "RetryDecision",
    "RetryPolicy",
    "backoff_bound",
    "check_retry_policy",
    "decide",
    "validate_retry_policy",
]

MAX_ATTEMPTS_LIMIT = 100
MAX_DELAY_LIMIT_SECONDS = 86_400.0
MAX_MULTIPLIER = 10.0
MAX_PRIORITY = 100


class ErrorClass(StrEnum):
    """How a handler error should be treated (reported by the worker)."""

    TRANSIENT = "transient"
    DELAYED = "delayed"
    BUSINESS_LOGIC = "business_logic"
    PERMANENT = "permanent"


class RetryAction(StrEnum):
    RETRY = "retry"
    FAIL = "fail"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Per-step retry settings. Construct freely; validate with ``validate_retry_policy``.

    Not validated in ``__post_init__`` so template parsing can report every bad field at once.
    """

    max_attempts: int = 3
    backoff_base_seconds: float = 1.0
    max_delay_seconds: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def to_dict(self) -> dict[str, int | float]:
        return {
            "max_attempts": self.max_attempts,
            "backoff_base_seconds": self.backoff_base_seconds,
            "max_delay_seconds": self.max_delay_seconds,
            "multiplier": self.multiplier,
            "jitter": self.jitter,
        }


@dataclass(frozen=True, slots=True)
class BackoffFactors:
    """Context that stretches or shrinks a delayed retry (see the module docstring)."""

    queue_depth: int = 0
    breaker_open: bool = False
    handler_success_rate: float | None = None
    priority: int = 0
    seconds_to_deadline: float | None = None


@dataclass(frozen=True, slots=True)
class RetryDecision:
    action: RetryAction
    delay_seconds: float = 0.0
    clamped_hint: bool = False


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def validate_retry_policy(policy: RetryPolicy, prefix: str = "retry") -> list[FieldViolation]:
    """Every problem with ``policy``; field paths are ``{prefix}.{field}``."""
    out: list[FieldViolation] = []

    def bad(name: str, why: str) -> None:
        out.append(FieldViolation(f"{prefix}.{name}" if prefix else name, why))

    ma = policy.max_attempts
    if isinstance(ma, bool) or not isinstance(ma, int):
        bad("max_attempts", "must be an integer")
    elif not 1 <= ma <= MAX_ATTEMPTS_LIMIT:
        bad("max_attempts", f"must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {ma}")

    md_ok = _finite(policy.max_delay_seconds)
    if not md_ok:
        bad("max_delay_seconds", "must be a finite number")
    elif not 0 <= policy.max_delay_seconds <= MAX_DELAY_LIMIT_SECONDS:
        bad(
            "max_delay_seconds",
            f"must be between 0 and {MAX_DELAY_LIMIT_SECONDS:g}, got {policy.max_delay_seconds}",
        )

    base = policy.backoff_base_seconds
    if not _finite(base):
        bad("backoff_base_seconds", "must be a finite number")
    elif base < 0:
        bad("backoff_base_seconds", f"must be >= 0, got {base}")
    elif md_ok and base > policy.max_delay_seconds:
        bad(
            "backoff_base_seconds",
            f"must be <= max_delay_seconds ({policy.max_delay_seconds}), got {base}",
        )

    mult = policy.multiplier
    if not _finite(mult):
        bad("multiplier", "must be a finite number")
    elif not 1 <= mult <= MAX_MULTIPLIER:
        bad("multiplier", f"must be between 1 and {MAX_MULTIPLIER:g}, got {mult}")

    jit = policy.jitter
    if not _finite(jit):
        bad("jitter", "must be a finite number")
    elif not 0 <= jit <= 1:
        bad("jitter", f"must be between 0 and 1, got {jit}")
    return out


def check_retry_policy(policy: RetryPolicy, prefix: str = "retry") -> RetryPolicy:
    """Return ``policy`` or raise InvalidArgument listing every problem."""
    violations = validate_retry_policy(policy, prefix)
    if violations:
        raise InvalidArgument("invalid retry policy", violations)
    return policy


def _exponential(policy: RetryPolicy, attempt: int) -> float:
    try:
        raw = policy.backoff_base_seconds * policy.multiplier ** (attempt - 1)
    except OverflowError:
        # A huge attempt count just means "as long as allowed".
        raw = math.inf
    return min(policy.max_delay_seconds, raw)


def _cap(policy: RetryPolicy, factors: BackoffFactors) -> float:
    cap = policy.max_delay_seconds
    if factors.seconds_to_deadline is not None:
        # Half the time left, so one more attempt can still run before the deadline.
        cap = min(cap, max(0.0, factors.seconds_to_deadline) / 2)
    return cap


def _scaled(policy: RetryPolicy, attempt: int, factors: BackoffFactors) -> float:
    """The delayed-retry wait before jitter, already capped."""
    d = _exponential(policy, attempt)
    d *= 1 + min(max(factors.queue_depth, 0) / 1000, 1)
    if factors.breaker_open:
        d *= 2
    rate = factors.handler_success_rate
    if rate is not None and rate < 0.5:
        d *= 1.5
    priority = min(max(factors.priority, 0), MAX_PRIORITY)
    d /= 1 + priority / 10
    return min(d, _cap(policy, factors))


def backoff_bound(
    policy: RetryPolicy, attempt: int, factors: BackoffFactors | None = None
) -> tuple[float, float]:
    """Inclusive (lo, hi) range of the delay ``decide`` returns for a delayed error, no hint."""
    factors = factors or BackoffFactors()
    d = _scaled(policy, attempt, factors)
    cap = _cap(policy, factors)
    return max(0.0, d * (1 - policy.jitter)), min(cap, d * (1 + policy.jitter))


_default_rng = random.Random()


def decide(
    policy: RetryPolicy,
    error_class: ErrorClass | str,
    attempt: int,
    retry_after_hint: float | None = None,
    factors: BackoffFactors | None = None,
    rng: random.Random | None = None,
) -> RetryDecision:
    """Decide what happens after attempt ``attempt`` (1-based) failed. See the module docstring.

    Pure apart from ``rng``; pass a seeded ``random.Random`` for reproducible jitter.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    error_class = ErrorClass(error_class)
    if error_class is ErrorClass.PERMANENT:
        return RetryDecision(RetryAction.FAIL)
    if error_class is ErrorClass.BUSINESS_LOGIC:
        return RetryDecision(RetryAction.BLOCK)
    if attempt >= policy.max_attempts:
        return RetryDecision(RetryAction.FAIL)

    if retry_after_hint is not None:
        hint = policy.max_delay_seconds if math.isnan(retry_after_hint) else retry_after_hint
        clamped = min(max(hint, 0.0), policy.max_delay_seconds)
        return RetryDecision(RetryAction.RETRY, clamped, clamped != retry_after_hint)

    if error_class is ErrorClass.TRANSIENT:
        return RetryDecision(RetryAction.RETRY, 0.0)

    factors = factors or BackoffFactors()
    d = _scaled(policy, attempt, factors)
    if policy.jitter > 0 and d > 0:
        d *= (rng or _default_rng).uniform(1 - policy.jitter, 1 + policy.jitter)
    d = min(max(d, 0.0), _cap(policy, factors))
    return RetryDecision(RetryAction.RETRY, d)
