"""Memory an idle watch stream costs the server: RSS of a server process before and after
opening N idle WatchEvents (or WatchTask) streams, divided by N.

    scripts/test-env.sh .venv/bin/python scripts/watcher-memory.py --streams 500

The server runs with ``max_watch_streams`` and ``max_watch_streams_per_client`` raised to N.
Figures in docs/security.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasker.v1 import event_service_pb2 as epb
from tasker.v1 import event_service_pb2_grpc as egrpc
from tests.support.server import ServerProcess


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def settle(pid: int) -> int:
    await asyncio.sleep(3)
    return rss_kib(pid)


async def measure(address: str, pid: int, streams: int, connections: bool) -> None:
    """``connections``: each stream on its own channel (one TCP/HTTP/2 connection each, as
    separate clients), else all streams multiplexed on one channel."""
    channels = [grpc.aio.insecure_channel(address) for _ in range(streams if connections else 1)]
    stubs = [egrpc.EventServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
    # One stream first: connection and code paths warmed up outside the figure.
    warm = stubs[0].WatchEvents(epb.WatchEventsRequest(after_sequence=-1))
    before = await settle(pid)
    calls = [
        stubs[i % len(stubs)].WatchEvents(epb.WatchEventsRequest(after_sequence=-1))
        for i in range(streams)
    ]
    after = await settle(pid)
    ended = [c for c in calls if c.done()]
    for call in [warm, *calls]:
        call.cancel()
    for channel in channels:
        await channel.close()
    await asyncio.sleep(2)
    released = rss_kib(pid)
    per = (after - before) / streams
    how = "one connection each" if connections else "one shared connection"
    print(
        f"{streams} idle WatchEvents streams ({how}): RSS {before} -> {after} KiB "
        f"({per:.1f} KiB per stream; {len(ended)} ended early); after closing: {released} KiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--connections", action="store_true", help="a channel per stream")
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--address", help="measure a server already running here ...")
    parser.add_argument("--pid", type=int, help="... whose process id is this")
    args = parser.parse_args()
    if args.address:
        asyncio.run(measure(args.address, args.pid, args.streams, args.connections))
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(
            args.database_url or f"sqlite+aiosqlite:///{tmp}/watch.db",
            log_level="error",
            max_watch_streams=args.streams + 10,
            max_watch_streams_per_client=args.streams + 10,
        ).start()
        try:
            assert server.proc is not None
            time.sleep(1)
            asyncio.run(measure(server.address, server.proc.pid, args.streams, args.connections))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
