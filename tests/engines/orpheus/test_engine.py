"""The Orpheus engine's contract on every installed backend, end to end on the CPU.

transformers runs the tiny random model with its audio-token grammar; llamacpp
(and vllm, on a GPU) a scripted model that repeats valid frames until
``max_tokens``. The tests check structure: the Engine protocol, exact sample
counts (n frames → n * 2048 samples, minus the seam overlaps), cancellation,
and errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orpheus_tts.engines.base import Engine, EngineError, validate_params
from orpheus_tts.engines.orpheus import create_orpheus_engine
from orpheus_tts.engines.orpheus.codec import SAMPLES_PER_FRAME
from orpheus_tts.engines.orpheus.engine import OrpheusEngine
from orpheus_tts.engines.orpheus.prompt import UnknownTagError
from orpheus_tts.engines.orpheus.seams import DEFAULT_CROSSFADE_S

SEAM_SAMPLES = round(DEFAULT_CROSSFADE_S * 24_000)


def tiny_engine(models: tuple[Path, Path], **options: Any) -> OrpheusEngine:
    llm, snac = models
    return create_orpheus_engine(
        backend="transformers",
        model=str(llm),
        snac=str(snac),
        device="cpu",
        constrain_audio_tokens=True,
        **options,
    )


def generating(engine: OrpheusEngine) -> int:
    """Generations still running in the backend (threads, or requests in flight)."""
    generations = getattr(engine.backend, "generations", None)
    if generations is not None:
        return int(generations.active)
    return len(getattr(engine.backend, "_active", ()))


@pytest.fixture
async def engine(make_engine: Callable[..., OrpheusEngine]) -> AsyncIterator[OrpheusEngine]:
    engine = make_engine()
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


async def speak(engine: OrpheusEngine, text: str, **raw: object) -> list[bytes]:
    params = validate_params(engine.param_specs(), raw)
    return [piece async for piece in engine.synthesize(text, engine.catalog.resolve(None), params)]


async def test_engine_protocol_and_declarations(engine: OrpheusEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.name == "orpheus"
    assert engine.capacity == engine.backend.default_capacity
    if engine.backend.name != "vllm":
        assert engine.capacity == 1, "one CPU generation at a time by default"
    assert engine.catalog.default == "tara"
    assert engine.catalog.resolve("alloy") == "tara"
    assert {s.name for s in engine.param_specs()} == {
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "repetition_penalty",
        "seed",
    }


async def test_one_segment_gives_exactly_2048_samples_per_frame(engine: OrpheusEngine) -> None:
    pieces = await speak(engine, "Hello there.", max_tokens=70, seed=1)
    counters = engine.counters()
    assert counters["frames"] == 10
    assert counters["dropped"] == 0
    assert all(len(p) % 2 == 0 and p for p in pieces)
    pcm = np.frombuffer(b"".join(pieces), dtype="<i2")
    assert pcm.size == 10 * SAMPLES_PER_FRAME, "head and tail frames are all there"
    assert np.abs(pcm).max() > 0
    assert len(pieces) > 1, "audio streams in pieces before the segment ends"
    assert counters["length_capped"] == 1


async def test_seeded_requests_repeat(engine: OrpheusEngine) -> None:
    """The same seed samples the same tokens, so the same frames; the streamed decode's windows follow
    timing, so the PCM agrees within 1 LSB rather than bit for bit (offline equality: ``test_scripted``)."""
    first = np.frombuffer(b"".join(await speak(engine, "Again.", max_tokens=35, seed=9)), dtype="<i2")
    second = np.frombuffer(b"".join(await speak(engine, "Again.", max_tokens=35, seed=9)), dtype="<i2")
    assert first.size == second.size > 0
    assert int(np.abs(first.astype(np.int32) - second.astype(np.int32)).max()) <= 1


async def test_segments_are_joined_with_one_crossfade_per_seam(engine: OrpheusEngine) -> None:
    pieces = await speak(engine, "One sentence here. And a second one!", max_tokens=28, seed=2)
    counters = engine.counters()
    assert counters["segments"] == 2
    samples = sum(len(p) for p in pieces) // 2
    assert samples == counters["frames"] * SAMPLES_PER_FRAME - SEAM_SAMPLES


async def test_unknown_tag_fails_before_any_generation(engine: OrpheusEngine) -> None:
    with pytest.raises(UnknownTagError, match="<laugh>"):
        await speak(engine, "Hello <whisper> world")
    assert engine.counters()["tokens"] == 0


async def test_closing_the_stream_stops_generation(engine: OrpheusEngine) -> None:
    backend = engine.backend
    params = validate_params(engine.param_specs(), {"max_tokens": 7000})
    stream = engine.synthesize("A long story. " * 5, "tara", params)
    assert await asyncio.wait_for(stream.__anext__(), 30)
    assert generating(engine) == 1, backend.name
    await stream.aclose()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 2.0
    while generating(engine) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert generating(engine) == 0, "the generation stopped"
    tokens = engine.counters()["tokens"]
    await asyncio.sleep(0.2)
    assert engine.counters()["tokens"] == tokens
    assert tokens < 7000


async def test_cancelling_the_consumer_task_stops_generation(engine: OrpheusEngine) -> None:
    params = validate_params(engine.param_specs(), {"max_tokens": 7000})

    async def consume() -> None:
        async for _ in engine.synthesize("Keep talking.", "tara", params):
            pass

    task = asyncio.ensure_future(consume())
    while engine.counters()["frames"] < 5:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 2.0
    while generating(engine) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert generating(engine) == 0


async def test_not_started_is_an_engine_error(make_engine: Callable[..., OrpheusEngine]) -> None:
    engine = make_engine()
    with pytest.raises(EngineError, match="not started"):
        await speak(engine, "Hi.")
