"""The worker's v1 stream over real HTTP: conformance, bad input, queue, deadline, disconnect."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orpheus_tts.engines.base import TimedPiece
from orpheus_tts.engines.testing import ToneEngine, render
from orpheus_tts.protocol import ChunkFrame, EosFrame, MetricsFrame
from orpheus_tts.serving.routes import new_request_id
from orpheus_tts.worker.app import create_app
from orpheus_tts.worker.config import WorkerConfig
from tests.eventually import eventually
from tests.servers import run_server
from tests.streams import stream_tts

TEXT = "Hello world from Orpheus. This is the second sentence! And a third?"


async def test_stream_obeys_protocol_and_carries_exact_audio(tone_worker: str) -> None:
    result = await stream_tts(tone_worker, {"text": TEXT, "voice": "alloy", "temperature": 0.4})
    assert result.status == 200
    kinds = [type(f) for f in result.frames]
    assert kinds[0] is MetricsFrame, "load hints come first"
    assert kinds[-1] is EosFrame
    chunks = [f for f in result.frames if isinstance(f, ChunkFrame)]
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert all(len(c.pcm) % 2 == 0 and c.pcm for c in chunks)
    assert result.pcm == render(TEXT)
    eos = result.frames[-1]
    assert isinstance(eos, EosFrame)
    assert eos.samples_total == len(result.pcm) // 2
    assert eos.chunks_total == len(chunks)
    assert result.headers["x-queue-depth"] == "0"
    assert int(result.headers["x-inflight"]) >= 1
    metrics = result.metrics
    assert metrics["engine"] == "test"
    assert metrics["audio_ms"] == pytest.approx(len(result.pcm) / 48, rel=1e-3)
    assert {"queue_ms", "ttfb_ms", "compute_ms", "rtf", "queue_depth", "inflight"} <= metrics.keys()


async def test_request_id_is_echoed(tone_worker: str) -> None:
    result = await stream_tts(tone_worker, {"text": "Hi."}, headers={"X-Request-Id": "abc-123"})
    assert result.headers["x-request-id"] == "abc-123"


async def test_generated_request_ids_are_distinct_across_requests(tone_worker: str) -> None:
    ids = set()
    for _ in range(3):
        result = await stream_tts(tone_worker, {"text": "Hi."})
        ids.add(result.headers["x-request-id"])
    assert len(ids) == 3
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert not ids & {new_request_id() for _ in range(3)}


def test_a_forked_process_draws_its_own_request_id_prefix() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes one id of its own and leaves at once
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 32
    assert child[:16] != new_request_id()[:16]


async def test_chunks_are_capped_at_max_chunk_samples() -> None:
    engine = ToneEngine(piece_samples=24_000)
    with run_server(create_app(engine, WorkerConfig(max_chunk_samples=1000))) as url:
        result = await stream_tts(url, {"text": TEXT})
    sizes = [f.samples for f in result.frames if isinstance(f, ChunkFrame)]
    assert max(sizes) == 1000
    assert result.pcm == render(TEXT)


BAD_REQUESTS = [
    (b"{not json", 400, "invalid_request", "not valid JSON"),
    (b"[1, 2]", 400, "invalid_request", "JSON object"),
    (b'"text"', 400, "invalid_request", "JSON object"),
    (b"{}", 400, "invalid_request", "'text'"),
    (b'{"text": ""}', 400, "invalid_request", "empty"),
    (b'{"text": " \\n\\t "}', 400, "invalid_request", "whitespace"),
    (b'{"text": 42}', 400, "invalid_request", "must be a string"),
    (b'{"text": "hi", "voice": 7}', 400, "invalid_request", "'voice'"),
    (b'{"text": "hi", "voice": "nobody"}', 404, "unknown_voice", "tone"),
    (b'{"text": "hi", "speed": "fast"}', 400, "invalid_request", "'speed'"),
    (b'{"text": "hi", "speed": 100}', 400, "invalid_request", "<= 4.0"),
    (b'{"text": "hi", "top_k": 1.5}', 400, "invalid_request", "integer"),
    (b'{"text": "hi", "temprature": 0.5}', 400, "invalid_request", "temperature"),
    (b'{"text": "hi", "timeout_s": -1}', 400, "invalid_request", "timeout_s"),
    (b'{"text": "hi", "timeout_s": "soon"}', 400, "invalid_request", "timeout_s"),
]


@pytest.mark.parametrize(("body", "status", "code", "fragment"), BAD_REQUESTS)
async def test_bad_input_gets_its_code(tone_worker: str, body: bytes, status: int, code: str, fragment: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{tone_worker}/v1/tts/stream", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert fragment in error["message"]
    assert error["retryable"] is False


async def test_unknown_parameter_names_key_and_lists_accepted(tone_worker: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{tone_worker}/v1/tts/stream", json={"text": "hi", "tempreature": 1})
    message = response.json()["error"]["message"]
    assert "'tempreature'" in message
    assert "temperature" in message
    assert "speed" in message


async def test_text_and_body_limits() -> None:
    config = WorkerConfig(max_text_chars=50, max_body_bytes=2000)
    with run_server(create_app(ToneEngine(), config)) as url:
        async with httpx.AsyncClient() as client:
            too_long = await client.post(f"{url}/v1/tts/stream", json={"text": "a" * 51})
            too_big = await client.post(f"{url}/v1/tts/stream", json={"text": "hi", "pad": "x" * 5000})

            async def chunked() -> AsyncIterator[bytes]:  # no content-length: the cap must hold while reading
                yield b'{"text": "hi", "pad": "'
                for _ in range(10):
                    yield b"x" * 1000
                yield b'"}'

            streamed = await client.post(
                f"{url}/v1/tts/stream", content=chunked(), headers={"content-type": "application/json"}
            )
    assert too_long.status_code == 413
    assert too_long.json()["error"]["code"] == "text_too_long"
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "body_too_large"
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "body_too_large"


async def test_full_queue_answers_503_with_retry_after() -> None:
    config = WorkerConfig(capacity=1, max_queue=1, retry_after_s=2.0)
    with run_server(create_app(ToneEngine(faults=True), config)) as url:
        slow = {"text": "slow", "fault_first_delay_ms": 3000}
        running = asyncio.ensure_future(stream_tts(url, slow))
        assert await eventually(lambda: _system(url)["inflight"] == 1)
        queued = asyncio.ensure_future(stream_tts(url, slow))
        assert await eventually(lambda: _system(url)["queue_depth"] == 1)
        async with httpx.AsyncClient() as client:
            system = (await client.get(f"{url}/v1/system")).json()
            rejected = await client.post(f"{url}/v1/tts/stream", json={"text": "one more"})
        assert (system["inflight"], system["queue_depth"]) == (1, 1)
        assert rejected.status_code == 503
        assert rejected.json()["error"] == {
            "code": "overloaded",
            "message": "1 streams are running (estimated capacity 1) and 1 requests are queued",
            "retryable": True,
        }
        assert rejected.headers["retry-after"] == "2"
        first, second = await asyncio.gather(running, queued)
    assert first.status == second.status == 200
    assert second.metrics["queue_ms"] > 1000, "the queued request waited for the slot"


async def test_deadline_before_first_audio_is_504(tone_worker: str) -> None:
    started = time.monotonic()
    result = await stream_tts(tone_worker, {"text": "late", "timeout_s": 0.5, "fault_first_delay_ms": 10_000})
    assert time.monotonic() - started < 5
    assert result.status == 504
    assert result.error_json is not None
    assert result.error_json["error"]["code"] == "deadline_exceeded"


async def test_deadline_mid_stream_ends_with_error_frame(tone_worker: str) -> None:
    started = time.monotonic()
    result = await stream_tts(tone_worker, {"text": TEXT, "timeout_s": 1.0, "fault_stall_after": 2})
    assert time.monotonic() - started < 5
    assert result.status == 200
    assert len([f for f in result.frames if isinstance(f, ChunkFrame)]) == 2
    assert result.error is not None
    assert result.error.code == "deadline_exceeded"


async def test_timeout_is_capped_by_max_timeout() -> None:
    config = WorkerConfig(default_timeout_s=0.5, max_timeout_s=1.0)
    with run_server(create_app(ToneEngine(faults=True), config)) as url:
        started = time.monotonic()
        result = await stream_tts(url, {"text": "x", "timeout_s": 1000, "fault_first_delay_ms": 10_000})
    assert result.status == 504
    assert time.monotonic() - started < 5


async def test_engine_error_mid_stream_is_an_error_frame(tone_worker: str) -> None:
    result = await stream_tts(tone_worker, {"text": TEXT, "fault_error_after": 1})
    assert result.error is not None
    assert result.error.code == "engine_error"
    assert len([f for f in result.frames if isinstance(f, ChunkFrame)]) == 1


async def test_engine_error_before_audio_is_500(tone_worker: str) -> None:
    result = await stream_tts(tone_worker, {"text": TEXT, "fault_error_after": 0})
    assert result.status == 500
    assert result.error_json is not None
    assert result.error_json["error"]["code"] == "engine_error"


async def _inflight(client: httpx.AsyncClient, url: str) -> int:
    return int((await client.get(f"{url}/v1/system")).json()["inflight"])


def _system(url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{url}/v1/system", timeout=5).json()
    return data


async def test_client_disconnect_stops_synthesis(tone_worker: str) -> None:
    body = {"text": TEXT * 20, "fault_piece_delay_ms": 100}
    async with httpx.AsyncClient() as client:
        async with client.stream("POST", f"{tone_worker}/v1/tts/stream", json=body) as response:
            async for _ in response.aiter_raw():
                break
            assert await _inflight(client, tone_worker) == 1
        # The connection is closed here; the worker must notice within one piece (100 ms).
        assert await eventually(lambda: _system(tone_worker)["inflight"] == 0, within_s=2.0)
        metrics = (await client.get(f"{tone_worker}/metrics")).text
    assert 'orpheus_requests_total{outcome="cancelled",role="worker"} 1.0' in metrics


async def test_disconnect_while_queued_frees_the_queue() -> None:
    config = WorkerConfig(capacity=1, max_queue=1)
    with run_server(create_app(ToneEngine(faults=True), config)) as url:
        running = asyncio.ensure_future(stream_tts(url, {"text": "a", "fault_first_delay_ms": 1500}))
        assert await eventually(lambda: _system(url)["inflight"] == 1)
        queued = asyncio.ensure_future(stream_tts(url, {"text": "b"}))
        assert await eventually(lambda: _system(url)["queue_depth"] == 1)
        queued.cancel()
        await asyncio.gather(queued, return_exceptions=True)
        assert await eventually(lambda: _system(url)["queue_depth"] == 0)
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{url}/v1/system")).json()["queue_depth"] == 0
            accepted = asyncio.ensure_future(stream_tts(url, {"text": "c"}))
            assert (await running).status == 200
            assert (await accepted).status == 200


async def test_endpoints_voices_system_health_metrics(tone_worker: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    await stream_tts(tone_worker, {"text": "count me"})
    async with httpx.AsyncClient() as client:
        voices = (await client.get(f"{tone_worker}/v1/voices")).json()
        system = (await client.get(f"{tone_worker}/v1/system")).json()
        health = await client.get(f"{tone_worker}/healthz")
        ready = await client.get(f"{tone_worker}/readyz")
        metrics_text = (await client.get(f"{tone_worker}/metrics")).text
        missing = await client.get(f"{tone_worker}/v1/nothing")
    assert {v["id"] for v in voices["voices"]} == {"tone", "tone-low"}
    assert "alloy" in next(v for v in voices["voices"] if v["id"] == "tone")["aliases"]
    assert any(p["name"] == "speed" for p in voices["parameters"])
    assert system["role"] == "worker"
    assert system["capacity"] == 2
    assert (health.status_code, ready.status_code) == (200, 200)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    families = {f.name: f for f in text_string_to_metric_families(metrics_text)}
    for name in (
        "orpheus_requests",
        "orpheus_time_to_first_audio_seconds",
        "orpheus_real_time_factor",
        "orpheus_audio_seconds",
        "orpheus_queue_wait_seconds",
        "orpheus_requests_running",
    ):
        assert name in families, name
    ok = [
        s for s in families["orpheus_requests"].samples if s.labels.get("outcome") == "ok" and s.name.endswith("_total")
    ]
    assert ok
    assert ok[0].value >= 1


def test_openapi_schema_documents_the_stream(tone_worker: str) -> None:
    schema = httpx.get(f"{tone_worker}/openapi.json").json()
    body = schema["paths"]["/v1/tts/stream"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["text"]
    json.dumps(schema)


class _TaggedEngine(ToneEngine):
    """Rejects text with an unknown inline tag the way the Orpheus engine does: when synthesis starts."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def counters(self) -> dict[str, int]:
        return {"requests_seen": self.seen, "resynced": 0}

    async def synthesize(self, text: str, voice: str, params: dict[str, object]) -> AsyncIterator[bytes]:  # type: ignore[override]
        from orpheus_tts.engines.base import InvalidParameterError

        self.seen += 1
        if "<" in text:
            raise InvalidParameterError("text", "has an unknown tag <whisper>", ["<laugh>", "<sigh>"])
        async for piece in super().synthesize(text, voice, params):
            yield piece


async def test_engine_parameter_errors_at_start_are_400_and_engine_counters_are_exported() -> None:
    with run_server(create_app(_TaggedEngine(), WorkerConfig())) as url:
        rejected = await stream_tts(url, {"text": "Hello <whisper> there."})
        accepted = await stream_tts(url, {"text": "Hello there."})
        metrics = httpx.get(f"{url}/metrics").text
    assert rejected.status == 400
    assert rejected.error_json is not None
    assert rejected.error_json["error"]["code"] == "invalid_request"
    assert "<whisper>" in rejected.error_json["error"]["message"]
    assert accepted.status == 200
    assert 'orpheus_engine_events_total{engine="test",event="requests_seen"} 2.0' in metrics


class _EndlessEnding(ToneEngine):
    """The tone engine, except that asking it for more after its last piece never returns (as if
    finding out that it had no more took forever: a busy slot, a crash in between)."""

    async def synthesize_pieces(
        self, text: str, voice: str, params: dict[str, Any], *, timed: bool = False
    ) -> AsyncIterator[TimedPiece]:
        async for piece in super().synthesize_pieces(text, voice, params, timed=timed):
            yield piece
        await asyncio.Event().wait()


async def test_an_engines_last_piece_ends_the_stream_with_its_last_chunk_and_eos_in_one_write() -> None:
    """A stream whose engine marks its last piece is not asked for another, and the last chunk,
    the closing metrics and eos are one write: a crash cannot fall between all the audio and eos."""
    with run_server(create_app(_EndlessEnding(), WorkerConfig())) as url:
        result = await stream_tts(url, {"text": TEXT, "timeout_s": 5})
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("POST", f"{url}/v1/tts/stream", json={"text": TEXT}) as response:
                pieces = [piece async for piece in response.aiter_raw()]
    assert isinstance(result.frames[-1], EosFrame), f"the stream did not end with eos: {result.frames[-1]!r}"
    assert result.pcm == render(TEXT)
    last = pieces[-1].splitlines()
    assert [json.loads(line)["type"] for line in last[-3:]] == ["chunk", "metrics", "eos"]
