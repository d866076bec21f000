"""Hedging benchmark: does a hedge hide a slow first byte, and what does it cost?

Two worker processes on loopback serve the deterministic tone engine with a
finite capacity (``--capacity`` streams each, ``--rtf`` seconds of work per
second of audio). One of them waits ``--slow-delay-s`` before the first audio
of ``--slow-fraction`` of its requests (chosen at random, seeded). At each
load of the sweep (``--loads``: light, medium and heavy are 1, 3 and 6
requests at a time; at heavy one worker alone cannot carry the load) the SDK
sends ``--requests`` requests with hedging off and with ``--hedge-ms``,
``--repeats`` times each, interleaved, and records the time to first audio
(TTFA) of each; the runs of one setting are pooled. Every count (upstream
requests, hedges sent and won, requests per endpoint) covers the measured
requests only, never the warm-up: extra requests are the upstream requests
beyond one per call (hedges and failovers).

Then the SDK's own cost: the same requests to one worker (engine cost zero),
through the SDK and through a bare httpx loop (POST, read lines, decode
base64), interleaved, compared by total time per request.

Writes ``bench/results/hedging.json`` and ``bench/results/hedging.png``
(``--smoke``: a reduced run written as ``hedging_smoke``, for the test suite).
Targets: hedging on never raises p99 TTFA over hedging off at any load of the
sweep, and cuts it to <= 0.5 x at the load it is meant for (medium); extra
requests < 15 %; SDK / raw httpx <= 1.05.

    python -m bench.hedging [--requests 200] [--repeats 3] [--loads light medium heavy] [--smoke]
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
from pathlib import Path
from typing import Any

import httpx

from bench import common
from bench.common import machine, percentile, pyplot, save_figure, write_json
from orpheus_tts.engines.testing import ToneEngine
from orpheus_tts.sdk import OrpheusTTS

READY_TIMEOUT_S = 60.0
WARMUP_REQUESTS = 20
LOADS = {"light": 1, "medium": 3, "heavy": 6}
"""Requests at a time for each load of the sweep."""
NOISE_TOLERANCE = 0.05
"""p99 on within this fraction of p99 off still counts as not worse (run-to-run noise on a shared machine)."""
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
        before = {s.url: s for s in tts.endpoints()}
        started = time.perf_counter()
        await asyncio.gather(*(one(i, True) for i in range(requests)))
        wall_s = time.perf_counter() - started
        after = tts.endpoints()

    def delta(field: str) -> dict[str, int]:
        """A counter over the measured requests only: the warm-up's share subtracted."""
        return {s.url: getattr(s, field) - getattr(before[s.url], field) for s in after}

    per_endpoint = delta("requests")
    upstream = sum(per_endpoint.values())
    return {
        "hedge_ttfb_ms": hedge_ms,
        "concurrency": concurrency,
        "requests": requests,
        "upstream_requests": upstream,
        "extra_requests": upstream - requests,
        "extra_fraction": (upstream - requests) / requests,
        "hedges_sent": sum(delta("hedges_sent").values()),
        "hedges_won": sum(delta("hedges_won").values()),
        "per_endpoint_requests": per_endpoint,
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


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one setting as one: counts added, percentiles over every sample."""
    samples = sorted(t for run in runs for t in run["samples_ms"])
    requests = sum(run["requests"] for run in runs)
    upstream = sum(run["upstream_requests"] for run in runs)
    per_endpoint: dict[str, int] = {}
    for run in runs:
        for url, count in run["per_endpoint_requests"].items():
            per_endpoint[url] = per_endpoint.get(url, 0) + count
    return {
        "hedge_ttfb_ms": runs[0]["hedge_ttfb_ms"],
        "concurrency": runs[0]["concurrency"],
        "runs": len(runs),
        "requests": requests,
        "upstream_requests": upstream,
        "extra_requests": upstream - requests,
        "extra_fraction": (upstream - requests) / requests,
        "hedges_sent": sum(run["hedges_sent"] for run in runs),
        "hedges_won": sum(run["hedges_won"] for run in runs),
        "per_endpoint_requests": per_endpoint,
        "slow_first_audio_over_900ms": sum(run["slow_first_audio_over_900ms"] for run in runs),
        "wall_s": sum(run["wall_s"] for run in runs),
        "ttfa_ms": {
            "p50": percentile(samples, 50),
            "p95": percentile(samples, 95),
            "p99": percentile(samples, 99),
            "max": max(samples),
        },
        "p99_per_run_ms": [run["ttfa_ms"]["p99"] for run in runs],
        "samples_ms": samples,
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


def plot(loads: dict[str, Any], name: str) -> None:
    fig, axes = pyplot().subplots(1, len(loads), figsize=(5 * len(loads), 4.2), squeeze=False)
    for ax, (load, result) in zip(axes[0], loads.items(), strict=True):
        for key, label in (
            ("hedging_off", "off"),
            ("hedging_on", f"on ({result['hedging_on']['hedge_ttfb_ms']:g} ms)"),
        ):
            run = result[key]
            xs = run["samples_ms"]
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", label=f"hedging {label}: p99 {run['ttfa_ms']['p99']:.0f} ms")
        ax.set_xscale("log")
        ax.set_xlabel("time to first audio (ms, log scale)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{load} load: {result['concurrency']} at a time")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
    save_figure(fig, name)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    common = {"capacity": args.capacity, "compute_s_per_audio_s": args.rtf}
    fast_url, fast_proc = start_worker(slow_fraction=0.0, delay_s=0.0, seed=args.seed, **common)
    slow_url, slow_proc = start_worker(
        slow_fraction=args.slow_fraction, delay_s=args.slow_delay_s, seed=args.seed + 1, **common
    )
    # The overhead run wants a server that costs next to nothing, so the client's share shows.
    bare_url, bare_proc = start_worker(slow_fraction=0.0, delay_s=0.0, seed=args.seed, capacity=4)
    loads: dict[str, Any] = {}
    try:
        urls = [fast_url, slow_url]
        for load in args.loads:
            concurrency = LOADS[load]
            runs: dict[float | None, list[dict[str, Any]]] = {None: [], args.hedge_ms: []}
            for repeat in range(args.repeats):  # interleaved, alternating which goes first
                order = (None, args.hedge_ms) if repeat % 2 == 0 else (args.hedge_ms, None)
                for hedge in order:
                    runs[hedge].append(await ttfa_run(urls, hedge, args.requests, concurrency))
            off, on = pooled(runs[None]), pooled(runs[args.hedge_ms])
            ratio = on["ttfa_ms"]["p99"] / off["ttfa_ms"]["p99"]
            loads[load] = {
                "concurrency": concurrency,
                "hedging_off": off,
                "hedging_on": on,
                "p99_ratio_on_off": ratio,
                "hedging_never_worse": on["ttfa_ms"]["p99"] <= off["ttfa_ms"]["p99"] * (1 + NOISE_TOLERANCE),
            }
        overhead = await overhead_run(bare_url, args.overhead_requests)
    finally:
        for proc in (fast_proc, slow_proc, bare_proc):
            proc.terminate()
            proc.join(timeout=10)
    return {
        "setup": {
            "requests_per_run": args.requests,
            "repeats": args.repeats,
            "loads": {load: LOADS[load] for load in args.loads},
            "capacity_per_worker": args.capacity,
            "rtf": args.rtf,
            "slow_fraction": args.slow_fraction,
            "slow_delay_s": args.slow_delay_s,
            "hedge_ms": args.hedge_ms,
            "overhead_requests": args.overhead_requests,
        },
        "machine": machine(),
        "loads": loads,
        "sdk_overhead": overhead,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per setting and load, pooled")
    parser.add_argument("--loads", nargs="+", choices=list(LOADS), default=list(LOADS))
    parser.add_argument("--capacity", type=int, default=2, help="streams each worker synthesizes at once")
    parser.add_argument("--rtf", type=float, default=0.25, help="worker seconds per second of audio")
    parser.add_argument("--slow-fraction", type=float, default=0.1)
    parser.add_argument("--slow-delay-s", type=float, default=1.0)
    parser.add_argument("--hedge-ms", type=float, default=300.0)
    parser.add_argument("--overhead-requests", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="a reduced run (the test suite's)")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.overhead_requests, args.slow_delay_s, args.repeats = 12, 10, 0.3, 1
    if args.out:
        common.RESULTS_DIR = Path(args.out)
    name = "hedging_smoke" if args.smoke else "hedging"

    result = asyncio.run(main_async(args))
    write_json(name, result)
    plot(result["loads"], name)

    print(f"{'':22}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'extra req':>11}{'hedges':>8}{'>900 ms':>9}")
    for load, entry in result["loads"].items():
        for key, label in (("hedging_off", "off"), ("hedging_on", f"{args.hedge_ms:g} ms")):
            run, t = entry[key], entry[key]["ttfa_ms"]
            print(
                f"{load + ' ' + label:22}{t['p50']:9.1f}{t['p95']:9.1f}{t['p99']:9.1f}"
                f"{run['extra_fraction']:10.1%} {run['hedges_sent']:7d} {run['slow_first_audio_over_900ms']:8d}"
            )
        print(f"{load}: p99 on/off {entry['p99_ratio_on_off']:.3f} (never worse: {entry['hedging_never_worse']})")
    over = result["sdk_overhead"]
    print(
        f"SDK overhead: sdk {over['sdk_ms']['median']:.2f} ms vs raw httpx {over['raw_ms']['median']:.2f} ms "
        f"per request (median); ratio {over['ratio_median']:.3f} of medians, "
        f"{over['ratio_median_of_pairs']:.3f} median of pairs, {over['ratio_mean']:.3f} of means (target <= 1.05)"
    )
    print(f"wrote {name}.json and {name}.png in {common.RESULTS_DIR}")


if __name__ == "__main__":
    main()
