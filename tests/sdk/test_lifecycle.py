"""Closing the client the ways the user guide suggests: an atexit hook after ``asyncio.run``, another loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import psutil
import pytest

from orpheus_tts.sdk import OrpheusTTS
from tests.servers import run_cli

ATEXIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, atexit, sys

    import psutil

    from orpheus_tts.sdk import OrpheusTTS

    url = sys.argv[1]
    port = int(url.rsplit(":", 1)[1])
    tts = OrpheusTTS([url], hedge_ttfb_ms=None)
    atexit.register(lambda: asyncio.run(tts.close()))


    async def main():
        audio = b"".join([chunk async for chunk in tts.stream("Hello from a script.", voice="tone")])
        assert audio, "no audio"


    asyncio.run(main())
    open_to_worker = [
        c for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]
    print(f"connections to the worker after the loop ended: {len(open_to_worker)}")
    """
)


@pytest.fixture(scope="module")
def worker() -> Iterator[str]:
    with run_cli("worker", "--engine", "test") as (url, _):
        yield url


def test_an_atexit_close_after_asyncio_run_is_clean(worker: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", ATEXIT_SCRIPT, worker],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "connections to the worker after the loop ended: 0" in proc.stdout
    for symptom in ("Traceback", "EventLoopMismatchError", "unclosed", "Exception ignored"):
        assert symptom not in proc.stderr, proc.stderr


def test_close_from_another_thread_s_loop_closes_on_the_streaming_loop(worker: str) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="streaming-loop", daemon=True)
    thread.start()
    try:
        tts = OrpheusTTS([worker], hedge_ttfb_ms=None)

        async def use() -> bytes:
            return b"".join([c async for c in tts.stream("Hello.", voice="tone")])

        assert asyncio.run_coroutine_threadsafe(use(), loop).result(timeout=30)
        port = int(worker.rsplit(":", 1)[1])
        asyncio.run(asyncio.wait_for(tts.close(), timeout=10))  # a second loop, in this thread
        assert not [
            c
            for c in psutil.Process().net_connections("tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        ]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
