"""Batch/offline synthesis (user guide 11): many short prompts, concurrency capped by a semaphore.

Writes batch_<n>.wav for each prompt. ORPHEUS_URLS and ORPHEUS_KEY choose the service.
"""

import asyncio
import os
import wave

from orpheus_tts.sdk import OrpheusTTS

BASE_URLS = os.getenv("ORPHEUS_URLS", "https://tts.example.com").split(",")
API_KEY = os.getenv("ORPHEUS_KEY") or None
MAX_CONCURRENCY = (os.cpu_count() or 1) * 2  # start ~CPU count x 2 and tune

PROMPTS = [
    "Good morning and welcome aboard the early train to the city.",
    "Your order has been shipped and should arrive on Monday.",
    "Hold on while we connect your call to the next agent.",
    "The meeting starts in five minutes in the room on the left.",
    "Thank you for your patience while we look into this.",
    "Have a wonderful day and come back to see us soon.",
]


async def synthesize(tts, sem, idx, text):
    async with sem:
        chunks = [chunk async for chunk in tts.stream(text=text, temperature=0.4)]
    with wave.open(f"batch_{idx}.wav", "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(24000)
        wf.writeframes(b"".join(chunks))
    return idx


async def main():
    sem = asyncio.Semaphore(MAX_CONCURRENCY)
    async with OrpheusTTS(BASE_URLS, api_key=API_KEY) as tts:
        done = await asyncio.gather(*(synthesize(tts, sem, i, t) for i, t in enumerate(PROMPTS)))
    print(f"wrote {len(done)} files: " + ", ".join(f"batch_{i}.wav" for i in done))


asyncio.run(main())
