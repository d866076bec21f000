"""Gateway overhead: the same requests straight to a worker and through the gateway.

Both paths are measured side by side in one run, interleaved round by round,
against one worker process running the fast deterministic test engine (so the
engine does not dominate). Reports time to first byte (first audio chunk)
p50/p99, streams per second at each concurrency, and the gateway's CPU time
per stream, then writes ``bench/results/gateway.json`` and ``gateway.png``.

    python -m bench.gateway [--requests N] [--concurrency 1 16 128] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import httpx

from bench.common import cpu_seconds, machine, orpheus_process, percentile, pyplot, save_figure, write_json
from orpheus_tts.protocol import ChunkFrame, EosFrame, FrameDecoder

TEXT = "Benchmark sentence for the gateway."
TARGET_TTFB_RATIO = 1.10
TARGET_TTFB_SLACK_MS = 2.0
TARGET_THROUGHPUT_RATIO = 0.9


async def _one(client: httpx.AsyncClient, url: str) -> float:
    started = time.perf_counter()
    ttfb = None
    decoder = FrameDecoder()
    async with client.stream("POST", f"{url}/v1/tts/stream", json={"text": TEXT}) as response:
        response.raise_for_status()
        async for data in response.aiter_raw():
            for frame in decoder.feed(data):
                if ttfb is None and isinstance(frame, ChunkFrame):
                    ttfb = time.perf_counter() - started
                if isinstance(frame, EosFrame):
                    assert ttfb is not None
                    return ttfb
    raise RuntimeError("stream ended without eos")


async def _batch(client: httpx.AsyncClient, url: str, requests: int, concurrency: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)

    async def run() -> float:
        async with gate:
            return await _one(client, url)

    started = time.perf_counter()
    ttfbs = await asyncio.gather(*(run() for _ in range(requests)))
    wall = time.perf_counter() - started
    return {"ttfb_s": list(ttfbs), "wall_s": wall}


async def _measure(
    direct: str, via: str, gateway_pid: int, levels: list[int], requests: int, rounds: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=max(levels) + 8, max_keepalive_connections=max(levels) + 8)
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        for target in (direct, via):  # warm both paths
            await _batch(client, target, 20, 4)
        for level in levels:
            n = max(requests, level * 4)
            per: dict[str, dict[str, Any]] = {
                "direct": {"ttfb_s": [], "wall_s": 0.0},
                "gateway": {"ttfb_s": [], "wall_s": 0.0, "cpu_s": 0.0},
            }
            for _ in range(rounds):
                for name, url in (("direct", direct), ("gateway", via)):
                    cpu0 = cpu_seconds(gateway_pid)
                    batch = await _batch(client, url, n, level)
                    per[name]["ttfb_s"] += batch["ttfb_s"]
                    per[name]["wall_s"] += batch["wall_s"]
                    if name == "gateway":
                        per[name]["cpu_s"] += cpu_seconds(gateway_pid) - cpu0
            row: dict[str, Any] = {"requests": n * rounds}
            for name, data in per.items():
                ttfb_ms = [t * 1000 for t in data["ttfb_s"]]
                row[name] = {
                    "ttfb_p50_ms": percentile(ttfb_ms, 50),
                    "ttfb_p99_ms": percentile(ttfb_ms, 99),
                    "streams_per_s": n * rounds / data["wall_s"],
                }
            row["gateway"]["cpu_ms_per_stream"] = per["gateway"]["cpu_s"] * 1000 / (n * rounds)
            row["ttfb_p50_ratio"] = row["gateway"]["ttfb_p50_ms"] / row["direct"]["ttfb_p50_ms"]
            row["throughput_ratio"] = row["gateway"]["streams_per_s"] / row["direct"]["streams_per_s"]
            row["meets_ttfb_target"] = (
                row["gateway"]["ttfb_p50_ms"] <= TARGET_TTFB_RATIO * row["direct"]["ttfb_p50_ms"] + TARGET_TTFB_SLACK_MS
            )
            row["meets_throughput_target"] = row["throughput_ratio"] >= TARGET_THROUGHPUT_RATIO
            results[str(level)] = row
            print(
                f"concurrency {level:>4}: ttfb p50 direct {row['direct']['ttfb_p50_ms']:7.2f} ms, "
                f"gateway {row['gateway']['ttfb_p50_ms']:7.2f} ms (x{row['ttfb_p50_ratio']:.2f}); "
                f"p99 {row['direct']['ttfb_p99_ms']:7.2f} / {row['gateway']['ttfb_p99_ms']:7.2f} ms; "
                f"streams/s {row['direct']['streams_per_s']:7.1f} / {row['gateway']['streams_per_s']:7.1f} "
                f"(x{row['throughput_ratio']:.2f}); gateway CPU {row['gateway']['cpu_ms_per_stream']:.2f} ms/stream",
                flush=True,
            )
    return results


def _plot(results: dict[str, Any]) -> None:
    plt = pyplot()
    levels = list(results)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(levels))
    for offset, name in ((-0.2, "direct"), (0.2, "gateway")):
        ax1.bar(
            [i + offset for i in x],
            [results[lv][name]["ttfb_p50_ms"] for lv in levels],
            0.4,
            label=f"{name} p50",
        )
        ax1.scatter(
            [i + offset for i in x],
            [results[lv][name]["ttfb_p99_ms"] for lv in levels],
            marker="_",
            s=300,
            color="black",
        )
        ax2.bar([i + offset for i in x], [results[lv][name]["streams_per_s"] for lv in levels], 0.4, label=name)
    for ax, title, unit in (
        (ax1, "Time to first audio (bar p50, tick p99)", "ms"),
        (ax2, "Throughput", "streams / s"),
    ):
        ax.set_xticks(list(x), [f"c={lv}" for lv in levels])
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.legend()
    save_figure(fig, "gateway")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per batch (at least 4x concurrency)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 128])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per path and level")
    args = parser.parse_args()
    worker_args = ["worker", "--engine", "test", "--capacity", "1024", "--max-queue", "4096"]
    with orpheus_process(*worker_args) as (worker, _), orpheus_process("gateway", "--worker", worker) as (gw, gw_proc):
        results = asyncio.run(_measure(worker, gw, gw_proc.pid, args.concurrency, args.requests, args.rounds))
    write_json(
        "gateway",
        {
            "machine": machine(),
            "text": TEXT,
            "levels": results,
            "targets": {
                "ttfb_p50": f"<= {TARGET_TTFB_RATIO}x direct + {TARGET_TTFB_SLACK_MS} ms",
                "throughput": f">= {TARGET_THROUGHPUT_RATIO}x direct",
            },
        },
    )
    _plot(results)
    print("wrote bench/results/gateway.json and bench/results/gateway.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
