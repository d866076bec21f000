"""Hedging benchmark: does a hedge hide a slow first byte, and what does it cost?

Two worker processes on loopback serve the deterministic tone engine with a
finite capacity (``--capacity`` streams each, ``--rtf`` seconds of work per
second of audio), so one worker alone cannot carry the load and the router
must use both. One of them waits ``--slow-delay-s`` before the first audio of
``--slow-fraction`` of its requests (chosen at random, seeded). The SDK sends
``--requests`` requests ``--concurrency`` at a time, first with hedging off,
then with ``--hedge-ms``, and records the time to first audio (TTFA) of each.
Extra requests are the upstream requests beyond one per call (hedges and
failovers).

Then the SDK's own cost: the same requests to one worker (engine cost zero),
through the SDK and through a bare httpx loop (POST, read lines, decode
base64), interleaved, compared by total time per request.

Writes ``bench/results/hedging.json`` and ``bench/results/hedging.png``.
Targets: p99 TTFA with hedging <= 0.5 x without; extra requests < 15 %;
SDK / raw httpx <= 1.05.

    python -m bench.hedging [--requests 500] [--concurrency 5] [--capacity 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import random
import socket
import statistics
import time
from collections.abc import AsyncIterator
from multiprocessing.process import BaseProcess
from typing import Any

import httpx

from bench.common import RESULTS_DIR, machine, percentile, pyplot, save_figure, write_json
from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.sdk import OrpheusTTS

READY_TIMEOUT_S = 60.0
WARMUP_REQUESTS = 20
OVERHEAD_TEXT = "The overhead run streams a few sentences. Each one becomes a tone. " * 3


class RandomlySlowStart(ToneEngine):
    """The tone engine, slow to start on a random fraction of requests."""

    def __init__(self, slow_fraction: float, delay_s: float, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slow_fraction = slow_fraction
        self.delay_s = delay_s
        self.rng = random.Random(seed)

    async def synthesize(self, text: str, voice: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
        if self.rng.random() < self.slow_fraction:
            await asyncio.sleep(self.delay_s)
        async for piece in super().synthesize(text, voice, params):
            yield piece


def _serve(port: int, engine_options: dict[str, Any]) -> None:
    import uvicorn

    from orpheus_tts.worker.app import create_app
    from orpheus_tts.worker.config import WorkerConfig

    engine = RandomlySlowStart(**engine_options)
    app = create_app(engine, WorkerConfig(max_queue=256, worker_id=f"bench-{port}"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_worker(**engine_options: Any) -> tuple[str, BaseProcess]:
    port = _free_port()
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_serve, args=(port, engine_options), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.terminate()
    raise RuntimeError(f"worker on {url} did not start")


async def ttfa_run(urls: list[str], hedge_ms: float | None, requests: int, concurrency: int) -> dict[str, Any]:
    """TTFA of ``requests`` calls, ``concurrency`` at a time, through one OrpheusTTS."""
    ttfa_ms: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    async with OrpheusTTS(urls, hedge_ttfb_ms=hedge_ms) as tts:

        async def one(i: int, record: bool) -> None:
            async with sem:
                started = time.perf_counter()
                first: float | None = None
                async for _chunk in tts.stream(text=f"Request number {i}. A short sentence follows."):
                    if first is None:
                        first = time.perf_counter() - started
                if record and first is not None:
                    ttfa_ms.append(first * 1000)

        await asyncio.gather(*(one(i, False) for i in range(WARMUP_REQUESTS)))
        before = sum(s.requests for s in tts.endpoints())
        started = time.perf_counter()
        await asyncio.gather(*(one(i, True) for i in range(requests)))
        wall_s = time.perf_counter() - started
        snaps = tts.endpoints()
    upstream = sum(s.requests for s in snaps) - before
    return {
        "hedge_ttfb_ms": hedge_ms,
        "requests": requests,
        "upstream_requests": upstream,
        "extra_requests": upstream - requests,
        "extra_fraction": (upstream - requests) / requests,
        "hedges_sent": sum(s.hedges_sent for s in snaps),
        "hedges_won": sum(s.hedges_won for s in snaps),
        "per_endpoint_requests": {s.url: s.requests for s in snaps},
        "slow_first_audio_over_900ms": sum(t > 900 for t in ttfa_ms),
        "wall_s": wall_s,
        "ttfa_ms": {
            "p50": percentile(ttfa_ms, 50),
            "p95": percentile(ttfa_ms, 95),
            "p99": percentile(ttfa_ms, 99),
            "max": max(ttfa_ms),
        },
        "samples_ms": sorted(ttfa_ms),
    }


async def overhead_run(url: str, requests: int) -> dict[str, Any]:
    """Seconds per request through the SDK and through a bare httpx loop, interleaved."""
    sdk_s: list[float] = []
    raw_s: list[float] = []
    body = {"text": OVERHEAD_TEXT, "voice": None}
    async with OrpheusTTS([url], hedge_ttfb_ms=None) as tts, httpx.AsyncClient(timeout=60) as client:

        async def via_sdk() -> int:
            return sum([len(chunk) async for chunk in tts.stream(text=OVERHEAD_TEXT)])

        async def via_raw() -> int:
            total = 0
            async with client.stream("POST", f"{url}/v1/tts/stream", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    frame = json.loads(line)
                    if frame["type"] == "chunk":
                        total += len(base64.b64decode(frame["audio"]))
                    elif frame["type"] == "error":
                        raise RuntimeError(frame["message"])
            return total

        for _ in range(10):
            assert await via_sdk() == await via_raw()
        for i in range(requests):
            order = (via_sdk, via_raw) if i % 2 == 0 else (via_raw, via_sdk)
            for fn in order:
                started = time.perf_counter()
                await fn()
                (sdk_s if fn is via_sdk else raw_s).append(time.perf_counter() - started)
    pair_ratios = [a / b for a, b in zip(sdk_s, raw_s, strict=True)]
    return {
        "requests": requests,
        "audio_s_per_request": len(OVERHEAD_TEXT) * 240 / 24_000,
        "ratio_median_of_pairs": statistics.median(pair_ratios),
        "sdk_ms": {"median": statistics.median(sdk_s) * 1000, "mean": statistics.fmean(sdk_s) * 1000},
        "raw_ms": {"median": statistics.median(raw_s) * 1000, "mean": statistics.fmean(raw_s) * 1000},
        "ratio_median": statistics.median(sdk_s) / statistics.median(raw_s),
        "ratio_mean": statistics.fmean(sdk_s) / statistics.fmean(raw_s),
    }


def plot(off: dict[str, Any], on: dict[str, Any]) -> None:
    fig, ax = pyplot().subplots(figsize=(7, 4.5))
    for run, label in ((off, "hedging off"), (on, f"hedging on ({on['hedge_ttfb_ms']:g} ms)")):
        xs = run["samples_ms"]
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=f"{label}: p99 {run['ttfa_ms']['p99']:.0f} ms")
    ax.set_xscale("log")
    ax.set_xlabel("time to first audio (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("TTFA CDF: two workers, one slow to start on some requests")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    save_figure(fig, "hedging")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    common = {"capacity": args.capacity, "compute_s_per_audio_s": args.rtf}
    fast_url, fast_proc = start_worker(slow_fraction=0.0, delay_s=0.0, seed=args.seed, **common)
    slow_url, slow_proc = start_worker(
        slow_fraction=args.slow_fraction, delay_s=args.slow_delay_s, seed=args.seed + 1, **common
    )
    # The overhead run wants a server that costs next to nothing, so the client's share shows.
    bare_url, bare_proc = start_worker(slow_fraction=0.0, delay_s=0.0, seed=args.seed, capacity=4)
    try:
        urls = [fast_url, slow_url]
        off = await ttfa_run(urls, None, args.requests, args.concurrency)
        on = await ttfa_run(urls, args.hedge_ms, args.requests, args.concurrency)
        overhead = await overhead_run(bare_url, args.overhead_requests)
    finally:
        for proc in (fast_proc, slow_proc, bare_proc):
            proc.terminate()
            proc.join(timeout=10)
    return {
        "setup": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "capacity_per_worker": args.capacity,
            "rtf": args.rtf,
            "slow_fraction": args.slow_fraction,
            "slow_delay_s": args.slow_delay_s,
            "hedge_ms": args.hedge_ms,
            "overhead_requests": args.overhead_requests,
        },
        "machine": machine(),
        "hedging_off": off,
        "hedging_on": on,
        "p99_ratio_on_off": on["ttfa_ms"]["p99"] / off["ttfa_ms"]["p99"],
        "sdk_overhead": overhead,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--capacity", type=int, default=2, help="streams each worker synthesizes at once")
    parser.add_argument("--rtf", type=float, default=0.25, help="worker seconds per second of audio")
    parser.add_argument("--slow-fraction", type=float, default=0.1)
    parser.add_argument("--slow-delay-s", type=float, default=1.0)
    parser.add_argument("--hedge-ms", type=float, default=300.0)
    parser.add_argument("--overhead-requests", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    result = asyncio.run(main_async(args))
    write_json("hedging", result)
    plot(result["hedging_off"], result["hedging_on"])

    off, on, over = result["hedging_off"], result["hedging_on"], result["sdk_overhead"]
    print(f"{'':14}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'extra req':>11}{'>900 ms':>9}")
    for name, run in (("hedging off", off), (f"hedging {args.hedge_ms:g}ms", on)):
        t = run["ttfa_ms"]
        print(
            f"{name:14}{t['p50']:9.1f}{t['p95']:9.1f}{t['p99']:9.1f}"
            f"{run['extra_fraction']:10.1%} {run['slow_first_audio_over_900ms']:8d}"
        )
    print(f"p99 ratio on/off: {result['p99_ratio_on_off']:.3f} (target <= 0.5)")
    print(f"extra requests with hedging: {on['extra_fraction']:.1%} (target < 15%)")
    print(
        f"SDK overhead: sdk {over['sdk_ms']['median']:.2f} ms vs raw httpx {over['raw_ms']['median']:.2f} ms "
        f"per request (median); ratio {over['ratio_median']:.3f} of medians, "
        f"{over['ratio_median_of_pairs']:.3f} median of pairs, {over['ratio_mean']:.3f} of means (target <= 1.05)"
    )
    print(f"wrote {RESULTS_DIR.name}/hedging.json and {RESULTS_DIR.name}/hedging.png")


if __name__ == "__main__":
    main()
