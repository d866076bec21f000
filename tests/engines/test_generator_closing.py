"""A stream's async generators are closed when it ends, none left to the event loop's finalizer hook.

The worker stops asking an engine for pieces after the one marked ``last``,
and a client that goes away closes the body mid-stream: either way each
generator in the chain (the worker's, the engine's, the ones they relay) is
closed at once. One left suspended is closed later by the event loop's
finalizer hook, in a task of its own, with a wake-up of the loop (an eventfd
write under uvloop), per generator and stream. The hook is wrapped here to
name every generator handed to it.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from orpheus_tts.engines.base import Engine
from orpheus_tts.engines.testing import ToneEngine, render
from orpheus_tts.protocol import ChunkFrame, EosFrame, FrameDecoder, TTSRequest
from orpheus_tts.serving.metrics import ServiceMetrics
from orpheus_tts.serving.streaming import FinalPiece
from orpheus_tts.worker.config import WorkerConfig
from orpheus_tts.worker.service import SynthesisService

TEXT = "The first sentence is short. The second one follows it!"


@contextlib.contextmanager
def finalized() -> Iterator[list[str]]:
    """The async generators (by name) that the finalizer hook is given, of those first iterated in the block."""
    firstiter, finalizer = sys.get_asyncgen_hooks()
    seen: list[str] = []

    def record(agen: Any) -> None:
        seen.append(agen.__qualname__)
        if finalizer is not None:
            finalizer(agen)

    sys.set_asyncgen_hooks(firstiter, record)
    try:
        yield seen
    finally:
        sys.set_asyncgen_hooks(firstiter, finalizer)


async def stream(engine: Engine, request: TTSRequest, *, stop_after_first: bool = False) -> bytes:
    """The audio of one stream through the worker's service; with ``stop_after_first``, the client
    goes after the first piece of the body."""
    service = SynthesisService(engine, WorkerConfig(max_chunk_samples=1200), ServiceMetrics("worker"))
    prepared = await service.prepare(request)
    decoder, pcm = FrameDecoder(), b""
    body = prepared.body
    try:
        async for data in body:
            frames = decoder.feed(data)
            pcm += b"".join(f.pcm for f in frames if isinstance(f, ChunkFrame))
            if isinstance(data, FinalPiece):
                assert isinstance(frames[-1], EosFrame)
                break
            if stop_after_first:
                break
    finally:
        await body.aclose()  # type: ignore[attr-defined]  # an async generator, as the server closes it
    return pcm


class OwnSynthesize(ToneEngine):
    """An engine that overrides ``synthesize``: its pieces come through the unmarked path."""

    async def synthesize(self, text: str, voice: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
        yield render(text)[:4800]
        yield render(text)[4800:]


@pytest.mark.parametrize("timestamps", [False, True], ids=["pieces", "timed"])
@pytest.mark.parametrize("stop_after_first", [False, True], ids=["whole", "client-gone"])
async def test_the_test_engines_stream_leaves_no_generator_to_the_finalizer(
    timestamps: bool, stop_after_first: bool
) -> None:
    engine = ToneEngine(word_timings=True)
    with finalized() as seen:
        pcm = await stream(engine, TTSRequest(text=TEXT, timestamps=timestamps), stop_after_first=stop_after_first)
        gc.collect()
    assert pcm == render(TEXT) or (stop_after_first and render(TEXT).startswith(pcm))
    assert seen == []


@pytest.mark.parametrize("stop_after_first", [False, True], ids=["whole", "client-gone"])
async def test_an_engine_with_its_own_synthesize_leaves_no_generator_to_the_finalizer(stop_after_first: bool) -> None:
    with finalized() as seen:
        pcm = await stream(OwnSynthesize(), TTSRequest(text=TEXT), stop_after_first=stop_after_first)
        gc.collect()
    assert pcm == (render(TEXT)[:4800] if stop_after_first else render(TEXT))
    assert seen == []


@pytest.mark.parametrize("timestamps", [False, True], ids=["pieces", "timed"])
@pytest.mark.parametrize("stop_after_first", [False, True], ids=["whole", "client-gone"])
async def test_the_embedded_voices_stream_leaves_no_generator_to_the_finalizer(
    timestamps: bool, stop_after_first: bool
) -> None:
    from orpheus_tts.engines.embedded import create_embedded_engine

    engine = create_embedded_engine()
    await engine.start()
    try:
        with finalized() as seen:
            pcm = await stream(engine, TTSRequest(text=TEXT, timestamps=timestamps), stop_after_first=stop_after_first)
            gc.collect()
    finally:
        await engine.close()
    assert pcm
    assert seen == []
