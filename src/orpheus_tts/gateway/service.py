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
from typing import Any

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
    _cancel_push: Callable[[], None] | None = field(default=None, repr=False)

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
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        timers: list[asyncio.TimerHandle] = []
        last_read = [loop.time()]

        def finish(frames: list[Frame]) -> None:
            if ended.done():
                return
            for timer in timers:
                timer.cancel()
            if self.stop is not None:
                self.stop.remove_done_callback(on_stop)
            ended.set_result(None)
            if frames:
                on_batch(frames)

        def on_frames(frames: list[Frame]) -> None:
            if ended.done():
                return
            last_read[0] = loop.time()
            self._note_terminal(frames[-1])
            if isinstance(frames[-1], (EosFrame, ErrorFrame)):
                finish(frames)
            else:
                on_batch(frames)

        def check_stall() -> None:
            idle = loop.time() - last_read[0]
            if idle < self.stall_timeout_s:
                timers.append(loop.call_later(self.stall_timeout_s - idle, check_stall))
                return
            self.routed.fail_now()
            finish([self._stalled()])

        def on_stop(_: asyncio.Future[None]) -> None:
            finish([self._stopped()])

        timers.append(
            loop.call_later(max(0.0, self.deadline - time.monotonic()), lambda: finish([self._past_deadline()]))
        )
        timers.append(loop.call_later(self.stall_timeout_s, check_stall))
        if self.stop is not None:
            self.stop.add_done_callback(on_stop)
        self._cancel_push = lambda: finish([])
        self.routed.push(on_frames, lambda exc: finish([self._lost(exc)]))
        return ended

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
        if self._cancel_push is not None:  # timers and the stop callback of a pushed stream
            self._cancel_push()
        with contextlib.suppress(Exception):
            await self.routed.aclose()


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
        except BaseException as exc:
            error = self._translate(exc)
            if error is None:
                raise
            self.metrics.outcome(error.code.value)
            raise error from exc
        self.metrics.mine.ttfa.observe(time.monotonic() - arrived)
        self.metrics.mine.input_chars.inc(len(request.text))
        return UpstreamStream(
            routed=routed, deadline=deadline, arrived=arrived, stall_timeout_s=self.config.stall_timeout_s
        )

    def _translate(self, exc: BaseException) -> ServiceError | None:
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
        if isinstance(exc, Exception):
            logger.exception("unexpected error while opening an upstream stream")
            return ServiceError(ErrorCode.INTERNAL, "internal error while routing the request")
        return None

    def note_finished(self, stream: UpstreamStream, samples: int) -> None:
        self.metrics.outcome(stream.outcome)
        self.metrics.mine.duration.observe(time.monotonic() - stream.arrived)
        if samples:
            self.metrics.mine.audio_seconds.inc(samples / 24_000)
