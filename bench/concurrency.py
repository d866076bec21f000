"""Many streams at once through ``serve``: time to first audio and playback gaps, fifo vs deadline.

Each scheduler (``--scheduler fifo`` and ``--scheduler deadline``) gets its own
``orpheus-tts serve`` stack (default settings otherwise, so as many workers as
the machine runs by default), warmed up, then:

- **Bursts**: N streams of a multi-sentence text started at once, for each
  N of ``--levels``. Per stream: the time to first audio (TTFA, from the
  request) and a simulated listener that starts playing ``--jitter-ms``
  after the first chunk arrives and plays at real time; a chunk that arrives
  after the listener reached it is a gap (the stream *ran dry*), and playback
  resumes when it arrives.
- **Ramp**: an open-loop Poisson arrival ramp (seeded; each stream starts at
  its scheduled time whatever happened to the others, and its TTFA counts
  from that time). Goodput counts streams with TTFA within
  ``--ttfa-objective-ms`` and no gap; the knee is the highest offered rate at
  which the deadline scheduler keeps ``GOOD_SHARE`` of the arrivals good.

Both schedulers run in the same invocation, each on its own stack, taking
turns at every level and rate, so ratios compare like with like even on a
machine whose load drifts (each row records the load average). A stream that ends with an error frame or status
(``overloaded``, ``deadline_exceeded``) is counted by its code; one that
breaks off without either fails the run.

With the embedded engine the JSON's ``machine`` entry also says how fast the voice ran on
this machine just before (``embedded_engine_speed``, from
:func:`bench.engine_threads.engine_speed`): the capacity these figures are bound by.

Writes ``bench/results/concurrency.json`` and ``concurrency.png`` (or
``concurrency_smoke.*`` under ``--out`` with ``--smoke``, a reduced run with
the test engine that the test suite uses).

    python -m bench.concurrency [--levels 1 4 8 16 32] [--rates 0.5 1 1.5 2 2.5 3 3.5] [--ramp-s 20]
    python -m bench.concurrency --smoke --out /tmp/results
    python -m bench.concurrency --table bench/results/concurrency.json   # the docs' table
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, machine, percentile, pyplot
from bench.engine_threads import engine_speed
from orpheus_tts.routing import RoutingSettings
from orpheus_tts.sdk import OrpheusError, OrpheusTTS
from orpheus_tts.serving.local import free_port, wait_ready

SCHEDULERS = ("fifo", "deadline")
GOOD_SHARE = 0.9
"""The knee is the last offered rate at which at least this share of the arrivals are good."""
BYTES_PER_S = 48_000
"""24 kHz s16le mono."""
TEST_PIECE_S = 0.1
"""The test engine yields 100 ms pieces."""
SINGLE_STREAM_REPEATS = 5
"""The single-stream level runs this many times in a row; its TTFA is their median."""

TEXTS = [
    "Sure, I can help you with that. Your order left our warehouse on Monday morning. "
    "It should arrive at your door within three days. Is there anything else you would like to know?",
    "Thanks for calling, and welcome back. The weather today is sunny with a light breeze from the west. "
    "Tomorrow brings clouds and some rain in the afternoon. Please remember to take an umbrella.",
    "Good morning, this is your reminder. Your appointment with the dentist is at ten tomorrow. "
    "Please arrive a few minutes early to fill in the forms. Reply yes to confirm or no to cancel.",
    "All right, let me check that for you. The library opens early and closes late on weekends. "
    "You can borrow up to five books at a time. Returns go in the box by the front door.",
]


@dataclass
class Stream:
    """One stream's fate."""

    scheduled_s: float = 0.0
    """When it was due to start, seconds from the start of its run."""
    ttfa_s: float | None = None
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    """(seconds since scheduled start, bytes) per chunk."""
    outcome: str = "ok"
    gaps_s: list[float] = field(default_factory=list)

    @property
    def audio_s(self) -> float:
        return sum(n for _, n in self.arrivals) / BYTES_PER_S

    @property
    def worst_gap_s(self) -> float:
        return max(self.gaps_s, default=0.0)


def playback_gaps(arrivals: Sequence[tuple[float, int]], jitter_s: float) -> list[float]:
    """Stalls of a listener who starts ``jitter_s`` after the first chunk and plays at real time."""
    if not arrivals:
        return []
    clock = arrivals[0][0] + jitter_s
    """When the listener reaches the start of the next chunk."""
    gaps = []
    for at, size in arrivals:
        if at > clock:
            gaps.append(at - clock)
            clock = at
        clock += size / BYTES_PER_S
    return gaps


async def _one(tts: OrpheusTTS, text: str, stream: Stream, t0: float, params: dict[str, Any]) -> None:
    due = t0 + stream.scheduled_s
    try:
        async for chunk in tts.stream(text, **params):
            now = time.monotonic() - due
            if stream.ttfa_s is None:
                stream.ttfa_s = now
            stream.arrivals.append((now, len(chunk)))
    except OrpheusError as exc:
        stream.outcome = exc.code or type(exc).__name__
    except Exception as exc:  # a broken stream: what the benchmark must never see
        stream.outcome = f"broken: {type(exc).__name__}"


def _client(url: str) -> OrpheusTTS:
    settings = RoutingSettings(hedge_ttfb_ms=None, max_connections=1024, max_keepalive_connections=256)
    return OrpheusTTS(url, settings=settings)


async def _burst(url: str, n: int, params: dict[str, Any], offset: int) -> list[Stream]:
    streams = [Stream() for _ in range(n)]
    async with _client(url) as tts:
        t0 = time.monotonic()
        await asyncio.gather(
            *(_one(tts, TEXTS[(offset + i) % len(TEXTS)], s, t0, params) for i, s in enumerate(streams))
        )
    return streams


async def _poisson(url: str, rate: float, duration_s: float, params: dict[str, Any], seed: int) -> list[Stream]:
    rng = random.Random(seed)
    schedule = []
    at = rng.expovariate(rate)
    while at < duration_s:
        schedule.append(at)
        at += rng.expovariate(rate)
    streams = [Stream(scheduled_s=s) for s in schedule]
    async with _client(url) as tts:
        t0 = time.monotonic()
        tasks = []
        for i, stream in enumerate(streams):
            delay = t0 + stream.scheduled_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(_one(tts, TEXTS[i % len(TEXTS)], stream, t0, params)))
        await asyncio.gather(*tasks)
    return streams


def _summary(streams: list[Stream], jitter_s: float, objective_s: float) -> dict[str, Any]:
    for s in streams:
        s.gaps_s = playback_gaps(s.arrivals, jitter_s)
    ok = [s for s in streams if s.outcome == "ok"]
    ttfa_ms = [s.ttfa_s * 1000 for s in ok if s.ttfa_s is not None]
    good = [s for s in ok if s.ttfa_s is not None and s.ttfa_s <= objective_s and not s.gaps_s]
    return {
        "streams": len(streams),
        "ok": len(ok),
        "errors": sorted(s.outcome for s in streams if s.outcome != "ok"),
        "ttfa_p50_ms": percentile(ttfa_ms, 50),
        "ttfa_p99_ms": percentile(ttfa_ms, 99),
        "ttfa_max_ms": max(ttfa_ms, default=math.nan),
        "ran_dry": sum(1 for s in ok if s.gaps_s),
        "worst_gap_ms": max((s.worst_gap_s * 1000 for s in ok), default=0.0),
        "good": len(good),
        "audio_s_mean": sum(s.audio_s for s in ok) / len(ok) if ok else math.nan,
    }


# ------------------------------------------------------------------ the stack


@contextlib.contextmanager
def _serve(args: argparse.Namespace, scheduler: str) -> Iterator[str]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "orpheus_tts.cli", "serve", "--engine", args.engine, "--scheduler", scheduler,
        "--host", "127.0.0.1", "--port", str(port), "--probe-interval-s", "0.5",
    ]  # fmt: skip
    if args.engine == "test":
        cmd += ["--enable-test-faults", "--capacity", str(args.test_capacity)]
    cmd += shlex.split(args.serve_args)
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc=proc, timeout_s=120)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _run(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every level and rate on every scheduler's stack, alternating schedulers at each step, so a
    machine whose load drifts (other work on it) weighs on both alike."""
    jitter_s, objective_s = args.jitter_ms / 1000, args.ttfa_objective_ms / 1000
    results: dict[str, dict[str, Any]] = {s: {"bursts": [], "ramp": []} for s in args.schedulers}
    with contextlib.ExitStack() as stack:
        urls = {s: stack.enter_context(_serve(args, s)) for s in args.schedulers}
        for url in urls.values():
            asyncio.run(_burst(url, 2, params, 0))  # warm up: model, connections, the capacity estimate
        for level in args.levels:
            for scheduler, url in urls.items():
                repeats = SINGLE_STREAM_REPEATS if level == 1 else 1
                streams = []
                for r in range(repeats):
                    streams += asyncio.run(_burst(url, level, params, r))
                row = {"concurrency": level, **_summary(streams, jitter_s, objective_s), "load_1m": _load()}
                results[scheduler]["bursts"].append(row)
                print(
                    f"{scheduler:>8} {level:3d} at once: TTFA p50 {row['ttfa_p50_ms']:7.0f} ms p99 "
                    f"{row['ttfa_p99_ms']:7.0f} ms max {row['ttfa_max_ms']:7.0f} ms; ran dry {row['ran_dry']:2d}, "
                    f"worst gap {row['worst_gap_ms']:6.0f} ms; errors {len(row['errors'])}; load {row['load_1m']}",
                    flush=True,
                )
        for i, rate in enumerate(args.rates):
            for scheduler, url in urls.items():
                streams = asyncio.run(_poisson(url, rate, args.ramp_s, params, args.seed + i))
                row = {"offered_per_s": rate, **_summary(streams, jitter_s, objective_s), "load_1m": _load()}
                row["goodput_per_s"] = row["good"] / args.ramp_s
                row["good_share"] = row["good"] / row["streams"] if row["streams"] else math.nan
                results[scheduler]["ramp"].append(row)
                print(
                    f"{scheduler:>8} Poisson {rate:4.2f}/s: {row['streams']:3d} streams, goodput "
                    f"{row['goodput_per_s']:5.2f}/s ({row['good_share']:.0%} good), TTFA p50 "
                    f"{row['ttfa_p50_ms']:6.0f} ms p99 {row['ttfa_p99_ms']:6.0f} ms, ran dry {row['ran_dry']}, "
                    f"errors {len(row['errors'])}; load {row['load_1m']}",
                    flush=True,
                )
    return results


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


# ------------------------------------------------------------------ report


def _knee(ramp: Sequence[dict[str, Any]]) -> float | None:
    knee = None
    for row in ramp:
        if not row["good_share"] >= GOOD_SHARE:
            break
        knee = row["offered_per_s"]
    return knee


def _targets(results: dict[str, dict[str, Any]], target_level: int) -> dict[str, Any]:
    """The targets: at ``target_level`` streams, TTFA max <= 10x single-stream TTFA and no stream ran dry;
    goodput >= 3x fifo's at the deadline scheduler's knee."""
    out: dict[str, Any] = {}
    for name, result in results.items():
        by_level = {row["concurrency"]: row for row in result["bursts"]}
        single = by_level.get(1)
        at = by_level.get(target_level)
        if single and at:
            ratio = at["ttfa_max_ms"] / single["ttfa_p50_ms"]
            out[name] = {
                "single_stream_ttfa_ms": single["ttfa_p50_ms"],
                f"ttfa_max_at_{target_level}_ms": at["ttfa_max_ms"],
                "ttfa_max_ratio": ratio,
                "ran_dry": at["ran_dry"],
                "met": ratio <= 10 and at["ran_dry"] == 0,
            }
    if set(results) != set(SCHEDULERS):
        return out
    deadline_ramp, fifo_ramp = results["deadline"]["ramp"], results["fifo"]["ramp"]
    knee = _knee(deadline_ramp)
    if knee is not None:
        d = next(r for r in deadline_ramp if r["offered_per_s"] == knee)
        f = next(r for r in fifo_ramp if r["offered_per_s"] == knee)
        ratio = d["goodput_per_s"] / f["goodput_per_s"] if f["goodput_per_s"] else math.inf
        out["goodput_at_knee"] = {
            "knee_per_s": knee,
            "deadline_per_s": d["goodput_per_s"],
            "fifo_per_s": f["goodput_per_s"],
            "ratio": ratio,
            "met": ratio >= 3,
        }
    return out


def _plot(results: dict[str, dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    plt = pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.6))
    colours = {"fifo": "tab:red", "deadline": "tab:blue"}
    for name, result in results.items():
        c = colours[name]
        levels = [r["concurrency"] for r in result["bursts"]]
        ax1.plot(levels, [r["ttfa_p50_ms"] for r in result["bursts"]], "o-", color=c, label=f"{name} p50")
        ax1.plot(levels, [r["ttfa_max_ms"] for r in result["bursts"]], "s--", color=c, label=f"{name} max")
        ax2.bar(
            [x + (0.2 if name == "deadline" else -0.2) for x in range(len(levels))],
            [r["ran_dry"] for r in result["bursts"]],
            width=0.4,
            color=c,
            label=f"{name}: streams that ran dry",
        )
        ax2.set_xticks(range(len(levels)), [str(n) for n in levels])
        rates = [r["offered_per_s"] for r in result["ramp"]]
        ax3.plot(rates, [r["goodput_per_s"] for r in result["ramp"]], "o-", color=c, label=f"{name} goodput")
    rates = [r["offered_per_s"] for r in next(iter(results.values()))["ramp"]]
    ax3.plot(rates, rates, ":", color="grey", label="offered")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("streams started at once")
    ax1.set_ylabel("time to first audio (ms)")
    ax1.set_title("TTFA vs concurrency")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("streams started at once")
    ax2.set_ylabel("streams")
    ax2.set_title(f"Streams that ran dry ({args.jitter_ms:g} ms jitter buffer)")
    ax2.legend(fontsize=7)
    ax3.set_xlabel("offered rate (streams / s, Poisson)")
    ax3.set_ylabel("good streams / s")
    ax3.set_title(f"Goodput (TTFA ≤ {args.ttfa_objective_ms:g} ms, no gap)")
    ax3.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(report: dict[str, Any]) -> str:
    """The bursts of both schedulers side by side, as a Markdown table (for the docs)."""
    results = report["schedulers"]
    lines = [
        "| streams at once | scheduler | TTFA p50 | TTFA p99 | TTFA max | ran dry | worst gap | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    levels = [row["concurrency"] for row in next(iter(results.values()))["bursts"]]
    for i, level in enumerate(levels):
        for name in results:
            r = results[name]["bursts"][i]
            lines.append(
                f"| {level} | {name} | {r['ttfa_p50_ms'] / 1000:.2f} s | {r['ttfa_p99_ms'] / 1000:.2f} s | "
                f"{r['ttfa_max_ms'] / 1000:.2f} s | {r['ran_dry']} | {r['worst_gap_ms'] / 1000:.2f} s | "
                f"{len(r['errors'])} |"
            )
    lines += ["", "| offered (Poisson) | scheduler | streams | goodput | good | TTFA p50 | TTFA p99 | ran dry |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    rates = [row["offered_per_s"] for row in next(iter(results.values()))["ramp"]]
    for i, rate in enumerate(rates):
        for name in results:
            r = results[name]["ramp"][i]
            lines.append(
                f"| {rate:g}/s | {name} | {r['streams']} | {r['goodput_per_s']:.2f}/s | {r['good_share']:.0%} | "
                f"{r['ttfa_p50_ms'] / 1000:.2f} s | {r['ttfa_p99_ms'] / 1000:.2f} s | {r['ran_dry']} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0],
        help="offered Poisson rates, streams/s (finer where a 2-core machine's knee lies)",
    )
    parser.add_argument("--ramp-s", type=float, default=20.0, help="arrivals per offered rate, seconds")
    parser.add_argument("--jitter-ms", type=float, default=200.0, help="the simulated listener's buffer")
    parser.add_argument("--ttfa-objective-ms", type=float, default=1000.0)
    parser.add_argument("--target-level", type=int, default=16)
    parser.add_argument("--engine", default="embedded", choices=["embedded", "test"])
    parser.add_argument("--test-rtf", type=float, default=0.05, help="test engine: compute per audio second")
    parser.add_argument("--test-capacity", type=int, default=2, help="test engine: slots per worker")
    parser.add_argument("--serve-args", default="", help="more flags for serve (both schedulers)")
    parser.add_argument("--schedulers", nargs="+", default=list(SCHEDULERS), choices=SCHEDULERS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="a reduced run with the test engine")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default=None, help="results file name (default: concurrency)")
    parser.add_argument("--table", type=Path, default=None, help="print a results JSON as Markdown and exit")
    args = parser.parse_args(argv)
    if args.table is not None:
        import json

        print(table(json.loads(args.table.read_text(encoding="utf-8"))))
        return 0
    if args.smoke:
        args.engine, args.levels, args.rates, args.ramp_s, args.target_level = "test", [1, 4], [2.0], 2.0, 4
    params: dict[str, Any] = {}
    if args.engine == "test":
        params["fault_piece_delay_ms"] = args.test_rtf * TEST_PIECE_S * 1000
    name = args.name or ("concurrency_smoke" if args.smoke else "concurrency")
    load_before = machine()["load_average_1m"]
    speed = engine_speed() if args.engine == "embedded" else None
    results = _run(args, params)
    report: dict[str, Any] = {
        "machine": {**machine(), "load_average_1m_before": load_before, "embedded_engine_speed": speed},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "table", "name")},
        "schedulers": results,
        "targets": _targets(results, args.target_level),
    }
    failed = any(
        error.startswith("broken")
        for result in results.values()
        for rows in result.values()
        for row in rows
        for error in row["errors"]
    )
    report["passed"] = not failed
    args.out.mkdir(parents=True, exist_ok=True)
    import json

    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _plot(results, args, args.out / f"{name}.png")
    for key, value in report["targets"].items():
        print(f"target {key}: {value}")
    print(f"wrote {args.out / name}.json and .png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
