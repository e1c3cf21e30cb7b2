"""The short form of ``make fuzz``: 300 seeded hostile cases over every RPC, on both databases,
answered without INTERNAL, UNKNOWN or a hang, and the server still serving afterwards."""

from __future__ import annotations

from fuzz import Fuzzer
from tests.support.server import RunningServer


async def test_three_hundred_hostile_cases_get_deliberate_answers(server: RunningServer) -> None:
    fuzzer = Fuzzer(server.address, seed=11, stream_seconds=0.2, health_every=25)
    report = await fuzzer.run(300)
    assert not report.server_died, report.summary()
    assert not report.failures, report.summary()
    assert report.cases == 300
    assert len(report.per_rpc) >= 20, report.summary()
