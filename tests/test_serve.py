"""``orpheus-tts serve`` and ``make demo``: the whole stack as separate processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import websockets

from orpheus_tts.engines.testing import render
from tests.eventually import eventually, eventually_sync
from tests.servers import free_port, run_cli
from tests.streams import stream_tts

SERVE_TEST = ("serve", "--engine", "test", "--enable-test-faults", "--workers", "2", "--probe-interval-s", "0.2")


def _worker_pids(serve_pid: int) -> set[int]:
    """Live worker processes of a serve process (zombies awaiting their reaping excluded)."""
    pids = set()
    for child in psutil.Process(serve_pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "worker" in child.cmdline():
                pids.add(child.pid)
        except psutil.Error:
            continue
    return pids


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _system(url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{url}/v1/system").json()
    return data


def _wait_healthy(url: str, count: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """``/v1/system`` once ``count`` workers are healthy (the gateway is ready after the first)."""
    eventually_sync(lambda: _system(url)["totals"]["healthy"] == count, within_s=timeout_s)
    return _system(url)


async def test_serve_restarts_a_dead_worker_and_reports_worker_lost() -> None:
    with run_cli(*SERVE_TEST) as (url, proc):
        assert (await stream_tts(url, {"text": "Both workers are up."})).pcm == render("Both workers are up.")
        system = _wait_healthy(url, 2)
        assert system["totals"]["healthy"] == 2  # type: ignore[index]
        assert system["mode"] == "serve"
        before = _worker_pids(proc.pid)
        assert len(before) == 2
        # A worker that dies mid-stream: the stream ends with worker_lost, the worker comes back.
        result = await stream_tts(url, {"text": "Crash here. " * 10, "fault_crash_after": 1})
        assert result.status == 200
        assert result.error is not None
        assert result.error.code == "worker_lost"
        assert await eventually(
            lambda: len(_worker_pids(proc.pid)) == 2 and _system(url)["totals"]["healthy"] == 2, within_s=30
        )
        after = _worker_pids(proc.pid)
        assert len(after) == 2
        assert after != before, "the dead worker was replaced by a new process"
        assert (await stream_tts(url, {"text": "Back to normal."})).error is None


async def test_serve_gives_its_workers_the_realtime_limits_it_was_given() -> None:
    args = ("--realtime-max-contexts", "3", "--realtime-idle-timeout-s", "7.5", "--workers", "1")
    with run_cli("serve", "--engine", "test", "--probe-interval-s", "0.2", *args) as (url, _):
        worker = _wait_healthy(url, 1)["workers"][0]["url"]
        for base in (url, worker):
            ws_url = "ws" + base.removeprefix("http") + "/v1/tts/realtime"
            async with websockets.connect(ws_url) as ws:
                ready = json.loads(await ws.recv())
            assert ready["type"] == "ready"
            assert (ready["limits"]["max_contexts"], ready["limits"]["idle_timeout_s"]) == (3, 7.5), base


def test_ctrl_c_stops_the_whole_stack() -> None:
    with run_cli(*SERVE_TEST) as (url, proc):
        _wait_healthy(url, 2)
        workers = _worker_pids(proc.pid)
        assert len(workers) == 2
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    assert not any(_alive(pid) for pid in workers)


def test_refuses_public_address_without_keys() -> None:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "orpheus_tts.cli",
        "serve",
        "--engine",
        "test",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, "ORPHEUS_API_KEYS": ""})
    assert done.returncode != 0
    assert "without API keys" in done.stderr
    assert "Traceback" not in done.stderr


def test_keys_from_environment_are_enforced() -> None:
    with run_cli(*SERVE_TEST, env={"ORPHEUS_API_KEYS": "k-one,k-two"}) as (url, _):
        assert httpx.post(f"{url}/v1/tts/stream", json={"text": "hi"}).status_code == 401
        ok = httpx.post(f"{url}/v1/tts/stream", json={"text": "hi"}, headers={"X-API-Key": "k-two"})
        assert ok.status_code == 200


@pytest.mark.asr
def test_demo_writes_a_wav_that_says_the_sentence(tmp_path: Path) -> None:
    from tests.asr import assert_says

    output = tmp_path / "hello.wav"
    text = "Good morning. The demo speaks through the gateway and a worker."
    done = subprocess.run(
        [sys.executable, "-m", "orpheus_tts.cli", "demo", "--output", str(output), "--text", text],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "time to first audio" in done.stdout
    assert "real-time factor" in done.stdout
    with wave.open(str(output)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24_000, 1, 2)
        pcm = wav.readframes(wav.getnframes())
    assert_says(pcm, text)


async def test_sigterm_drains_running_streams() -> None:
    text = "Draining lets this stream finish. " * 6
    with run_cli(*SERVE_TEST, "--drain-grace-s", "20") as (url, proc):
        _wait_healthy(url, 2)
        workers = _worker_pids(proc.pid)
        running = asyncio.ensure_future(stream_tts(url, {"text": text, "fault_piece_delay_ms": 100}))
        assert await eventually(lambda: _system(url)["active_streams"] == 1)
        proc.send_signal(signal.SIGTERM)  # the serve process only: its workers are its own to stop
        result = await running
        assert proc.wait(timeout=30) == 0
    assert not any(_alive(pid) for pid in workers)
    assert result.status == 200
    assert result.error is None
    assert result.pcm == render(text), "the stream in flight at SIGTERM completed"


def test_workers_do_not_outlive_a_killed_supervisor() -> None:
    with run_cli(*SERVE_TEST) as (url, proc):
        _wait_healthy(url, 2)
        workers = _worker_pids(proc.pid)
        proc.kill()  # SIGKILL: the supervisor gets no chance to stop anything
        proc.wait()
        died = eventually_sync(lambda: not any(_alive(p) for p in workers), within_s=15)
    assert died, "workers died with their supervisor"
