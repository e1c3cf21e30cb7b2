"""Circuit breakers per downstream dependency key, on pybreaker, persisted and shared.

A step template names its downstream with ``circuit_breaker`` (default: its handler). Outcomes of
that key's steps feed its breaker: successes, and failures classed transient or delayed (also a
handler overrunning its timeout on a live worker); business-logic and permanent errors say nothing
about the dependency, nor does a lease lost with its worker, stream or server. pybreaker runs the
state machine (closed → open after ``failure_threshold`` consecutive failures → half-open after
``reset_timeout`` → closed on a success, open again on a failure).

The consecutive-failure count of a closed breaker lives in ``circuit_breakers.failure_count``,
shared by the replicas (``store.breakers.add_breaker_failures``): N replicas open a breaker at
the same threshold as one. The replica whose failures cross the threshold opens it.

While a key is open the dispatcher claims none of its steps: they wait, they do not fail. Once its
reset timeout has elapsed the breaker goes half-open and exactly one step is let through as the
trial; its outcome decides.

Every state change is written to ``circuit_breakers`` (and emits a ``circuit_breaker.*`` event) in
the engine's next transaction, so the state survives a restart; replicas on one PostgreSQL apply
each other's changes on their periodic refresh (``load``).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pybreaker

__all__ = ["DEFAULT_FAILURE_THRESHOLD", "DEFAULT_RESET_TIMEOUT_SECONDS", "Breakers", "Change"]

log = logging.getLogger(__name__)

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_RESET_TIMEOUT_SECONDS = 30.0

# pybreaker state names → ours (also the values stored in circuit_breakers.state).
_STATES = {"closed": "closed", "open": "open", "half-open": "half_open"}


class _Failure(Exception):
    """What a failed outcome 'raises' inside the breaker so that pybreaker counts it."""


def _succeed() -> None:
    return None


def _fail() -> None:
    raise _Failure


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Settings:
    failure_threshold: int
    reset_timeout_seconds: float


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: Breakers) -> None:
        self.owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        old = _STATES.get(getattr(old_state, "name", ""), "closed")
        new = _STATES.get(getattr(new_state, "name", ""), "closed")
        if new == "closed":
            self.owner.closed(str(cb.name))
        if old != new and not self.owner.applying:
            self.owner.changes.append(Change(str(cb.name), old, new))
            self.owner.changed_at[str(cb.name)] = datetime.now(UTC)


class Breakers:
    def __init__(self) -> None:
        self._breakers: dict[str, pybreaker.CircuitBreaker] = {}
        self._settings: dict[str, Settings] = {}
        self._trials: dict[str, str] = {}  # key -> lease id of the half-open trial
        self._listener = _Listener(self)
        self.changes: list[Change] = []
        # When each key last changed here: rows older than that are stale echoes, not news.
        self.changed_at: dict[str, datetime] = {}
        # True while applying state read from the database: not a change of ours to persist.
        self.applying = False
        # The shared consecutive-failure count of each key, as last read from the database.
        self._counts: dict[str, int] = {}

    # -- configuration ------------------------------------------------------------------------

    def configure(self, key: str, failure_threshold: int, reset_timeout_seconds: float) -> None:
        self._settings[key] = Settings(failure_threshold, reset_timeout_seconds)
        breaker = self._breakers.get(key)
        if breaker is not None:
            breaker.fail_max = failure_threshold
            breaker.reset_timeout = reset_timeout_seconds

    def settings(self, key: str) -> Settings:
        return self._settings.get(
            key, Settings(DEFAULT_FAILURE_THRESHOLD, DEFAULT_RESET_TIMEOUT_SECONDS)
        )

    def _get(self, key: str) -> pybreaker.CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            conf = self.settings(key)
            breaker = pybreaker.CircuitBreaker(
                fail_max=conf.failure_threshold,
                reset_timeout=conf.reset_timeout_seconds,
                listeners=[self._listener],
                name=key,
            )
            self._breakers[key] = breaker
        return breaker

    # -- state ----------------------------------------------------------------------------------

    def state(self, key: str) -> str:
        breaker = self._breakers.get(key)
        return _STATES[breaker.current_state] if breaker is not None else "closed"

    def failure_count(self, key: str) -> int:
        """The shared consecutive-failure count, as last known here (0 once closed again)."""
        return self._counts.get(key, 0)

    def closed(self, key: str) -> None:
        """A closed breaker starts counting from zero again."""
        self._counts[key] = 0

    def counted(self, key: str, before: int, after: int) -> None:
        """The shared count of a closed breaker went from ``before`` to ``after`` (this
        replica's batch). Opens the breaker if that batch crossed the threshold."""
        self._counts[key] = after
        threshold = self.settings(key).failure_threshold
        if before < threshold <= after and self.state(key) == "closed":
            self._get(key).open()

    def opened_at(self, key: str) -> datetime | None:
        breaker = self._breakers.get(key)
        if breaker is None:
            return None
        opened: datetime | None = breaker._state_storage.opened_at
        return opened

    def known_keys(self) -> list[str]:
        return sorted(set(self._breakers) | set(self._settings))

    def record(self, key: str, success: bool, lease_id: str = "") -> None:
        """Feeds one outcome of a step guarded by ``key``."""
        if self._trials.get(key) == lease_id:
            del self._trials[key]
        breaker = self._get(key)
        # pybreaker raises what the call raised (our _Failure) or, while open, its own error.
        with contextlib.suppress(_Failure, pybreaker.CircuitBreakerError):
            breaker.call(_succeed if success else _fail)

    def trial_ended(self, lease_id: str) -> None:
        """A trial lease ended without an outcome that feeds the breaker (released, cancelled)."""
        for key, lease in list(self._trials.items()):
            if lease == lease_id:
                del self._trials[key]

    def blocked_keys(self, now: datetime) -> tuple[list[str], list[str]]:
        """(keys whose steps must not be claimed, keys that may send one trial step now)."""
        blocked, trials = [], []
        for key, breaker in self._breakers.items():
            state = breaker.current_state
            if state == "closed":
                continue
            if state == "open":
                opened = breaker._state_storage.opened_at
                if opened is not None and (now - opened).total_seconds() < breaker.reset_timeout:
                    blocked.append(key)
                    continue
                breaker.half_open()
            blocked.append(key)
            if key not in self._trials:
                trials.append(key)
        return blocked, trials

    def trial_started(self, key: str, lease_id: str) -> None:
        self._trials[key] = lease_id

    def reset(self, key: str) -> None:
        breaker = self._get(key)
        self._trials.pop(key, None)
        breaker.close()

    def apply(
        self,
        key: str,
        state: str,
        opened_at: datetime | None,
        updated: datetime | None = None,
        failure_count: int = 0,
    ) -> None:
        """State read from the database (a restart, or another replica's change). A row written
        before this replica's own latest change of the key is ignored: it is older news."""
        local = self.changed_at.get(key)
        if local is not None and (updated is None or updated <= local):
            return
        breaker = self._get(key)
        if _STATES[breaker.current_state] == state:
            self._counts[key] = failure_count
            return
        self.applying = True
        try:
            if state == "open":
                breaker.open()
                if opened_at is not None:
                    breaker._state_storage.opened_at = opened_at
            elif state == "half_open":
                breaker.half_open()
            else:
                breaker.close()
        finally:
            self.applying = False
        self._counts[key] = failure_count

    def take_changes(self) -> list[Change]:
        changes, self.changes = self.changes, []
        return changes
