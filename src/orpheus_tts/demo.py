"""``make demo``: start the whole stack, speak a sentence into a WAV file, stop.

Speech goes the way an application's would: the SDK streams from a gateway,
which routes to a worker process running the embedded engine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import wave

from orpheus_tts.protocol import SAMPLE_RATE_HZ, SAMPLE_WIDTH_BYTES
from orpheus_tts.serving.local import free_port, wait_ready

__all__ = ["run_demo"]

STARTUP_TIMEOUT_S = 180.0
"""The first start of the embedded voice may take a while on a cold disk."""


async def _speak(url: str, text: str) -> tuple[bytes, float, float]:
    from orpheus_tts.sdk import OrpheusTTS

    tts = OrpheusTTS([url], api_key=None, hedge_ttfb_ms=None)
    chunks: list[bytes] = []
    started = time.monotonic()
    first = 0.0
    try:
        async for chunk in tts.stream(text=text, voice="alloy"):
            if not chunks:
                first = time.monotonic() - started
            chunks.append(chunk)
    finally:
        await tts.close()
    return b"".join(chunks), first, time.monotonic() - started


def run_demo(output: str, text: str) -> int:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"starting the stack (gateway + 1 worker, embedded engine) on {url} ...", flush=True)
    cmd = [sys.executable, "-m", "orpheus_tts.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        wait_ready(url, STARTUP_TIMEOUT_S, proc)
        print(f"speaking: {text!r}", flush=True)
        pcm, ttfa_s, total_s = asyncio.run(_speak(url, text))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    with wave.open(output, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH_BYTES)
        wav.setframerate(SAMPLE_RATE_HZ)
        wav.writeframes(pcm)
    audio_s = len(pcm) / (SAMPLE_WIDTH_BYTES * SAMPLE_RATE_HZ)
    print(f"wrote {output}: {audio_s:.2f} s of 24 kHz speech")
    print(f"time to first audio: {ttfa_s * 1000:.0f} ms")
    print(f"real-time factor: {total_s / audio_s:.3f} (wall time / audio time; below 1 is faster than real time)")
    return 0
