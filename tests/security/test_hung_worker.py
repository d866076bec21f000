"""A hung worker (a SIGSTOPped process): its streams are cut or failed over, and it is back once it recovers.

A stopped process keeps its sockets open and answers nothing, so nothing but
a timeout notices it. The gateway's stall timeout ends a stream that went
silent after its first audio (``worker_lost``, retryable, counted against the
worker); a request still waiting for its first audio fails over as soon as
the health probes mark the worker down; and once the worker answers its
probes again it starts from the fleet's median latency, so it is back in
rotation at once instead of being starved by the penalties its stall earned.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from orpheus_tts.engines.testing import render
from orpheus_tts.routing import RoutingSettings
from tests.eventually import eventually, eventually_sync
from tests.reliability.harness import routed_gateway, tone_workers, workers_by_url

STALL_TIMEOUT_S = 1.0
PROBES = RoutingSettings(hedge_ttfb_ms=None, probe_timeout_s=0.5)
"""Probes that give up on a stopped worker quickly; no hedging, so each request has one worker."""
HANG_GUARD_S = 30.0
LONG_TEXT = " ".join(f"Sentence number {i} is here." for i in range(12))


@contextlib.contextmanager
def stopped(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """SIGSTOP ``proc`` for the block; it is always continued afterwards."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


async def test_a_stream_that_goes_silent_after_audio_ends_worker_lost() -> None:
    with (
        tone_workers(1) as [(worker, proc)],
        routed_gateway([worker], PROBES, stall_timeout_s=STALL_TIMEOUT_S) as (gw, _),
    ):
        body = {"text": LONG_TEXT, "voice": "tone", "fault_piece_delay_ms": 50}
        frames: list[dict[str, object]] = []
        async with (
            httpx.AsyncClient(timeout=HANG_GUARD_S) as client,
            client.stream("POST", f"{gw}/v1/tts/stream", json=body) as response,
        ):
            assert response.status_code == 200
            lines = response.aiter_lines()
            while not any(f["type"] == "chunk" for f in frames):
                frames.append(json.loads(await lines.__anext__()))
            with stopped(proc):
                async for line in lines:
                    if line:
                        frames.append(json.loads(line))
                # Still stopped: the worker cannot have ended the stream itself.
                end = frames[-1]
                assert (end["type"], end["code"], end["retryable"]) == ("error", "worker_lost", True), end
                assert "stall" in str(end["message"])
                assert workers_by_url(gw)[worker]["failures"] >= 1


async def test_a_request_waiting_on_a_hung_worker_fails_over_and_the_worker_comes_back() -> None:
    with (
        tone_workers(2) as [(w1, p1), (w2, _)],
        routed_gateway([w1, w2], PROBES, stall_timeout_s=STALL_TIMEOUT_S) as (gw, router),
    ):
        texts = [f"Waiting request {i}." for i in range(8)]
        async with httpx.AsyncClient(base_url=gw, timeout=HANG_GUARD_S) as client:

            async def speak(text: str) -> bytes:
                response = await client.post("/v1/tts/stream", json={"text": text, "voice": "tone"})
                assert response.status_code == 200, response.text
                frames = [json.loads(line) for line in response.text.splitlines() if line]
                assert frames[-1]["type"] == "eos", frames[-1]
                return b"".join(base64.b64decode(f["audio"]) for f in frames if f["type"] == "chunk")

            with stopped(p1):
                # Sent while the gateway still takes w1 for healthy: some wait on the stopped process.
                results = await asyncio.wait_for(asyncio.gather(*(speak(t) for t in texts)), HANG_GUARD_S)
                assert results == [render(t) for t in texts]
                assert not workers_by_url(gw)[w1]["healthy"]
            hits_w1 = router.endpoints[0].requests
            assert router.endpoints[0].failures >= 1, "no request waited on the stopped worker"
            assert await eventually(lambda: workers_by_url(gw)[w1]["healthy"], HANG_GUARD_S)
            # Back from the dead, it starts from the fleet's median (here: w2's estimate), not
            # from the penalties of the requests its stop failed.
            now = time.monotonic()  # the router's clock
            back, other = router.endpoints[0].ttfb.value(now), router.endpoints[1].ttfb.value(now)
            assert back == pytest.approx(other, rel=0.01), router.snapshots()
            # So it is tried again at once. (How much more it gets depends on its first samples:
            # a process just continued may answer its first request slowly and be scored so.)
            for i in range(20):
                assert await speak(f"After recovery {i}.") == render(f"After recovery {i}.")
            assert router.endpoints[0].requests > hits_w1, router.snapshots()
            assert eventually_sync(lambda: workers_by_url(gw)[w1]["breaker"] == "closed")
