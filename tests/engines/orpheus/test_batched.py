"""The transformers backend's batched decoding: one forward step for every active stream.

Rows join and leave the batch at different steps with prompts of different
lengths, so left padding, position ids and trimming are all exercised; the
result must be what each stream gets alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from orpheus_tts.engines.base import validate_params
from orpheus_tts.engines.orpheus import create_orpheus_engine
from orpheus_tts.engines.orpheus.backends.transformers import TransformersBackend
from orpheus_tts.engines.orpheus.prompt import SamplingParams, build_prompt
from tests.engines.orpheus.conftest import ScriptedModel
from tests.eventually import eventually

TEXTS = ["Hi.", "A somewhat longer sentence to speak.", "Mid length text here.", "Ok", "One more, with a comma."]


async def run_all(backend: TransformersBackend, samplings: list[SamplingParams]) -> list[list[int]]:
    encoder = backend.encoder()

    async def one(i: int) -> list[int]:
        await asyncio.sleep(0.05 * i)  # join at different steps
        prompt = build_prompt("tara", TEXTS[i % len(TEXTS)], encoder)
        return [t async for batch in backend.generate(prompt, samplings[i]) for t in batch]

    return list(await asyncio.gather(*(one(i) for i in range(len(samplings)))))


@pytest.fixture(scope="module")
def sharp_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with large weights: its attention depends on positions and padding, unlike a 0.02-std one."""
    from tests.engines.orpheus.make_tiny_models import build_llama, build_tokenizer

    out = tmp_path_factory.mktemp("orpheus-sharp")
    build_llama(out, seed=3, init_std=0.3)
    build_tokenizer(out)
    return out


@pytest.fixture
async def backends(sharp_llm: Path) -> AsyncIterator[tuple[TransformersBackend, TransformersBackend]]:
    llm = str(sharp_llm)
    alone = TransformersBackend(llm, device="cpu", constrain_audio_tokens=True)
    batched = TransformersBackend(llm, device="cpu", constrain_audio_tokens=True, max_batch=8)
    await alone.start()
    await batched.start()
    try:
        yield alone, batched
    finally:
        await alone.close()
        await batched.close()


async def test_batched_greedy_decoding_equals_each_stream_alone(
    backends: tuple[TransformersBackend, TransformersBackend],
) -> None:
    alone, batched = backends
    samplings = [SamplingParams(max_tokens=14 + 7 * i, temperature=0.0, stop_token_ids=()) for i in range(5)]
    singles = []
    for i, sampling in enumerate(samplings):
        prompt = build_prompt("tara", TEXTS[i], alone.encoder())
        singles.append([t async for batch in alone.generate(prompt, sampling) for t in batch])
    together = await run_all(batched, samplings)
    assert [len(t) for t in together] == [s.max_tokens for s in samplings]
    assert together == singles
    stepper = batched.stepper
    assert stepper is not None
    assert stepper.max_rows > 1, "streams really shared forward calls"
    assert stepper.steps < sum(s.max_tokens for s in samplings)


async def test_seeded_rows_repeat_whatever_shares_their_batch(
    backends: tuple[TransformersBackend, TransformersBackend],
) -> None:
    _, batched = backends
    seeded = SamplingParams(max_tokens=21, seed=11, stop_token_ids=())
    first = await run_all(batched, [seeded, SamplingParams(max_tokens=28, stop_token_ids=())])
    second = await run_all(batched, [seeded, SamplingParams(max_tokens=35, seed=3, stop_token_ids=())])
    assert first[0] == second[0]
    assert first[1] != second[1]


async def test_a_cancelled_row_leaves_the_batch(backends: tuple[TransformersBackend, TransformersBackend]) -> None:
    _, batched = backends
    prompt = build_prompt("tara", "Long.", batched.encoder())
    long = batched.generate(prompt, SamplingParams(max_tokens=5000, stop_token_ids=()))
    assert await asyncio.wait_for(long.__anext__(), 30)
    await long.aclose()  # type: ignore[attr-defined]
    short = await asyncio.wait_for(run_all(batched, [SamplingParams(max_tokens=7, stop_token_ids=())]), 30)
    assert len(short[0]) == 7
    assert await eventually(lambda: batched.generations.active == 0, within_s=5)


async def test_concurrent_scripted_streams_in_one_batch_are_exact(
    scripted: ScriptedModel, tiny_models: tuple[Path, Path]
) -> None:
    from orpheus_tts.audio import float_to_int16
    from orpheus_tts.engines.orpheus.loading import load_codec

    engine = create_orpheus_engine(
        "transformers", str(scripted.hf_dir), snac=str(tiny_models[1]), device="cpu", max_batch=4
    )
    await engine.start()
    try:
        params = validate_params(engine.param_specs(), {})

        async def speak(text: str) -> np.ndarray:
            pcm = b"".join([p async for p in engine.synthesize(text, "tara", params)])
            return np.frombuffer(pcm, dtype="<i2")

        results = await asyncio.gather(*(speak(t) for t in TEXTS[:4]))
    finally:
        await engine.close()
    expected = np.frombuffer(
        float_to_int16(load_codec(tiny_models[1], "cpu").decode_all(np.array(scripted.frames))), dtype="<i2"
    )
    for pcm in results:
        assert pcm.size == expected.size
        assert int(np.abs(pcm.astype(np.int32) - expected).max()) <= 1
