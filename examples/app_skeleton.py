"""Full app skeleton (user guide 15): a FastAPI service answering WAV files.

Run with ``uvicorn examples.app_skeleton:app``; ORPHEUS_URLS and ORPHEUS_KEY choose the service.
"""

import asyncio  # noqa: F401  (as in the guide)
import os

from fastapi import FastAPI, HTTPException  # noqa: F401  (as in the guide)
from fastapi.responses import StreamingResponse

from orpheus_tts.sdk import OrpheusTTS

API_KEY = os.getenv("ORPHEUS_KEY", "")
BASE_URLS = os.getenv("ORPHEUS_URLS", "https://tts.example.com").split(",")
app = FastAPI()
tts = OrpheusTTS(BASE_URLS, api_key=API_KEY, hedge_ttfb_ms=400)


@app.get("/v1/tts.wav")
async def tts_wav(q: str):
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(24000)
        async for chunk in tts.stream(text=q, temperature=0.4):
            wf.writeframes(chunk)
    buf.seek(0)
    return StreamingResponse(buf, media_type="audio/wav")


@app.on_event("shutdown")
async def _shutdown():
    await tts.close()
