"""Gateway service: one upstream stream per request, under the gateway's deadline.

:meth:`GatewayService.open` routes a request to the workers (the shared
routing core does the choosing, failover and hedging) and returns once the
first audio chunk exists, so every failure before that is a plain HTTP status.
:meth:`UpstreamStream.batches` then relays the rest, ending with an ``error``
frame (``deadline_exceeded``, ``worker_lost``) instead of ever going silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from orpheus_tts.aio import DeadlinePassed, Stopped, run_before
from orpheus_tts.gateway.config import DEFAULT_STALL_TIMEOUT_S, GatewayConfig
from orpheus_tts.protocol import (
    HEADER_INFLIGHT,
    HEADER_QUEUE_DEPTH,
    HEADER_REQUEST_ID,
    EosFrame,
    ErrorCode,
    ErrorFrame,
    Frame,
    ServiceError,
    TTSRequest,
)
from orpheus_tts.routing import (
    NoEndpointAvailableError,
    RequestBodyError,
    RoutedStream,
    Router,
    RoutingError,
    UpstreamConnectError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from orpheus_tts.serving.metrics import ServiceMetrics

__all__ = ["GatewayService", "UpstreamStream"]

logger = logging.getLogger(__name__)


@dataclass
class UpstreamStream:
    """An upstream stream that has produced its first audio (or already ended)."""

    routed: RoutedStream
    deadline: float
    """``time.monotonic()`` value after which the stream is cut."""
    arrived: float
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    """Longest silence between two reads of the worker's stream before it counts as lost."""
    stop: asyncio.Future[None] | None = None
    """Completed when the gateway's drain grace runs out: the stream then ends ``cancelled``."""
    outcome: str = field(default="cancelled")
    _pushed: _Pushed | None = field(default=None, repr=False)

    @property
    def hints(self) -> dict[str, str]:
        """The worker's load hints, to pass on as response headers."""
        headers = self.routed.headers
        return {h: headers[h] for h in (HEADER_QUEUE_DEPTH, HEADER_INFLIGHT) if h in headers}

    async def batches(self) -> AsyncGenerator[list[Frame], None]:
        """The stream's frames, as many at a time as arrived together; always ends with ``eos`` or ``error``.

        The last batch ends with the terminal frame. The outcome is set before
        that batch is yielded: a consumer that stops at ``eos`` (the OpenAI
        route does) closes this generator there, and the stream still counts
        as ``ok``.
        """
        try:
            while True:
                stall_at = time.monotonic() + self.stall_timeout_s
                try:
                    frames = await run_before(self.routed.next_frames(), min(self.deadline, stall_at), self.stop)
                except Stopped:
                    yield [self._stopped()]
                    return
                except DeadlinePassed:
                    # Which bound applied, not the clock now: a timer may fire a little early.
                    if stall_at < self.deadline:
                        await self.routed.fail()
                        yield [self._stalled()]
                    else:
                        yield [self._past_deadline()]
                    return
                except RoutingError as exc:
                    yield [self._lost(exc)]
                    return
                if not frames:
                    yield [self._end(ErrorCode.WORKER_LOST, "the worker's stream ended without eos")]
                    return
                self._note_terminal(frames[-1])  # the routing core ends a batch at its terminal frame
                yield frames
                if isinstance(frames[-1], (EosFrame, ErrorFrame)):
                    return
        finally:
            await self.close()

    def push(self, on_batch: Callable[[list[Frame]], None]) -> asyncio.Future[None] | None:
        """The callback twin of :meth:`batches`: each batch goes to ``on_batch`` as the worker's bytes
        are read, under the same deadline, stall timeout and shutdown cut, ending with ``eos`` or
        ``error``; the future is done once the last batch went out. ``None`` when the routed stream
        cannot be pushed (then iterate :meth:`batches`)."""
        if not self.routed.can_push:
            return None
        pushed = _Pushed(self, on_batch)
        self._pushed = pushed
        return pushed.start()

    def pause(self) -> None:
        """Stop reading the worker (a pushed stream's client reads slower than the worker sends)."""
        self.routed.pause_reading()

    def resume(self) -> None:
        self.routed.resume_reading()

    def _note_terminal(self, last: Frame) -> None:
        if isinstance(last, EosFrame):
            self.outcome = "ok"
        elif isinstance(last, ErrorFrame):
            self.outcome = last.code

    def _stopped(self) -> ErrorFrame:
        return self._end(ErrorCode.CANCELLED, "the gateway shut down during the stream", retryable=True)

    def _stalled(self) -> ErrorFrame:
        message = f"the worker sent nothing for {self.stall_timeout_s:g} s (stall timeout)"
        return self._end(ErrorCode.WORKER_LOST, message, retryable=True)

    def _past_deadline(self) -> ErrorFrame:
        return self._end(ErrorCode.DEADLINE_EXCEEDED, "the deadline passed during synthesis")

    def _lost(self, exc: Exception) -> ErrorFrame:
        return self._end(ErrorCode.WORKER_LOST, f"the worker was lost mid-stream: {exc}", retryable=True)

    def _end(self, code: ErrorCode, message: str, *, retryable: bool = False) -> ErrorFrame:
        self.outcome = code.value
        return ErrorFrame(code.value, message, retryable)

    async def close(self) -> None:
        if self._pushed is not None:  # timers and the stop callback of a pushed stream
            self._pushed.finish([])
        with contextlib.suppress(Exception):
            await self.routed.aclose()


class _Pushed:
    """One pushed stream's deadline, stall timer and shutdown cut (:meth:`UpstreamStream.push`).

    Methods, not closures: a closure that re-arms its own timer refers to
    itself, and every object of the stream would then wait for the cycle
    collector. Once finished it lets go of the stream and the callback, so
    the stream's objects are freed as soon as the response is done with them.
    """

    __slots__ = ("ended", "last_read", "loop", "on_batch", "stream", "timers")

    def __init__(self, stream: UpstreamStream, on_batch: Callable[[list[Frame]], None]) -> None:
        self.stream: UpstreamStream | None = stream
        self.on_batch: Callable[[list[Frame]], None] | None = on_batch
        self.loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[None] = self.loop.create_future()
        self.last_read = self.loop.time()
        self.timers: list[asyncio.TimerHandle] = []

    def start(self) -> asyncio.Future[None]:
        stream, loop = cast(UpstreamStream, self.stream), self.loop
        self.timers.append(loop.call_later(max(0.0, stream.deadline - time.monotonic()), self.past_deadline))
        self.timers.append(loop.call_later(stream.stall_timeout_s, self.check_stall))
        if stream.stop is not None:
            stream.stop.add_done_callback(self.on_stop)
        stream.routed.push(self.on_frames, self.on_lost)
        return self.ended

    def finish(self, frames: list[Frame]) -> None:
        stream, on_batch = self.stream, self.on_batch
        if stream is None or on_batch is None:
            return
        self.stream = self.on_batch = None
        stream._pushed = None
        try:
            if frames:
                on_batch(frames)  # the last batch on its way to the client first
        finally:
            for timer in self.timers:
                timer.cancel()
            self.timers.clear()
            if stream.stop is not None:
                stream.stop.remove_done_callback(self.on_stop)
            self.ended.set_result(None)

    def on_frames(self, frames: list[Frame]) -> None:
        stream, on_batch = self.stream, self.on_batch
        if stream is None or on_batch is None:
            return
        self.last_read = self.loop.time()
        stream._note_terminal(frames[-1])
        if isinstance(frames[-1], (EosFrame, ErrorFrame)):
            self.finish(frames)
        else:
            on_batch(frames)

    def on_lost(self, exc: Exception) -> None:
        if self.stream is not None:
            self.finish([self.stream._lost(exc)])

    def on_stop(self, _: asyncio.Future[None]) -> None:
        if self.stream is not None:
            self.finish([self.stream._stopped()])

    def past_deadline(self) -> None:
        if self.stream is not None:
            self.finish([self.stream._past_deadline()])

    def check_stall(self) -> None:
        stream = self.stream
        if stream is None:
            return
        idle = self.loop.time() - self.last_read
        if idle < stream.stall_timeout_s:
            self.timers.append(self.loop.call_later(stream.stall_timeout_s - idle, self.check_stall))
            return
        stream.routed.fail_now()
        self.finish([stream._stalled()])


class GatewayService:
    """Routes v1 requests to workers; see the module docstring."""

    def __init__(self, router: Router, config: GatewayConfig, metrics: ServiceMetrics) -> None:
        self.router = router
        self.config = config
        self.metrics = metrics

    def upstream_body(self, request: TTSRequest, timeout_s: float) -> dict[str, Any]:
        body = request.to_json()
        body["timeout_s"] = round(timeout_s, 3)
        return body

    async def open(
        self, request: TTSRequest, request_id: str, stop: asyncio.Future[None] | None = None
    ) -> UpstreamStream:
        """Route the request and wait until a worker produces its first audio.

        Raises :class:`~orpheus_tts.aio.Stopped` if ``stop`` completes first (the caller answers that).
        """
        arrived = time.monotonic()
        timeout_s = self.config.deadline_s(request.timeout_s)
        deadline = arrived + timeout_s
        body = self.upstream_body(request, timeout_s)
        try:
            routed = await run_before(self.router.open(body, headers={HEADER_REQUEST_ID: request_id}), deadline, stop)
        except Stopped:
            raise
        except Exception as exc:
            # Raised without a name in this frame: its traceback holds the frame, and a local
            # naming the error would make a cycle that keeps the request for the cycle collector.
            raise self._refusal(exc) from exc
        self.metrics.mine.ttfa.observe(time.monotonic() - arrived)
        self.metrics.mine.input_chars.inc(len(request.text))
        return UpstreamStream(
            routed=routed, deadline=deadline, arrived=arrived, stall_timeout_s=self.config.stall_timeout_s
        )

    def _refusal(self, exc: Exception) -> ServiceError:
        """The answer for a request that could not be routed, counted."""
        error = self._translate(exc)
        self.metrics.outcome(error.code.value)
        return error

    def _translate(self, exc: Exception) -> ServiceError:
        retry_after = self.config.no_workers_retry_after_s
        if isinstance(exc, ServiceError):
            return exc
        if isinstance(exc, DeadlinePassed):
            return ServiceError(ErrorCode.DEADLINE_EXCEEDED, "no audio before the deadline")
        if isinstance(exc, RequestBodyError):  # the request's fault, whatever the routing core saw
            return ServiceError(ErrorCode.INVALID_REQUEST, str(exc))
        if isinstance(exc, NoEndpointAvailableError):
            return ServiceError(ErrorCode.NO_WORKERS, f"no healthy worker: {exc}", retry_after_s=retry_after)
        if isinstance(exc, UpstreamStatusError):
            code = exc.error_code
            return ServiceError(
                code,
                exc.message,
                retry_after_s=exc.retry_after_s or (retry_after if code.http_status in (429, 503) else None),
            )
        if isinstance(exc, UpstreamTimeoutError):
            return ServiceError(ErrorCode.DEADLINE_EXCEEDED, f"the worker did not answer in time: {exc}")
        if isinstance(exc, UpstreamConnectError):
            return ServiceError(ErrorCode.NO_WORKERS, f"no worker could be reached: {exc}", retry_after_s=retry_after)
        if isinstance(exc, RoutingError):
            return ServiceError(ErrorCode.WORKER_LOST, f"the worker failed before audio: {exc}", retryable=True)
        logger.exception("unexpected error while opening an upstream stream")
        return ServiceError(ErrorCode.INTERNAL, "internal error while routing the request")

    def note_finished(self, stream: UpstreamStream, samples: int) -> None:
        self.metrics.outcome(stream.outcome)
        self.metrics.mine.duration.observe(time.monotonic() - stream.arrived)
        if samples:
            self.metrics.mine.audio_seconds.inc(samples / 24_000)
