"""Streaming over HTTP (user guide 5.2): a FastAPI endpoint that relays PCM as it arrives.

Run with ``uvicorn examples.fastapi_proxy:app``; ORPHEUS_URLS and ORPHEUS_KEY choose the service.
"""

import os

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from orpheus_tts.sdk import OrpheusTTS

BASE_URLS = os.getenv("ORPHEUS_URLS", "https://tts.example.com").split(",")
API_KEY = os.getenv("ORPHEUS_KEY", "KEY")

app = FastAPI()
tts = OrpheusTTS(BASE_URLS, api_key=API_KEY)


@app.get("/speak")
async def speak(q: str):
    async def gen():
        async for chunk in tts.stream(text=q, temperature=0.4):
            yield chunk

    return StreamingResponse(gen(), media_type="application/octet-stream")


@app.on_event("shutdown")
async def _shutdown():
    await tts.close()
