"""The streaming SNAC decoder: streamed audio equals one offline decode, head and tail included."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from orpheus_tts.engines.orpheus.codec import SAMPLES_PER_FRAME, SnacCodec
from orpheus_tts.engines.orpheus.decoder import DecodeBatcher, StreamWindows, Window, WindowSettings
from orpheus_tts.engines.orpheus.tokens import frames_to_levels
from tests.engines.orpheus.conftest import tiny_snac

LENGTHS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 17, 30]
TOLERANCE = 1e-5
"""Float32 rounding only: windows with full context compute the same sums in another order."""


@pytest.fixture(scope="module")
def codec() -> SnacCodec:
    return SnacCodec(tiny_snac(noise=True))


@pytest.fixture(scope="module")
def quiet_codec() -> SnacCodec:
    """No noise blocks at all: its offline decode is the snac package's own ``decode``."""
    return SnacCodec(tiny_snac(noise=False))


def random_frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, size=(n, 7), dtype=np.int64)


def stream_decode(
    codec: SnacCodec, frames: np.ndarray, settings: WindowSettings, chunks: list[int] | None = None
) -> tuple[np.ndarray, list[Window]]:
    """Feed ``frames`` in ``chunks`` (default one at a time) and decode every window as planned."""
    windows = StreamWindows(settings)
    planned: list[Window] = []
    sizes = chunks or [1] * len(frames)
    at = 0
    for size in sizes:
        windows.push([tuple(int(c) for c in f) for f in frames[at : at + size]])
        at += size
        planned += windows.ready()
    assert at == len(frames)
    planned += windows.ready(final=True)
    batcher = DecodeBatcher(codec)
    pieces = [batcher.decode_now([w])[0] for w in planned]
    return (np.concatenate(pieces) if pieces else np.zeros(0, np.float32)), planned


@pytest.mark.parametrize("n", LENGTHS)
def test_streaming_equals_offline_decode(codec: SnacCodec, n: int) -> None:
    frames = random_frames(n, seed=n)
    streamed, windows = stream_decode(codec, frames, WindowSettings())
    offline = codec.decode_all(frames)
    assert streamed.shape == offline.shape == (n * SAMPLES_PER_FRAME,)
    assert np.abs(streamed - offline).max() <= TOLERANCE
    assert sum(w.emit_frames for w in windows) == n
    assert (windows[0].start_frame, windows[0].emit_offset) == (0, 0), "the head frame is emitted"


@pytest.mark.parametrize(("n", "chunks"), [(17, [5, 1, 7, 4]), (30, [2, 9, 1, 1, 16, 1]), (9, [9])])
def test_uneven_arrival_and_multi_frame_windows_still_equal_offline(
    codec: SnacCodec, n: int, chunks: list[int]
) -> None:
    frames = random_frames(n, seed=100 + n)
    streamed, windows = stream_decode(codec, frames, WindowSettings(max_frames_per_window=4), chunks)
    assert max(w.emit_frames for w in windows) > 1
    assert np.abs(streamed - codec.decode_all(frames)).max() <= TOLERANCE


@pytest.mark.parametrize("n", [1, 4, 11])
def test_offline_reference_is_the_snac_package_decode(quiet_codec: SnacCodec, n: int) -> None:
    import torch

    frames = random_frames(n, seed=7 * n)
    streamed, _ = stream_decode(quiet_codec, frames, WindowSettings())
    with torch.inference_mode():
        reference = quiet_codec.model.decode([torch.from_numpy(lv)[None] for lv in frames_to_levels(frames)])
    assert np.abs(streamed - reference[0, 0].numpy()).max() <= TOLERANCE


def test_stock_snac_noise_would_make_streaming_unreproducible() -> None:
    """Why the codec pins the noise: the package's decode draws fresh noise on every call."""
    import torch

    model = tiny_snac(noise=True)
    codes = [torch.from_numpy(lv)[None] for lv in frames_to_levels(random_frames(4, seed=3))]
    with torch.inference_mode():
        assert not torch.equal(model.decode(codes), model.decode(codes))
    codec = SnacCodec(model)
    assert codec.noise_blocks == 4
    frames = random_frames(4, seed=3)
    assert np.array_equal(codec.decode_all(frames), codec.decode_all(frames))


def test_less_context_than_the_receptive_field_is_measurably_wrong(codec: SnacCodec) -> None:
    """The reference window (1 frame left, 2 right) does not match offline; 3 and 3 does."""
    frames = random_frames(12, seed=5)
    offline = codec.decode_all(frames)
    errors = {}
    for context in [(1, 2), (2, 2), (3, 3)]:
        streamed, _ = stream_decode(codec, frames, WindowSettings(*context, max_frames_per_window=1))
        errors[context] = float(np.abs(streamed - offline).max())
    assert errors[(1, 2)] > 100 * TOLERANCE
    assert errors[(2, 2)] > 10 * TOLERANCE
    assert errors[(3, 3)] <= TOLERANCE


def test_full_size_snac_streams_equal_offline() -> None:
    """The real 19.8 M-parameter layout at real width (random weights)."""
    codec = SnacCodec(tiny_snac(noise=True, full=True))
    frames = random_frames(8, seed=11)
    streamed, _ = stream_decode(codec, frames, WindowSettings(max_frames_per_window=2), [4, 2, 2])
    assert np.abs(streamed - codec.decode_all(frames)).max() <= TOLERANCE


def test_batched_decode_equals_per_window_decode(codec: SnacCodec) -> None:
    windows = []
    for i, n in enumerate([9, 9, 5, 17, 2, 9]):
        planned = StreamWindows(WindowSettings(max_frames_per_window=2))
        planned.push([tuple(f) for f in random_frames(n, seed=200 + i).tolist()])
        windows += planned.ready(final=True)
    batcher = DecodeBatcher(codec)
    batched = batcher.decode_now(windows)
    assert batcher.calls < len(windows), "windows of equal length share a call"
    for window, audio in zip(windows, batched, strict=True):
        alone = DecodeBatcher(codec).decode_now([window])[0]
        assert audio.shape == (window.emit_frames * SAMPLES_PER_FRAME,)
        assert np.abs(audio - alone).max() <= TOLERANCE


async def test_concurrent_streams_are_batched_and_each_equals_offline(codec: SnacCodec) -> None:
    batcher = DecodeBatcher(codec, max_batch=8, max_wait_s=0.015)
    await batcher.start()
    try:

        async def one_stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
            frames = random_frames(n, seed)
            key = batcher.open_stream()
            windows = StreamWindows()
            futures = []
            try:
                for frame in frames.tolist():
                    windows.push([tuple(frame)])
                    futures += [batcher.submit(w, key) for w in windows.ready()]
                    await asyncio.sleep(0)
                futures += [batcher.submit(w, key) for w in windows.ready(final=True)]
                pieces = [await f for f in futures]
            finally:
                batcher.close_stream(key)
            return np.concatenate(pieces), frames

        results = await asyncio.gather(*(one_stream(n, 300 + n) for n in [3, 8, 12, 12, 20]))
        for streamed, frames in results:
            assert np.abs(streamed - codec.decode_all(frames)).max() <= TOLERANCE
        assert batcher.calls < batcher.windows_decoded, "some windows were decoded together"
    finally:
        await batcher.close()


async def test_cancelled_windows_are_skipped_and_a_closed_batcher_refuses_work(codec: SnacCodec) -> None:
    batcher = DecodeBatcher(codec, max_wait_s=0.05)
    await batcher.start()
    windows = StreamWindows(WindowSettings(max_frames_per_window=1))
    windows.push([tuple(f) for f in random_frames(6, seed=1).tolist()])
    planned = windows.ready(final=True)
    first, second = batcher.submit(planned[0]), batcher.submit(planned[1])
    first.cancel()
    audio = await asyncio.wait_for(second, 5)
    assert audio.shape == (SAMPLES_PER_FRAME,)
    assert batcher.windows_decoded == 1, "the cancelled window was not decoded"
    await batcher.close()
    with pytest.raises(RuntimeError, match="not running"):
        batcher.submit(planned[2])


def test_window_plan_head_tail_and_lag() -> None:
    windows = StreamWindows(WindowSettings(3, 3, max_frames_per_window=1))
    frames = [tuple([f] * 7) for f in range(6)]
    windows.push(frames[:3])
    assert windows.ready() == [], "frame 0 needs 3 frames of right context"
    windows.push(frames[3:4])
    (head,) = windows.ready()
    assert (head.start_frame, head.emit_offset, head.emit_frames, head.length) == (0, 0, 1, 4)
    windows.push(frames[4:])
    assert [w.emit_offset for w in windows.ready()] == [1, 2]
    tail = windows.ready(final=True)
    assert [(w.start_frame + w.emit_offset) for w in tail] == [3, 4, 5], "the last frames are flushed"
    assert tail[-1].start_frame + tail[-1].length == 6


def test_window_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_frames_per_window"):
        WindowSettings(max_frames_per_window=0)
    with pytest.raises(ValueError, match="negative"):
        WindowSettings(left_context_frames=-1)


def test_codec_rejects_a_non_24khz_layout() -> None:
    import torch
    from snac import SNAC

    torch.manual_seed(0)
    model = SNAC(sampling_rate=32000, encoder_dim=4, decoder_dim=32, vq_strides=[4, 2, 1], attn_window_size=None)
    with pytest.raises(ValueError, match="24 kHz"):
        SnacCodec(model)
