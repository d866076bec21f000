"""Concurrency (user guide 5.1): several syntheses at once on one shared client.

ORPHEUS_URLS and ORPHEUS_KEY choose the service.
"""

import asyncio
import os

from orpheus_tts.sdk import OrpheusTTS

BASE_URLS = os.getenv("ORPHEUS_URLS", "https://tts.example.com").split(",")
API_KEY = os.getenv("ORPHEUS_KEY", "KEY")

texts = ["One", "Two", "Three", "Four"]


async def one(tts, text, idx):
    chunks = []
    async for c in tts.stream(text=text, temperature=0.3):
        chunks.append(c)
    return idx, b"".join(chunks)


async def main():
    tts = OrpheusTTS(BASE_URLS, api_key=API_KEY)
    results = await asyncio.gather(*(one(tts, t, i) for i, t in enumerate(texts)))  # noqa: F841
    await tts.close()
    # results = list[(idx, pcm_bytes)]


asyncio.run(main())
