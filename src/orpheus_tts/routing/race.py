"""One upstream attempt, and the stream it becomes once it wins the race.

An attempt POSTs the request to one endpoint and reads until the first audio
chunk (or the end of the stream): everything up to that point can still fail
over or lose a hedged race. The winner becomes a :class:`RoutedStream`, which
reads the rest of the body with the caller's backpressure and never replays.
Each attempt reports exactly one verdict to its endpoint: success (``eos``, or
a request-caused error, a 4xx or ``error`` frame, that proves the server
answers), failure (no connection, 5xx, a broken or stalled stream, an
endpoint-side ``error`` frame) or none (cancelled, abandoned, ``overloaded``,
a deadline). A request-caused error is never tried on another endpoint.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal

import httpx

from orpheus_tts.protocol import (
    ChunkFrame,
    EosFrame,
    ErrorCode,
    ErrorFrame,
    Frame,
    FrameDecoder,
    MetricsFrame,
    ProtocolError,
    StreamTracker,
)
from orpheus_tts.routing.breaker import Permit
from orpheus_tts.routing.endpoint import Endpoint
from orpheus_tts.routing.errors import (
    BrokenStreamError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from orpheus_tts.routing.transport import ResponseTimeout, StreamResponse, TransportFailure

__all__ = ["ENDPOINT_FAULT_CODES", "Attempt", "RoutedStream", "open_attempt"]

DRAIN_TIMEOUT_S = 1.0
"""After the terminal frame, how long we read on to reach the end of the body (so the
connection can be reused) before closing the connection instead."""
MAX_DRAIN_BYTES = 64 * 1024
MAX_ERROR_MESSAGE_CHARS = 500
"""A non-JSON error body is quoted up to this many characters."""

ENDPOINT_FAULT_CODES = frozenset({ErrorCode.ENGINE_ERROR.value, ErrorCode.INTERNAL.value})
"""``error`` frame codes that count against the endpoint's circuit breaker.

Not ``worker_lost``: only a gateway sends it, about one of its workers, and a
gateway that reports it is healthy; counting it would let one dying worker
open every client's circuit to a gateway that still has healthy workers."""

Verdict = Literal["success", "failure", "none"]


class Attempt:
    """One request to one endpoint; reports its verdict exactly once."""

    def __init__(self, endpoint: Endpoint, permit: Permit, *, hedge: bool, clock: Callable[[], float]) -> None:
        self.endpoint = endpoint
        self.permit = permit
        self.hedge = hedge
        self.clock = clock
        self.started = clock()
        self.first_audio_s: float | None = None
        """Seconds from the start to the first chunk (or end), once known."""
        self._done = False
        self.epoch = endpoint.epoch
        endpoint.begin(hedge=hedge)

    @property
    def current(self) -> bool:
        """False once the endpoint came back from being down: this attempt's latency no longer describes it."""
        return self.epoch == self.endpoint.epoch

    @property
    def done(self) -> bool:
        return self._done

    def finish(self, verdict: Verdict) -> None:
        if self._done:
            return
        self._done = True
        endpoint = self.endpoint
        endpoint.end()
        if verdict == "success":
            endpoint.succeeded(self.permit)
        elif verdict == "failure" and self.current:
            endpoint.failed(self.permit, self.clock())
        else:
            endpoint.released(self.permit)

    def lost(self) -> None:
        """Lost a hedged race and still waiting for its first audio, which it goes on to measure:
        meanwhile it counts as at least as slow as it has waited (held until that real sample),
        or the endpoint would look as fast as before and get the next request."""
        now = self.clock()
        if not self._done and self.first_audio_s is None and self.current:
            self.endpoint.observe_abandoned(now - self.started, now)

    def abandon(self) -> None:
        """Cancelled before its first audio: no verdict, but it took at least this long."""
        if self._done:
            return
        self.lost()
        self.finish("none")


def _ignore(_: object) -> None:
    return None


def status_verdict(error: UpstreamStatusError) -> Verdict:
    if error.status < 500:
        return "success"
    if error.status in (503, 504):
        return "none"
    return "failure"


def error_frame_verdict(frame: ErrorFrame) -> Verdict:
    """An endpoint fault counts against it; a request-caused error proves it answers; the rest is no verdict."""
    if frame.code in ENDPOINT_FAULT_CODES:
        return "failure"
    return "success" if ErrorCode.parse(frame.code).request_caused else "none"


async def open_attempt(
    attempt: Attempt, content: bytes, headers: dict[str, str], timeout: httpx.Timeout
) -> RoutedStream:
    """Send the request and read until the first chunk or the end; see the module docstring.

    Raises an :class:`UpstreamError` (after recording the verdict) when the
    attempt fails; on cancellation it closes the connection and re-raises.
    """
    endpoint = attempt.endpoint
    response: StreamResponse | None = None
    stream: RoutedStream | None = None
    try:
        try:
            response = await endpoint.streams.post(content, headers, timeout)
        except ResponseTimeout as exc:
            raise UpstreamTimeoutError(endpoint.url, f"{endpoint.url} sent no response in time: {exc}") from exc
        except TransportFailure as exc:
            raise UpstreamConnectError(endpoint.url, f"cannot reach {endpoint.url}: {exc}") from exc
        endpoint.observe_headers(response.headers, attempt.clock())
        if response.status_code != 200:
            raise await _status_error(endpoint, response, attempt.clock)
        stream = RoutedStream(attempt, response)
        await stream.read_until_audio()
        return stream
    except UpstreamError as exc:
        if stream is not None:
            await stream.close_transport()
        elif response is not None:
            await response.aclose()
        attempt.finish(status_verdict(exc) if isinstance(exc, UpstreamStatusError) else "failure")
        raise
    except BaseException:
        attempt.abandon()
        if stream is not None:
            await stream.close_transport()
        elif response is not None:
            await response.aclose()
        raise


async def _status_error(
    endpoint: Endpoint, response: StreamResponse, clock: Callable[[], float]
) -> UpstreamStatusError:
    status = response.status_code
    limit = endpoint.settings.max_error_body_bytes
    raw = bytearray()
    try:
        while len(raw) < limit and (data := await response.read()):
            raw += data
    except (TransportFailure, ResponseTimeout):
        pass
    finally:
        await response.aclose()
    code, message = _parse_error_body(bytes(raw[:limit]), status)
    retry_after = _retry_after_s(response.headers.get("retry-after"))
    if status == 503:
        endpoint.demote_until(retry_after, clock())
    # Any other endpoint may succeed where this one answered 5xx, whatever the body's own
    # ``retryable`` says (that is about retrying here); but 4xx is the request's fault and
    # 504 means its deadline is spent.
    failover = status >= 500 and status != 504
    return UpstreamStatusError(
        endpoint.url,
        status,
        code,
        message,
        retry_after_s=retry_after,
        retryable=failover,
        headers=response.headers,
    )


def _parse_error_body(raw: bytes, status: int) -> tuple[str, str]:
    """(code, message) from a v1 JSON error body, with fallbacks for anything else."""
    try:
        error = json.loads(raw)["error"]
        code = error["code"]
        if not isinstance(code, str) or not code:
            raise TypeError
        return code, str(error.get("message") or code)
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip()
        return _default_code(status), text[:MAX_ERROR_MESSAGE_CHARS] or f"HTTP {status}"


def _default_code(status: int) -> str:
    for code in ErrorCode:
        if code.http_status == status:
            return code.value
    return ErrorCode.INVALID_REQUEST.value if status < 500 else ErrorCode.INTERNAL.value


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare from our servers, not worth parsing
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class RoutedStream:
    """A v1 stream committed to one endpoint: iterate it for frames, close it when done.

    Iteration yields every frame in order and ends after the terminal ``eos``
    or ``error`` frame; a body that breaks raises :class:`BrokenStreamError`
    (or :class:`UpstreamTimeoutError`) after the frames already received.
    Nothing is replayed. :meth:`aclose` closes the connection, which tells
    the server to stop.
    """

    def __init__(self, attempt: Attempt, response: StreamResponse) -> None:
        self._attempt = attempt
        self._response = response
        # Chunks stay the lines they arrived in: a proxy relays them without touching the audio.
        self._decoder = FrameDecoder(attempt.endpoint.settings.max_line_bytes, keep_lines=True)
        self._tracker = StreamTracker()
        self._pending: list[Frame] = []
        self._iterating = False
        self._closed = False
        self._on_frames: Callable[[list[Frame]], None] = _ignore
        self._on_failure: Callable[[UpstreamError], None] = _ignore
        self._drained = 0
        self._drain_timer: asyncio.TimerHandle | None = None
        self.hedged = False
        """True when a backup request was launched for this call."""
        self.attempts = 1
        """Upstream requests this call made, hedges and failovers included."""

    @property
    def endpoint(self) -> str:
        """Base URL of the endpoint serving the stream."""
        return self._attempt.endpoint.url

    @property
    def headers(self) -> Mapping[str, str]:
        """The upstream response headers (``X-Request-Id``, load hints…), looked up by name in any case."""
        return self._response.headers

    @property
    def is_hedge(self) -> bool:
        """True when the backup request won the race."""
        return self._attempt.hedge

    @property
    def first_audio_s(self) -> float | None:
        """Seconds from this attempt's start to its first chunk."""
        return self._attempt.first_audio_s

    def __aiter__(self) -> AsyncIterator[Frame]:
        if self._iterating:
            raise RuntimeError("a RoutedStream can be iterated only once")
        self._iterating = True
        return self._frames()

    async def read_until_audio(self) -> None:
        """Buffer frames until the first chunk or the terminal frame (attempt phase)."""
        attempt = self._attempt
        while not any(isinstance(f, (ChunkFrame, EosFrame, ErrorFrame)) for f in self._pending):
            self._pending.extend(await self._read())
        now = attempt.clock()
        attempt.first_audio_s = now - attempt.started
        if attempt.current:
            attempt.endpoint.observe_ttfb(attempt.first_audio_s, now)

    async def next_frames(self) -> list[Frame]:
        """The next frames, as many as arrived together; ``[]`` once the terminal frame was returned.

        The batch that holds the terminal frame ends with it. A broken body
        raises (after the frames of earlier batches). The lower-overhead
        alternative to iterating frame by frame.
        """
        if self._attempt.done:
            return []
        frames, self._pending = self._pending, []
        while not frames:  # a read may end mid-line and complete no frame
            try:
                frames = await self._read()
            except UpstreamError:
                await self.close_transport()
                self._attempt.finish("failure")
                raise
        last = frames[-1] if frames else None
        if isinstance(last, (EosFrame, ErrorFrame)):
            await self._end(last)
        return frames

    async def _frames(self) -> AsyncIterator[Frame]:
        try:
            while frames := await self.next_frames():
                for frame in frames:
                    yield frame
        finally:
            await self.aclose()

    async def _read(self) -> list[Frame]:
        """The next frames from the body; raises (recording nothing) if the body breaks."""
        try:
            data = await self._response.read()
        except (ResponseTimeout, TransportFailure) as exc:
            raise self._read_error(exc) from exc
        return self._decode_piece(data)

    def _read_error(self, error: Exception) -> UpstreamError:
        """The routing error for a body that could not be read on (timed out or broke)."""
        url = self._attempt.endpoint.url
        if isinstance(error, ResponseTimeout):
            return UpstreamTimeoutError(url, f"{url} stopped sending: {error}")
        return BrokenStreamError(url, f"the stream from {url} broke after {self._tracker.chunks} chunks: {error}")

    def _decode_piece(self, data: bytes) -> list[Frame]:
        """The frames a piece of the body completes; ``b""`` (the body's end) must bring the terminal frame."""
        if data:
            return self._decode(data)
        frames = self._decode(None)
        if not any(isinstance(f, (EosFrame, ErrorFrame)) for f in frames):
            url = self._attempt.endpoint.url
            raise BrokenStreamError(url, f"the stream from {url} ended without eos after {self._tracker.chunks} chunks")
        return frames

    def _decode(self, data: bytes | None) -> list[Frame]:
        url = self._attempt.endpoint.url
        endpoint, now = self._attempt.endpoint, self._attempt.clock()
        out: list[Frame] = []
        try:
            frames = self._decoder.feed(data) if data is not None else self._decoder.close()
            for frame in frames:
                self._tracker.observe(frame)
                out.append(frame)
                if isinstance(frame, MetricsFrame):
                    endpoint.observe_metrics(frame.values, now)
                elif isinstance(frame, (EosFrame, ErrorFrame)):
                    break  # nothing may follow; ignore whatever does
        except ProtocolError as exc:
            raise BrokenStreamError(url, f"the stream from {url} broke protocol v1: {exc}") from exc
        return out

    async def _end(self, frame: EosFrame | ErrorFrame) -> None:
        """The terminal frame arrived: report the verdict, then read on to the end of the body.

        Reaching the end lets the connection be reused; unless the body has
        ended already, it happens in the background (bounded in time and bytes)
        so the caller gets the terminal frame at once.
        """
        self._attempt.finish("success" if isinstance(frame, EosFrame) else error_frame_verdict(frame))
        if self._closed:
            return
        self._closed = True  # the drain owns the connection from here
        if self._response.finished:
            await self._response.aclose()
            return
        self._attempt.endpoint.run_in_background(self._drain_then_close(), DRAIN_TIMEOUT_S)

    async def _drain_then_close(self) -> None:
        try:
            drained = 0
            while data := await self._response.read():
                drained += len(data)
                if drained > MAX_DRAIN_BYTES:
                    return
        except (TransportFailure, ResponseTimeout):
            return
        finally:
            await self._response.aclose()

    async def close_transport(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._response.aclose()

    # ------------------------------------------------------------------ push mode

    @property
    def can_push(self) -> bool:
        """Whether :meth:`push` can deliver this stream (its response is the lean client's, unread)."""
        return callable(getattr(self._response, "push", None)) and not self._iterating and not self._closed

    def push(self, on_frames: Callable[[list[Frame]], None], on_failure: Callable[[UpstreamError], None]) -> None:
        """Deliver the rest of the stream by callback, as it is read: the twin of :meth:`next_frames`
        for a relay that writes from the connection's read callback.

        ``on_frames`` gets each batch as it arrives (the frames buffered so far
        first, before this returns); the last batch ends with the terminal frame,
        whose verdict is recorded as soon as ``on_frames`` returns (in the same
        callback, so before anything else can look), letting the relay write the
        stream's end first. A body
        that breaks records a failure and calls ``on_failure`` once. Only for a
        stream that :attr:`can_push`; the lean client's pause and resume give
        backpressure (:meth:`pause_reading`).
        """
        if not self.can_push:
            raise RuntimeError("this stream cannot be pushed")
        self._iterating = True
        self._on_frames, self._on_failure = on_frames, on_failure
        pending, self._pending = self._pending, []
        if pending:
            self._deliver(pending)
        if not self._attempt.done:
            response: Any = self._response
            response.push(self._on_piece, self._on_lost)

    def pause_reading(self) -> None:
        response: Any = self._response
        response.pause_reading()

    def resume_reading(self) -> None:
        response: Any = self._response
        response.resume_reading()

    def fail_now(self) -> None:
        """:meth:`fail`, for a pushed stream (its connection closes at once)."""
        self._attempt.finish("failure")
        self._close_pushed()

    def _deliver(self, frames: list[Frame]) -> None:
        last = frames[-1]
        if not isinstance(last, (EosFrame, ErrorFrame)):
            self._on_frames(frames)
            return
        on_frames = self._on_frames
        self._let_go()
        try:
            on_frames(frames)  # the stream's end on its way to the client first, its bookkeeping after
        finally:
            self._attempt.finish("success" if isinstance(last, EosFrame) else error_frame_verdict(last))
            self._drain_pushed()

    def _let_go(self) -> None:
        """Drop the pushed stream's callbacks once nothing more can reach them: they refer back to
        the relay that holds this stream, and the cycle would keep all of it for the cycle collector."""
        self._on_frames = self._on_failure = _ignore

    def _on_piece(self, data: bytes) -> None:
        if self._attempt.done:  # after the terminal frame: draining to the body's end
            self._drained += len(data)
            if not data or self._drained > MAX_DRAIN_BYTES:
                self._close_pushed()
            return
        try:
            frames = self._decode_piece(data)
        except UpstreamError as exc:
            self._broken(exc)
            return
        if frames:
            self._deliver(frames)

    def _on_lost(self, error: Exception) -> None:
        if self._attempt.done:
            self._close_pushed()
            return
        self._broken(self._read_error(error))

    def _broken(self, error: UpstreamError) -> None:
        self._attempt.finish("failure")
        self._close_pushed()
        on_failure = self._on_failure
        self._let_go()
        on_failure(error)

    def _drain_pushed(self) -> None:
        """After the terminal frame: read on to the body's end (so the connection is reused), bounded."""
        response: Any = self._response
        if response.finished:
            self._close_pushed()
            return
        self._drain_timer = asyncio.get_running_loop().call_later(DRAIN_TIMEOUT_S, self._close_pushed)

    def _close_pushed(self) -> None:
        self._closed = True
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        response: Any = self._response
        response.close()

    async def fail(self) -> None:
        """Close the connection and count the stream against its endpoint (e.g. it stalled)."""
        self._attempt.finish("failure")
        await self.close_transport()

    async def aclose(self) -> None:
        """Close the connection; a stream closed before its end records no verdict."""
        self._let_go()
        if self._drain_timer is not None:  # pushed, and draining: let the drain finish
            self._attempt.finish("none")
            return
        await self.close_transport()
        self._attempt.finish("none")
