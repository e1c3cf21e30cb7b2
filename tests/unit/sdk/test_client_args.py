"""Client arguments are checked before any RPC (the address below is never contacted)."""

from __future__ import annotations

from typing import Any

import pytest

from tasker import Client

# Nothing listens here; every call below must fail before reaching the network.
ADDRESS = "127.0.0.1:9"


async def _client() -> Client:
    return await Client.connect(ADDRESS)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"namespace": "", "template_name": "t"}, ValueError),
        ({"namespace": "ns", "template_name": ""}, ValueError),
        ({"namespace": 3, "template_name": "t"}, TypeError),
        ({"namespace": "ns", "template_name": "t", "context": [1, 2]}, TypeError),
        ({"namespace": "ns", "template_name": "t", "context": {"o": object()}}, TypeError),
        ({"namespace": "ns", "template_name": "t", "priority": 101}, ValueError),
        ({"namespace": "ns", "template_name": "t", "priority": "high"}, TypeError),
        ({"namespace": "ns", "template_name": "t", "tags": "urgent"}, TypeError),
    ],
)
async def test_create_task_validates_arguments(
    kwargs: dict[str, Any], exc: type[Exception]
) -> None:
    client = await _client()
    try:
        with pytest.raises(exc):
            await client.create_task(**kwargs)
    finally:
        await client.close()


async def test_other_argument_checks() -> None:
    async with await _client() as client:
        with pytest.raises(ValueError):
            await client.get_task("")
        with pytest.raises(ValueError):
            await client.register_template("")
        with pytest.raises(ValueError):
            await anext(client.list_tasks(state="bogus"))
        with pytest.raises(ValueError):
            await anext(client.list_tasks(page_size=0))
        with pytest.raises(ValueError):
            client.watch_task("")
        with pytest.raises(TypeError):
            client.watch_events(namespaces="ns")
        with pytest.raises(TypeError):
            await client.complete_step_manually("1", "a", None)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await client.retry_step("1", "a", actor="")
