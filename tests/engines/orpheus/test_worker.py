"""A real worker serving the Orpheus engine over HTTP, on every installed backend (tiny models)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from orpheus_tts.engines.orpheus.codec import SAMPLES_PER_FRAME
from orpheus_tts.engines.orpheus.engine import OrpheusEngine
from orpheus_tts.protocol import ChunkFrame, EosFrame
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.engines.orpheus.test_engine import generating
from tests.servers import run_server
from tests.streams import stream_tts


async def test_worker_streams_orpheus_audio_by_protocol_v1(make_engine: Callable[..., OrpheusEngine]) -> None:
    engine = make_engine()
    with run_server(create_app(engine, WorkerConfig())) as url:
        result = await stream_tts(url, {"text": "Hello there.", "voice": "leo", "max_tokens": 70, "seed": 4})
        async with httpx.AsyncClient() as client:
            voices = (await client.get(f"{url}/v1/voices")).json()
    assert result.status == 200, result.error_json
    chunks = [f for f in result.frames if isinstance(f, ChunkFrame)]
    eos = result.frames[-1]
    assert isinstance(eos, EosFrame)
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert eos.chunks_total == len(chunks)
    assert eos.samples_total == sum(c.samples for c in chunks) == len(result.pcm) // 2
    assert eos.samples_total == engine.counters()["frames"] * SAMPLES_PER_FRAME == 10 * SAMPLES_PER_FRAME
    assert result.metrics["engine"] == "orpheus"
    assert "tara" in str(voices)


async def test_worker_stops_generating_when_the_client_disconnects(make_engine: Callable[..., OrpheusEngine]) -> None:
    engine = make_engine()
    with run_server(create_app(engine, WorkerConfig())) as url:
        body = {"text": "Tell me a long story.", "max_tokens": 7000}
        async with httpx.AsyncClient(timeout=60) as client:
            async with client.stream("POST", f"{url}/v1/tts/stream", json=body) as response:
                assert response.status_code == 200
                async for _ in response.aiter_raw():
                    break
                assert generating(engine) == 1
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                system = (await client.get(f"{url}/v1/system")).json()
                if system["inflight"] == 0 and generating(engine) == 0:
                    break
                await asyncio.sleep(0.02)
            assert system["inflight"] == 0
            assert generating(engine) == 0, "the generation thread stopped within 2 s"
            tokens = engine.counters()["tokens"]
            assert tokens < 7000
