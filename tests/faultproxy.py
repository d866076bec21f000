"""A fault-injecting TCP proxy for tests: latency, bandwidth caps, resets, hangs.

It runs its own event loop in a thread, so sync and async tests can use it
alike, and it only ever listens on and connects to loopback addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from tests.servers import free_port

RELAY_BUFFER_BYTES = 16 * 1024


@dataclass
class Faults:
    """What the proxy does to traffic; change fields at any time, new connections see them."""

    latency_s: float = 0.0
    """Delay added before relaying each server-to-client read."""
    bandwidth_bytes_per_s: float | None = None
    """Cap on server-to-client throughput per connection."""
    reset_after_bytes: int | None = None
    """Abort the connection (TCP RST) after this many server-to-client bytes."""
    hang: bool = False
    """Accept connections, then never forward a byte either way."""
    refuse: bool = False
    """Close new connections at once."""


class FaultProxy:
    def __init__(self, target_port: int, faults: Faults | None = None) -> None:
        self.target_port = target_port
        self.faults = faults or Faults()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.bytes_to_client = 0
        self.bytes_from_client = 0
        """Bytes relayed to the target: it grows with every request, on a new connection or a kept-alive one."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        faults = self.faults
        try:
            if faults.refuse:
                _abort(writer)
                return
            if faults.hang:
                await asyncio.Event().wait()
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            upstream = asyncio.ensure_future(self._pipe(reader, up_writer, None))
            downstream = asyncio.ensure_future(self._pipe(up_reader, writer, faults))
            try:
                await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when stop() cancels this handler: no relay task outlives it
                for relay in (upstream, downstream):
                    relay.cancel()
                await asyncio.gather(upstream, downstream, return_exceptions=True)
                _abort(up_writer)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, faults: Faults | None) -> None:
        sent = 0
        try:
            while True:
                data = await reader.read(RELAY_BUFFER_BYTES)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                if faults is not None:
                    if faults.latency_s:
                        await asyncio.sleep(faults.latency_s)
                    if faults.reset_after_bytes is not None and sent + len(data) > faults.reset_after_bytes:
                        keep = max(0, faults.reset_after_bytes - sent)
                        writer.write(data[:keep])
                        with contextlib.suppress(OSError):
                            await writer.drain()
                        _abort(writer)
                        return
                    if faults.bandwidth_bytes_per_s:
                        await asyncio.sleep(len(data) / faults.bandwidth_bytes_per_s)
                    self.bytes_to_client += len(data)
                else:
                    self.bytes_from_client += len(data)
                writer.write(data)
                await writer.drain()
                sent += len(data)
        except OSError:
            return


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset rather than a clean FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    transport = writer.transport
    transport.abort()


@contextlib.contextmanager
def fault_proxy(target_url: str, faults: Faults | None = None) -> Iterator[FaultProxy]:
    """A proxy in front of ``target_url`` (a loopback http URL)."""
    port = int(target_url.rsplit(":", 1)[1].split("/")[0])
    proxy = FaultProxy(port, faults).start()
    try:
        yield proxy
    finally:
        proxy.stop()
