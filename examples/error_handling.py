"""Error handling (user guide 7 and 13): the recommended pattern, plus a safe retry.

The SDK never retries once audio was received; a request that failed before
its first chunk produced nothing, so it may be sent again whole. Writes
error_handling.wav. ORPHEUS_URLS and ORPHEUS_KEY choose the service.
"""

import asyncio
import os
import sys
import wave

import httpx

from orpheus_tts.sdk import OrpheusTTS

BASE_URLS = os.getenv("ORPHEUS_URLS", "https://tts.example.com").split(",")
API_KEY = os.getenv("ORPHEUS_KEY") or None
RETRY_ATTEMPTS = 3
RETRY_BACKOFF_S = 0.5
TEXT = "If something goes wrong, this example tells you what happened and what to try next."


async def safe_stream(tts, text):
    try:
        async for chunk in tts.stream(text=text, temperature=0.4):
            yield chunk
    except httpx.HTTPError as e:
        # log & map to your app's error type
        print(f"HTTP error: {e!r}", file=sys.stderr)
        raise
    except Exception as e:
        # fallback or retry policy, depending on your UX
        print(f"unexpected error: {e!r}", file=sys.stderr)
        raise


async def speak_with_retry(tts, text):
    """Retry the whole request on connect errors, but only if no audio was received."""
    for attempt in range(RETRY_ATTEMPTS):
        received = False
        try:
            async for chunk in safe_stream(tts, text):
                received = True
                yield chunk
            return
        except httpx.ConnectError:
            if received or attempt == RETRY_ATTEMPTS - 1:
                raise
            await asyncio.sleep(RETRY_BACKOFF_S * 2**attempt)


async def main():
    tts = OrpheusTTS(BASE_URLS, api_key=API_KEY)
    try:
        pcm = b"".join([chunk async for chunk in speak_with_retry(tts, TEXT)])
    except httpx.HTTPStatusError as e:
        sys.exit(f"the service refused the request: {e.response.status_code} {e}")
    except asyncio.TimeoutError:
        sys.exit("the service's deadline passed")
    except RuntimeError as e:  # e.g. "Circuit open for endpoint ..."
        sys.exit(str(e))
    finally:
        await tts.close()
    with wave.open("error_handling.wav", "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(24000)
        wf.writeframes(pcm)
    print(f"wrote error_handling.wav ({len(pcm) // 2 / 24000:.2f} s)")


asyncio.run(main())
