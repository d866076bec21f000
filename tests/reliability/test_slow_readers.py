"""Fifty clients reading at a tenth of real time: memory stays bounded, a fast client is unaffected.

The engine is instant, so without backpressure the worker would synthesize
each stream at once and someone would have to hold it for its slow reader.
Loopback sockets absorb a lot (Linux autotunes send buffers up to
``tcp_wmem`` max, 4 MiB by default, and receive buffers beyond): measured
here, about 7 MiB of NDJSON per stream sits in the kernel between the worker
and a slow client. So the streams are made far longer than that (1000 s of
audio, 64 MB of NDJSON each): with backpressure the worker is still holding
every one of them seconds later, its engine simply not resumed, and the
gateway's resident memory barely moves. Once the fast clients are done and
the worker's streams in flight are counted, the slow readers hang up, and
every worker slot comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from orpheus_tts.engines.testing import render
from orpheus_tts.protocol import SAMPLE_RATE_HZ, SAMPLE_WIDTH_BYTES, ChunkFrame, EosFrame, FrameDecoder, StreamTracker
from orpheus_tts.sdk import OrpheusTTS
from tests.eventually import eventually
from tests.reliability.harness import COMPLETE, RssSampler, sdk_stream, system, tally, worker_pids
from tests.servers import run_cli

SLOW_READERS = 50
SLOWDOWN = 10.0
"""Slow readers take in audio at 1/SLOWDOWN of real time."""
CLIENT_RCVBUF_BYTES = 16 * 1024
"""Slow readers' socket receive buffer: small, so the kernel does not soak up the stream for them."""
READ_FOR_S = 8.0
"""The fast clients are spread over this long while the slow readers read (they then hang up;
the soak variant reads to the end)."""
FAST_CLIENTS = 5
FAST_TTFA_BOUND_S = 1.0
"""A fast client's first audio, with 50 slow streams open, comes well within this."""
RSS_GROWTH_BOUND_MB = {"gateway": 80.0, "worker": 40.0}
"""Resident memory growth allowed to each process: measured +45-51 MB (gateway) and +23 MB (worker)
over five runs, mostly per-connection buffers; without backpressure the gateway grows ~190 MB."""
LONG_AUDIO_S = 1000
"""Length of a slow reader's stream: ~64 MB of NDJSON, an order of magnitude over what the kernel buffers."""
SERVE = (
    "serve", "--engine", "test", "--workers", "1", "--capacity", "64", "--max-timeout-s", "600",
    "--max-text-chars", str(LONG_AUDIO_S * 100), "--probe-interval-s", "0.2",
)  # fmt: skip


def _sentence(n: int) -> str:
    return f"Slow reader {n} listens to every word of this long sentence."


def _text(n: int, seconds: int) -> str:
    """One sentence said over and over: ``seconds`` of audio (each character is 10 ms)."""
    return " ".join([_sentence(n)] * (seconds * 100 // (len(_sentence(n)) + 1)))


def _audio_prefix(n: int, size: int) -> bytes:
    """The first ``size`` bytes of :func:`_text`'s audio, without rendering all of it."""
    unit = render(_sentence(n))
    return (unit * (size // len(unit) + 1))[:size]


@dataclass
class SlowRead:
    n: int
    text: str
    audio: bytes
    ended: bool
    """True when the stream's eos or error frame arrived."""
    error: str | None
    read_s: float
    """How long it read."""


async def _slow_reader(client: httpx.AsyncClient, url: str, n: int, seconds: int, hang_up: asyncio.Event) -> SlowRead:
    """Reads at 1/SLOWDOWN of real time until the stream ends or ``hang_up`` is set."""
    text = _text(n, seconds)
    decoder, tracker = FrameDecoder(), StreamTracker()
    audio = bytearray()
    started = time.monotonic()
    body = {"text": text, "timeout_s": 600}
    async with client.stream("POST", f"{url}/v1/tts/stream", json=body) as response:
        assert response.status_code == 200, response.status_code
        async for data in response.aiter_raw():
            for frame in decoder.feed(data):
                tracker.observe(frame)  # raises on a seq gap, a duplicate, a bad eos
                if isinstance(frame, ChunkFrame):
                    audio += frame.pcm
            if tracker.ended is not None or hang_up.is_set():
                break
            wait_s = len(audio) / SAMPLE_WIDTH_BYTES / SAMPLE_RATE_HZ * SLOWDOWN - (time.monotonic() - started)
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hang_up.wait(), wait_s)
            if hang_up.is_set():
                break
    error = None if tracker.ended is None or isinstance(tracker.ended, EosFrame) else tracker.ended.code
    return SlowRead(n, text, bytes(audio), tracker.ended is not None, error, time.monotonic() - started)


@dataclass
class Stack:
    url: str
    gateway_pid: int
    worker_pid: int
    worker_url: str


@pytest.fixture
def stack() -> Iterator[Stack]:
    """``serve`` with one worker, fresh for each test so its memory figures start from scratch."""
    with run_cli(*SERVE) as (url, proc):
        ((worker, port),) = worker_pids(proc.pid).items()
        yield Stack(url, proc.pid, worker, f"http://127.0.0.1:{port}")


async def _fast_clients(url: str, every_s: float) -> list[float]:
    """First-audio times of FAST_CLIENTS SDK streams started ``every_s`` apart; each checked whole."""
    ttfas = []
    async with OrpheusTTS(url, hedge_ttfb_ms=None) as tts:
        for i in range(FAST_CLIENTS):
            got = await sdk_stream(tts, f"Fast client {i} has somewhere to be.")
            assert tally([got])[COMPLETE] == 1
            assert got.first_audio_s is not None
            ttfas.append(got.first_audio_s)
            await asyncio.sleep(every_s)
    return ttfas


@contextlib.asynccontextmanager
async def _client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.AsyncHTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF_BYTES)],
        limits=httpx.Limits(max_connections=SLOW_READERS + 8),
    )
    async with httpx.AsyncClient(transport=transport, timeout=60) as client:
        yield client


async def _run(stack: Stack, seconds: int, read_for_s: float) -> tuple[list[SlowRead], list[float], int]:
    """Slow readers with fast clients beside them; returns the reads, the fast TTFAs and how many
    streams the worker was still synthesizing when the fast clients were done. The readers hang up
    then (when ``read_for_s`` is finite) or read to the end."""
    url = stack.url
    baseline = await _fast_clients(url, 0.0)
    with RssSampler({"gateway": stack.gateway_pid, "worker": stack.worker_pid}) as rss:
        async with _client() as client:
            hang_up = asyncio.Event()
            readers = [
                asyncio.ensure_future(_slow_reader(client, url, i, seconds, hang_up)) for i in range(SLOW_READERS)
            ]
            await eventually(lambda: system(url)["active_streams"] >= SLOW_READERS, within_s=10)
            during = await _fast_clients(url, min(read_for_s, seconds * SLOWDOWN) / (FAST_CLIENTS + 2))
            held_back = int(httpx.get(f"{stack.worker_url}/v1/system", timeout=5).json()["inflight"])
            if read_for_s != float("inf"):
                hang_up.set()
            slow = await asyncio.gather(*readers)
    print(
        f"slow readers: {SLOW_READERS} at 1/{SLOWDOWN:g} real time; peak RSS gateway {rss.peak_mb('gateway'):.0f} MB "
        f"(+{rss.growth_mb('gateway'):.1f}), worker {rss.peak_mb('worker'):.0f} MB (+{rss.growth_mb('worker'):.1f}); "
        f"fast TTFA before {max(baseline) * 1000:.0f} ms, during {max(during) * 1000:.0f} ms (max)"
    )
    for name in ("gateway", "worker"):
        assert rss.growth_mb(name) < RSS_GROWTH_BOUND_MB[name], f"{name} grew {rss.growth_mb(name):.0f} MB"
    assert max(during) < FAST_TTFA_BOUND_S, f"a fast client waited {max(during):.2f} s for audio"
    for read in slow:
        assert read.audio == _audio_prefix(read.n, len(read.audio)), "a slow reader's audio is not its own"
    # They hung up (or finished): every slot and stream is released.
    assert await eventually(lambda: system(url)["active_streams"] == 0 and system(url)["totals"]["inflight"] == 0)
    return slow, during, held_back


async def test_fifty_slow_readers_keep_memory_bounded_and_a_fast_client_fast(stack: Stack) -> None:
    slow, _, held_back = await _run(stack, seconds=LONG_AUDIO_S, read_for_s=READ_FOR_S)
    # The instant engine could finish a minute of audio in well under a second: still running
    # seconds later, every stream was held back by its reader (backpressure, end to end).
    assert held_back == SLOW_READERS
    heard = [len(r.audio) / SAMPLE_WIDTH_BYTES / SAMPLE_RATE_HZ for r in slow]
    assert all(0 < h < LONG_AUDIO_S for h in heard), "slow readers heard some, not all, of their audio"
    assert all(h < r.read_s / SLOWDOWN * 3 for h, r in zip(heard, slow, strict=True)), (
        "readers were not slow: the test proves nothing"
    )


@pytest.mark.slow
async def test_fifty_slow_readers_to_the_end(stack: Stack) -> None:
    """Each slow reader takes in 6 s of audio at 1/10 real time (~60 s) and gets all of it."""
    slow, _, _ = await _run(stack, seconds=6, read_for_s=float("inf"))
    for read in slow:
        assert read.ended
        assert read.error is None
        assert read.audio == render(read.text)
