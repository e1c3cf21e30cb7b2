"""Say where a hung async test is waiting.

pytest-timeout prints the threads' stacks when a test overruns, but an asyncio test that hangs
shows only the event loop idling in ``select()``: the coroutine that waits forever is not on any
thread's stack. Shortly before pytest-timeout fires, this watchdog asks the loop (from a timer
thread, via ``call_soon_threadsafe``) to print every pending task's stack to stderr, which pytest
shows with the failure.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

_MARGIN_S = 10.0


def _dump_tasks(loop: asyncio.AbstractEventLoop, test: str) -> None:
    out = io.StringIO()
    tasks = asyncio.all_tasks(loop)
    print(f"\n=== watchdog: {test} is about to time out; {len(tasks)} pending tasks ===", file=out)
    for task in sorted(tasks, key=lambda t: t.get_name()):
        coro = task.get_coro()
        print(f"--- {task.get_name()} {getattr(coro, '__qualname__', coro)!s}", file=out)
        # Not task.print_stack(): it fails on frames without a line number (Cython coroutines).
        for frame in task.get_stack(limit=12):
            code = frame.f_code
            print(f"    {code.co_filename}:{frame.f_lineno} in {code.co_name}", file=out)
    sys.stderr.write(out.getvalue())


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def _asyncio_watchdog(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    try:
        timeout = float(request.config.getini("timeout") or 0)
    except ValueError:  # pytest-timeout not loaded (-p no:timeout)
        timeout = 0.0
    marker = request.node.get_closest_marker("timeout")
    if marker is not None and marker.args:
        timeout = float(marker.args[0])
    if timeout <= _MARGIN_S:
        yield
        return
    loop = asyncio.get_running_loop()
    timer = threading.Timer(
        timeout - _MARGIN_S,
        lambda: loop.call_soon_threadsafe(_dump_tasks, loop, request.node.nodeid),
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
