"""Realtime playback (user guide 2.2): play chunks as they arrive.

Needs ``pip install sounddevice numpy``. ORPHEUS_URLS and ORPHEUS_KEY choose the service.
"""

import asyncio
import os

import numpy as np
import sounddevice as sd

from orpheus_tts.sdk import OrpheusTTS

SAMPLE_RATE = 24000
BASE_URLS = os.getenv("ORPHEUS_URLS", "https://tts.example.com").split(",")
API_KEY = os.getenv("ORPHEUS_KEY", "KEY")


async def speak(text):
    tts = OrpheusTTS(BASE_URLS, api_key=API_KEY)
    async for chunk in tts.stream(text=text, temperature=0.4):
        sd.play(np.frombuffer(chunk, dtype=np.int16), SAMPLE_RATE, blocking=False)
        # (Optional) sd.wait() at end if you want to block until done
    await tts.close()


asyncio.run(speak("Streaming playback demo."))
