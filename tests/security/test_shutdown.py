"""Shutdown past the drain grace: every client still gets a proper answer, not a bare 500 or a silent cut.

A real ``orpheus-tts gateway`` (or ``worker``) process is sent SIGTERM while
one request waits for its first audio and another is streaming; both outlast
the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal

import httpx
import pytest

from tests.eventually import eventually
from tests.reliability.harness import TONE_WORKER, metric, tone_workers
from tests.servers import run_cli

DRAIN_GRACE_S = 1.0
HANG_GUARD_S = 30.0


@pytest.mark.parametrize("target", ["gateway", "worker"])
async def test_past_the_grace_waiting_requests_get_503_json_and_streams_an_error_frame(target: str) -> None:
    grace = ("--drain-grace-s", str(DRAIN_GRACE_S))
    with contextlib.ExitStack() as stack:
        if target == "gateway":
            [(worker, _)] = stack.enter_context(tone_workers(1))
            gw, process = stack.enter_context(run_cli("gateway", "--worker", worker, *grace))
        else:
            worker, process = stack.enter_context(run_cli(*TONE_WORKER, *grace))
            gw = worker
        async with httpx.AsyncClient(base_url=gw, timeout=HANG_GUARD_S) as client:
            waiting = asyncio.ensure_future(
                client.post(
                    "/v1/tts/stream", json={"text": "Late audio.", "voice": "tone", "fault_first_delay_ms": 60_000}
                )
            )
            frames: list[dict[str, object]] = []
            long_stream = {"text": "A long stream. " * 20, "voice": "tone", "fault_piece_delay_ms": 300}
            async with client.stream("POST", "/v1/tts/stream", json=long_stream) as response:
                assert response.status_code == 200
                lines = response.aiter_lines()
                while not any(f["type"] == "chunk" for f in frames):
                    frames.append(json.loads(await lines.__anext__()))
                assert await eventually(lambda: metric(worker, "orpheus_requests_running") == 2)
                os.kill(process.pid, signal.SIGTERM)
                async for line in lines:
                    if line:
                        frames.append(json.loads(line))
            refused = await asyncio.wait_for(waiting, HANG_GUARD_S)
        end = frames[-1]
        assert (end["type"], end["code"], end["retryable"]) == ("error", "cancelled", True), end
        assert any(f["type"] == "chunk" for f in frames)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/json"
        error = refused.json()["error"]
        assert (error["code"], error["retryable"]) == ("overloaded", True), error
        assert refused.headers.get("retry-after") == "1"
        code = process.wait(timeout=HANG_GUARD_S)  # it exits, past the grace, without being killed
        if target == "gateway":
            assert code == 0
