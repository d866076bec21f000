"""Realtime with the embedded voice: what it says (offline recognizer), word timings, telephony formats."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pytest

from orpheus_tts.engines.embedded import create_embedded_engine
from orpheus_tts.engines.timings import text_words
from tests.asr import assert_says
from tests.realtime.client import Conversation, conversation, realtime_worker

ANSWER = (
    "Our train leaves early in the morning. Bring a warm jacket and some water. "
    "The mountains are cold even in summer, so pack a hat as well."
)
SHORT = "Please call me back when you can."


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with realtime_worker(create_embedded_engine()) as (ws_url, _):
        yield ws_url


async def _speak(c: Conversation, cid: str, text: str, gaps: bool = False, **start: Any) -> dict[str, Any]:
    rng = random.Random(cid)
    await c.send(type="start", context_id=cid, **start)
    for word in text.split(" "):
        await c.send(type="text", context_id=cid, text=word + " ")
        if gaps:
            await asyncio.sleep(rng.uniform(0.0, 0.03))  # an LLM's pace: the behaviour under test
    await c.send(type="end", context_id=cid)
    return await c.until_type("done", cid)


async def test_a_context_fed_word_by_word_says_the_whole_text(url: str) -> None:
    async with conversation(url) as c:
        done = await _speak(c, "a", ANSWER, gaps=True, params={"seed": 1})
    pcm = c.audio("a")
    assert done["samples_total"] == len(pcm) // 2
    assert_says(pcm, ANSWER, max_wer=0.1)


async def test_word_timings_are_monotonic_inside_the_audio_and_match_the_text(url: str) -> None:
    async with conversation(url) as c:
        await _speak(c, "a", ANSWER, timestamps=True, params={"seed": 2, "sentence_silence_s": 0.0})
    words = [w for m in c.of("a", "words") for w in m["words"]]
    assert [w["word"] for w in words] == text_words(ANSWER)
    duration = len(c.audio("a")) / 2 / 24_000
    previous = 0.0
    for w in words:
        assert previous <= w["start_s"] < w["end_s"] <= duration + 1e-6, w
        previous = w["end_s"]
    # Each words message comes before the audio that says them.
    kinds = [m["type"] for m in c.of("a") if m["type"] in ("words", "audio")]
    assert kinds[0] == "words"


@pytest.mark.parametrize("fmt", ["ulaw_8000", "alaw_8000"])
async def test_telephony_formats_decode_to_the_words(url: str, fmt: str) -> None:
    async with conversation(url) as c:
        done = await _speak(c, "a", SHORT, output_format=fmt, params={"seed": 3})
    data = c.audio("a")
    assert done["samples_total"] == len(data), "one byte per sample"
    decoder: Any = av.CodecContext.create("pcm_mulaw" if fmt.startswith("ulaw") else "pcm_alaw", "r")
    decoder.sample_rate = 8000
    decoder.layout = "mono"
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in decoder.decode(av.Packet(data))])
    assert_says(pcm.astype("<i2").tobytes(), SHORT, rate=8000)


async def test_pcm_16000_has_two_thirds_of_the_samples(url: str) -> None:
    async with conversation(url) as c:
        await _speak(c, "a", SHORT, params={"seed": 4})
        await _speak(c, "b", SHORT, output_format="pcm_16000", params={"seed": 4})
    full, low = len(c.audio("a")) // 2, len(c.audio("b")) // 2
    assert abs(low - full * 2 / 3) <= 2
    assert_says(c.audio("b"), SHORT, rate=16_000)
