"""Relaying one upstream stream to a client, with the bookkeeping done exactly once.

:class:`Draining` counts the streams that are running, so shutdown can wait for
them; :class:`Relay` yields an upstream stream's frames, rendered a batch at a
time (the v1 route's :func:`ndjson_lines` passes the worker's lines on as
bytes, one write per batch, the audio never decoded; :func:`same_frames`
keeps frame objects for the OpenAI encoders) and, however the response ends,
closes the upstream, counts the outcome, releases the key's lease and leaves
the draining count.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, Protocol, TypeVar, cast

from orpheus_tts.gateway.quota_store import QuotaLease
from orpheus_tts.gateway.service import GatewayService, UpstreamStream
from orpheus_tts.protocol import ChunkFrame, EosFrame, ErrorFrame, Frame, encode_frame
from orpheus_tts.serving.shutdown import GraceCut
from orpheus_tts.serving.streaming import FinalPiece

__all__ = ["DirectSink", "Draining", "Relay", "ndjson_lines", "same_frames"]

T = TypeVar("T")

Render = Callable[[Sequence[Frame]], Iterable[T]]
"""Turns one batch of frames into what the response body yields for it."""


def same_frames(batch: Sequence[Frame]) -> Sequence[Frame]:
    """The identity rendering: frames relayed as frames."""
    return batch


def ndjson_lines(batch: Sequence[Frame]) -> tuple[bytes]:
    """A batch as one piece of NDJSON: chunks as the lines they arrived in, the rest encoded."""
    return (b"".join([encode_frame(frame) for frame in batch]),)


class Draining:
    """Counts running streams so shutdown can wait for them, and ends them itself when the grace runs out.

    :meth:`begin_shutdown` (called as the server starts shutting down) refuses
    new work and, ``grace_s`` later, completes :meth:`cut`: requests still
    waiting for audio then answer 503 ``overloaded`` (retryable) and running
    streams end with a ``cancelled`` error frame (retryable), so no client
    sees a bare 500 or a stream cut without a word.
    """

    def __init__(self) -> None:
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._grace = GraceCut()

    @property
    def closing(self) -> bool:
        """True once shutdown began: new work is refused."""
        return self._grace.closing

    @closing.setter
    def closing(self, value: bool) -> None:
        self._grace.closing = value

    def cut(self) -> asyncio.Future[None]:
        """Completed once the drain grace has run out (created on first use, on the running loop)."""
        return self._grace.future()

    def begin_shutdown(self, grace_s: float) -> None:
        """Take no new work; end what still runs after ``grace_s`` seconds."""
        self._grace.begin(grace_s)

    def enter(self) -> None:
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        if not self.active:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)


class DirectSink(Protocol):
    """Where :meth:`Relay.write_direct` writes: the client's connection (``serving/streaming.py``)."""

    @property
    def gone(self) -> bool: ...

    @property
    def paused(self) -> bool:
        """True while the connection's write buffer is over its high-water mark."""
        ...

    def write(self, data: bytes) -> None:
        """A :class:`FinalPiece` goes out with the end of the body, after :meth:`Relay.write_direct` returns."""
        ...

    async def drain(self) -> None: ...


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Relay(Generic[T]):
    """One upstream stream's frames (each batch rendered by ``render``), its bookkeeping done exactly once.

    A class rather than an async generator: a generator that is closed before it
    starts skips its ``finally``, and the lease, the draining count and the
    upstream connection must be released however the response ends.
    """

    def __init__(
        self,
        upstream: UpstreamStream,
        lease: QuotaLease,
        render: Render[T],
        service: GatewayService,
        draining: Draining,
    ) -> None:
        self._upstream = upstream
        self._batches = upstream.batches()
        self._ready: collections.deque[T] = collections.deque()
        self._lease = lease
        self._render = render
        self._service = service
        self._draining = draining
        self._samples = 0
        self._closed = False
        draining.enter()

    def __aiter__(self) -> Relay[T]:
        return self

    async def __anext__(self) -> T:
        while not self._ready:
            try:
                batch = await self._batches.__anext__()
            except BaseException:
                await self.aclose()
                raise
            for frame in batch:
                if isinstance(frame, ChunkFrame):
                    self._samples += frame.samples
            self._ready.extend(self._render(batch))
        return self._ready.popleft()

    async def write_direct(self, sink: DirectSink) -> bool | None:
        """Relay to ``sink`` from the connection's read callbacks: each batch is checked, rendered and
        written as the worker's bytes are read, and this task only waits for the end (draining the
        sink, with the worker's socket paused, while the client reads slower than the worker sends).
        False if the client went away; ``None``, having written nothing, when the upstream cannot
        push (then iterate this relay instead)."""
        upstream = self._upstream
        loop = asyncio.get_running_loop()
        wake: list[asyncio.Future[None]] = [loop.create_future()]
        paused = [False]

        def on_batch(batch: list[Frame]) -> None:
            for frame in batch:
                if isinstance(frame, ChunkFrame):
                    self._samples += frame.samples
            # The batch with the terminal frame is the last (``UpstreamStream.push``): it leaves with the body's end.
            final = isinstance(batch[-1], (EosFrame, ErrorFrame))
            for piece in self._render(batch):
                sink.write(FinalPiece(cast(bytes, piece)) if final else cast(bytes, piece))
            if sink.paused and not paused[0]:
                paused[0] = True
                upstream.pause()
                _wake(wake[0])

        ended = upstream.push(on_batch)
        if ended is None:
            return None
        ended.add_done_callback(lambda _: _wake(wake[0]))
        while not ended.done():
            await wake[0]
            wake[0] = loop.create_future()
            if paused[0] and not ended.done():
                await sink.drain()
                paused[0] = False
                upstream.resume()
        return not sink.gone

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._batches.aclose()
            await self._upstream.close()
        finally:
            self._service.note_finished(self._upstream, self._samples)
            self._lease.release()
            self._draining.leave()
