"""Retry decisions and the backoff formula (example tests + hypothesis properties)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasker_server.domain.errors import InvalidArgument
from tasker_server.domain.retry import (
    BackoffFactors,
    ErrorClass,
    RetryAction,
    RetryDecision,
    RetryPolicy,
    backoff_bound,
    check_retry_policy,
    decide,
    validate_retry_policy,
)

NO_JITTER = RetryPolicy(max_attempts=10, jitter=0.0)

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 100),
    backoff_base_seconds=st.floats(0, 100),
    max_delay_seconds=st.floats(100, 86_400),
    multiplier=st.floats(1, 10),
    jitter=st.floats(0, 1),
)
factors = st.builds(
    BackoffFactors,
    queue_depth=st.integers(-10, 10_000),
    breaker_open=st.booleans(),
    handler_success_rate=st.none() | st.floats(0, 1),
    priority=st.integers(-5, 150),
    seconds_to_deadline=st.none() | st.floats(-100, 1e6),
)


def test_defaults() -> None:
    assert RetryPolicy() == RetryPolicy(3, 1.0, 300.0, 2.0, 0.1)
    assert validate_retry_policy(RetryPolicy()) == []


def test_validation_reports_every_field() -> None:
    bad = RetryPolicy(
        max_attempts=0, backoff_base_seconds=-1, max_delay_seconds=1e9, multiplier=0.5, jitter=2
    )
    fields = {v.field for v in validate_retry_policy(bad)}
    assert fields == {
        "retry.max_attempts", "retry.backoff_base_seconds", "retry.max_delay_seconds",
        "retry.multiplier", "retry.jitter",
    }  # fmt: skip
    with pytest.raises(InvalidArgument):
        check_retry_policy(bad)


def test_base_must_not_exceed_max_delay() -> None:
    problems = validate_retry_policy(
        RetryPolicy(backoff_base_seconds=10, max_delay_seconds=5), prefix="x"
    )
    assert [v.field for v in problems] == ["x.backoff_base_seconds"]
    assert validate_retry_policy(RetryPolicy(multiplier=math.nan))[0].field == "retry.multiplier"


@pytest.mark.parametrize(
    ("cls", "attempt", "action"),
    [
        (ErrorClass.PERMANENT, 1, RetryAction.FAIL),
        (ErrorClass.BUSINESS_LOGIC, 1, RetryAction.BLOCK),
        (ErrorClass.BUSINESS_LOGIC, 3, RetryAction.BLOCK),
        (ErrorClass.TRANSIENT, 3, RetryAction.FAIL),
        (ErrorClass.DELAYED, 3, RetryAction.FAIL),
        (ErrorClass.TRANSIENT, 2, RetryAction.RETRY),
        (ErrorClass.DELAYED, 1, RetryAction.RETRY),
    ],
)
def test_actions(cls: ErrorClass, attempt: int, action: RetryAction) -> None:
    assert decide(RetryPolicy(), cls, attempt).action == action


def test_transient_retries_immediately() -> None:
    assert decide(RetryPolicy(), "transient", 1) == RetryDecision(RetryAction.RETRY, 0.0)


def test_delayed_exponential_examples() -> None:
    delays = [decide(NO_JITTER, "delayed", a).delay_seconds for a in range(1, 10)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert decide(RetryPolicy(max_attempts=20, jitter=0), "delayed", 15).delay_seconds == 300


def test_factors_examples() -> None:
    def d(f: BackoffFactors) -> float:
        return decide(NO_JITTER, "delayed", 3, factors=f).delay_seconds  # base 4s

    assert d(BackoffFactors(queue_depth=500)) == 6
    assert d(BackoffFactors(queue_depth=5000)) == 8
    assert d(BackoffFactors(breaker_open=True)) == 8
    assert d(BackoffFactors(handler_success_rate=0.4)) == 6
    assert d(BackoffFactors(handler_success_rate=0.5)) == 4
    assert d(BackoffFactors(priority=10)) == 2
    assert d(BackoffFactors(seconds_to_deadline=4)) == 2
    assert d(BackoffFactors(seconds_to_deadline=-4)) == 0


def test_hint_replaces_and_is_clamped() -> None:
    p = RetryPolicy()
    assert decide(p, "delayed", 1, retry_after_hint=42).delay_seconds == 42
    assert decide(p, "transient", 1, retry_after_hint=7) == RetryDecision(RetryAction.RETRY, 7)
    assert decide(p, "delayed", 1, retry_after_hint=-5) == RetryDecision(
        RetryAction.RETRY, 0.0, True
    )
    assert decide(p, "delayed", 1, retry_after_hint=1e9) == RetryDecision(
        RetryAction.RETRY, 300.0, True
    )
    # A hint never overrides a permanent failure or exhausted attempts.
    assert decide(p, "permanent", 1, retry_after_hint=1).action == RetryAction.FAIL
    assert decide(p, "delayed", 3, retry_after_hint=1).action == RetryAction.FAIL


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError):
        decide(RetryPolicy(), "delayed", 0)


def test_seeded_rng_is_reproducible() -> None:
    a = decide(RetryPolicy(), "delayed", 2, rng=random.Random(7)).delay_seconds
    b = decide(RetryPolicy(), "delayed", 2, rng=random.Random(7)).delay_seconds
    assert a == b and 1.8 <= a <= 2.2


@given(policies, st.integers(1, 200), factors, st.integers(0, 2**32))
def test_delay_within_bounds(
    policy: RetryPolicy, attempt: int, f: BackoffFactors, seed: int
) -> None:
    decision = decide(policy, "delayed", attempt, factors=f, rng=random.Random(seed))
    if attempt >= policy.max_attempts:
        assert decision.action == RetryAction.FAIL
        return
    lo, hi = backoff_bound(policy, attempt, f)
    assert decision.action == RetryAction.RETRY
    assert 0 <= lo <= decision.delay_seconds <= hi <= policy.max_delay_seconds
    if f.seconds_to_deadline is not None:
        assert decision.delay_seconds <= max(0.0, f.seconds_to_deadline) / 2 + 1e-9


@given(policies, st.integers(1, 98))
def test_monotonic_in_attempt_without_jitter(policy: RetryPolicy, attempt: int) -> None:
    p = RetryPolicy(
        100, policy.backoff_base_seconds, policy.max_delay_seconds, policy.multiplier, 0.0
    )
    assert (
        decide(p, "delayed", attempt).delay_seconds
        <= decide(p, "delayed", attempt + 1).delay_seconds
    )


@given(policies, st.integers(1, 99))
def test_bounds_are_ordered_and_capped(policy: RetryPolicy, attempt: int) -> None:
    lo, hi = backoff_bound(policy, attempt)
    assert 0 <= lo <= hi <= policy.max_delay_seconds


@given(policies, st.floats(allow_nan=False), st.sampled_from(["transient", "delayed"]))
def test_hint_clamping(policy: RetryPolicy, hint: float, cls: str) -> None:
    p = RetryPolicy(100, policy.backoff_base_seconds, policy.max_delay_seconds)
    decision = decide(p, cls, 1, retry_after_hint=hint)
    assert 0 <= decision.delay_seconds <= p.max_delay_seconds
    assert decision.clamped_hint == (not 0 <= hint <= p.max_delay_seconds)
    if not decision.clamped_hint:
        assert decision.delay_seconds == hint
