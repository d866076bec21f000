"""The whole engine path, exactly: a scripted LM speaks known frames, the PCM must be their offline decode.

The scripted model's decoding emits known audio tokens and then the stop
token, with the default sampling (temperature 0.6, top-p 0.9) as with greedy
decoding. So the engine's output is checked sample by sample against one
offline SNAC decode of the known frames, on every installed backend.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from orpheus_tts.audio import float_to_int16
from orpheus_tts.engines.base import validate_params
from orpheus_tts.engines.orpheus import create_orpheus_engine
from orpheus_tts.engines.orpheus.codec import SAMPLES_PER_FRAME
from orpheus_tts.engines.orpheus.engine import OrpheusEngine
from orpheus_tts.engines.orpheus.loading import load_codec
from orpheus_tts.engines.orpheus.seams import DEFAULT_CROSSFADE_S
from tests.engines.orpheus.conftest import ScriptedModel

SEAM_SAMPLES = round(DEFAULT_CROSSFADE_S * 24_000)
IN_PROCESS = ["transformers", "llamacpp"]


def scripted_engine(backend: str, scripted: ScriptedModel, snac: Path) -> OrpheusEngine:
    if backend == "llamacpp":
        if importlib.util.find_spec("llama_cpp") is None or scripted.gguf is None:
            pytest.skip("llama-cpp-python or gguf is not installed (pip install 'orpheus-tts[llamacpp]')")
        return create_orpheus_engine("llamacpp", str(scripted.gguf), snac=str(snac), device="cpu", n_threads=1)
    return create_orpheus_engine("transformers", str(scripted.hf_dir), snac=str(snac), device="cpu")


async def speak(engine: OrpheusEngine, text: str, **raw: object) -> np.ndarray:
    params = validate_params(engine.param_specs(), raw)
    pcm = b"".join([piece async for piece in engine.synthesize(text, "tara", params)])
    return np.frombuffer(pcm, dtype="<i2")


def offline(scripted: ScriptedModel, snac: Path) -> np.ndarray:
    codec = load_codec(snac, "cpu")
    audio = codec.decode_all(np.array(scripted.frames, dtype=np.int64))
    return np.frombuffer(float_to_int16(audio), dtype="<i2")


@pytest.mark.parametrize("backend", IN_PROCESS)
async def test_streamed_pcm_equals_the_offline_decode_of_the_known_frames(
    backend: str, scripted: ScriptedModel, tiny_models: tuple[Path, Path]
) -> None:
    engine = scripted_engine(backend, scripted, tiny_models[1])
    await engine.start()
    try:
        pcm = await speak(engine, "Hello there.")
        greedy = await speak(engine, "Hello there.", temperature=0.0)
    finally:
        await engine.close()
    expected = offline(scripted, tiny_models[1])
    assert pcm.size == len(scripted.frames) * SAMPLES_PER_FRAME
    error = int(np.abs(pcm.astype(np.int32) - expected).max())
    assert error <= 1, f"streamed vs offline: max {error} LSB"
    # Greedy decoding speaks the same frames (window sizes follow timing, so equal within 1 LSB, not bit for bit).
    assert greedy.size == pcm.size
    assert int(np.abs(greedy.astype(np.int32) - expected).max()) <= 1
    counters = engine.counters()
    assert (counters["frames"], counters["dropped"], counters["invalid"]) == (2 * len(scripted.frames), 0, 0)
    assert counters["length_capped"] == 0


@pytest.mark.parametrize("backend", IN_PROCESS)
async def test_segments_are_crossfaded_to_the_expected_length(
    backend: str, scripted: ScriptedModel, tiny_models: tuple[Path, Path]
) -> None:
    engine = scripted_engine(backend, scripted, tiny_models[1])
    await engine.start()
    try:
        pcm = await speak(engine, "One sentence here. A second one! And a third?")
    finally:
        await engine.close()
    n = len(scripted.frames)
    assert engine.counters()["segments"] == 3
    assert pcm.size == 3 * n * SAMPLES_PER_FRAME - 2 * SEAM_SAMPLES
    expected = offline(scripted, tiny_models[1])
    # Away from the seams each segment is the offline decode.
    head = n * SAMPLES_PER_FRAME - SEAM_SAMPLES
    assert int(np.abs(pcm[:head].astype(np.int32) - expected[:head]).max()) <= 1


@pytest.mark.parametrize("backend", IN_PROCESS)
async def test_max_tokens_caps_the_frames(
    backend: str, scripted: ScriptedModel, tiny_models: tuple[Path, Path]
) -> None:
    engine = scripted_engine(backend, scripted, tiny_models[1])
    await engine.start()
    try:
        pcm = await speak(engine, "Hello.", max_tokens=21)
    finally:
        await engine.close()
    assert pcm.size == 3 * SAMPLES_PER_FRAME
    assert engine.counters()["length_capped"] == 1
