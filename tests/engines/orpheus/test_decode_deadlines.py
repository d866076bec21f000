"""The SNAC decode batcher serves the windows whose audio is needed first (playback deadlines)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orpheus_tts.engines.orpheus.decoder import DecodeBatcher, Window
from orpheus_tts.engines.pacing import playing
from orpheus_tts.protocol import SAMPLE_RATE_HZ

SPF = 2048
WINDOW_S = SPF / SAMPLE_RATE_HZ


class RecordingCodec:
    """Decodes nothing; remembers the order in which windows (named by start frame) were decoded."""

    samples_per_frame = SPF

    def __init__(self) -> None:
        self.order: list[int] = []

    def decode(self, frames: NDArray[np.int64], starts: Sequence[int]) -> NDArray[np.float32]:
        self.order += list(starts)
        return np.zeros((frames.shape[0], frames.shape[1] * SPF), dtype=np.float32)


class Clock:
    """A playback clock whose audio is needed from ``base`` on."""

    def __init__(self, base: float) -> None:
        self.base = base

    def due(self, ahead_s: float = 0.0) -> float:
        return self.base + ahead_s


def window(name: int) -> Window:
    return Window(np.zeros((1, 7), dtype=np.int64), name, 0, 1)


async def _decode_all(batcher: DecodeBatcher, submissions: list[tuple[Any, int, int]]) -> None:
    futures = []
    for clock, stream, name in submissions:  # all queued before the batcher runs
        with playing(clock):
            futures.append(batcher.submit(window(name), stream))
    await asyncio.wait_for(asyncio.gather(*futures), 5)


async def test_more_windows_than_a_batch_go_earliest_due_first() -> None:
    codec = RecordingCodec()
    batcher = DecodeBatcher(codec, max_batch=1, max_wait_s=0.0)  # type: ignore[arg-type]
    await batcher.start()
    try:
        await _decode_all(
            batcher,
            [(Clock(30.0), 1, 30), (Clock(10.0), 2, 10), (Clock(20.0), 3, 20), (Clock(5.0), 4, 5)],
        )
    finally:
        await batcher.close()
    assert codec.order == [5, 10, 20, 30]


async def test_a_streams_later_windows_are_due_after_its_earlier_ones() -> None:
    codec = RecordingCodec()
    batcher = DecodeBatcher(codec, max_batch=1, max_wait_s=0.0)  # type: ignore[arg-type]
    await batcher.start()
    try:
        ahead, behind = Clock(0.0), Clock(1.5 * WINDOW_S)
        # Stream 1 queues three windows: they are due at 0, 1 and 2 windows of audio from now.
        await _decode_all(batcher, [(ahead, 1, 100), (ahead, 1, 101), (ahead, 1, 102), (behind, 2, 200)])
    finally:
        await batcher.close()
    assert codec.order == [100, 101, 200, 102]


async def test_without_a_playback_clock_windows_go_in_arrival_order() -> None:
    codec = RecordingCodec()
    batcher = DecodeBatcher(codec, max_batch=1, max_wait_s=0.0)  # type: ignore[arg-type]
    await batcher.start()
    try:
        futures = [batcher.submit(window(n), n) for n in (3, 1, 2)]
        await asyncio.wait_for(asyncio.gather(*futures), 5)
    finally:
        await batcher.close()
    assert codec.order == [3, 1, 2]
