"""Sampling the gateway with py-spy under load (``bench.proxy --profile``): its CPU time by layer."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.proxy_clients import TEXT, batch, open_client

__all__ = ["PROFILE_LAYERS", "profile"]


PROFILE_LAYERS = (
    ("orpheus_tts relay, routing and serving", ("orpheus_tts/",)),
    ("uvicorn HTTP server", ("uvicorn/", "httptools")),
    ("starlette and fastapi (routing, middleware)", ("starlette/", "fastapi/")),
    ("httpx client (request building, auth, redirects, cookies)", ("httpx/",)),
    ("aiohttp client and its httpx transport", ("aiohttp/", "httpx_aiohttp/", "multidict", "yarl")),
    ("json and base64", ("json/", "base64")),
    ("asyncio tasks and futures (Python)", ("asyncio/tasks.py", "asyncio/futures", "asyncio/locks", "asyncio/base_")),
)
"""py-spy frames are filed under the first layer whose pattern their file matches; the rest is 'other'."""
EVENT_LOOP = "event loop and socket I/O (uvloop, in C)"


def _layer(frame: str) -> str:
    if frame.startswith(("run (asyncio/runners.py", "Runner.run (", "run_until_complete")):
        return EVENT_LOOP  # no Python frame below: the sample was in uvloop's C code or the kernel
    for name, patterns in PROFILE_LAYERS:
        if any(p in frame for p in patterns):
            return name
    return "other"


def profile(
    gateway: str,
    pid: int,
    seconds: float,
    *,
    keep_alive: bool,
    text: str = TEXT,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Sample the gateway with py-spy under a c=16 load; self time by layer, in percent."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if spy is None:
        print("py-spy is not installed: no profile")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.txt"
        cmd = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw", "-o", str(raw)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        async def load() -> int:
            async with open_client(32, keep_alive=keep_alive, text=text, params=params) as client:
                streams, started = 0, time.monotonic()
                while proc.poll() is None and time.monotonic() - started < seconds + 30:
                    await batch(client, gateway, 64, 16)
                    streams += 64
                return streams

        streams = asyncio.run(load())
        proc.wait(timeout=60)
        if proc.returncode != 0 or not raw.exists():
            print("py-spy could not sample the gateway (it needs ptrace permission): no profile")
            return None
        by_layer: dict[str, int] = {}
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            leaf = stack.split(";")[-1]
            by_layer[_layer(leaf)] = by_layer.get(_layer(leaf), 0) + int(count)
            total += int(count)
    return {
        "tool": "py-spy record -r 200 (self time of the innermost frame)",
        "seconds": seconds,
        "streams_during": streams,
        "samples": total,
        "percent_by_layer": {k: round(100 * v / total, 1) for k, v in sorted(by_layer.items(), key=lambda kv: -kv[1])},
    }
