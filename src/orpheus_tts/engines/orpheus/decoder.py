"""Streaming SNAC decoding: overlapping windows, head emitted, tail flushed, batched.

SNAC is non-causal: an output frame depends on the codes of the 3 frames on
either side (measured, see docs/orpheus.md). A frame is therefore decoded in a
window holding at least :attr:`WindowSettings.left_context_frames` frames before
it and :attr:`WindowSettings.right_context_frames` after it, or the stream's
start/end where there are fewer, which is exactly what an offline decode of the
whole stream sees. So the streamed audio of n frames is n * 2048 samples and
equals decoding all n frames at once, head and tail included.

:class:`DecodeBatcher` gathers the windows of all concurrent streams and
decodes windows of the same length in one call, off the event loop. When more
windows wait than one batch holds, those whose audio the listener needs first
go first: each window is due when its stream's playback
(:mod:`orpheus_tts.engines.pacing`) reaches it, counting the stream's windows
still waiting before it; windows of streams without a playback clock are due
when they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from orpheus_tts.engines.orpheus.codec import SnacCodec
from orpheus_tts.engines.pacing import current_playback
from orpheus_tts.protocol import SAMPLE_RATE_HZ

__all__ = [
    "DEFAULT_DECODE_BATCH_SIZE",
    "DEFAULT_DECODE_BATCH_WAIT_S",
    "DEFAULT_CONTEXT_FRAMES",
    "DEFAULT_MAX_FRAMES_PER_WINDOW",
    "DecodeBatcher",
    "StreamWindows",
    "Window",
    "WindowSettings",
]

logger = logging.getLogger(__name__)

DEFAULT_CONTEXT_FRAMES = 3
"""Frames of context on each side: SNAC 24 kHz's receptive field, so windows match offline."""
DEFAULT_MAX_FRAMES_PER_WINDOW = 8
"""Most frames one window emits; a stream that gets ahead of its decoder catches up in bigger steps."""
DEFAULT_DECODE_BATCH_SIZE = 64
"""Most windows per decoder call."""
DEFAULT_DECODE_BATCH_WAIT_S = 0.012
"""Longest a window waits for other streams' windows before its batch is decoded."""


@dataclass(frozen=True)
class WindowSettings:
    """How a stream is cut into decoder windows."""

    left_context_frames: int = DEFAULT_CONTEXT_FRAMES
    """Frames decoded before the emitted ones (fewer at the stream's start)."""
    right_context_frames: int = DEFAULT_CONTEXT_FRAMES
    """Frames decoded after the emitted ones (fewer at the stream's end); also the lag in frames."""
    max_frames_per_window: int = DEFAULT_MAX_FRAMES_PER_WINDOW
    """Most frames one window emits."""

    def __post_init__(self) -> None:
        if self.left_context_frames < 0 or self.right_context_frames < 0:
            raise ValueError("context frames must not be negative")
        if self.max_frames_per_window < 1:
            raise ValueError("max_frames_per_window must be at least 1")


@dataclass(frozen=True)
class Window:
    """A run of frames to decode and the part of its audio to emit."""

    frames: NDArray[np.int64]
    """Codes, shape ``(n, 7)``."""
    start_frame: int
    """Index of ``frames[0]`` in the stream."""
    emit_offset: int
    """Index in ``frames`` of the first frame whose audio is emitted."""
    emit_frames: int
    """How many frames' audio is emitted."""

    @property
    def length(self) -> int:
        return int(self.frames.shape[0])


class StreamWindows:
    """Plans the windows of one stream as its frames arrive."""

    def __init__(self, settings: WindowSettings | None = None) -> None:
        self.settings = settings or WindowSettings()
        self.total = 0
        """Frames received."""
        self.emitted = 0
        """Frames whose audio has been planned into a window."""
        self._frames: list[tuple[int, ...]] = []
        self._base = 0
        """Stream index of ``_frames[0]``; older frames are no longer needed."""

    def push(self, frames: Sequence[tuple[int, ...]]) -> None:
        self._frames.extend(frames)
        self.total += len(frames)

    def ready(self, final: bool = False) -> list[Window]:
        """Windows for every frame whose context is complete (all frames when ``final``)."""
        s = self.settings
        limit = self.total if final else self.total - s.right_context_frames
        windows: list[Window] = []
        while self.emitted < limit:
            count = min(limit - self.emitted, s.max_frames_per_window)
            # Round the window up to a few fixed lengths with extra left context,
            # which changes nothing in the output but lets more windows share a batch.
            bucket = min(s.max_frames_per_window, 1 << (count - 1).bit_length())
            end = min(self.total, self.emitted + count + s.right_context_frames)
            start = max(0, end - (s.left_context_frames + bucket + s.right_context_frames))
            frames = np.asarray(self._frames[start - self._base : end - self._base], dtype=np.int64)
            windows.append(Window(frames, start, self.emitted - start, count))
            self.emitted += count
        self._trim()
        return windows

    def _trim(self) -> None:
        s = self.settings
        # A final window may reach back L + R + max frames before the first unplanned one.
        keep_from = max(0, self.emitted - s.left_context_frames - s.right_context_frames - s.max_frames_per_window)
        if keep_from - self._base > 4 * s.max_frames_per_window:
            del self._frames[: keep_from - self._base]
            self._base = keep_from


@dataclass
class _Job:
    window: Window
    future: asyncio.Future[NDArray[np.float32]]
    stream: int
    due: float
    """When the listener needs this window's audio (``time.monotonic()``)."""
    audio_s: float
    """Seconds of audio the window emits."""


class DecodeBatcher:
    """Decodes windows from many streams in batches, on one background thread.

    A batch is dispatched when ``max_batch`` windows wait, when every open
    stream has a window waiting, or ``max_wait_s`` after the first one arrived,
    whichever comes first; it takes the ``max_batch`` windows due first.
    Windows of equal length share one decoder call.
    """

    def __init__(
        self,
        codec: SnacCodec,
        max_batch: int = DEFAULT_DECODE_BATCH_SIZE,
        max_wait_s: float = DEFAULT_DECODE_BATCH_WAIT_S,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        self.codec = codec
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.open_streams = 0
        self.calls = 0
        """Decoder calls made."""
        self.windows_decoded = 0
        self._next_stream = 0
        self._heap: list[tuple[float, int, _Job]] = []
        self._order = itertools.count()
        self._queued_s: dict[int, float] = defaultdict(float)
        """Seconds of audio per stream in windows waiting to be decoded."""
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="snac")
        self._task = asyncio.create_task(self._run(self._arrived), name="snac-batcher")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _, _, job in self._heap:
            if not job.future.done():
                job.future.cancel()
        self._heap.clear()
        self._queued_s.clear()
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True)

    def open_stream(self) -> int:
        """Register a stream (so the batcher knows whom to wait for); returns its key."""
        self.open_streams += 1
        self._next_stream += 1
        return self._next_stream

    def close_stream(self, key: int) -> None:
        self.open_streams -= 1
        self._queued_s.pop(key, None)

    def submit(self, window: Window, stream: int = 0) -> asyncio.Future[NDArray[np.float32]]:
        """Queue ``window``; the future gets the audio of its emitted frames.

        Its deadline comes from the current stream's playback clock, if any.
        """
        if self._arrived is None or self._task is None:
            raise RuntimeError("the decode batcher is not running")
        future: asyncio.Future[NDArray[np.float32]] = asyncio.get_running_loop().create_future()
        audio_s = window.emit_frames * self.codec.samples_per_frame / SAMPLE_RATE_HZ
        playback = current_playback()
        ahead_s = self._queued_s[stream]
        due = playback.due(ahead_s) if playback is not None else time.monotonic()
        self._queued_s[stream] = ahead_s + audio_s
        heapq.heappush(self._heap, (due, next(self._order), _Job(window, future, stream, due, audio_s)))
        self._arrived.set()
        return future

    @property
    def waiting(self) -> int:
        """Windows waiting to be decoded."""
        return sum(1 for _, _, job in self._heap if not job.future.done())

    def _take(self) -> list[_Job]:
        """The ``max_batch`` live windows due first, off the queue."""
        jobs: list[_Job] = []
        while self._heap and len(jobs) < self.max_batch:
            _, _, job = heapq.heappop(self._heap)
            if job.stream in self._queued_s:
                self._queued_s[job.stream] = max(0.0, self._queued_s[job.stream] - job.audio_s)
            if not job.future.done():
                jobs.append(job)
        return jobs

    async def _run(self, arrived: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._heap:
                arrived.clear()
                await arrived.wait()
            deadline = loop.time() + self.max_wait_s
            while len(self._heap) < self.max_batch:
                if len({job.stream for _, _, job in self._heap}) >= self.open_streams:
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(arrived.wait(), remaining)
            jobs = self._take()
            if not jobs:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self.decode_now, [j.window for j in jobs])
            except Exception as exc:
                logger.exception("SNAC decode failed for a batch of %d windows", len(jobs))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, audio in zip(jobs, results, strict=True):
                if not job.future.done():
                    job.future.set_result(audio)

    def decode_now(self, windows: Sequence[Window]) -> list[NDArray[np.float32]]:
        """Decode ``windows`` in as few calls as there are distinct lengths (blocking)."""
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, window in enumerate(windows):
            by_length[window.length].append(index)
        out: list[NDArray[np.float32] | None] = [None] * len(windows)
        spf = self.codec.samples_per_frame
        for indices in by_length.values():
            group = [windows[i] for i in indices]
            audio = self.codec.decode(np.stack([w.frames for w in group]), [w.start_frame for w in group])
            self.calls += 1
            self.windows_decoded += len(group)
            for i, window, row in zip(indices, group, audio, strict=True):
                first = window.emit_offset * spf
                out[i] = np.ascontiguousarray(row[first : first + window.emit_frames * spf])
        return [a for a in out if a is not None]
