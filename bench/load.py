"""Open-loop load on the whole stack: goodput, time to first audio and errors as the rate rises.

``orpheus-tts serve --engine test`` runs a gateway and worker processes on
loopback. Compute is simulated with the test engine's ``fault_piece_delay_ms``
(a sleep before each 100 ms piece, so ``--rtf`` seconds of work per second of
audio): the worker slots, not this machine's cores, bound the capacity, which
is about ``workers × capacity / (audio_s × rtf)`` streams per second.

Arrivals are open loop: a seeded Poisson schedule per offered rate, each
stream launched at its time whatever happened to the earlier ones, and its
time to first audio (TTFA) counted from that scheduled time, so a saturated
server (or client) cannot slow the arrivals down and hide its tail latency
(coordinated omission). Each rate runs ``--duration-s``; the next starts once
the previous one's streams are done.

Every stream's bytes are compared with ``render()``: it carries exactly the
engine's audio (ok), or ends with an error after a prefix of it (counted by
error code). A stream that ends without an error short of its audio
(``truncated``) or carries bytes that are not a prefix (``corrupted``) fails
the run. Goodput counts ok streams whose TTFA met ``--ttfa-objective-ms``.
The knee is the highest offered rate at which 90 % of the arrivals are good.

A closed-loop run follows: ``--burst-streams`` streams, ``--burst-concurrency``
at a time, on a stack with queues deep enough to hold them, to show that
nothing is lost or corrupted at high concurrency.

The ramp runs once per ``--max-queue`` depth (default 8, then 2 per worker):
past the knee a deep queue admits streams that can no longer meet the
objective, a short one refuses them at once (503 ``overloaded``, retryable).

Writes ``bench/results/load.json`` and ``load.png``; prints each rate's TTFA
as a ratio of the lowest rate's (the unloaded baseline, same run).

    python -m bench.load [--rates 4 8 12 16 20 24 32] [--duration-s 8] [--max-queue 8 2]
                         [--burst-streams 1000] [--burst-concurrency 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench.common import machine, percentile, pyplot, save_figure, write_json
from orpheus_tts.engines.testing import DEFAULT_PIECE_SAMPLES, SAMPLES_PER_CHAR, render
from orpheus_tts.engines.text import split_segments
from orpheus_tts.routing import RoutingSettings
from orpheus_tts.sdk import OrpheusError, OrpheusTTS
from orpheus_tts.serving.local import free_port, wait_ready

PIECE_S = 0.1
"""The test engine yields 100 ms pieces."""
GOODPUT_SHARE = 0.9
"""The knee is the last rate at which at least this share of the arrivals are good (ok and on time)."""
RSS_SAMPLE_S = 0.2


@dataclass
class Stream:
    """One stream's fate."""

    scheduled_s: float
    """When it was due, seconds from the start of its run."""
    launch_lag_s: float = 0.0
    """How late the client actually sent it (client saturation shows here)."""
    ttfa_s: float | None = None
    """From the scheduled time to the first audio."""
    total_s: float = 0.0
    outcome: str = "ok"
    """ok, truncated, corrupted, or the error's code."""
    audio_bytes: int = 0


@dataclass
class RunResult:
    streams: list[Stream] = field(default_factory=list)
    wall_s: float = 0.0


def _pieces(text: str) -> int:
    """Pieces the test engine yields for ``text``: each segment's tone in 100 ms pieces, the last short."""
    return sum(math.ceil(max(1, len(seg) * SAMPLES_PER_CHAR) / DEFAULT_PIECE_SAMPLES) for seg in split_segments(text))


def _code(exc: OrpheusError) -> str:
    return exc.code or type(exc).__name__


def _text(n: int, audio_s: float) -> str:
    """A unique text of about ``audio_s`` seconds (each character is 10 ms)."""
    base = f"Load stream {n} says its piece. "
    chars = max(len(base), round(audio_s * 100))
    return (base * (chars // len(base) + 1))[:chars].strip() + "."


async def _one(tts: OrpheusTTS, text: str, stream: Stream, t0: float, params: dict[str, Any]) -> None:
    expected = render(text)
    audio = bytearray()
    due = t0 + stream.scheduled_s
    stream.launch_lag_s = max(0.0, time.monotonic() - due)
    error: OrpheusError | None = None
    try:
        async for chunk in tts.stream(text, "tone", **params):
            if stream.ttfa_s is None:
                stream.ttfa_s = time.monotonic() - due
            audio += chunk
    except OrpheusError as exc:
        error = exc
    stream.total_s = time.monotonic() - due
    stream.audio_bytes = len(audio)
    if not expected.startswith(bytes(audio)):
        stream.outcome = "corrupted"
    elif error is not None:
        stream.outcome = _code(error)
    elif len(audio) != len(expected):
        stream.outcome = "truncated"


async def _open_loop(
    url: str, rate: float, duration_s: float, audio_s: float, params: dict[str, Any], seed: int
) -> RunResult:
    rng = random.Random(seed)
    schedule: list[float] = []
    at = rng.expovariate(rate)
    while at < duration_s:
        schedule.append(at)
        at += rng.expovariate(rate)
    result = RunResult(streams=[Stream(s) for s in schedule])
    settings = RoutingSettings(hedge_ttfb_ms=None, max_connections=4096, max_keepalive_connections=1024)
    async with OrpheusTTS(url, settings=settings) as tts:
        t0 = time.monotonic()
        tasks = []
        for n, stream in enumerate(result.streams):
            delay = t0 + stream.scheduled_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(_one(tts, _text(seed * 100_000 + n, audio_s), stream, t0, params)))
        await asyncio.gather(*tasks)
        result.wall_s = time.monotonic() - t0
    return result


async def _closed_loop(url: str, streams: int, concurrency: int, audio_s: float, params: dict[str, Any]) -> RunResult:
    result = RunResult(streams=[Stream(0.0) for _ in range(streams)])
    gate = asyncio.Semaphore(concurrency)
    settings = RoutingSettings(hedge_ttfb_ms=None, max_connections=4096, max_keepalive_connections=1024)
    async with OrpheusTTS(url, settings=settings) as tts:
        t0 = time.monotonic()

        async def run(n: int, stream: Stream) -> None:
            async with gate:
                stream.scheduled_s = time.monotonic() - t0  # closed loop: due when a slot frees
                await _one(tts, _text(n, audio_s), stream, t0, params)

        await asyncio.gather(*(run(n, s) for n, s in enumerate(result.streams)))
        result.wall_s = time.monotonic() - t0
    return result


def _summary(result: RunResult, objective_s: float, offered: float | None, duration_s: float | None) -> dict[str, Any]:
    streams = result.streams
    ok = [s for s in streams if s.outcome == "ok"]
    ttfa_ms = [s.ttfa_s * 1000 for s in ok if s.ttfa_s is not None]
    good = sum(1 for s in ok if s.ttfa_s is not None and s.ttfa_s <= objective_s)
    errors = Counter(s.outcome for s in streams if s.outcome not in ("ok", "truncated", "corrupted"))
    window = duration_s or result.wall_s
    return {
        "window_s": window,
        "offered_per_s": offered,
        "streams": len(streams),
        # Streams whose bytes passed the check: the whole audio, or a prefix then a documented error.
        "verified": sum(1 for s in streams if s.outcome not in ("truncated", "corrupted")),
        "ok": len(ok),
        "good": good,
        "arrivals_per_s": len(streams) / window if window else math.nan,
        "goodput_per_s": good / window if window else math.nan,
        "good_share": good / len(streams) if streams else math.nan,
        "truncated": sum(1 for s in streams if s.outcome == "truncated"),
        "corrupted": sum(1 for s in streams if s.outcome == "corrupted"),
        "errors": dict(sorted(errors.items())),
        "cut_after_audio": sum(1 for s in streams if s.outcome in errors and s.audio_bytes),
        "ttfa_p50_ms": percentile(ttfa_ms, 50),
        "ttfa_p90_ms": percentile(ttfa_ms, 90),
        "ttfa_p99_ms": percentile(ttfa_ms, 99),
        "launch_lag_p99_ms": percentile([s.launch_lag_s * 1000 for s in streams], 99),
        "wall_s": result.wall_s,
    }


# ------------------------------------------------------------------ the stack


@contextlib.contextmanager
def _serve(workers: int, capacity: int, max_queue: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "orpheus_tts.cli", "serve", "--engine", "test", "--enable-test-faults",
        "--workers", str(workers), "--capacity", str(capacity), "--max-queue", str(max_queue),
        "--host", "127.0.0.1", "--port", str(port), "--probe-interval-s", "0.5",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc=proc)
        deadline = time.monotonic() + 30
        while len(_worker_pids(proc.pid)) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _worker_pids(pid: int) -> list[int]:
    out = []
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "worker" in child.cmdline():
                out.append(child.pid)
    return out


class PeakRss:
    """Peak resident memory of the gateway and of each worker, sampled in a thread."""

    def __init__(self, gateway_pid: int) -> None:
        self.gateway_pid = gateway_pid
        self.peak: dict[str, float] = {"gateway": 0.0, "worker": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        pairs = [("gateway", self.gateway_pid)] + [("worker", p) for p in _worker_pids(self.gateway_pid)]
        for name, pid in pairs:
            with contextlib.suppress(psutil.Error):
                mb = psutil.Process(pid).memory_info().rss / 2**20
                self.peak[name] = max(self.peak[name], mb)

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            self._sample()

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ------------------------------------------------------------------ report


def _knee(rows: Sequence[dict[str, Any]]) -> float | None:
    """The highest offered rate up to which at least GOODPUT_SHARE of the arrivals are good."""
    knee = None
    for row in rows:
        if row["good_share"] < GOODPUT_SHARE:
            break
        knee = row["offered_per_s"]
    return knee


def _plot(ramps: dict[str, dict[str, Any]], objective_ms: float, capacity: float) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    first = next(iter(ramps.values()))["rows"]
    rates = [r["offered_per_s"] for r in first]
    ax1.plot(rates, rates, ":", color="grey", label="offered")
    ax1.axvline(capacity, color="grey", alpha=0.4, label=f"slot capacity ≈ {capacity:.1f}/s")
    markers = iter("os^v")
    for (queue, ramp), colour in zip(ramps.items(), ("tab:blue", "tab:green", "tab:purple", "tab:brown"), strict=False):
        rows, marker = ramp["rows"], next(markers, "o")
        label = f"queue {queue}/worker"
        ax1.plot(rates, [r["arrivals_per_s"] for r in rows], ".", color=colour, alpha=0.5)
        ax1.plot(rates, [r["goodput_per_s"] for r in rows], marker + "-", color=colour, label=f"goodput, {label}")
        ax1.plot(
            rates, [sum(r["errors"].values()) / r["window_s"] for r in rows], "x--", color=colour, alpha=0.6,
            label=f"errors / s, {label}",
        )  # fmt: skip
        if ramp["knee_per_s"] is not None:
            ax1.axvline(ramp["knee_per_s"], color=colour, alpha=0.3)
        ax2.plot(rates, [r["ttfa_p50_ms"] for r in rows], marker + "-", color=colour, label=f"p50, {label}")
        ax2.plot(rates, [r["ttfa_p99_ms"] for r in rows], marker + "--", color=colour, label=f"p99, {label}")
    ax1.set_xlabel("offered rate (streams / s, Poisson; dots: arrivals)")
    ax1.set_ylabel("streams / s")
    ax1.set_title(f"Goodput (whole, TTFA ≤ {objective_ms:g} ms) vs offered rate")
    ax1.legend(fontsize=7)
    ax2.axhline(objective_ms, color="red", alpha=0.5, label="objective")
    ax2.set_yscale("log")
    ax2.set_xlabel("offered rate (streams / s)")
    ax2.set_ylabel("time to first audio (ms, from scheduled arrival)")
    ax2.set_title("TTFA percentiles vs offered rate")
    ax2.legend(fontsize=7)
    save_figure(fig, "load")


def _ramp(args: argparse.Namespace, max_queue: int, params: dict[str, Any], objective_s: float) -> dict[str, Any]:
    """Every rate of ``args.rates`` against a stack whose workers queue ``max_queue`` each."""
    rows: list[dict[str, Any]] = []
    print(f"ramp, queue {max_queue} per worker:", flush=True)
    with _serve(args.workers, args.capacity, max_queue) as (url, proc), PeakRss(proc.pid) as rss:
        asyncio.run(_closed_loop(url, 20, 4, args.audio_s, params))  # warm up
        for i, rate in enumerate(args.rates):
            result = asyncio.run(_open_loop(url, rate, args.duration_s, args.audio_s, params, args.seed + i))
            row = _summary(result, objective_s, rate, args.duration_s)
            rows.append(row)
            base = rows[0]
            print(
                f"  offered {rate:5.1f}/s: {row['streams']:4d} streams, goodput {row['goodput_per_s']:5.1f}/s "
                f"({row['good_share']:.0%} good), "
                f"TTFA p50 {row['ttfa_p50_ms']:7.1f} ms (x{row['ttfa_p50_ms'] / base['ttfa_p50_ms']:.2f}) "
                f"p99 {row['ttfa_p99_ms']:7.1f} ms (x{row['ttfa_p99_ms'] / base['ttfa_p99_ms']:.2f}); "
                f"errors {row['errors'] or '-'}; launch lag p99 {row['launch_lag_p99_ms']:.1f} ms; "
                f"truncated {row['truncated']} corrupted {row['corrupted']}",
                flush=True,
            )
    knee = _knee(rows)
    print(f"  knee: {knee}/s; peak RSS gateway {rss.peak['gateway']:.0f} MB, worker {rss.peak['worker']:.0f} MB")
    return {"rows": rows, "knee_per_s": knee, "peak_rss_mb": rss.peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[4, 8, 12, 16, 20, 24, 32])
    parser.add_argument("--duration-s", type=float, default=8.0, help="arrivals per rate")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--capacity", type=int, default=4, help="slots per worker")
    parser.add_argument("--max-queue", type=int, nargs="+", default=[8, 2], help="queue per worker: one ramp for each")
    parser.add_argument("--audio-s", type=float, default=1.2, help="audio per stream")
    parser.add_argument("--rtf", type=float, default=0.3, help="simulated compute per second of audio")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="each request's deadline")
    parser.add_argument("--ttfa-objective-ms", type=float, default=500.0)
    parser.add_argument("--burst-streams", type=int, default=1000)
    parser.add_argument("--burst-concurrency", type=int, default=200)
    parser.add_argument("--burst-capacity", type=int, default=16, help="slots per worker (burst)")
    parser.add_argument("--burst-rtf", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-ramp", action="store_true")
    parser.add_argument("--skip-burst", action="store_true")
    args = parser.parse_args()

    objective_s = args.ttfa_objective_ms / 1000
    params = {"fault_piece_delay_ms": args.rtf * PIECE_S * 1000, "timeout_s": args.timeout_s}
    stream_s = _pieces(_text(0, args.audio_s)) * args.rtf * PIECE_S
    capacity = args.workers * args.capacity / stream_s
    report: dict[str, Any] = {
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("skip")},
        "slot_capacity_per_s": capacity,
    }
    failed = False
    if not args.skip_ramp:
        ramps = {str(q): _ramp(args, q, params, objective_s) for q in args.max_queue}
        report["ramps"] = ramps
        print(f"slot capacity ≈ {capacity:.1f}/s")
        _plot(ramps, args.ttfa_objective_ms, capacity)
        failed |= any(r["truncated"] or r["corrupted"] for ramp in ramps.values() for r in ramp["rows"])
    if not args.skip_burst:
        burst_params = {"fault_piece_delay_ms": args.burst_rtf * PIECE_S * 1000, "timeout_s": 60.0}
        queue = math.ceil(args.burst_concurrency / args.workers)
        with _serve(args.workers, args.burst_capacity, queue) as (url, proc), PeakRss(proc.pid) as rss:
            result = asyncio.run(
                _closed_loop(url, args.burst_streams, args.burst_concurrency, args.audio_s, burst_params)
            )
        burst = _summary(result, objective_s, None, None)
        burst.update(concurrency=args.burst_concurrency, peak_rss_mb=rss.peak)
        report["burst"] = burst
        print(
            f"burst: {burst['streams']} streams at concurrency {args.burst_concurrency} in {burst['wall_s']:.1f} s: "
            f"{burst['ok']} ok, {burst['verified']} verified, errors {burst['errors'] or '-'}, "
            f"truncated {burst['truncated']}, corrupted {burst['corrupted']}; "
            f"TTFA p50 {burst['ttfa_p50_ms']:.0f} ms p99 {burst['ttfa_p99_ms']:.0f} ms; peak RSS {rss.peak}",
            flush=True,
        )
        failed |= bool(burst["truncated"] or burst["corrupted"])
    report["passed"] = not failed
    write_json("load", report)
    print("wrote bench/results/load.json" + ("" if args.skip_ramp else " and bench/results/load.png"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
