"""The worker with the embedded engine says the words, over real HTTP."""

from __future__ import annotations

import asyncio

import pytest

from orpheus_tts.protocol import ChunkFrame
from tests.asr import assert_says
from tests.streams import stream_tts

pytestmark = pytest.mark.asr

SENTENCES = [
    "The weather today is sunny with a light breeze from the west.",
    "Please remember to bring your notebook to the meeting tomorrow morning.",
    "Our library opens early and closes late on weekends.",
]


@pytest.mark.parametrize("text", SENTENCES)
async def test_worker_speech_says_the_words(embedded_worker: str, text: str) -> None:
    result = await stream_tts(embedded_worker, {"text": text, "voice": "alloy", "temperature": 0.4})
    assert result.status == 200
    assert result.error is None
    assert len(result.pcm) > 24_000 * 2, "at least a second of audio"
    assert_says(result.pcm, text)


async def test_paragraph_streams_sentence_by_sentence(embedded_worker: str) -> None:
    paragraph = " ".join(SENTENCES)
    result = await stream_tts(embedded_worker, {"text": paragraph})
    chunks = [f for f in result.frames if isinstance(f, ChunkFrame)]
    assert len(chunks) > len(SENTENCES), "audio arrives in several chunks, not one blob"
    assert_says(result.pcm, paragraph)


async def test_unknown_voice_lists_valid_ones(embedded_worker: str) -> None:
    result = await stream_tts(embedded_worker, {"text": "Hello.", "voice": "darth"})
    assert result.status == 404
    assert result.error_json is not None
    message = result.error_json["error"]["message"]
    assert "joe" in message
    assert "alloy" in message


CONCURRENT = [
    "The weather today is sunny with a light breeze from the west.",
    "Please remember to bring your notebook to the meeting tomorrow morning.",
    "Our library opens early and closes late on weekends.",
    "When the train arrives, please take your bags and step onto the platform.",
    "She sells fresh bread and warm coffee at the corner market.",
    "After the rain stopped, the children ran outside to play in the garden.",
    "The museum has a new exhibit about ancient ships and sailors.",
    "If you need any help, just ask the person at the front desk.",
]


async def test_eight_concurrent_streams_each_say_their_words(embedded_worker: str) -> None:
    # Eight streams share the engine's two slots segment by segment (deadline scheduler, the default):
    # each must still carry exactly its own words, in order.
    results = await asyncio.gather(*(stream_tts(embedded_worker, {"text": t, "seed": 11}) for t in CONCURRENT))
    for text, result in zip(CONCURRENT, results, strict=True):
        assert result.status == 200
        assert result.error is None
        assert_says(result.pcm, text)
