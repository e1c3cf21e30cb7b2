"""Shared pytest configuration: fixtures live in ``tests/support`` and are registered here."""

import os

# Every transition written must be an edge of domain/states.py: in tests an illegal one raises
# (store/journal.py) instead of being logged and counted. Set before the plugins below import the
# store; servers started by the tests inherit it through their environment.
os.environ["TASKER_STRICT_TRANSITIONS"] = "1"

pytest_plugins = [
    "tests.support.databases",
    "tests.support.server",
    "tests.support.watchdog",
]
