"""Faults caused by requests, and a hung worker: what the breakers, streams and routing do.

Two tone-engine worker processes on loopback and a gateway in this process
(stall timeout ``--stall-timeout-s``). Then:

1. **Poison input.** Every poison body (controls, unpaired surrogates and
   noncharacters in the text; NaN, infinities and 1e400 in a parameter; a
   huge integer; 5,000 levels of nesting) ``--repeats`` times on both routes,
   and the poison texts through the SDK: the statuses answered, and the
   circuits opened, failures counted and failovers made because of them (the
   gateway's and the SDK's).
2. **A stream that stalls.** A long stream's worker is SIGSTOPped after its
   first audio: seconds until the gateway ends the stream (``worker_lost``).
3. **Requests waiting on a hung worker.** One worker is SIGSTOPped and
   ``--waiting`` requests are sent at once: how many complete, and the
   slowest one's seconds (the probes must first mark the worker down).
4. **Recovery.** The worker is continued: seconds until probes mark it
   healthy, then how many of ``--after`` one-at-a-time requests it serves.

Writes ``bench/results/faults.json``.

    python -m bench.faults [--repeats 10] [--stall-timeout-s 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx

from bench.common import machine, write_json
from orpheus_tts.engines.testing import render
from orpheus_tts.gateway.app import create_app
from orpheus_tts.gateway.config import GatewayConfig
from orpheus_tts.routing import RoutingSettings
from orpheus_tts.sdk import HTTPStatusError, OrpheusTTS
from orpheus_tts.serving.local import LOOPBACK, ThreadedServer, free_port, wait_ready

POISON_TEXTS = {
    "nul": "Hello\u0000world.",
    "lone surrogate": "Hello \ud800 world.",
    "bell": "Ring \u0007 ring.",
    "escape": "Colour \u001b[31m red.",
    "c1 control": "Next \u0085 line.",
    "noncharacter": "Not \ufffe a character.",
}
POISON_NUMBERS = {"nan": "NaN", "infinity": "Infinity", "minus infinity": "-Infinity", "overflow": "1e400"}
DEEP = "[" * 5000 + "]" * 5000
LONG_TEXT = " ".join(f"Sentence number {i} is here." for i in range(20))
HANG_GUARD_S = 60.0


def _bodies(route: str) -> dict[str, bytes]:
    def body(text: str = "Hello there.", raw: str = "") -> bytes:
        if route == "v1":
            return ('{"text": ' + json.dumps(text) + raw + "}").encode()
        return ('{"model": "tts-1", "response_format": "pcm", "input": ' + json.dumps(text) + raw + "}").encode()

    bodies = {f"text {name}": body(text) for name, text in POISON_TEXTS.items()}
    bodies |= {f"temperature {name}": body(raw=f', "temperature": {lit}') for name, lit in POISON_NUMBERS.items()}
    bodies["huge integer"] = body(raw=', "top_k": ' + "9" * 400)
    bodies["5000-level nesting"] = body(raw=f', "temperature": {DEEP}')
    return bodies


@contextlib.contextmanager
def _workers(count: int) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for _ in range(count):
            port = free_port()
            cmd = [sys.executable, "-m", "orpheus_tts.cli", "worker", "--engine", "test", "--enable-test-faults"]
            proc = subprocess.Popen(
                [*cmd, "--host", LOOPBACK, "--port", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            url = f"http://{LOOPBACK}:{port}"
            procs.append((url, proc))
            wait_ready(url, proc=proc)
        yield procs
    finally:
        for _, proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
            proc.wait(timeout=20)


def _system(gateway: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{gateway}/v1/system", timeout=5).json()
    return data


def _by_url(gateway: str) -> dict[str, dict[str, Any]]:
    return {w["url"]: w for w in _system(gateway)["workers"]}


def _failovers(gateway: str) -> float:
    for line in httpx.get(f"{gateway}/metrics", timeout=5).text.splitlines():
        if line.startswith("orpheus_failovers_total "):
            return float(line.split()[1])
    return 0.0


def _breakers(gateway: str) -> dict[str, int]:
    workers = _system(gateway)["workers"]
    return {
        "circuits_opened": sum(w["circuit_opens"] for w in workers),
        "failures_counted": sum(w["failures"] for w in workers),
        "open_now": sum(1 for w in workers if w["breaker"] != "closed"),
    }


async def _poison(gateway: str, repeats: int) -> dict[str, Any]:
    before = _failovers(gateway)
    statuses: dict[str, Counter[str]] = {}
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        for route, path in (("v1", "/v1/tts/stream"), ("openai", "/v1/audio/speech")):
            counts: Counter[str] = Counter()
            for body in _bodies(route).values():
                for _ in range(repeats):
                    response = await client.post(path, content=body, headers={"content-type": "application/json"})
                    counts[f"{response.status_code} {response.json()['error']['code']}"] += 1
            statuses[route] = counts
    sdk: Counter[str] = Counter()
    async with OrpheusTTS([gateway], hedge_ttfb_ms=None) as tts:
        for text in POISON_TEXTS.values():
            for _ in range(repeats):
                try:
                    [chunk async for chunk in tts.stream(text)]
                    sdk["accepted"] += 1
                except HTTPStatusError as exc:
                    sdk[f"{exc.status_code} {exc.code}"] += 1
        (snapshot,) = tts.endpoints()
        good = b"".join([c async for c in tts.stream("Still fine.", voice="tone")]) == render("Still fine.")
    return {
        "requests": {route: sum(c.values()) for route, c in statuses.items()},
        "answers": {route: dict(c) for route, c in statuses.items()},
        "gateway": {**_breakers(gateway), "failovers": _failovers(gateway) - before},
        "sdk": {
            "answers": dict(sdk),
            "circuits_opened": snapshot.circuit_opens,
            "failures_counted": snapshot.failures,
            "breaker": snapshot.breaker.value,
        },
        "good_request_after_poison_complete": good,
    }


async def _stall(gateway: str, procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, Any]:
    body = {"text": LONG_TEXT, "voice": "tone", "fault_piece_delay_ms": 50}
    async with (
        httpx.AsyncClient(timeout=HANG_GUARD_S) as client,
        client.stream("POST", f"{gateway}/v1/tts/stream", json=body) as response,
    ):
        lines = response.aiter_lines()
        worker = None
        while True:
            frame = json.loads(await lines.__anext__())
            worker = frame.get("worker", worker)
            if frame["type"] == "chunk":
                break
        proc = procs[f"http://{worker}"]
        os.kill(proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            async for line in lines:
                if line:
                    frame = json.loads(line)
            cut_s = time.monotonic() - stopped
        finally:
            os.kill(proc.pid, signal.SIGCONT)
    return {"ended_with": frame.get("code"), "retryable": frame.get("retryable"), "seconds_to_cut": round(cut_s, 2)}


async def _hung_then_back(
    gateway: str, stopped_url: str, proc: subprocess.Popen[bytes], waiting: int, after: int
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gateway, timeout=HANG_GUARD_S) as client:

        async def speak(text: str) -> tuple[bool, float]:
            started = time.monotonic()
            response = await client.post("/v1/tts/stream", json={"text": text, "voice": "tone"})
            frames = [json.loads(line) for line in response.text.splitlines() if line]
            pcm = b"".join(base64.b64decode(f["audio"]) for f in frames if f["type"] == "chunk")
            return response.status_code == 200 and pcm == render(text), time.monotonic() - started

        requests_before = _by_url(gateway)[stopped_url]["requests"]
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            results = await asyncio.gather(*(speak(f"Waiting request {i}.") for i in range(waiting)))
            sent_to_hung = _by_url(gateway)[stopped_url]["requests"] - requests_before
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        continued = time.monotonic()
        while not _by_url(gateway)[stopped_url]["healthy"]:
            await asyncio.sleep(0.05)
        healthy_s = time.monotonic() - continued
        served_before = _by_url(gateway)[stopped_url]["requests"]
        first_served_s = None
        for i in range(after):
            ok, _ = await speak(f"After recovery {i}.")
            assert ok
            if first_served_s is None and _by_url(gateway)[stopped_url]["requests"] > served_before:
                first_served_s = time.monotonic() - continued
        served = _by_url(gateway)[stopped_url]["requests"] - served_before
    return {
        "waiting_requests": waiting,
        "sent_to_the_hung_worker": sent_to_hung,
        "completed": sum(ok for ok, _ in results),
        "slowest_s": round(max(s for _, s in results), 2),
        "seconds_until_healthy_again": round(healthy_s, 2),
        "sequential_requests_after": after,
        "served_by_the_recovered_worker": served,
        "seconds_until_it_served_one": None if first_served_s is None else round(first_served_s, 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with _workers(2) as procs:
        urls = [u for u, _ in procs]
        routing = RoutingSettings(hedge_ttfb_ms=None, probe_timeout_s=args.probe_timeout_s)
        config = GatewayConfig(
            workers=tuple(urls), probe_interval_s=args.probe_interval_s, stall_timeout_s=args.stall_timeout_s
        )
        with ThreadedServer(create_app(config, routing=routing)) as server:
            poison = await _poison(server.url, args.repeats)
            stall = await _stall(server.url, dict(procs))
            while not all(w["healthy"] for w in _system(server.url)["workers"]):
                await asyncio.sleep(0.05)
            hung = await _hung_then_back(server.url, urls[0], procs[0][1], args.waiting, args.after)
    return {
        "setup": {
            "workers": 2,
            "engine": "test",
            "stall_timeout_s": args.stall_timeout_s,
            "probe_interval_s": args.probe_interval_s,
            "probe_timeout_s": args.probe_timeout_s,
            "poison_repeats": args.repeats,
        },
        "poison": poison,
        "stalled_stream": stall,
        "hung_worker": hung,
        "machine": machine(),
    }


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--stall-timeout-s", type=float, default=2.0)
    parser.add_argument("--probe-interval-s", type=float, default=0.5)
    parser.add_argument("--probe-timeout-s", type=float, default=0.5)
    parser.add_argument("--waiting", type=int, default=8)
    parser.add_argument("--after", type=int, default=20)
    return parser.parse_args(argv)


if __name__ == "__main__":
    result = asyncio.run(main(_parse()))
    print(json.dumps(result, indent=2))
    print(write_json("faults", result))
