"""Speak an LLM's answer while it is being written, with word captions (docs/realtime.md).

A simulated LLM writes its answer token by token at about 30 tokens per
second; each token goes to the realtime socket as it is written, and the audio
(and the word timings, for captions) comes back while the LLM is still
writing. ORPHEUS_URLS and ORPHEUS_KEY choose the service.
"""

import asyncio
import os
import re
import wave

from orpheus_tts.sdk import Audio, Done, OrpheusTTS, Words

BASE_URLS = os.getenv("ORPHEUS_URLS", "https://tts.example.com").split(",")
API_KEY = os.getenv("ORPHEUS_KEY") or None
TOKENS_PER_S = 30
ANSWER = (
    "Sure, here is the plan for tomorrow. We meet at the station early in the morning. "
    "The train takes about two hours, so bring something to read."
)


async def fake_llm(text):
    """Yields the answer in small pieces, the way a language model streams tokens."""
    for token in re.findall(r"\S+\s*", text):
        await asyncio.sleep(1 / TOKENS_PER_S)
        yield token


async def main():
    async with OrpheusTTS(BASE_URLS, api_key=API_KEY) as tts:
        audio = bytearray()
        async with tts.realtime(timestamps=True) as session:

            async def feed():
                async for token in fake_llm(ANSWER):
                    await session.send(token)
                await session.end()

            feeder = asyncio.create_task(feed())
            async for event in session:
                if isinstance(event, Audio):
                    audio += event.data  # a player would play it here
                elif isinstance(event, Words):
                    print(" ".join(f"{w.word}@{w.start_s:.2f}s" for w in event.words))
                elif isinstance(event, Done):
                    break
            await feeder
    with wave.open("llm_answer.wav", "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(24000)
        out.writeframes(bytes(audio))


asyncio.run(main())
