"""The gateway with real worker processes on loopback: relay, failover, deadlines, faults."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from orpheus_tts.engines.testing import render
from orpheus_tts.gateway.app import create_app
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.protocol import ChunkFrame, ErrorFrame
from orpheus_tts.sdk import OrpheusTTS, StreamError
from tests.eventually import eventually
from tests.servers import run_cli, run_server
from tests.streams import StreamResult, stream_tts

TEXT = "The gateway relays every frame. It buffers nothing! Does it fail over? It does."
WORKER_ARGS = ("worker", "--engine", "test", "--enable-test-faults", "--capacity", "8")


@contextlib.contextmanager
def workers(count: int) -> Iterator[list[tuple[str, object]]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(run_cli(*WORKER_ARGS)) for _ in range(count)]


@contextlib.contextmanager
def gateway(urls: list[str], **config: object) -> Iterator[str]:
    settings = {"probe_interval_s": 0.2, **config}
    with run_server(create_app(GatewayConfig(workers=tuple(urls), **settings))) as url:  # type: ignore[arg-type]
        yield url


@pytest.fixture(scope="module")
def two_workers() -> Iterator[list[str]]:
    with workers(2) as procs:
        yield [url for url, _ in procs]


async def test_gateway_stream_matches_direct_worker_stream(two_workers: list[str]) -> None:
    body = {"text": TEXT, "voice": "alloy", "speed": 1.25}
    direct = await stream_tts(two_workers[0], body)
    with gateway(two_workers) as gw:
        relayed = await stream_tts(gw, body, headers={"X-Request-Id": "same-id"})
    assert relayed.status == direct.status == 200
    assert relayed.pcm == direct.pcm == render(TEXT, speed=1.25)

    def chunks(r: StreamResult) -> list[tuple[int, bytes]]:
        return [(f.seq, f.pcm) for f in r.frames if isinstance(f, ChunkFrame)]

    assert chunks(relayed) == chunks(direct)
    assert relayed.frames[-1] == direct.frames[-1]
    assert relayed.headers["x-request-id"] == "same-id"
    assert "x-queue-depth" in relayed.headers


async def test_worker_errors_pass_through_with_their_code(two_workers: list[str]) -> None:
    with gateway(two_workers) as gw:
        unknown = await stream_tts(gw, {"text": "hi", "voice": "nobody"})
        bad = await stream_tts(gw, {"text": "hi", "speeed": 1})
        empty = await stream_tts(gw, {"text": "   "})
    assert unknown.status == 404
    assert unknown.error_json is not None
    assert unknown.error_json["error"]["code"] == "unknown_voice"
    assert bad.status == 400
    assert bad.error_json is not None
    assert "'speeed'" in bad.error_json["error"]["message"]
    assert empty.status == 400


async def test_failover_before_first_chunk_when_a_worker_is_killed() -> None:
    with workers(2) as procs, gateway([u for u, _ in procs], probe_interval_s=30.0) as gw:
        await stream_tts(gw, {"text": "Warm up."})
        # Kill the worker the router prefers now, so the next request meets a dead one first.
        best = min(httpx.get(f"{gw}/v1/system").json()["workers"], key=lambda w: w["score"])["url"]
        victim = next(proc for url, proc in procs if url == best)
        os.killpg(victim.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        victim.wait()  # type: ignore[attr-defined]
        results = [await stream_tts(gw, {"text": f"Request number {i}."}) for i in range(4)]
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{gw}/metrics").text)}
    assert all(r.status == 200 and r.error is None for r in results)
    assert all(r.pcm == render(f"Request number {i}.") for i, r in enumerate(results))
    failovers = next(s.value for s in families["orpheus_failovers"].samples if s.name.endswith("_total"))
    assert failovers >= 1


async def test_worker_death_mid_stream_is_worker_lost_and_sdk_raises() -> None:
    with workers(2) as procs, gateway([u for u, _ in procs]) as gw:
        result = await stream_tts(gw, {"text": TEXT * 3, "fault_crash_after": 2, "fault_piece_delay_ms": 20})
        assert result.status == 200
        assert len([f for f in result.frames if isinstance(f, ChunkFrame)]) == 2
        assert result.error == ErrorFrame("worker_lost", result.error.message if result.error else "", True)
        received: list[bytes] = []

        async def consume() -> None:
            async with OrpheusTTS([gw], hedge_ttfb_ms=None) as tts:
                async for chunk in tts.stream(TEXT * 3, fault_crash_after=2, fault_piece_delay_ms=20):
                    received.append(chunk)

        with pytest.raises(StreamError) as info:
            await consume()
        assert info.value.code == "worker_lost"
        assert b"".join(received) == render(TEXT * 3)[: len(b"".join(received))]
        assert received, "the audio before the failure was delivered, not replayed"


async def test_gateway_deadline_holds_even_if_worker_does_not(two_workers: list[str]) -> None:
    with gateway(two_workers, default_timeout_s=1.0, max_timeout_s=1.5) as gw:
        started = time.monotonic()
        before = await stream_tts(gw, {"text": "x", "fault_first_delay_ms": 20_000})
        mid = await stream_tts(gw, {"text": TEXT, "timeout_s": 60, "fault_stall_after": 1})
        elapsed = time.monotonic() - started
    assert before.status == 504
    assert before.error_json is not None
    assert before.error_json["error"]["code"] == "deadline_exceeded"
    assert mid.status == 200
    assert mid.error is not None
    assert mid.error.code == "deadline_exceeded"
    assert elapsed < 8


async def test_all_workers_down_is_503_no_workers() -> None:
    with workers(1) as procs, gateway([procs[0][0]]) as gw:
        os.killpg(procs[0][1].pid, signal.SIGKILL)  # type: ignore[attr-defined]
        assert await eventually(lambda: httpx.get(f"{gw}/v1/system").json()["totals"]["healthy"] == 0)
        result = await stream_tts(gw, {"text": "anyone there?"})
        ready = httpx.get(f"{gw}/readyz")
        system = httpx.get(f"{gw}/v1/system").json()
    assert result.status == 503
    assert result.error_json is not None
    assert result.error_json["error"]["code"] == "no_workers"
    assert int(result.headers["retry-after"]) >= 1
    assert ready.status_code == 503
    assert system["totals"]["healthy"] == 0
    assert system["workers"][0]["healthy"] is False


async def test_system_reflects_a_dead_worker_within_one_probe_interval() -> None:
    with workers(2) as procs, gateway([u for u, _ in procs], probe_interval_s=0.3) as gw:
        assert httpx.get(f"{gw}/v1/system").json()["totals"]["healthy"] == 2
        os.killpg(procs[1][1].pid, signal.SIGKILL)  # type: ignore[attr-defined]
        assert await eventually(lambda: httpx.get(f"{gw}/v1/system").json()["totals"]["healthy"] == 1)
        system = httpx.get(f"{gw}/v1/system").json()
        metrics = httpx.get(f"{gw}/metrics").text
    by_url = {w["url"]: w for w in system["workers"]}
    assert by_url[procs[1][0]]["healthy"] is False
    assert by_url[procs[0][0]]["healthy"] is True
    assert by_url[procs[0][0]]["capacity"] == 8
    assert by_url[procs[0][0]]["engine"] == "test"
    assert system["totals"]["capacity"] == 8, "only healthy workers count"
    assert f'orpheus_upstream_up{{worker="{procs[1][0]}"}} 0.0' in metrics


async def test_metrics_parse_and_move(two_workers: list[str]) -> None:
    with gateway(two_workers) as gw:

        def ok_count() -> float:
            families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{gw}/metrics").text)}
            return sum(
                s.value
                for s in families["orpheus_requests"].samples
                if s.name == "orpheus_requests_total" and s.labels["outcome"] == "ok"
            )

        before = ok_count()
        await stream_tts(gw, {"text": "Count this one."})
        await stream_tts(gw, {"text": "And this one."})
        assert ok_count() - before == 2
        families = {f.name for f in text_string_to_metric_families(httpx.get(f"{gw}/metrics").text)}
    for name in (
        "orpheus_upstream_up",
        "orpheus_circuit_open",
        "orpheus_hedges",
        "orpheus_failovers",
        "orpheus_time_to_first_audio_seconds",
        "orpheus_request_duration_seconds",
    ):
        assert name in families


async def test_voices_are_the_union_of_workers(two_workers: list[str]) -> None:
    with gateway(two_workers) as gw:
        voices = httpx.get(f"{gw}/v1/voices").json()
    assert {v["id"] for v in voices["voices"]} == {"tone", "tone-low"}
    assert any(p["name"] == "speed" for p in voices["parameters"])


async def test_client_disconnect_stops_the_worker(two_workers: list[str]) -> None:
    with gateway(two_workers) as gw:
        async with httpx.AsyncClient() as client:
            body = {"text": TEXT * 30, "fault_piece_delay_ms": 50}
            async with client.stream("POST", f"{gw}/v1/tts/stream", json=body) as response:
                async for _ in response.aiter_raw():
                    break

            async def busy() -> int:
                total = 0
                for url in two_workers:
                    total += (await client.get(f"{url}/v1/system")).json()["inflight"]
                return total

            deadline = time.monotonic() + 3
            while await busy() and time.monotonic() < deadline:  # a bounded poll of an async probe
                await asyncio.sleep(0.05)
            assert await busy() == 0


def _fake_worker(body: bytes) -> Starlette:
    """A worker that sends ``body`` line by line, pausing between lines (no line shares a read)."""

    async def stream(_: Request) -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for line in body.splitlines(keepends=True):
                yield line
                await asyncio.sleep(0.05)

        return StreamingResponse(gen(), media_type="application/x-ndjson")

    async def ready(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    return Starlette(routes=[Route("/v1/tts/stream", stream, methods=["POST"]), Route("/readyz", ready)])


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"chunk","seq":0,"audio":"AAAAAA==","samples":2}\nthis is not json\n',
        b'{"type":"chunk","seq":0,"audio":"AAAAAA==","samples":2}\n{"type":"chunk","seq":5,"audio":"AAAAAA=="}\n',
        b'{"type":"chunk","seq":0,"audio":"AAAAAA==","samples":2}\n',
        b'{"type":"chunk","seq":0,"audio":"AAAAAA==","samples":2}\n{"type":"metrics","rtf":NaN}\n',
    ],
    ids=["garbage-line", "seq-gap", "no-eos", "nan-is-not-json"],
)
async def test_malformed_worker_stream_becomes_worker_lost(body: bytes) -> None:
    with run_server(_fake_worker(body)) as fake, gateway([fake]) as gw:
        result = await stream_tts(gw, {"text": "hi"})
    assert result.status == 200
    assert result.pcm == b"\x00" * 4
    assert result.error is not None
    assert result.error.code == "worker_lost"


async def test_the_workers_frames_are_relayed_as_the_lines_they_came_in() -> None:
    lines = [
        b'{"type": "metrics", "queue_ms": 0.5, "worker": "w-\xc3\xa9", "later_field": [1, 2]}\n',
        b'{"type":"chunk","seq":0,"samples":2,"audio":"AAAAAA=="}\n',
        b'{"type":"chunk", "seq":1, "samples":2, "audio":"AQABAA=="}\n',  # not the canonical shape: decoded
        b'{"type":"metrics","rtf":0.25}\n',
        b'{"chunks_total":2,"type":"eos","samples_total":4,"note":"kept"}\n',
    ]
    with run_server(_fake_worker(b"".join(lines))) as fake, gateway([fake]) as gw:
        async with httpx.AsyncClient(timeout=30.0) as client:
            response = await client.post(f"{gw}/v1/tts/stream", json={"text": "hi"})
    assert response.status_code == 200
    relayed = response.content.splitlines(keepends=True)
    assert relayed[:2] + relayed[3:] == lines[:2] + lines[3:]  # byte for byte, checked but not encoded again
    assert relayed[2] == b'{"type":"chunk","seq":1,"samples":2,"audio":"AQABAA=="}\n'


async def test_malformed_stream_before_audio_fails_over() -> None:
    broken = _fake_worker(b"garbage before any audio\n")
    with workers(1) as procs, run_server(broken) as fake, gateway([fake, procs[0][0]]) as gw:
        results = [await stream_tts(gw, {"text": f"Try {i}."}) for i in range(4)]
    assert all(r.status == 200 and r.error is None for r in results)


def _keys_file(tmp_path: object, text: str) -> str:
    from pathlib import Path

    path = Path(str(tmp_path)) / "keys.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


async def test_auth_both_header_styles_and_every_failure(two_workers: list[str]) -> None:
    from orpheus_tts.gateway.auth import Authenticator

    auth = Authenticator.from_keys(["s3cret-key-one"])
    config = GatewayConfig(workers=tuple(two_workers), probe_interval_s=0.2)
    with run_server(create_app(config, auth)) as gw:
        bearer = await stream_tts(gw, {"text": "Hi."}, headers={"Authorization": "Bearer s3cret-key-one"})
        x_api = await stream_tts(gw, {"text": "Hi."}, headers={"X-API-Key": "s3cret-key-one"})
        failures = {
            "missing": await stream_tts(gw, {"text": "Hi."}),
            "wrong": await stream_tts(gw, {"text": "Hi."}, headers={"Authorization": "Bearer nope"}),
            "wrong-x": await stream_tts(gw, {"text": "Hi."}, headers={"X-API-Key": "nope"}),
            "no-token": await stream_tts(gw, {"text": "Hi."}, headers={"Authorization": "Bearer"}),
            "basic": await stream_tts(gw, {"text": "Hi."}, headers={"Authorization": "Basic czNjcmV0"}),
        }
        metrics = httpx.get(f"{gw}/metrics", headers={"Authorization": "Bearer s3cret-key-one"}).text
        open_endpoints = [httpx.get(f"{gw}{p}").status_code for p in ("/healthz", "/readyz", "/metrics")]
    assert bearer.status == x_api.status == 200
    assert bearer.pcm == render("Hi.")
    for name, result in failures.items():
        assert result.status == 401, name
        assert result.headers["x-request-id"], name
        assert result.error_json is not None
        assert result.error_json["error"]["code"] == "unauthorized", name
        assert result.headers["www-authenticate"].startswith("Bearer"), name
    assert "s3cret-key-one" not in metrics, "a key must never appear in metrics"
    assert 'orpheus_auth_failures_total{reason="missing"} 1.0' in metrics
    assert open_endpoints == [200, 200, 401], "with keys, /metrics (it names the workers) needs one"


async def test_quotas_answer_429_with_retry_after(two_workers: list[str], tmp_path: object) -> None:
    from orpheus_tts.gateway.auth import Authenticator
    from orpheus_tts.gateway.keys import new_key_stanza

    key, stanza = new_key_stanza("team-a", max_concurrent_streams=1, requests_per_minute=3)
    auth = Authenticator.from_sources(keys_file=_keys_file(tmp_path, stanza))
    config = GatewayConfig(workers=tuple(two_workers), probe_interval_s=0.2)
    headers = {"Authorization": f"Bearer {key}"}
    with run_server(create_app(config, auth)) as gw:
        slow = asyncio.ensure_future(stream_tts(gw, {"text": "Slow.", "fault_first_delay_ms": 800}, headers))
        assert await eventually(lambda: auth.streams_open("team-a") == 1)
        concurrent = await stream_tts(gw, {"text": "Too many at once."}, headers)
        assert (await slow).status == 200
        statuses = [(await stream_tts(gw, {"text": f"n{i}"}, headers)).status for i in range(3)]
        over = await stream_tts(gw, {"text": "Over the rate."}, headers)
    assert concurrent.status == 429
    assert concurrent.error_json is not None
    assert concurrent.error_json["error"]["code"] == "rate_limited"
    assert int(concurrent.headers["retry-after"]) >= 1
    assert statuses == [200, 200, 429], "3 per minute: the slow one counted, the refused one did not"
    assert over.status == 429
    assert int(over.headers["retry-after"]) >= 1
