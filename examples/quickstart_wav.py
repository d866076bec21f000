"""Quickstart (user guide 2.1): stream speech into hello.wav.

ORPHEUS_URLS (comma-separated) and ORPHEUS_KEY choose the service.
"""

import asyncio
import os
import wave

from orpheus_tts.sdk import OrpheusTTS

SAMPLE_RATE = 24000
SAMPLE_WIDTH = 2  # bytes
CHANNELS = 1
BASE_URLS = os.getenv("ORPHEUS_URLS", "https://tts.example.com").split(",")
API_KEY = os.getenv("ORPHEUS_KEY") or None


async def main():
    tts = OrpheusTTS(
        base_urls=BASE_URLS,  # one or many gateway/worker URLs
        api_key=API_KEY,  # or None if not required
        hedge_ttfb_ms=400,  # set None to disable hedging
    )
    pcm_chunks = []
    async for chunk in tts.stream(
        text="Hello world from Orpheus.",
        voice="alloy",  # optional; service-defined
        temperature=0.4,
        top_p=0.9,
        top_k=0,  # optional tuning passed through
        max_tokens=1536,
    ):
        pcm_chunks.append(chunk)
    with wave.open("hello.wav", "wb") as wf:
        wf.setnchannels(CHANNELS)
        wf.setsampwidth(SAMPLE_WIDTH)
        wf.setframerate(SAMPLE_RATE)
        wf.writeframes(b"".join(pcm_chunks))
    await tts.close()  # IMPORTANT: release HTTP connections


asyncio.run(main())
