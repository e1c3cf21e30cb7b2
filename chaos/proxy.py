"""A loopback TCP proxy that can blackhole the connections it carries.

``blackhole()`` freezes every connection open at that moment: nothing more is forwarded in either
direction and the sockets stay open (no FIN, no RST), as when a NAT or firewall silently drops a
flow. Connections made afterwards are forwarded normally, so a client that gives up on its dead
connection and reconnects gets through.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["BlackholeProxy"]


class _Link:
    def __init__(self) -> None:
        self.frozen = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.pumps: list[asyncio.Task[None]] = []


class BlackholeProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self.connections = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> BlackholeProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def blackhole(self) -> int:
        """Freeze the connections open now; returns how many."""
        live = [link for link in self._links if not link.frozen.is_set()]
        for link in live:
            link.frozen.set()
        return len(live)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link()
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            writer.close()
            return
        link.writers = [writer, up_writer]
        self._links.append(link)
        link.pumps = [
            asyncio.create_task(self._pump(link, reader, up_writer)),
            asyncio.create_task(self._pump(link, up_reader, writer)),
        ]

    @staticmethod
    async def _pump(link: _Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        frozen = asyncio.create_task(link.frozen.wait())
        try:
            while True:
                read = asyncio.ensure_future(src.read(65536))
                await asyncio.wait({read, frozen}, return_when=asyncio.FIRST_COMPLETED)
                if frozen.done():
                    read.cancel()
                    await asyncio.Event().wait()  # blackholed: hold the sockets open, silently
                data = read.result()
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            frozen.cancel()
            if not link.frozen.is_set():
                with contextlib.suppress(OSError, RuntimeError):
                    dst.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self._links:
            for pump in link.pumps:
                pump.cancel()
            for pump in link.pumps:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
            for writer in link.writers:
                with contextlib.suppress(OSError, RuntimeError):
                    writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
